"""EtcdClient: etcd's v3 API over its JSON gateway, failing over between members.

Every call is one POST (see :mod:`homeport.etcd.gateway`) to the member that answered
last.  A member that refuses the connection, has no leader, or does not answer within its
share of the timeout is passed over for the next; when none answers within ``timeout``
the call raises :class:`EtcdUnavailable`.  A transaction whose request went out but got no
answer is never sent again (it may have been applied: ``maybe_applied``); puts, deletes
and lease calls are, as setting the same value twice changes nothing a reader sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from twisted.internet import error as neterror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.web._newclient import (
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)

from ..part import IHomeportReactor
from . import wire
from .gateway import NotSent, call, http_agent
from .values import (
    RETRYABLE_CODES,
    Compare,
    EtcdError,
    EtcdUnavailable,
    Member,
    Op,
    RangeResult,
    Status,
    TxnResult,
)
from .watch import CompactedCallback, ConnectedCallback, EventsCallback, Watcher

#: Failures after the request may have left: the member might have acted on it.
NO_ANSWER = (
    neterror.TimeoutError,
    neterror.ConnectionLost,
    neterror.ConnectionDone,
    ResponseNeverReceived,
    ResponseFailed,
    RequestTransmissionFailed,
    CancelledError,
    OSError,
)

#: Waits between rounds over every member (while the timeout lasts): first, longest.
ROUND_BACKOFF = (0.05, 0.5)


def _safe_to_resend(problem: EtcdError) -> bool:
    """etcd refused before acting: another member may do it, and nothing happened here."""
    return problem.code in RETRYABLE_CODES and "no leader" in problem.message


def _unavailable(reasons: list[str]) -> EtcdUnavailable:
    """Each reason once, in order; *maybe_applied* when any attempt may have been acted
    on (marked "!"): a member that took the request may still commit it later."""
    distinct = tuple(dict.fromkeys(r.removeprefix("!") for r in reasons))
    return EtcdUnavailable(distinct, maybe_applied=any(r.startswith("!") for r in reasons))


class EtcdClient:
    """etcd's KV, lease, cluster and watch calls from Twisted, without threads.

    *endpoints* are client URLs (``http://10.0.0.1:2379``, or ``https://`` with *ca*,
    and *cert* and *key* for a client certificate).
    """

    def __init__(
        self,
        reactor: IHomeportReactor,
        endpoints: Sequence[str],
        *,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not endpoints:
            raise ValueError("etcd needs at least one endpoint")
        self._reactor = reactor
        self.endpoints = tuple(e.rstrip("/") for e in endpoints)
        self.timeout = timeout
        self._http, self._pool = http_agent(reactor, ca, cert, key)
        self.preferred = 0
        self._watchers: set[Watcher] = set()

    @property
    def endpoint(self) -> str:
        """The member that answered last (where the next call goes first)."""
        return self.endpoints[self.preferred]

    # -- the one way to call -------------------------------------------------------------

    async def request(
        self, path: str, body: wire.Json, *, resend: bool = True, leader: bool = True
    ) -> wire.Json:
        """POST *body* to *path* on the first member that answers (see the module).
        *resend*: the call may be sent again after no answer came; *leader*: only a
        member that has a leader may answer."""
        deadline = self._reactor.seconds() + self.timeout
        share = self.timeout / len(self.endpoints)
        reasons: list[str] = []
        pause = ROUND_BACKOFF[0]
        while True:
            for offset in range(len(self.endpoints)):
                index = (self.preferred + offset) % len(self.endpoints)
                remaining = deadline - self._reactor.seconds()
                if remaining <= 0:
                    raise _unavailable(reasons)
                timeout = min(share, remaining)
                reply = await self._attempt(index, path, body, timeout, reasons, leader)
                if reply is not None:
                    self.preferred = index
                    return reply
                if not resend and reasons[-1].startswith("!"):
                    raise _unavailable(reasons)
            remaining = deadline - self._reactor.seconds()
            if remaining <= 0:
                raise _unavailable(reasons)
            await deferLater(self._reactor, min(pause, remaining), lambda: None)
            pause = min(pause * 2, ROUND_BACKOFF[1])

    async def _attempt(
        self,
        index: int,
        path: str,
        body: wire.Json,
        timeout: float,
        reasons: list[str],
        leader: bool,
    ) -> wire.Json | None:
        """One try at one member: its reply, or None with why in *reasons* (marked "!"
        when the request may have been acted on)."""
        url = self.endpoints[index] + path
        attempt = Deferred.fromCoroutine(call(self._http, url, body, leader))
        attempt.addTimeout(timeout, self._reactor)
        try:
            return await attempt
        except NotSent as e:
            reasons.append(str(e))
        except EtcdError as e:
            if e.code not in RETRYABLE_CODES:
                raise
            reasons.append(("" if _safe_to_resend(e) else "!") + f"{url}: {e}")
        except NO_ANSWER as e:
            reasons.append(f"!{url}: {e.__class__.__name__}: {e}")
        return None

    # -- KV ------------------------------------------------------------------------------

    async def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        serializable: bool = False,
        limit: int = 0,
    ) -> RangeResult:
        """The keys in [key, range_end) (just *key* without one), at *revision* (0: now).
        *serializable* reads the answering member's copy without asking the leader."""
        body = wire.range_request(key, range_end, revision, serializable, limit)
        reply = await self.request("/v3/kv/range", body, leader=not serializable)
        return wire.range_result(reply)

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Set *key* to *value* (attached to *lease*); the revision it made."""
        reply = await self.request("/v3/kv/put", wire.put_request(key, value, lease))
        return wire.header_revision(reply)

    async def delete(self, key: bytes, range_end: bytes = b"") -> tuple[int, int]:
        """Delete *key* (or [key, range_end)): (how many went, the revision)."""
        reply = await self.request("/v3/kv/deleterange", wire.delete_request(key, range_end))
        return wire.num(reply, "deleted"), wire.header_revision(reply)

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        """If every *compare* holds run *success*, else *failure*, as one revision."""
        body = wire.txn_request(compare, success, failure)
        return wire.txn_result(await self.request("/v3/kv/txn", body, resend=False))

    async def compact(self, revision: int, physical: bool = False) -> None:
        """Forget the history before *revision* (watches and reads from before it fail)."""
        body: wire.Json = {"revision": str(revision), "physical": physical}
        await self.request("/v3/kv/compaction", body)

    # -- leases --------------------------------------------------------------------------

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> tuple[int, int]:
        """A lease of *ttl* seconds (with *lease_id*, or one etcd picks): (id, ttl)."""
        body: wire.Json = {"TTL": str(ttl), "ID": str(lease_id)}
        reply = await self.request("/v3/lease/grant", body)
        return wire.num(reply, "ID"), wire.num(reply, "TTL")

    async def lease_keepalive(self, lease_id: int) -> int:
        """Renew the lease: its TTL again, or 0 when it has expired (or never was)."""
        reply = await self.request("/v3/lease/keepalive", {"ID": str(lease_id)})
        return max(wire.num(reply.get("result") or {}, "TTL"), 0)

    async def lease_revoke(self, lease_id: int) -> None:
        """End the lease now: every key attached to it is deleted."""
        await self.request("/v3/lease/revoke", {"ID": str(lease_id)})

    async def lease_ttl(self, lease_id: int) -> int:
        """The lease's remaining seconds, or -1 when it does not exist."""
        reply = await self.request("/v3/lease/timetolive", {"ID": str(lease_id)})
        return wire.num(reply, "TTL")

    # -- cluster -------------------------------------------------------------------------

    async def members(self) -> list[Member]:
        """Every member of the cluster, as the answering member knows them."""
        return wire.members(await self.request("/v3/cluster/member/list", {}))

    async def status(self) -> Status:
        """The answering member's status: its id, the leader's, revision, raft term."""
        return wire.status(await self.request("/v3/maintenance/status", {}))

    # -- watch ---------------------------------------------------------------------------

    def watch(
        self,
        key: bytes,
        range_end: bytes,
        start_revision: int,
        on_events: EventsCallback,
        on_compacted: CompactedCallback,
        on_connected: ConnectedCallback | None = None,
    ) -> Watcher:
        """Watch [key, range_end) from *start_revision* (0: from when etcd first sets
        the watch up; pass a revision, e.g. a range's + 1, to miss nothing).

        *on_events(events, revision)* gets each batch in order, with previous values;
        *revision* is the watcher's :attr:`~Watcher.revision` after it (every change up to
        it has been handed over: the last event's, or for an empty batch, a progress
        notification, the revision etcd vouches for).  Events of one revision (one
        transaction) always come in one batch.  After
        a disconnect the watch resumes on any member from the last revision seen + 1,
        backing off, until :meth:`Watcher.stop`.  When etcd has compacted past the
        revision to resume from, *on_compacted(compact_revision)* is called and the
        watcher stops: the caller reads afresh and starts a new watch.
        *on_connected(bool)* is told each change of "the watch stream is up" (True on
        the first connection too).  Every ``timeout`` seconds the watched member is asked
        for its status; one that does not answer within ``timeout`` or has no leader
        is left for another.
        """
        watcher = Watcher(
            self._reactor,
            self._http,
            self.endpoints,
            self.preferred,
            (key, range_end, start_revision),
            (on_events, on_compacted, on_connected),
            probe=self.timeout,
        )
        self._watchers.add(watcher)
        watcher.done.addBoth(lambda _: self._watchers.discard(watcher))
        return watcher

    def close(self) -> Deferred[None]:
        """Stop every watch and close the connections; fires when they are closed."""
        for watcher in list(self._watchers):
            watcher.stop()
        closed: Deferred[None] = self._pool.closeCachedConnections()
        return closed
