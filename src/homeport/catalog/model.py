"""The service catalog as pure data and pure operations.

Nothing here does I/O, and time is read only through :attr:`Catalog.clock` (for lock
delays; the daemon sets it to the reactor's): the HTTP API, the DNS server, the health
checker and the SQLite store all work through :class:`Catalog`, which applies one
change at a time, bumps the index once per change and tells its listeners what changed
(:class:`Change`).  The store is one such listener (it makes each change durable before
the HTTP answer goes out), the push hub another.

Sessions and locks follow Consul's state store: a session belongs to a node and names
health checks; it is invalidated when destroyed, when one of its checks goes critical
or is removed, or when its node is; invalidation releases (or, with behavior
``delete``, deletes) the keys it held, and those keys cannot be acquired again for the
session's lock delay.

What the catalog refuses it raises as the typed errors of :mod:`.errors`.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeGuard, assert_never, cast, get_args

from ..acl import NodeIdentity, PolicyRecord, RoleRecord, ServiceIdentity, TokenRecord
from .errors import (
    CatalogError,
    CheckCritical,
    IndexMismatch,
    InvalidBehavior,
    InvalidCheckStatus,
    InvalidSession,
    KeyExists,
    KeyMissing,
    LockDelayed,
    LockHeld,
    MissingCheckRegistration,
    MissingNodeRegistration,
    MissingSession,
    NodeNotRegistered,
    NotLockHolder,
    NoTTL,
    ServiceIDMissing,
    SessionMismatch,
    StaleDelete,
    StaleSet,
    UnknownCheck,
    UnknownKVVerb,
    UnknownService,
)

PASSING = "passing"
WARNING = "warning"
CRITICAL = "critical"
STATUSES = (PASSING, WARNING, CRITICAL)
SERF_CHECK_ID = "serfHealth"
#: How many deleted keys the catalog remembers the index of (Consul's KV graveyard):
#: enough that a watcher between two polls does not miss a delete under its prefix.
KV_TOMBSTONES = 4096

#: Where a service or check came from: "api" (registered over HTTP, persisted),
#: "config" (from --config-dir, reloaded on SIGHUP, not persisted) or "builtin" (the
#: agent's consul service and serfHealth check, made at start, not persisted).
Source = Literal["api", "config", "builtin"]

#: Consul's verbs for KV operations in a transaction (``PUT /v1/txn``).
ReadVerb = Literal["get", "check-index", "check-session", "check-not-exists"]
DeleteVerb = Literal["delete", "delete-tree", "delete-cas"]
WriteVerb = Literal["set", "cas", "lock", "unlock"]
KVVerb = Literal[ReadVerb, "get-tree", DeleteVerb, WriteVerb]
KV_VERBS: frozenset[str] = frozenset(get_args(KVVerb))


def is_kv_verb(text: str) -> TypeGuard[KVVerb]:
    return text in KV_VERBS


# ---------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class Weights:
    passing: int = 1
    warning: int = 1


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    id: str = ""
    datacenter: str = "dc1"
    tagged_addresses: Mapping[str, str] = field(default_factory=dict)
    meta: Mapping[str, str] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True)
class Service:
    node: str
    id: str
    name: str
    tags: tuple[str, ...] = ()
    address: str = ""
    port: int = 0
    meta: Mapping[str, str] = field(default_factory=dict)
    weights: Weights = Weights()
    enable_tag_override: bool = False
    kind: str = ""
    tagged_addresses: Mapping[str, Any] = field(default_factory=dict)
    source: Source = "api"
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True)
class CheckDefinition:
    """How a check is run.  All durations are seconds."""

    ttl: float = 0.0
    http: str = ""
    method: str = ""
    header: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    body: str = ""
    tls_skip_verify: bool = False
    tcp: str = ""
    interval: float = 0.0
    timeout: float = 0.0
    deregister_critical_service_after: float = 0.0
    #: A script check's command and arguments (Consul's ``Args``), run without a shell.
    args: tuple[str, ...] = ()

    @property
    def type(self) -> str:
        if self.ttl:
            return "ttl"
        if self.http:
            return "http"
        if self.tcp:
            return "tcp"
        if self.args:
            return "script"
        return ""


@dataclass(frozen=True)
class Check:
    node: str
    check_id: str
    name: str
    status: str = CRITICAL
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: tuple[str, ...] = ()
    definition: CheckDefinition = CheckDefinition()
    source: Source = "api"
    create_index: int = 0
    modify_index: int = 0

    @property
    def type(self) -> str:
        return self.definition.type


@dataclass(frozen=True)
class KVEntry:
    key: str
    value: bytes
    flags: int = 0
    lock_index: int = 0
    #: The session holding the key's lock ("" when nobody does).
    session: str = ""
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True)
class Session:
    """A Consul session: the holder of KV locks, tied to a node and some of its checks.

    Durations are seconds; ``ttl`` 0 means the session lives until destroyed or until
    its checks or node say otherwise.
    """

    id: str
    node: str
    name: str = ""
    node_checks: tuple[str, ...] = (SERF_CHECK_ID,)
    service_checks: tuple[str, ...] = ()
    lock_delay: float = 15.0
    behavior: str = "release"
    ttl: float = 0.0
    create_index: int = 0
    modify_index: int = 0

    @property
    def checks(self) -> tuple[str, ...]:
        return self.node_checks + self.service_checks


@dataclass(frozen=True)
class PreparedQuery:
    """A Consul prepared query.  *definition* is the rest of it as Consul's JSON
    (``Template``, ``Service``, ``DNS``), which :mod:`.queries` reads."""

    id: str
    name: str = ""
    session: str = ""
    token: str = ""
    definition: Mapping[str, Any] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0


Kind = Literal["node", "service", "check", "kv", "session"]
Entity = Node | Service | Check | KVEntry | Session
#: ACL tokens (by AccessorID), policies and roles (by ID), as the catalog keeps them.
AclKind = Literal["acl-token", "acl-policy", "acl-role"]
AclRecord = TokenRecord | PolicyRecord | RoleRecord
ACL_KINDS: tuple[AclKind, ...] = ("acl-token", "acl-policy", "acl-role")
#: What the store keeps: the entities, prepared queries and ACL records (a snapshot
#: holds all but the ACL records).
StoredKind = Kind | Literal["query"] | AclKind
Stored = Entity | PreparedQuery | AclRecord


@dataclass(frozen=True)
class Change:
    """One thing that changed, as told to listeners (store, push hub, caches)."""

    index: int
    kind: StoredKind
    op: Literal["set", "delete"]
    key: tuple[str, ...]
    value: Stored | None
    previous: Stored | None = None

    @property
    def topic(self) -> str:
        if self.kind in ACL_KINDS:
            return "acl"
        return "kv" if self.kind in ("kv", "session") else "catalog"

    def as_event(self) -> dict[str, Any]:
        """The change as the push hub publishes it."""
        data: dict[str, Any] = {"index": self.index, "kind": self.kind, "op": self.op}
        if self.kind == "kv":
            data["key"] = self.key[0]
        elif self.kind == "session":
            data["session"] = self.key[0]
        elif self.kind == "node":
            data["node"] = self.key[0]
        elif self.kind == "query":
            data["query"] = self.key[0]
        else:
            data["node"], data["id"] = self.key
            entity = self.value if self.value is not None else self.previous
            if isinstance(entity, Service):
                data["service"] = entity.name
            elif isinstance(entity, Check):
                data["service"] = entity.service_name
                data["status"] = entity.status if self.value is not None else None
        return data


Listener = Callable[[list[Change]], None]


@dataclass(frozen=True)
class KVOp:
    """One KV operation of a transaction (``PUT /v1/txn``), with Consul's verbs."""

    verb: KVVerb
    key: str
    value: bytes = b""
    flags: int = 0
    index: int = 0
    session: str = ""


