"""The catalog shared through etcd (``--catalog etcd://…``): one agent's side of it.

Every agent keeps a :class:`~.replica.ReplicatedCatalog` fed by one etcd watch on the
cluster's prefix, so reads (HTTP, DNS, blocking queries) never wait for etcd.  A write
runs the catalog's own operation as a proposal, then commits what it changed in one etcd
transaction guarded by the revisions of everything it touched or looked up: if another
agent got there first the transaction fails, the agent catches up and runs the
operation again (Consul's leader applies writes one at a time; etcd's compare-and-swap
gives the same outcome without one).  The answer goes out once the watch has brought
the commit back, so the next read on this agent sees it.

Keys under the prefix (default ``/homeport/``)::

    node/<node>                 service/<node>/<id>        check/<node>/<id>
    session/<id>                query/<id>                 kv/<the key as it is>
    acl-token/<accessor>        acl-policy/<id>            acl-role/<id>
    agent/<node>                this agent's liveness, on its lease (not catalog state)
    lockdelay/<key>             a key's lock delay after its session went, on a lease
    revision                    put by every commit: the newest write under the prefix

Names are percent-quoted so that a ``/`` in an ID stays inside its segment.  Values are
the entities as JSON; their CreateIndex and ModifyIndex are etcd's create and mod
revisions, and ``X-Consul-Index`` is etcd's revision.

Liveness: each agent keeps ``agent/<node>`` on a lease (``ttl``, default 10 s) that it
renews every third of it.  When a lease runs out etcd deletes the key; the agents that see
it mark that node's ``serfHealth`` critical (all of them try; the compare lets one win),
which takes its instances out of DNS and ``?passing``, and invalidates its sessions.  A
node that stays dead ``reap_after`` is deregistered.  Sessions with a TTL ride on etcd
leases of twice their TTL (Consul's grace), renewed by ``PUT /v1/session/renew``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from twisted.application.service import MultiService
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..errors import error
from ..etcd import (
    Compare,
    Delete,
    EtcdClient,
    EtcdError,
    EtcdUnavailable,
    Event,
    KeyValue,
    Put,
    Range,
    RangeResult,
    prefix_end,
)
from .errors import ServerRefusal
from .model import (
    CRITICAL,
    SERF_CHECK_ID,
    Check,
    Session,
    Stored,
    StoredKind,
    entity_to_dict,
    stored_from_dict,
)
from .replica import Proposal, ReplicatedCatalog, Slot

T = TypeVar("T")

#: How many times a write is run again after losing a race to another agent.
ATTEMPTS = 16
#: How long a write waits for etcd to have a leader (an election takes about a second
#: with etcd's default timings) before it fails with "No cluster leader".
HOLD = 3.0
KINDS: tuple[StoredKind, ...] = (
    "node",
    "service",
    "check",
    "session",
    "query",
    "kv",
    "acl-token",
    "acl-policy",
    "acl-role",
)
PAIRED = ("service", "check")


@error
class Conflict(Exception):
    """Something a proposal depended on changed before it was committed."""

    revision: int


def no_leader() -> ServerRefusal:
    return ServerRefusal("No cluster leader")


# -- keys and values -----------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where things live under the cluster's prefix."""

    prefix: bytes

    def key(self, slot: Slot) -> bytes:
        kind, place = slot
        if kind == "kv":
            return self.prefix + b"kv/" + str(place).encode()
        parts = place if isinstance(place, tuple) else (place,)
        return (
            self.prefix
            + kind.encode()
            + b"/"
            + b"/".join(quote(p, safe="").encode() for p in parts)
        )

    @property
    def revision(self) -> bytes:
        """Put by every commit: its mod revision is the newest write under the prefix."""
        return self.prefix + b"revision"

    def agent(self, node: str) -> bytes:
        return self.prefix + b"agent/" + quote(node, safe="").encode()

    def lock_delay(self, key: str) -> bytes:
        return self.prefix + b"lockdelay/" + key.encode()

    def delayed(self, key: bytes) -> str | None:
        """The KV key a ``lockdelay/<key>`` key is the lock delay of, else None."""
        start = self.prefix + b"lockdelay/"
        return key[len(start) :].decode("utf-8", "replace") if key.startswith(start) else None

    def slot(self, key: bytes) -> Slot | str | None:
        """The catalog slot a key holds, the node name of an agent key, else None."""
        if not key.startswith(self.prefix):
            return None
        rest = key[len(self.prefix) :].decode("utf-8", "replace")
        kind, _, place = rest.partition("/")
        if kind == "kv":
            return "kv", place
        if kind == "agent":
            return unquote(place)
        if kind not in KINDS:
            return None
        if kind in PAIRED:
            node, _, entity_id = place.partition("/")
            return kind, (unquote(node), unquote(entity_id))
        return kind, unquote(place)


