"""The catalog as one agent's replica of a shared store (``--catalog etcd://…``).

With the embedded store the catalog is the truth and SQLite follows it.  With a shared
store the truth is elsewhere (etcd) and every agent's :class:`ReplicatedCatalog` is a
local copy fed by one watch.  A write is a *proposal*: the catalog's own operations
run as always (so every Consul rule is checked by the same code), but what they
change is taken back out of the tables at the end and handed to the store, which
commits it all-or-nothing on the condition that nothing it touched or read changed in
the meantime.  The copy changes only when the store's watch reports the commit
(:meth:`ReplicatedCatalog.apply`), on every agent alike, with the store's revision as
the index.

Pure, like :mod:`.model`: no I/O and no Twisted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

from .model import ACL_KINDS, Catalog, Change, Kind, KVEntry, PreparedQuery, Stored, StoredKind

#: A place in the catalog: its kind and its key in the kind's table.
Slot = tuple[StoredKind, Any]


class _Tracked(dict[Any, Any]):
    """A table that notes the keys looked up in it while a proposal runs: what an
    operation read must not have changed when its changes are committed."""

    __slots__ = ("kind", "reads")

    def __init__(self, kind: StoredKind) -> None:
        super().__init__()
        self.kind = kind
        self.reads: set[Slot] | None = None

    def get(self, key: Any, default: Any = None) -> Any:
        if self.reads is not None:
            self.reads.add((self.kind, key))
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        if self.reads is not None:
            self.reads.add((self.kind, key))
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if self.reads is not None:
            self.reads.add((self.kind, key))
        return super().__contains__(key)


@dataclass
class Proposal:
    """What one write would change, and what it looked at.

    *writes* maps each slot to (what it held before, what it would hold after); *reads*
    maps each slot read but not written to what it held when read (None: nothing).
    """

    changes: list[Change] = field(default_factory=list)
    reads: set[Slot] = field(default_factory=set)
    #: Lock delays the proposal started (key -> clock time it ends): the store shares them.
    delays: dict[str, float] = field(default_factory=dict)

    def writes(self) -> dict[Slot, tuple[Stored | None, Stored | None]]:
        net: dict[Slot, tuple[Stored | None, Stored | None]] = {}
        for change in self.changes:
            slot = slot_of(change.kind, change.key)
            before = net[slot][0] if slot in net else change.previous
            net[slot] = (before, change.value)
        return {slot: pair for slot, pair in net.items() if pair[0] != pair[1]}


def slot_of(kind: StoredKind, key: tuple[str, ...]) -> Slot:
    return kind, key[0] if kind in ("node", "kv", "session", "query", *ACL_KINDS) else key


class ReplicatedCatalog(Catalog):
    """A :class:`Catalog` whose operations propose and whose watch applies.

    Outside :meth:`proposal` each operation is a proposal of its own, handed to
    :attr:`on_proposal` (the health checker's and timers' writes); inside one, the
    operations of one request add up to a single proposal, so that a request's later
    steps see its earlier ones (a check registered right after its service).
    """

    def __init__(
        self, datacenter: str = "dc1", clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(datacenter, 1, clock)
        self.nodes = _Tracked("node")
        self.services = _Tracked("service")
        self.checks = _Tracked("check")
        self.kv = _Tracked("kv")
        self.sessions = _Tracked("session")
        self.queries = _Tracked("query")
        self.acl_tokens = _Tracked("acl-token")
        self.acl_policies = _Tracked("acl-policy")
        self.acl_roles = _Tracked("acl-role")
        self._open: Proposal | None = None
        #: Where proposals made outside :meth:`proposal` go (set by the store).
        self.on_proposal: Callable[[Proposal], object] = lambda proposal: None
        #: Session ID -> the store's lease that keeps it alive (sessions with a TTL).
        self.leases: dict[str, int] = {}

    def _tables(self) -> Iterator[_Tracked]:
        for table in (self.nodes, self.services, self.checks, self.kv, self.sessions):
            assert isinstance(table, _Tracked)
            yield table
        for stored in (self.queries, self.acl_tokens, self.acl_policies, self.acl_roles):
            assert isinstance(stored, _Tracked)
            yield stored

    # -- proposing ----------------------------------------------------------------

    @contextmanager
    def proposal(self) -> Iterator[Proposal]:
        """Run operations as one proposal; on leaving, the tables are as before."""
        if self._open is not None:
            yield self._open
            return
        proposal = Proposal()
        self._open = proposal
        index, delays = self.index, dict(self.lock_delays)
        for table in self._tables():
            table.reads = proposal.reads
        try:
            yield proposal
        finally:
            for table in self._tables():
                table.reads = None
            self._open = None
            self._take_back(proposal.changes)
            proposal.delays = {
                k: t for k, t in self.lock_delays.items() if delays.get(k) != t and proposal.changes
            }
            self.index, self.lock_delays = index, delays
            written = {slot_of(c.kind, c.key) for c in proposal.changes}
            proposal.reads -= written

    @contextmanager
    def _transaction(self) -> Iterator[int]:
        if self._pending is not None:
            yield self.index
            return
        if self._open is None:
            with self.proposal() as proposal, self._transaction() as index:
                yield index
            if proposal.changes:
                self.on_proposal(proposal)
            return
        self._pending = []
        try:
            yield self.index + 1
        finally:
            changes, self._pending = self._pending, None
        if changes:
            # Later operations of the same proposal see these changes (and number
            # theirs after them); nobody is told until the store's watch says so.
            self.index += 1
            self._open.changes.extend(changes)

    def _take_back(self, changes: list[Change]) -> None:
        for change in reversed(changes):
            table = self._table_of(change.kind)
            slot = slot_of(change.kind, change.key)[1]
            if change.previous is None:
                dict.pop(table, slot, None)
            else:
                dict.__setitem__(table, slot, change.previous)

    def _table_of(self, kind: StoredKind) -> dict[Any, Any]:
        if kind == "query":
            return self.queries
        if kind in ACL_KINDS:
            return self.acl_table(kind)
        return self._table(cast(Kind, kind))

    # -- applying -----------------------------------------------------------------

    def apply(self, revision: int, updates: Iterable[tuple[Slot, Stored | None]]) -> list[Change]:
        """What the store committed at *revision*: each slot's new value (None: deleted),
        with its indexes already the store's.  Listeners are told; returns the changes."""
        changes: list[Change] = []
        for (kind, slot), value in updates:
            table = self._table_of(kind)
            previous = dict.get(table, slot)
            if value is None:
                if previous is None:
                    continue
                dict.pop(table, slot)
            else:
                dict.__setitem__(table, slot, value)
            key = slot if isinstance(slot, tuple) else (slot,)
            if value is None:
                changes.append(Change(revision, kind, "delete", key, None, previous))
            else:
                changes.append(Change(revision, kind, "set", key, value, previous))
        self.index = max(self.index, revision)
        if changes:
            self._note_kv(changes)
            for listener in list(self._listeners):
                listener(changes)
        return changes

    def reset(self, revision: int, entities: Iterable[tuple[Slot, Stored]]) -> list[Change]:
        """Hold exactly *entities* (a full read of the store at *revision*): the first
        load, or a resync after the watch fell behind the store's compaction."""
        wanted = dict(entities)
        updates: list[tuple[Slot, Stored | None]] = []
        for table in self._tables():
            for slot in list(dict.keys(table)):
                if (table.kind, slot) not in wanted:
                    updates.append(((table.kind, slot), None))
        for place, value in wanted.items():
            if dict.get(self._table_of(place[0]), place[1]) != value:
                updates.append((place, value))
        self._kv_floor = revision
        return self.apply(revision, updates)

    def looked_up(self, slot: Slot) -> Stored | None:
        """What *slot* holds now, read without being noted."""
        found: Stored | None = dict.get(self._table_of(slot[0]), slot[1])
        return found

    def orphans_of(self, session_id: str) -> list[KVEntry | PreparedQuery]:
        """Keys still locked by, and queries still tied to, a session that is gone
        (its lease ran out): what an invalidation must release or delete."""
        held: list[KVEntry | PreparedQuery] = [
            e for e in dict.values(self.kv) if e.session == session_id
        ]
        held += [q for q in dict.values(self.queries) if q.session == session_id]
        return held

    def release_orphans(self, session_id: str, behavior: str) -> None:
        """Invalidate what a vanished session held, as :meth:`Catalog._invalidate` does
        for a session still present: release (or delete) its keys, drop its queries."""
        with self._transaction():
            for held in self.orphans_of(session_id):
                if isinstance(held, PreparedQuery):
                    self._delete_query(held)
                elif behavior == "delete":
                    self._delete(held)
                else:
                    self._set(replace(held, session=""))