@dataclass(frozen=True)
class UnknownVerbOp:
    """An operation whose verb Consul does not know: it fails in its turn, as in Consul
    (an earlier op that fails is the one reported)."""

    verb: str


TxnOp = KVOp | UnknownVerbOp


def _slot(kind: Kind, key: tuple[str, ...]) -> Any:
    """Where an entity sits in its table: nodes, KV and sessions by a string, the rest
    by a pair."""
    return key[0] if kind in ("node", "kv", "session") else key


def _entity_key(entity: Entity) -> tuple[Kind, tuple[str, ...]]:
    if isinstance(entity, Node):
        return "node", (entity.name,)
    if isinstance(entity, Service):
        return "service", (entity.node, entity.id)
    if isinstance(entity, Check):
        return "check", (entity.node, entity.check_id)
    if isinstance(entity, Session):
        return "session", (entity.id,)
    return "kv", (entity.key,)


def _stored_key(value: Stored) -> tuple[StoredKind, tuple[str, ...]]:
    if isinstance(value, PreparedQuery):
        return "query", (value.id,)
    if isinstance(value, AclRecord):
        return acl_key(value)
    return _entity_key(value)


def acl_key(record: AclRecord) -> tuple[AclKind, tuple[str]]:
    """An ACL record's kind and key: a token by AccessorID, a policy or role by ID."""
    if isinstance(record, TokenRecord):
        return "acl-token", (record.accessor,)
    if isinstance(record, PolicyRecord):
        return "acl-policy", (record.id,)
    return "acl-role", (record.id,)


# ---------------------------------------------------------------------------
# The catalog