def encode(value: Stored) -> bytes:
    data = entity_to_dict(value)
    data.pop("create_index", None)
    data.pop("modify_index", None)
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def decode(kind: StoredKind, kv: KeyValue) -> Stored:
    data = json.loads(kv.value)
    data["create_index"] = kv.create_revision
    data["modify_index"] = kv.mod_revision
    return stored_from_dict(kind, data)


@dataclass
class AgentInfo:
    """What a live agent says of itself in ``agent/<node>``."""

    node: str
    address: str
    node_id: str = ""
    started: float = 0.0
    lease: int = 0

    def encode(self) -> bytes:
        return json.dumps(
            {
                "Node": self.node,
                "Address": self.address,
                "ID": self.node_id,
                "Started": self.started,
            }
        ).encode()

    @classmethod
    def decode(cls, kv: KeyValue) -> AgentInfo:
        data = json.loads(kv.value)
        return cls(
            str(data["Node"]),
            str(data["Address"]),
            str(data.get("ID", "")),
            float(data.get("Started", 0)),
            kv.lease,
        )


# -- the store -----------------------------------------------------------------------


@dataclass
class Health:
    """What this agent knows of etcd: whether a member it reached knows a leader (polled
    every second), whether the watch is connected, and the members' addresses."""

    leader_known: bool = False
    watching: bool = False
    leader: str = ""
    peers: tuple[str, ...] = ()
    on_change: list[Callable[[], None]] = field(default_factory=list)

    @property
    def reachable(self) -> bool:
        """Writes can commit and reads are current (``X-Consul-KnownLeader``)."""
        return self.leader_known and self.watching

    def update(self, **facts: Any) -> None:
        before = (self.reachable, self.leader)
        for name, value in facts.items():
            setattr(self, name, value)
        if before != (self.reachable, self.leader):
            for listener in list(self.on_change):
                listener()