class Catalog:
    """All nodes, services, checks and KV entries, and the operations on them.

    Values are immutable; the catalog swaps them.  ``index`` grows by one per
    operation that changed something (Consul's raft index), never 0.
    """

    def __init__(
        self, datacenter: str = "dc1", index: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.datacenter = datacenter
        self.index = max(1, index)
        self.clock = clock
        self.nodes: dict[str, Node] = {}
        self.services: dict[tuple[str, str], Service] = {}
        self.checks: dict[tuple[str, str], Check] = {}
        self.kv: dict[str, KVEntry] = {}
        self.sessions: dict[str, Session] = {}
        #: Prepared queries by ID.
        self.queries: dict[str, PreparedQuery] = {}
        #: ACL tokens by AccessorID, policies and roles by ID.
        self.acl_tokens: dict[str, TokenRecord] = {}
        self.acl_policies: dict[str, PolicyRecord] = {}
        self.acl_roles: dict[str, RoleRecord] = {}
        #: Keys whose holder's session was invalidated -> clock time they are free again.
        self.lock_delays: dict[str, float] = {}
        self._listeners: list[Listener] = []
        #: Told of every TTL update, even one that changes nothing (it resets the timer).
        self.ttl_listeners: list[Callable[[str, str], None]] = []
        #: Told of every session renewal (it resets the session's TTL timer).
        self.renew_listeners: list[Callable[[str], None]] = []
        self._pending: list[Change] | None = None
        #: The index of the last change to the KV table (a set or a delete), Consul's
        #: index of the ``kvs`` and ``tombstones`` tables.
        self.kv_table_index = 0
        #: Deleted keys -> the index of their deletion (Consul's graveyard), oldest first.
        self._kv_tombstones: dict[str, int] = {}
        #: What prefix indexes start from after a load (see :meth:`load`).
        self._kv_floor = 0

    # -- listeners --------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call *listener* with the changes of every operation; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @contextmanager
    def _transaction(self) -> Iterator[int]:
        """Group the changes of one operation under one new index."""
        if self._pending is not None:
            yield self.index
            return
        self._pending = []
        next_index = self.index + 1
        try:
            yield next_index
        finally:
            changes, self._pending = self._pending, None
        if changes:
            self.index = next_index
            self._note_kv(changes)
            for listener in list(self._listeners):
                listener(changes)

    def _note_kv(self, changes: list[Change]) -> None:
        """Keep the KV table index and the graveyard (once the changes are final)."""
        for change in changes:
            if change.kind != "kv":
                continue
            self.kv_table_index = change.index
            key = change.key[0]
            self._kv_tombstones.pop(key, None)
            if change.op == "delete":
                self._kv_tombstones[key] = change.index
        while len(self._kv_tombstones) > KV_TOMBSTONES:
            del self._kv_tombstones[next(iter(self._kv_tombstones))]

    def _set(self, entity: Entity) -> Entity:
        assert self._pending is not None
        kind, key = _entity_key(entity)
        table = self._table(kind)
        previous = table.get(_slot(kind, key))
        index = self.index + 1
        if previous is not None and _same(previous, entity):
            return previous  # type: ignore[no-any-return]
        entity = replace(
            entity,
            create_index=previous.create_index if previous is not None else index,
            modify_index=index,
        )
        table[_slot(kind, key)] = entity
        self._pending.append(Change(index, kind, "set", key, entity, previous))
        if isinstance(entity, Check) and entity.status == CRITICAL and self.sessions:
            self._check_lost(entity.node, entity.check_id)
        return entity

    def _delete(self, entity: Entity) -> None:
        assert self._pending is not None
        kind, key = _entity_key(entity)
        table = self._table(kind)
        del table[_slot(kind, key)]
        self._pending.append(Change(self.index + 1, kind, "delete", key, None, entity))
        if self.sessions:
            if isinstance(entity, Check):
                self._check_lost(entity.node, entity.check_id)
            elif isinstance(entity, Node):
                for session in [s for s in self.sessions.values() if s.node == entity.name]:
                    self._invalidate(session)

    def _table(self, kind: Kind) -> dict[Any, Any]:
        tables: dict[str, dict[Any, Any]] = {
            "node": self.nodes,
            "service": self.services,
            "check": self.checks,
            "kv": self.kv,
            "session": self.sessions,
        }
        return tables[kind]

    def load(self, entities: Iterable[Stored], index: int) -> None:
        """Put stored entities back without telling anybody (start-up)."""
        for entity in entities:
            if isinstance(entity, PreparedQuery):
                self.queries[entity.id] = entity
                continue
            if isinstance(entity, AclRecord):
                acl_kind, acl_id = acl_key(entity)
                self.acl_table(acl_kind)[acl_id[0]] = entity
                continue
            kind, key = _entity_key(entity)
            self._table(kind)[_slot(kind, key)] = entity
        self.index = max(self.index, index)
        # The deletes before a restart are not remembered: a KV read's index starts
        # from the loaded one, so a watcher that held an older index is answered again
        # (once) rather than left waiting through a change it did not see.
        self.kv_table_index = self._kv_floor = self.index

    def restore(self, entities: Iterable[Stored], index: int = 0) -> None:
        """Make the catalog hold exactly *entities* (prepared queries among them), in one
        change (a snapshot restore).

        Unlike every other operation, the entities keep their own indexes and nothing
        follows from them (no session is invalidated, no lock delay starts): they are
        a state the catalog was in.  The catalog's index moves past its own, past
        *index* and past every entity's, so what is written next is newer still.
        """
        tables: dict[StoredKind, dict[Any, Any]] = {k: self._table(k) for k in get_args(Kind)}
        tables["query"] = self.queries
        wanted: dict[StoredKind, dict[Any, Stored]] = {kind: {} for kind in tables}
        for entity in entities:
            kind, key = _stored_key(entity)
            wanted[kind][key[0] if kind == "query" else _slot(cast(Kind, kind), key)] = entity
        if all(tables[kind] == table for kind, table in wanted.items()):
            return
        newest = (e.modify_index for table in wanted.values() for e in table.values())
        self.index = max(self.index, index, *newest)
        with self._transaction() as next_index:
            assert self._pending is not None
            for kind, table in wanted.items():
                current = tables[kind]
                for slot, old in list(current.items()):
                    if slot not in table:
                        del current[slot]
                        key = _stored_key(old)[1]
                        self._pending.append(Change(next_index, kind, "delete", key, None, old))
                for slot, new in table.items():
                    old = current.get(slot)
                    if old != new:
                        current[slot] = new
                        key = _stored_key(new)[1]
                        self._pending.append(Change(next_index, kind, "set", key, new, old))

    # -- nodes ------------------------------------------------------------

    def register(
        self,
        node: Node,
        services: Iterable[Service] = (),
        checks: Iterable[Check] = (),
        skip_node_update: bool = False,
    ) -> None:
        """Consul's catalog register: upsert a node and some of its services and checks."""
        services = list(services)
        checks = list(checks)
        with self._transaction():
            existing = self.nodes.get(node.name)
            if existing is None or not skip_node_update:
                if existing is not None and not node.id:
                    node = replace(node, id=existing.id)
                self._set(replace(node, datacenter=self.datacenter))
            for service in services:
                self._set_service(service)
            for check in checks:
                self._set_check(check)

    def deregister_node(self, name: str) -> None:
        with self._transaction():
            for check in [c for c in self.checks.values() if c.node == name]:
                self._delete(check)
            for service in [s for s in self.services.values() if s.node == name]:
                self._delete(service)
            if name in self.nodes:
                self._delete(self.nodes[name])

    def merge_nodes(self, into: str, old: Iterable[str]) -> None:
        """Move the registered services and checks of the nodes *old* (an agent's
        earlier names) to the registered node *into*, then deregister those nodes, in
        one change.  A service ID *into* already has stays as it is; among the old
        nodes the most recently changed one's wins.  Builtin services and checks (an
        agent's ``consul`` and ``serfHealth``) are not moved: *into* has its own."""
        if into not in self.nodes:
            raise NodeNotRegistered(into)
        names = sorted(
            (n for n in set(old) if n in self.nodes and n != into),
            key=lambda n: -self.nodes[n].modify_index,
        )
        with self._transaction():
            for name in names:
                for service in [s for s in self.services.values() if s.node == name]:
                    if service.source != "builtin" and (into, service.id) not in self.services:
                        self._set(replace(service, node=into))
                        for check in self.service_checks(name, service.id):
                            self._set(replace(check, node=into))
                for check in self.node_checks(name):
                    if check.source != "builtin" and (into, check.check_id) not in self.checks:
                        self._set(replace(check, node=into))
                self.deregister_node(name)

    # -- services ---------------------------------------------------------

    def _set_service(self, service: Service) -> None:
        if service.node not in self.nodes:
            raise NodeNotRegistered(service.node)
        self._set(service)
        # Checks carry the service's name and tags: keep them in step.
        for check in [c for c in self.checks.values() if c.node == service.node]:
            if check.service_id == service.id and (
                check.service_name != service.name or check.service_tags != service.tags
            ):
                self._set(replace(check, service_name=service.name, service_tags=service.tags))

    def register_service(
        self, service: Service, checks: Iterable[Check] = (), replace_checks: bool = False
    ) -> None:
        """The agent's service register: the service and its checks in one change."""
        checks = list(checks)
        with self._transaction():
            self._set_service(service)
            new_ids = {c.check_id for c in checks}
            if replace_checks:
                for old in self.service_checks(service.node, service.id):
                    if old.check_id not in new_ids:
                        self._delete(old)
            for check in checks:
                previous = self.checks.get((check.node, check.check_id))
                if previous is not None and previous.definition == check.definition:
                    # Re-registering keeps the current status, as Consul does.
                    check = replace(check, status=previous.status, output=previous.output)
                self._set_check(check)

    def deregister_service(self, node: str, service_id: str, missing_ok: bool = True) -> None:
        service = self.services.get((node, service_id))
        if service is None:
            if missing_ok:
                return
            raise UnknownService(service_id)
        with self._transaction():
            for check in self.service_checks(node, service_id):
                self._delete(check)
            self._delete(service)

    def service_checks(self, node: str, service_id: str) -> list[Check]:
        return [c for c in self.checks.values() if c.node == node and c.service_id == service_id]

    def node_checks(self, node: str) -> list[Check]:
        """Checks of the node itself (no service), e.g. serfHealth."""
        return [c for c in self.checks.values() if c.node == node and not c.service_id]

    def service_names(self, on_node: Callable[[str], bool] | None = None) -> dict[str, list[str]]:
        """``{name: sorted unique tags}`` as /v1/catalog/services shows it (only the
        services on nodes *on_node* accepts, when given)."""
        names: dict[str, set[str]] = {}
        for service in self.services.values():
            if on_node is None or on_node(service.node):
                names.setdefault(service.name, set()).update(service.tags)
        return {name: sorted(tags) for name, tags in sorted(names.items())}

    def instances(self, name: str, tags: Iterable[str] = ()) -> list[Service]:
        """Instances of the service *name* (case-insensitive) that carry every tag."""
        wanted = name.lower()
        tagset = {t.lower() for t in tags}
        found = [
            s
            for s in self.services.values()
            if s.name.lower() == wanted and tagset <= {t.lower() for t in s.tags}
        ]
        found.sort(key=lambda s: (s.node, s.id))
        return found

    def instance_checks(self, service: Service) -> list[Check]:
        """All checks that decide an instance's health: the node's and the service's."""
        return sorted(
            (
                c
                for c in self.checks.values()
                if c.node == service.node and c.service_id in ("", service.id)
            ),
            key=lambda c: (c.service_id != "", c.check_id),
        )

    def instance_status(self, service: Service) -> str:
        return aggregate_status(c.status for c in self.instance_checks(service))

    # -- checks -----------------------------------------------------------

    def _set_check(self, check: Check) -> None:
        if check.node not in self.nodes:
            raise NodeNotRegistered(check.node)
        if check.status not in STATUSES:
            raise InvalidCheckStatus(check.status)
        if check.service_id:
            service = self.services.get((check.node, check.service_id))
            if service is None:
                raise ServiceIDMissing(check.service_id)
            check = replace(check, service_name=service.name, service_tags=service.tags)
        self._set(check)

    def register_check(self, check: Check) -> None:
        with self._transaction():
            previous = self.checks.get((check.node, check.check_id))
            if previous is not None and previous.definition == check.definition:
                check = replace(check, status=previous.status, output=previous.output)
            self._set_check(check)

    def deregister_check(self, node: str, check_id: str, missing_ok: bool = True) -> None:
        check = self.checks.get((node, check_id))
        if check is None:
            if missing_ok:
                return
            raise UnknownCheck(check_id)
        with self._transaction():
            self._delete(check)

    def update_check(self, node: str, check_id: str, status: str, output: str) -> Check:
        """Record a check result.  Unchanged results change nothing (no new index)."""
        check = self.checks.get((node, check_id))
        if check is None:
            raise UnknownCheck(check_id)
        if status not in STATUSES:
            raise InvalidCheckStatus(status)
        with self._transaction():
            updated = self._set(replace(check, status=status, output=output))
        assert isinstance(updated, Check)
        return updated

    def ttl_update(self, node: str, check_id: str, status: str, output: str) -> Check:
        check = self.checks.get((node, check_id))
        if check is None or not check.definition.ttl:
            raise NoTTL(check_id)
        updated = self.update_check(node, check_id, status, output)
        for listener in list(self.ttl_listeners):
            listener(node, check_id)
        return updated

    # -- KV -----------------------------------------------------------------

    def kv_get(self, key: str) -> KVEntry | None:
        return self.kv.get(key)

    def kv_list(self, prefix: str) -> list[KVEntry]:
        return [self.kv[k] for k in sorted(self.kv) if k.startswith(prefix)]

    def kv_key_index(self, key: str) -> int:
        """Consul's index for a read of one key: its ModifyIndex, or when it does not
        exist the KV table's index (0 before any KV change)."""
        entry = self.kv.get(key)
        return entry.modify_index if entry is not None else self.kv_table_index

    def kv_prefix_index(self, prefix: str) -> int:
        """Consul's index for ``?recurse`` and ``?keys``: the highest ModifyIndex under
        *prefix*, or of a key deleted under it, else the KV table's index (which the
        empty prefix, everything, always answers)."""
        if not prefix:
            return self.kv_table_index
        highest = max(
            (e.modify_index for k, e in self.kv.items() if k.startswith(prefix)), default=0
        )
        deleted = max(
            (i for k, i in self._kv_tombstones.items() if k.startswith(prefix)), default=0
        )
        return max(highest, deleted, self._kv_floor) or self.kv_table_index

    def kv_put(self, key: str, value: bytes, flags: int = 0, cas: int | None = None) -> bool:
        """Write *key* (if its ModifyIndex is *cas*, 0: if it does not exist).  A lock on
        the key stays with its holder, as in Consul."""
        existing = self.kv.get(key)
        if cas is not None and not _cas_holds(existing, cas):
            return False
        lock_index, session = _lock_of(existing)
        with self._transaction():
            self._set(KVEntry(key, value, flags, lock_index=lock_index, session=session))
        return True

    def kv_delete(self, key: str, recurse: bool = False, cas: int | None = None) -> bool:
        if recurse:
            doomed = self.kv_list(key)
        else:
            entry = self.kv.get(key)
            if cas is not None and cas != 0 and (entry is None or entry.modify_index != cas):
                return False
            doomed = [entry] if entry is not None else []
        with self._transaction():
            for entry in doomed:
                self._delete(entry)
        return True

    def kv_acquire(self, key: str, value: bytes, flags: int, session_id: str) -> bool:
        """``PUT ?acquire=``: write *key* and lock it for the session, unless another
        session holds it or the key is in its lock delay.  Acquiring a key the session
        already holds updates it and keeps its lock index."""
        self._check_session(session_id)
        if self._in_lock_delay(key):
            return False
        lock_index = self._lock_index(key, session_id)
        if lock_index is None:
            return False
        with self._transaction():
            self._set(KVEntry(key, value, flags, lock_index=lock_index, session=session_id))
        return True

    def _check_session(self, session_id: str) -> None:
        """A lock's session must be given and exist."""
        if not session_id:
            raise MissingSession()
        if session_id not in self.sessions:
            raise InvalidSession(session_id)

    def _in_lock_delay(self, key: str) -> bool:
        until = self.lock_delays.get(key)
        if until is None:
            return False
        if until > self.clock():
            return True
        del self.lock_delays[key]
        return False

    def _lock_index(self, key: str, session_id: str) -> int | None:
        """The key's lock index once *session_id* holds it; None if another one does."""
        existing = self.kv.get(key)
        if existing is None:
            return 1
        if existing.session == session_id:
            return existing.lock_index
        if existing.session:
            return None
        return existing.lock_index + 1

    def kv_release(self, key: str, value: bytes, flags: int, session_id: str) -> bool:
        """``PUT ?release=``: write *key* and unlock it, if *session_id* holds it."""
        existing = self.kv.get(key)
        if existing is None or not session_id or existing.session != session_id:
            return False
        with self._transaction():
            self._set(KVEntry(key, value, flags, lock_index=existing.lock_index))
        return True

    # -- transactions ---------------------------------------------------------------

    def kv_txn(self, ops: Sequence[TxnOp]) -> tuple[list[KVEntry], list[tuple[int, CatalogError]]]:
        """``PUT /v1/txn``: apply *ops* all together, or none of them.

        Returns the results (entries, values blanked except for reads) and no errors, or
        no results and the op that failed, as ``(op index, why)`` (Consul stops at the
        first), the catalog left exactly as it was.
        """
        saved = dict(self.kv), dict(self.lock_delays)
        results: list[KVEntry] = []
        with self._transaction():
            for n, op in enumerate(ops):
                try:
                    results.extend(self._kv_op(op))
                except CatalogError as e:
                    self.kv, self.lock_delays = saved
                    assert self._pending is not None
                    self._pending.clear()  # nothing happened: no change, no new index
                    return [], [(n, e)]
        return results, []

    def _kv_op(self, op: TxnOp) -> list[KVEntry]:
        if isinstance(op, UnknownVerbOp):
            raise UnknownKVVerb(op.verb)
        verb = op.verb
        match verb:
            case "get" | "check-index" | "check-session" | "check-not-exists":
                return self._txn_read(verb, op)
            case "get-tree":
                return self.kv_list(op.key)
            case "delete" | "delete-tree" | "delete-cas":
                self._txn_delete(verb, op)
                return []
            case "set" | "cas" | "lock" | "unlock":
                return [replace(self._txn_write(verb, op), value=b"")]
            case _:
                assert_never(verb)

    def _txn_read(self, verb: ReadVerb, op: KVOp) -> list[KVEntry]:
        existing = self.kv.get(op.key)
        if verb == "check-not-exists":
            if existing is not None:
                raise KeyExists(op.key)
            return []
        if existing is None:
            raise KeyMissing(op.key)
        if verb == "check-index" and existing.modify_index != op.index:
            raise IndexMismatch(existing.modify_index, op.index)
        if verb == "check-session" and existing.session != op.session:
            raise SessionMismatch(existing.session, op.session)
        return [existing if verb == "get" else replace(existing, value=b"")]

    def _txn_delete(self, verb: DeleteVerb, op: KVOp) -> None:
        existing = self.kv.get(op.key)
        if verb == "delete-cas" and (existing is None or existing.modify_index != op.index):
            raise StaleDelete(op.key)
        for entry in self.kv_list(op.key) if verb == "delete-tree" else [existing]:
            if entry is not None:
                self._delete(entry)

    def _txn_write(self, verb: WriteVerb, op: KVOp) -> KVEntry:
        existing = self.kv.get(op.key)
        lock_index, session = _lock_of(existing)
        if verb == "cas" and not _cas_holds(existing, op.index):
            raise StaleSet(op.key)
        if verb == "lock":
            self._check_session(op.session)
            if self._in_lock_delay(op.key):
                raise LockDelayed(op.key)
            held = self._lock_index(op.key, op.session)
            if held is None:
                raise LockHeld(op.key)
            lock_index, session = held, op.session
        elif verb == "unlock":
            if existing is None or not op.session or existing.session != op.session:
                raise NotLockHolder(op.key)
            session = ""
        stored = self._set(
            KVEntry(op.key, op.value, op.flags, lock_index=lock_index, session=session)
        )
        assert isinstance(stored, KVEntry)
        return stored

    # -- sessions -----------------------------------------------------------------

    def session_create(self, session: Session) -> Session:
        """Store a new session, after checking its node and checks as Consul does."""
        if session.behavior not in ("release", "delete"):
            raise InvalidBehavior(session.behavior)
        if session.node not in self.nodes:
            raise MissingNodeRegistration(session.node)
        for check_id in session.checks:
            check = self.checks.get((session.node, check_id))
            if check is None:
                raise MissingCheckRegistration(check_id)
            if check.status == CRITICAL:
                raise CheckCritical(check_id)
        with self._transaction():
            stored = self._set(session)
        assert isinstance(stored, Session)
        return stored

    def session_destroy(self, session_id: str) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            return
        with self._transaction():
            self._invalidate(session)

    def session_renew(self, session_id: str) -> Session | None:
        """The session, after telling the renew listeners (None if there is none)."""
        session = self.sessions.get(session_id)
        if session is not None:
            for listener in list(self.renew_listeners):
                listener(session_id)
        return session

    def _check_lost(self, node: str, check_id: str) -> None:
        for session in [s for s in self.sessions.values() if s.node == node]:
            if check_id in session.checks:
                self._invalidate(session)

    def _invalidate(self, session: Session) -> None:
        """Delete *session*; release or delete its keys; start their lock delays."""
        if session.id not in self.sessions:
            return
        now = self.clock()
        self.lock_delays = {k: t for k, t in self.lock_delays.items() if t > now}
        for entry in [e for e in self.kv.values() if e.session == session.id]:
            if session.lock_delay > 0:
                self.lock_delays[entry.key] = now + session.lock_delay
            if session.behavior == "delete":
                self._delete(entry)
            else:
                self._set(replace(entry, session=""))
        for query in [q for q in self.queries.values() if q.session == session.id]:
            self._delete_query(query)
        self._delete(session)

    # -- prepared queries ---------------------------------------------------------------

    def query_set(self, query: PreparedQuery) -> PreparedQuery:
        """Store *query* (new, or replacing the one with its ID); :mod:`.queries` has
        checked it.  Consul's indexes: CreateIndex kept, ModifyIndex the new one."""
        previous = self.queries.get(query.id)
        with self._transaction():
            assert self._pending is not None
            index = self.index + 1
            query = replace(
                query,
                create_index=previous.create_index if previous is not None else index,
                modify_index=index,
            )
            self.queries[query.id] = query
            self._pending.append(Change(index, "query", "set", (query.id,), query, previous))
        return query

    def query_delete(self, query_id: str) -> None:
        query = self.queries.get(query_id)
        if query is not None:
            with self._transaction():
                self._delete_query(query)

    def _delete_query(self, query: PreparedQuery) -> None:
        assert self._pending is not None
        del self.queries[query.id]
        self._pending.append(Change(self.index + 1, "query", "delete", (query.id,), None, query))

    # -- ACL tokens, policies and roles --------------------------------------------------

    def acl_table(self, kind: AclKind) -> dict[str, Any]:
        if kind == "acl-token":
            return self.acl_tokens
        return self.acl_policies if kind == "acl-policy" else self.acl_roles

    def acl_set(self, record: AclRecord) -> AclRecord:
        """Store *record* (new, or replacing the one with its ID); :mod:`.acl_api` has
        checked it.  CreateIndex kept, ModifyIndex the new one."""
        kind, key = acl_key(record)
        table = self.acl_table(kind)
        previous = table.get(key[0])
        with self._transaction():
            assert self._pending is not None
            index = self.index + 1
            record = replace(
                record,
                create_index=previous.create_index if previous is not None else index,
                modify_index=index,
            )
            table[key[0]] = record
            self._pending.append(Change(index, kind, "set", key, record, previous))
        return record

    def acl_delete(self, kind: AclKind, record_id: str) -> bool:
        """Delete the token, policy or role *record_id*; False if there was none."""
        table = self.acl_table(kind)
        previous = table.get(record_id)
        if previous is None:
            return False
        with self._transaction():
            assert self._pending is not None
            del table[record_id]
            change = Change(self.index + 1, kind, "delete", (record_id,), None, previous)
            self._pending.append(change)
        return True

    # -- bulk replacement (service definition files) --------------------------

    def replace_source(
        self, node: str, source: Source, services: Iterable[Service], checks: Iterable[Check]
    ) -> None:
        """Make the services and checks from *source* on *node* exactly these, in one change."""
        services = list(services)
        checks = list(checks)
        with self._transaction():
            keep_services = {s.id for s in services}
            keep_checks = {c.check_id for c in checks}
            for old_check in [
                c for c in self.checks.values() if c.node == node and c.source == source
            ]:
                if old_check.check_id not in keep_checks:
                    self._delete(old_check)
            for old in [s for s in self.services.values() if s.node == node and s.source == source]:
                if old.id not in keep_services:
                    for c in self.service_checks(node, old.id):
                        self._delete(c)
                    self._delete(old)
            for service in services:
                self._set_service(service)
            for check in checks:
                previous = self.checks.get((check.node, check.check_id))
                if previous is not None and previous.definition == check.definition:
                    check = replace(check, status=previous.status, output=previous.output)
                self._set_check(check)


def _cas_holds(existing: KVEntry | None, cas: int) -> bool:
    """Consul's check-and-set on a write: 0 means "only if absent", else the ModifyIndex."""
    if cas == 0:
        return existing is None
    return existing is not None and existing.modify_index == cas


def _lock_of(existing: KVEntry | None) -> tuple[int, str]:
    """(lock index, holder) a plain write keeps: a lock stays with its holder."""
    return (existing.lock_index, existing.session) if existing is not None else (0, "")


def _same(a: Entity, b: Entity) -> bool:
    """Equal apart from the indexes."""
    return replace(a, create_index=0, modify_index=0) == replace(b, create_index=0, modify_index=0)


def aggregate_status(statuses: Iterable[str]) -> str:
    """The worst of several statuses (passing when there are none)."""
    worst = PASSING
    for status in statuses:
        if status == CRITICAL:
            return CRITICAL
        if status == WARNING:
            worst = WARNING
    return worst


def check_ids_for(service_id: str, count: int) -> Iterator[str]:
    """Consul's IDs for a service's checks: ``service:<id>``, or ``service:<id>:1``, ``:2``..."""
    if count == 1:
        yield f"service:{service_id}"
        return
    for n in itertools.count(1):
        if n > count:
            return
        yield f"service:{service_id}:{n}"


def entity_to_dict(entity: Stored) -> dict[str, Any]:
    """A JSON-able form for the store (bytes as latin-1 text)."""
    data = dataclasses.asdict(entity)
    if isinstance(entity, KVEntry):
        data["value"] = entity.value.hex()
    return data


def stored_from_dict(kind: str, data: dict[str, Any]) -> Stored:
    """What the store keeps, back: an entity or (kind ``query``) a prepared query."""
    if kind == "query":
        return PreparedQuery(**data)
    if kind in ACL_KINDS:
        return acl_from_dict(kind, data)
    return entity_from_dict(cast(Kind, kind), data)


def acl_from_dict(kind: AclKind, data: dict[str, Any]) -> AclRecord:
    """An ACL record back from :func:`entity_to_dict`'s form."""
    services = tuple(
        ServiceIdentity(s["name"], tuple(s.get("datacenters", ())))
        for s in data.pop("service_identities", ())
    )
    nodes = tuple(NodeIdentity(n["name"], n["datacenter"]) for n in data.pop("node_identities", ()))
    if kind == "acl-policy":
        data["datacenters"] = tuple(data.get("datacenters", ()))
        return PolicyRecord(**data)
    data["policies"] = tuple(data.get("policies", ()))
    if kind == "acl-role":
        return RoleRecord(**data, service_identities=services, node_identities=nodes)
    data["roles"] = tuple(data.get("roles", ()))
    return TokenRecord(**data, service_identities=services, node_identities=nodes)


def entity_from_dict(kind: Kind, data: dict[str, Any]) -> Entity:
    if kind == "node":
        return Node(**data)
    if kind == "service":
        data["tags"] = tuple(data["tags"])
        data["weights"] = Weights(**data["weights"])
        return Service(**data)
    if kind == "check":
        data["service_tags"] = tuple(data["service_tags"])
        definition = dict(data["definition"])
        definition["header"] = {k: tuple(v) for k, v in definition["header"].items()}
        definition["args"] = tuple(definition.get("args", ()))
        data["definition"] = CheckDefinition(**definition)
        return Check(**data)
    if kind == "session":
        data["node_checks"] = tuple(data["node_checks"])
        data["service_checks"] = tuple(data["service_checks"])
        return Session(**data)
    data["value"] = bytes.fromhex(data["value"])
    return KVEntry(**data)