class EtcdCatalogStore(MultiService):
    """Loads the catalog from etcd, keeps it current, commits its proposals.

    Its child services (the health checker, ``--config-dir``, the agent's own
    registration) start once the first load is done, so they work on the shared state.
    """

    log = Logger()

    def __init__(
        self,
        catalog: ReplicatedCatalog,
        client: EtcdClient,
        prefix: bytes,
        me: AgentInfo,
        reactor: IReactorTime,
        *,
        ttl: int = 10,
        reap_after: float = 72 * 3600.0,
        on_loaded: Callable[[], object] = lambda: None,  # run as a write, once loaded
    ) -> None:
        MultiService.__init__(self)
        self.catalog = catalog
        self.client = client
        self.layout = Layout(prefix)
        self.prefix = prefix
        self.me = me
        self.reactor = reactor
        self.ttl = ttl
        self.reap_after = reap_after
        self.on_loaded = on_loaded
        self.health = Health()
        #: Live agents by node name (from ``agent/<node>``).
        self.agents: dict[str, AgentInfo] = {}
        #: Dead agents' nodes -> when this agent first saw them dead (for reaping).
        self.dead_since: dict[str, float] = {}
        self.revision = 0
        self.loaded = False
        self._waiting: list[tuple[int, defer.Deferred[None]]] = []
        self._watch: Any = None
        self._loops: list[task.LoopingCall] = []
        self._rejoining = False
        self._barrier_queue: list[defer.Deferred[int]] = []
        self._barrier_busy = False
        catalog.on_proposal = self._background
        catalog.renew_listeners.append(self._renew)

    # -- start and stop -----------------------------------------------------------

    def startService(self) -> None:
        # The children start once etcd has been read and this agent has joined: _start.
        self.running = True
        defer.Deferred.fromCoroutine(self._start()).addErrback(
            lambda f: self.log.failure("Starting the etcd catalog", f)
        )

    async def _start(self) -> None:
        await self._until_loaded()
        if not self.running:
            return
        self._loop(self._keep_alive, self.ttl / 3)
        self._loop(self._poll_health, 1.0)
        self._loop(self._reap, min(60.0, max(1.0, self.reap_after / 4)))
        await self._retrying("Joining the cluster", self._join)
        if not self.running:
            return
        for child in self:
            child.startService()

    async def _join(self) -> None:
        await self._announce()
        await self._run(self.on_loaded)

    async def _until_loaded(self) -> None:
        await self._retrying("Reading the catalog from etcd", self._load)

    async def _retrying(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run *step* until it works (or the store stops), backing off while etcd is away."""
        delay = 0.5
        while self.running:
            try:
                await step()
                return
            except (EtcdUnavailable, EtcdError, ServerRefusal) as e:
                self.log.warn("{what}: {error}; trying again", what=what, error=e)
                await task.deferLater(self.reactor, delay, lambda: None)
                delay = min(delay * 2, 5.0)

    def _loop(self, f: Callable[[], Any], every: float) -> None:
        loop = task.LoopingCall(f)
        loop.clock = self.reactor
        loop.start(every, now=False).addErrback(lambda fl: self.log.failure("etcd loop", fl))
        self._loops.append(loop)

    async def _load(self) -> None:
        found = await self.client.range(self.prefix, prefix_end(self.prefix))
        self._reset(found.revision, found.kvs)
        self._watch = self.client.watch(
            self.prefix,
            prefix_end(self.prefix),
            found.revision + 1,
            self._events,
            self._compacted,
            self._connected,
        )
        self.health.update(watching=True)
        self.loaded = True

    def _reset(self, revision: int, kvs: Iterable[KeyValue]) -> None:
        entities: list[tuple[Slot, Stored]] = []
        self.agents = {}
        self.catalog.lock_delays = {}
        for kv in kvs:
            delayed = self.layout.delayed(kv.key)
            if delayed is not None:
                self._delay_event(delayed, kv)
                continue
            where = self.layout.slot(kv.key)
            if isinstance(where, str):
                self.agents[where] = AgentInfo.decode(kv)
            elif where is not None:
                entities.append((where, decode(where[0], kv)))
                self._note_lease(where, kv)
        self.catalog.reset(revision, entities)
        self._caught_up(revision)
        for node in self._agent_nodes():
            if node not in self.agents:
                self._mark_dead(node)

    def stopService(self) -> defer.Deferred[None]:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        stopped = MultiService.stopService(self)
        lease = self.me.lease
        if not lease:
            return stopped  # type: ignore[no-any-return]

        async def leave() -> None:
            await stopped
            try:
                await self.client.lease_revoke(lease)  # others see this agent gone now
            except (EtcdUnavailable, EtcdError):
                pass

        return defer.Deferred.fromCoroutine(leave())

    # -- the watch -------------------------------------------------------------------

    def _events(self, events: list[Event], revision: int) -> None:
        batch: list[tuple[Slot, Stored | None]] = []
        current = 0
        for event in events:
            if event.kv.mod_revision != current and batch:
                self.catalog.apply(current, batch)
                batch = []
            current = event.kv.mod_revision
            delayed = self.layout.delayed(event.kv.key)
            if delayed is not None:
                self._delay_event(delayed, event.kv if event.type == "PUT" else None)
                continue
            where = self.layout.slot(event.kv.key)
            if isinstance(where, str):
                self._agent_event(where, event)
            elif where is not None:
                batch.append((where, self._value(where, event)))
        if batch:
            self.catalog.apply(current, batch)
        self._caught_up(max(revision, current))

    def _delay_event(self, key: str, kv: KeyValue | None) -> None:
        """A lock delay began (its seconds in the value) or its lease ran out."""
        if kv is None:
            self.catalog.lock_delays.pop(key, None)
        else:
            seconds = float(json.loads(kv.value).get("Seconds", 0))
            self.catalog.lock_delays[key] = self.catalog.clock() + seconds

    def _value(self, where: Slot, event: Event) -> Stored | None:
        if event.type == "DELETE":
            if where[0] == "session":
                self.catalog.leases.pop(where[1], None)
                if event.prev_kv is not None:
                    self._session_gone(decode("session", event.prev_kv))
            return None
        self._note_lease(where, event.kv)
        return decode(where[0], event.kv)

    def _note_lease(self, where: Slot, kv: KeyValue) -> None:
        if where[0] == "session" and kv.lease:
            self.catalog.leases[where[1]] = kv.lease

    def _session_gone(self, session: Stored) -> None:
        """A session's key went; if its lease ran out (rather than a write that also
        released its locks), release them now."""
        assert isinstance(session, Session)

        def release() -> None:
            if self.catalog.orphans_of(session.id):
                self.catalog.release_orphans(session.id, session.behavior)

        self.reactor.callLater(0, release)

    def _agent_event(self, node: str, event: Event) -> None:
        if event.type == "PUT":
            self.agents[node] = AgentInfo.decode(event.kv)
            self.dead_since.pop(node, None)
        else:
            self.agents.pop(node, None)
            if node == self.me.node:
                self.reactor.callLater(0, self._rejoin)
            else:
                self.reactor.callLater(0, self._mark_dead, node)
        for listener in list(self.health.on_change):
            listener()  # /v1/agent/members changed

    def _compacted(self, revision: int) -> None:
        self.log.warn(
            "The etcd watch fell behind compaction at {revision}: reloading", revision=revision
        )
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        self.health.update(watching=False)
        defer.Deferred.fromCoroutine(self._until_loaded()).addErrback(
            lambda f: self.log.failure("Reloading from etcd", f)
        )

    def _connected(self, up: bool) -> None:
        self.health.update(watching=up)

    # -- revisions -------------------------------------------------------------------

    def _caught_up(self, revision: int) -> None:
        if revision <= self.revision:
            return
        self.revision = revision
        ready = [d for r, d in self._waiting if r <= revision]
        self._waiting = [(r, d) for r, d in self._waiting if r > revision]
        for d in ready:
            d.callback(None)

    def caught_up(self, revision: int) -> defer.Deferred[None]:
        """Fires once the watch has applied everything up to *revision*."""
        if revision <= self.revision:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append((revision, d))
        return d

    async def barrier(self) -> None:
        """Wait until this agent has seen every write etcd had committed when asked
        (a linearizable read): what ``?consistent`` and every write start with.

        Callers that arrive while one read is out share the next one (a read that went
        out before they asked cannot speak for them), so a busy agent sends one read per
        round trip, not one per request."""
        await self._hold()
        waiting: defer.Deferred[int] = defer.Deferred()
        self._barrier_queue.append(waiting)
        if not self._barrier_busy:
            defer.Deferred.fromCoroutine(self._barrier_rounds())
        revision = await waiting
        await self.caught_up(revision)

    async def _barrier_rounds(self) -> None:
        self._barrier_busy = True
        try:
            while self._barrier_queue:
                round_, self._barrier_queue = self._barrier_queue, []
                try:
                    found = await self.client.range(self.layout.revision)
                except (EtcdUnavailable, EtcdError):
                    for d in round_:
                        d.errback(no_leader())
                    continue
                # Not the header's revision: that is all of etcd's, and other prefixes'
                # writes never come down this watch.  Every commit under ours moves it.
                revision = found.kvs[0].mod_revision if found.kvs else 0
                for d in round_:
                    d.callback(revision)
        finally:
            self._barrier_busy = False

    # -- writes ----------------------------------------------------------------------

    def run(self, operation: Callable[[], T]) -> defer.Deferred[T]:
        """Run *operation* (catalog calls) as one write of the whole cluster."""
        return defer.Deferred.fromCoroutine(self._run(operation))

    async def _run(self, operation: Callable[[], T]) -> T:
        for attempt in range(ATTEMPTS):
            await self.barrier()
            with self.catalog.proposal() as proposal:
                result = operation()
            if not proposal.changes:
                return result
            try:
                await self.commit(proposal)
                return result
            except Conflict as lost:
                if lost.revision > self.revision:
                    await self.caught_up(lost.revision)
                else:  # what changed was a lease running out: its delete is on the way
                    await task.deferLater(self.reactor, 0.02 * (attempt + 1), lambda: None)
        raise ServerRefusal("Too much contention: the write lost every race; try again")

    async def _hold(self) -> None:
        """Wait (up to HOLD seconds, as Consul holds an RPC through a leader election)
        until etcd has a leader and the watch is up; else Consul's "No cluster leader"."""
        deadline = self.reactor.seconds() + HOLD
        while not (self.loaded and self.health.reachable):
            if self.reactor.seconds() >= deadline or not self.running:
                raise no_leader()
            await task.deferLater(self.reactor, 0.1, lambda: None)
            if not self.health.leader_known:
                await self._poll_health()

    async def commit(self, proposal: Proposal) -> int:
        """Commit *proposal* in one etcd transaction; its revision, once applied here."""
        await self._hold()
        compares: list[Compare] = []
        for slot in proposal.reads:
            compares.append(self._unchanged(slot, self.catalog.looked_up(slot)))
        writes = proposal.writes()
        ops: list[Put | Delete] = []
        for slot, (before, after) in writes.items():
            compares.append(self._unchanged(slot, before))
            if after is None:
                ops.append(Delete(self.layout.key(slot)))
            else:
                lease = await self._lease_for(after, before)
                ops.append(Put(self.layout.key(slot), encode(after), lease))
        if not ops:
            return self.revision
        ops += await self._delays(proposal.delays)
        ops.append(Put(self.layout.revision, self.me.node.encode()))
        try:
            done = await self.client.txn(compares, ops, [Range(self.layout.revision)])
        except EtcdUnavailable:
            raise no_leader() from None
        except EtcdError as refused:
            # Say, more operations than etcd's --max-txn-ops (128 by default) allows.
            raise ServerRefusal(f"etcd refused the write: {refused}") from None
        if not done.succeeded:
            latest = done.responses[0] if done.responses else None
            kvs = latest.kvs if isinstance(latest, RangeResult) else ()
            raise Conflict(kvs[0].mod_revision if kvs else 0)
        await self.caught_up(done.revision)
        return done.revision

    async def _delays(self, delays: dict[str, float]) -> list[Put | Delete]:
        """The lock delays a write starts, as keys on leases as long (so every agent
        refuses the key to a new session until then)."""
        ops: list[Put | Delete] = []
        now = self.catalog.clock()
        leases: dict[int, int] = {}
        for key, until in delays.items():
            seconds = until - now
            if seconds <= 0:
                continue
            ttl = max(1, math.ceil(seconds))
            if ttl not in leases:
                leases[ttl], _ = await self.client.lease_grant(ttl)
            value = json.dumps({"Seconds": seconds}).encode()
            ops.append(Put(self.layout.lock_delay(key), value, leases[ttl]))
        return ops

    def _unchanged(self, slot: Slot, value: Stored | None) -> Compare:
        key = self.layout.key(slot)
        if value is None:
            return Compare(key, "CREATE", "EQUAL", 0)
        return Compare(key, "MOD", "EQUAL", value.modify_index)

    async def _lease_for(self, after: Stored, before: Stored | None) -> int:
        if not isinstance(after, Session) or not after.ttl:
            return 0
        if before is not None and after.id in self.catalog.leases:
            return self.catalog.leases[after.id]
        lease, _ = await self.client.lease_grant(max(1, math.ceil(2 * after.ttl)))
        return lease

    def _background(self, proposal: Proposal) -> None:
        """A write not made for a request (a check's new status, a timer's): committed
        on its own; a lost race is dropped (the next run writes the truth again)."""

        def failed(failure: Any) -> None:
            if failure.check(Conflict):
                self.log.debug("A background write lost a race; dropped")
            elif failure.check(ServerRefusal):
                self.log.warn("A background write failed: {error}", error=failure.value)
            else:
                self.log.failure("A background write failed", failure)

        defer.Deferred.fromCoroutine(self.commit(proposal)).addErrback(failed)

    def _renew(self, session_id: str) -> None:
        lease = self.catalog.leases.get(session_id)
        if lease:
            defer.Deferred.fromCoroutine(self.client.lease_keepalive(lease)).addErrback(
                lambda f: self.log.warn("Renewing session {id}: {f.value}", id=session_id, f=f)
            )

    # -- the cluster as the API reports it (api.ClusterView) ---------------------------

    def leader(self) -> str:
        return self.health.leader

    def peers(self) -> list[str]:
        return list(self.health.peers)

    def members(self) -> list[tuple[str, str, str]]:
        return [(a.node, a.address, a.node_id) for _, a in sorted(self.agents.items())]

    # -- liveness --------------------------------------------------------------------

    async def _announce(self) -> None:
        """Take this agent's lease and key, then its own registrations (all of which
        the agent's start-up makes as a proposal: see catalog.build)."""
        lease, _ = await self.client.lease_grant(self.ttl)
        self.me.lease = lease
        await self.client.put(self.layout.agent(self.me.node), self.me.encode(), lease)

    async def _keep_alive(self) -> None:
        if not self.me.lease:
            return
        try:
            left = await self.client.lease_keepalive(self.me.lease)
        except (EtcdUnavailable, EtcdError):
            return
        if left <= 0:
            await self._rejoin_now()

    def _rejoin(self) -> None:
        defer.Deferred.fromCoroutine(self._rejoin_now()).addErrback(
            lambda f: self.log.warn("Rejoining the cluster: {f.value}", f=f)
        )

    async def _rejoin_now(self) -> None:
        """Our lease ran out (etcd was away longer than the TTL): take a new one and say
        we are alive again (others may have marked us critical meanwhile)."""
        if not self.running or self._rejoining:
            return
        self._rejoining = True
        try:
            self.log.warn("This agent's etcd lease ran out: rejoining")
            await self._retrying("Rejoining the cluster", self._join)
        finally:
            self._rejoining = False

    async def _poll_health(self) -> None:
        try:
            status = await self.client.status()
            members = await self.client.members()
        except (EtcdUnavailable, EtcdError):
            self.health.update(leader_known=False, leader="")
            return
        peers = {m.id: _host_port(m.peer_urls) for m in members}
        self.health.update(
            leader_known=bool(status.leader),
            leader=peers.get(status.leader, ""),
            peers=tuple(sorted(peers.values())),
        )

    def _agent_nodes(self) -> list[str]:
        """Nodes run by an agent (they have its serfHealth check), but this one."""
        return [
            node
            for (node, check_id) in dict.keys(self.catalog.checks)
            if check_id == SERF_CHECK_ID and node != self.me.node
        ]

    def _mark_dead(self, node: str) -> None:
        if node in self.agents or not self.running:
            return
        self.dead_since.setdefault(node, self.reactor.seconds())
        check = self.catalog.looked_up(("check", (node, SERF_CHECK_ID)))
        if isinstance(check, Check) and check.status != CRITICAL:
            self.log.info("Agent {node} is gone: marking it critical", node=node)
            self.catalog.update_check(
                node, SERF_CHECK_ID, CRITICAL, "Agent not live or unreachable"
            )

    def _reap(self) -> None:
        now = self.reactor.seconds()
        for node in self._agent_nodes():
            if node in self.agents:
                continue
            since = self.dead_since.setdefault(node, now)
            if now - since >= self.reap_after and node in dict.keys(self.catalog.nodes):
                self.log.info("Reaping node {node}: dead for {s:.0f} s", node=node, s=now - since)
                self.catalog.deregister_node(node)


def _host_port(urls: tuple[str, ...]) -> str:
    if not urls:
        return ""
    rest = urls[0].split("://", 1)[-1]
    return rest.rstrip("/")
