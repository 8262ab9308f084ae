"""homeport.etcd against real etcd members on loopback (tests/etcd_cluster.py).

Each test runs its scenario on a reactor of its own (run() below): the client is built
on the reactor it is given, as the daemon builds it on the global one.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from homeport.etcd import (
    Compare,
    Delete,
    DeleteResult,
    EtcdClient,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    Event,
    KeyValue,
    Put,
    PutResult,
    Range,
    RangeResult,
    prefix_end,
    wire,
)
from homeport.part import IHomeportReactor

from .etcd_cluster import Cluster, etcd_cluster, etcd_single

__all__ = ["etcd_cluster", "etcd_single"]  # fixtures, used by name

T = TypeVar("T")
Scenario = Callable[[EPollReactor], Coroutine[Any, Any, T]]


def run(scenario: Scenario[T], timeout: float = 60.0) -> T:
    """Run *scenario* on a fresh reactor until it ends; then check that it left no
    connection open and no timer pending (the client closed everything it opened)."""
    reactor = EPollReactor()
    outcome: list[object] = []

    def start() -> None:
        d = Deferred.fromCoroutine(scenario(reactor))
        d.addTimeout(timeout, reactor)
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.callLater(0, reactor.stop))

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    leftovers = [c for c in reactor.getDelayedCalls() if c.active()]
    selectables = set(reactor.getReaders()) | set(reactor.getWriters())
    open_sockets = selectables - set(reactor._internalReaders)
    for reader in list(reactor._internalReaders):
        reactor.removeReader(reader)
        reader.connectionLost(Failure(Exception("test over")))
    reactor.disconnectAll()
    for call in leftovers:
        call.cancel()
    (result,) = outcome
    if isinstance(result, Failure):
        result.raiseException()
    assert leftovers == [], leftovers
    assert open_sockets == set(), open_sockets
    return result  # type: ignore[return-value]


def hp(reactor: EPollReactor) -> IHomeportReactor:
    """The reactor as the client's type (EPollReactor provides every interface of it)."""
    return cast(IHomeportReactor, reactor)


async def sleep(reactor: EPollReactor, seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def until(reactor: EPollReactor, condition: Callable[[], bool], timeout: float = 20) -> None:
    """Wait (without blocking the reactor) until *condition* holds."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise TimeoutError("condition not met")
        await sleep(reactor, 0.02)


async def closing(client: EtcdClient, reactor: EPollReactor) -> None:
    await client.close()
    await sleep(reactor, 0)  # let aborted connections finish closing


class Recorder:
    """What a watch reported, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.batches: list[tuple[list[Event], int]] = []
        self.compacted: list[int] = []
        self.connected: list[bool] = []

    def on_events(self, events: list[Event], revision: int) -> None:
        self.events.extend(events)
        self.batches.append((events, revision))

    def on_compacted(self, revision: int) -> None:
        self.compacted.append(revision)

    def on_connected(self, up: bool) -> None:
        self.connected.append(up)

    def callbacks(
        self,
    ) -> tuple[Callable[[list[Event], int], None], Callable[[int], None], Callable[[bool], None]]:
        return self.on_events, self.on_compacted, self.on_connected


# -- pure ----------------------------------------------------------------------------------


def test_prefix_end_is_the_first_key_after_every_key_with_the_prefix() -> None:
    assert prefix_end(b"/homeport/") == b"/homeport0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"a\xfe\xff\xff") == b"a\xff"
    assert prefix_end(b"") == b"\0"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_the_gateway_format_is_base64_bytes_and_decimal_strings() -> None:
    assert wire.compare_json(Compare(b"k", "MOD", "LESS", 7, range_end=b"l")) == {
        "key": "aw==",
        "target": "MOD",
        "result": "LESS",
        "mod_revision": "7",
        "range_end": "bA==",
    }
    assert wire.compare_json(Compare(b"k", "VALUE", "EQUAL", b"\xff"))["value"] == "/w=="
    with pytest.raises(TypeError, match="VALUE compare takes bytes"):
        wire.compare_json(Compare(b"k", "VALUE", "EQUAL", 1))
    with pytest.raises(TypeError, match="VERSION compare takes an int"):
        wire.compare_json(Compare(b"k", "VERSION", "EQUAL", b"1"))
    # a deleted key's event: only key and mod_revision; a missing type is PUT
    (gone, put) = wire.events(
        [{"type": "DELETE", "kv": {"key": "aw==", "mod_revision": "9"}}, {"kv": {}}]
    )
    assert gone.kv == KeyValue(b"k", b"", 0, 9, 0, 0) and gone.prev_kv is None
    assert put.type == "PUT"
    stream_error = {"error": {"grpc_code": 14, "message": "etcdserver: no leader"}}
    assert wire.error_of(stream_error) == EtcdError(14, "etcdserver: no leader")
    assert wire.error_of({"result": {}}) is None


# -- KV ------------------------------------------------------------------------------------


def test_put_range_and_delete_round_trip_bytes_and_revisions(etcd_single: Cluster) -> None:
    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_single.endpoints)
        first = await client.put(b"kv/a", b"\x00\xffone")
        second = await client.put(b"kv/b", b"two")
        await client.put(b"kv/a", b"uno")
        assert second == first + 1
        found = await client.range(b"kv/", prefix_end(b"kv/"))
        assert [(kv.key, kv.value, kv.version) for kv in found.kvs] == [
            (b"kv/a", b"uno", 2),
            (b"kv/b", b"two", 1),
        ]
        assert (found.count, found.more, found.revision) == (2, False, second + 1)
        a = found.kvs[0]
        assert (a.create_revision, a.mod_revision, a.lease) == (first, second + 1, 0)
        limited = await client.range(b"kv/", prefix_end(b"kv/"), limit=1)
        assert (len(limited.kvs), limited.more, limited.count) == (1, True, 2)
        old = await client.range(b"kv/a", revision=first)
        assert old.kvs[0].value == b"\x00\xffone"
        local = await client.range(b"kv/b", serializable=True)
        assert local.kvs[0].value == b"two"
        assert (await client.range(b"kv/none")).kvs == ()
        deleted, revision = await client.delete(b"kv/", prefix_end(b"kv/"))
        assert (deleted, revision) == (2, second + 2)
        assert await client.delete(b"kv/a") == (0, revision)
        await closing(client, reactor)

    run(scenario)


def test_an_etcd_error_reply_is_an_etcd_error_with_its_code(etcd_single: Cluster) -> None:
    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_single.endpoints)
        revision = await client.put(b"err/a", b"1")
        with pytest.raises(EtcdError, match="future revision") as future:
            await client.range(b"err/a", revision=revision + 100)
        assert future.value.code == 11
        await client.put(b"err/a", b"2")
        await client.compact(revision + 1)
        with pytest.raises(EtcdCompacted, match="compacted") as compacted:
            await client.range(b"err/a", revision=revision)
        assert compacted.value.code == 11
        with pytest.raises(EtcdError, match="duplicate key") as duplicate:
            await client.txn([], [Put(b"err/b", b"1"), Put(b"err/b", b"2")])
        assert duplicate.value.code == 3
        await closing(client, reactor)

    run(scenario)


def test_a_transaction_runs_success_when_every_compare_holds_else_failure(
    etcd_single: Cluster,
) -> None:
    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_single.endpoints)
        absent = Compare(b"txn/lock", "CREATE", "EQUAL", 0)
        won = await client.txn([absent], [Put(b"txn/lock", b"me")], [Range(b"txn/lock")])
        assert won.succeeded
        assert won.responses == (PutResult(won.revision, None),)
        lost = await client.txn([absent], [Put(b"txn/lock", b"you")], [Range(b"txn/lock")])
        assert not lost.succeeded and lost.revision == won.revision
        (holder,) = lost.responses
        assert isinstance(holder, RangeResult)
        assert [kv.value for kv in holder.kvs] == [b"me"]
        cas = Compare(b"txn/lock", "MOD", "EQUAL", won.revision)
        swapped = await client.txn(
            [cas, Compare(b"txn/lock", "VALUE", "EQUAL", b"me")],
            [Put(b"txn/lock", b"next", prev_kv=True), Delete(b"txn/other", prev_kv=True)],
        )
        assert swapped.succeeded and swapped.revision == won.revision + 1
        put, gone = swapped.responses
        assert isinstance(put, PutResult) and put.prev_kv is not None
        assert put.prev_kv.value == b"me"
        assert gone == DeleteResult(0, swapped.revision, ())
        for compare in (
            Compare(b"txn/lock", "VERSION", "GREATER", 2),
            Compare(b"txn/lock", "VALUE", "NOT_EQUAL", b"next"),
            Compare(b"txn/lock", "MOD", "LESS", won.revision),
            Compare(b"txn/lock", "LEASE", "NOT_EQUAL", 0),
        ):
            result = await client.txn([compare], [Delete(b"txn/lock")])
            assert not result.succeeded and result.responses == (), compare
        assert (await client.range(b"txn/lock")).kvs[0].value == b"next"
        await closing(client, reactor)

    run(scenario)


# -- leases --------------------------------------------------------------------------------


def test_a_lease_keeps_its_keys_until_revoked_and_then_is_gone(etcd_single: Cluster) -> None:
    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_single.endpoints)
        lease, ttl = await client.lease_grant(30)
        assert lease > 0 and ttl == 30
        chosen, _ = await client.lease_grant(20, lease_id=4242)
        assert chosen == 4242
        await client.put(b"lease/a", b"1", lease=lease)
        assert (await client.range(b"lease/a")).kvs[0].lease == lease
        assert await client.lease_keepalive(lease) == 30
        assert 0 < await client.lease_ttl(lease) <= 30
        held = await client.txn([Compare(b"lease/a", "LEASE", "EQUAL", lease)], [])
        assert held.succeeded
        await client.lease_revoke(lease)
        assert (await client.range(b"lease/a")).kvs == ()
        assert await client.lease_keepalive(lease) == 0
        assert await client.lease_ttl(lease) == -1
        with pytest.raises(EtcdError, match="lease not found") as missing:
            await client.lease_revoke(lease)
        assert missing.value.code == 5
        await client.lease_revoke(chosen)
        await closing(client, reactor)

    run(scenario)


def test_a_lease_that_is_not_kept_alive_expires_with_its_keys(etcd_single: Cluster) -> None:
    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_single.endpoints)
        lease, _ = await client.lease_grant(1)
        await client.put(b"expire/a", b"1", lease=lease)

        async def gone() -> bool:
            return (await client.range(b"expire/a")).kvs == ()

        deadline = reactor.seconds() + 10
        while not await gone():
            assert reactor.seconds() < deadline, "the lease did not expire"
            await sleep(reactor, 0.1)
        assert await client.lease_keepalive(lease) == 0
        await closing(client, reactor)

    run(scenario)


# -- cluster -------------------------------------------------------------------------------


def test_members_and_status_describe_the_cluster(etcd_cluster: Cluster) -> None:
    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_cluster.endpoints)
        members = await client.members()
        assert sorted(m.name for m in members) == ["m1", "m2", "m3"]
        by_name = {m.name: m for m in members}
        for member in etcd_cluster.members:
            assert by_name[member.name].client_urls == (member.client_url,)
            assert by_name[member.name].peer_urls == (member.peer_url,)
        status = await client.status()
        assert status.leader in {m.id for m in members}
        assert status.member_id == by_name["m1"].id  # the first endpoint answered
        assert status.revision > 0 and status.raft_term > 0
        assert status.version.startswith("3.")
        await closing(client, reactor)

    run(scenario)


def test_a_call_moves_on_to_the_next_endpoint_and_stays_there(etcd_cluster: Cluster) -> None:
    dead = f"http://127.0.0.1:{etcd_cluster.members[0].peer_port + 10000}"

    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), [dead, *etcd_cluster.endpoints[1:]])
        await client.put(b"failover/a", b"1")
        assert client.endpoint == etcd_cluster.endpoints[1]
        m2 = [m.id for m in await client.members() if m.name == "m2"]
        assert [(await client.status()).member_id] == m2
        await closing(client, reactor)

    run(scenario)


def test_no_endpoint_answering_is_etcd_unavailable_naming_each(tmp_path: Path) -> None:
    from .etcd_cluster import free_port

    endpoints = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]

    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), endpoints, timeout=1.0)
        with pytest.raises(EtcdUnavailable) as unavailable:
            await client.put(b"a", b"1")
        assert not unavailable.value.maybe_applied
        assert {r.split("/v3")[0] for r in unavailable.value.reasons} == set(endpoints)
        assert "etcd unavailable: " in str(unavailable.value)
        await closing(client, reactor)

    run(scenario)


# -- watch ---------------------------------------------------------------------------------


def test_a_watch_sees_puts_and_deletes_with_previous_values(etcd_single: Cluster) -> None:
    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_single.endpoints)
        start = await client.put(b"w/a", b"1")  # before the watch: seen from history
        live = Recorder()
        history = Recorder()
        now = client.watch(
            b"w/", prefix_end(b"w/"), 0, live.on_events, live.on_compacted, live.on_connected
        )
        past = client.watch(b"w/", prefix_end(b"w/"), start, history.on_events, print)
        await until(reactor, lambda: live.connected == [True])
        await client.put(b"w/a", b"2")
        await client.put(b"outside", b"x")
        done = await client.txn([], [Put(b"w/b", b"3"), Delete(b"w/a")])
        await until(reactor, lambda: len(live.events) == 3 and len(history.events) == 4)
        assert [(e.type, e.kv.key, e.kv.value) for e in live.events] == [
            ("PUT", b"w/a", b"2"),
            ("PUT", b"w/b", b"3"),
            ("DELETE", b"w/a", b""),
        ]
        put, _, delete = live.events
        assert put.prev_kv is not None and put.prev_kv.value == b"1"
        assert delete.prev_kv is not None and delete.prev_kv.value == b"2"
        assert delete.kv.mod_revision == done.revision
        assert live.events[1].prev_kv is None
        assert history.events[0].kv.mod_revision == start
        assert history.events[1:] == live.events
        assert now.revision == past.revision == done.revision
        assert live.batches[-1][1] == done.revision
        now.stop()
        past.stop()
        await client.put(b"w/c", b"after stop")
        await sleep(reactor, 0.2)
        assert all(e.kv.key != b"w/c" for e in live.events + history.events)
        assert live.compacted == [] and live.connected == [True]
        await closing(client, reactor)

    run(scenario)


def test_a_watch_catching_up_on_history_reports_each_batch_s_own_revision(
    etcd_single: Cluster,
) -> None:
    """More history than etcd sends at once (1000 revisions): each batch's revision is
    that of its last event (etcd's header says the current revision, ahead of them)."""

    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_single.endpoints)
        first = await client.put(b"many/0", b"0")

        async def writes(worker: int) -> None:
            for i in range(worker, 1200, 8):
                await client.put(b"many/%d" % (i % 10), b"%d" % i)

        await DeferredList([Deferred.fromCoroutine(writes(w)) for w in range(8)])
        last = await client.put(b"many/last", b"")
        seen = Recorder()
        watcher = client.watch(b"many/", prefix_end(b"many/"), first, *seen.callbacks())
        await until(reactor, lambda: watcher.revision >= last)
        assert [e.kv.mod_revision for e in seen.events] == list(range(first, last + 1))
        assert len(seen.batches) > 1
        for events, revision in seen.batches:
            assert revision == events[-1].kv.mod_revision
        await closing(client, reactor)

    run(scenario)


def test_progress_notifications_carry_the_revision_past_writes_elsewhere(
    tmp_path: Path,
) -> None:
    """With etcd's periodic progress notification on, a watch on one prefix hears of
    revisions made outside it: an empty batch whose revision the watcher then holds."""
    flag = ["--experimental-watch-progress-notify-interval", "200ms"]
    cluster = Cluster(tmp_path, size=1, extra=flag).start()

    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), cluster.endpoints)
        seen = Recorder()
        start = await client.put(b"inside/a", b"1")
        watcher = client.watch(b"inside/", prefix_end(b"inside/"), start, *seen.callbacks())
        elsewhere = await client.put(b"outside/a", b"1")
        await until(reactor, lambda: watcher.revision >= elsewhere)
        assert [e.kv.mod_revision for e in seen.events] == [start]
        assert ([], watcher.revision) in seen.batches
        await closing(client, reactor)

    try:
        run(scenario)
    finally:
        cluster.stop()


def test_a_watch_from_a_compacted_revision_reports_it_and_stops(etcd_single: Cluster) -> None:
    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_single.endpoints)
        first = await client.put(b"c/a", b"1")
        latest = await client.put(b"c/a", b"2")
        await client.compact(latest)
        seen = Recorder()
        watcher = client.watch(b"c/", prefix_end(b"c/"), first, seen.on_events, seen.on_compacted)
        await watcher.done
        assert seen.compacted == [latest]
        assert seen.events == [] and watcher.stopped
        await closing(client, reactor)

    run(scenario)


def test_close_stops_every_watch(etcd_single: Cluster) -> None:
    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_single.endpoints)
        seen = Recorder()
        watcher = client.watch(b"x/", prefix_end(b"x/"), 0, seen.on_events, seen.on_compacted)
        await until(reactor, lambda: watcher.revision > 0)
        await closing(client, reactor)
        assert watcher.stopped

    run(scenario)


# -- failure -------------------------------------------------------------------------------


def test_a_watch_resumes_without_missing_an_event_when_its_member_is_killed(
    etcd_cluster: Cluster,
) -> None:
    """Writes go on while the watched member is killed -9: the watch moves to another
    member, says it was down and up again, and every revision arrives once, in order."""

    async def scenario(reactor: EPollReactor) -> None:
        writer = EtcdClient(hp(reactor), etcd_cluster.endpoints[::-1])
        client = EtcdClient(hp(reactor), etcd_cluster.endpoints)
        seen = Recorder()
        start = await writer.put(b"resume/0", b"0")
        watcher = client.watch(
            b"resume/",
            prefix_end(b"resume/"),
            start,
            seen.on_events,
            seen.on_compacted,
            seen.on_connected,
        )
        await until(reactor, lambda: seen.connected == [True])
        victim = etcd_cluster.member_at(watcher.endpoint)
        written = [start]
        for i in range(1, 61):
            if i == 20:
                victim.kill()
            written.append(await writer.put(b"resume/%d" % (i % 7), b"%d" % i))
            await sleep(reactor, 0.01)
        await until(reactor, lambda: watcher.revision >= written[-1])
        assert watcher.endpoint != victim.client_url
        assert [e.kv.mod_revision for e in seen.events] == written
        assert [e.kv.value for e in seen.events] == [b"%d" % i for i in range(61)]
        assert seen.connected == [True, False, True]
        watcher.stop()
        await closing(client, reactor)
        await closing(writer, reactor)

    try:
        run(scenario)
    finally:
        etcd_cluster.heal()


def test_a_watch_leaves_a_member_that_hangs_and_misses_nothing(etcd_cluster: Cluster) -> None:
    """The watched member is stopped (SIGSTOP: its connection stays open, silent): the
    watch notices by its status probe, moves to another member and resumes."""

    async def scenario(reactor: EPollReactor) -> None:
        writer = EtcdClient(hp(reactor), etcd_cluster.endpoints[::-1])
        client = EtcdClient(hp(reactor), etcd_cluster.endpoints, timeout=1.0)
        seen = Recorder()
        start = await writer.put(b"hang/0", b"0")
        watcher = client.watch(b"hang/", prefix_end(b"hang/"), start, *seen.callbacks())
        await until(reactor, lambda: seen.connected == [True])
        victim = etcd_cluster.member_at(watcher.endpoint)
        victim.pause()
        try:
            written = [start] + [await writer.put(b"hang/%d" % i, b"%d" % i) for i in range(1, 9)]
            await until(reactor, lambda: watcher.revision >= written[-1])
        finally:
            victim.resume()
        assert [e.kv.mod_revision for e in seen.events] == written
        assert seen.connected == [True, False, True]
        assert watcher.endpoint != victim.client_url
        await closing(client, reactor)
        await closing(writer, reactor)

    try:
        run(scenario)
    finally:
        etcd_cluster.heal()


def test_a_transaction_sent_to_a_member_that_hangs_is_not_sent_again(
    etcd_cluster: Cluster,
) -> None:
    """The first member takes the connection but never answers (SIGSTOP): a put moves on
    to the next member, a transaction gives up with maybe_applied (it may have been
    applied, and a second try could then fail its compare), and nothing is half-done."""
    hung = etcd_cluster.members[0]

    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_cluster.endpoints, timeout=3.0)
        other = EtcdClient(hp(reactor), etcd_cluster.endpoints[1:])
        hung.pause()
        try:
            await client.put(b"hung/a", b"1")
            assert client.endpoint == etcd_cluster.endpoints[1]
            client.preferred = 0
            with pytest.raises(EtcdUnavailable) as unavailable:
                await client.txn([], [Put(b"hung/b", b"1")])
            assert unavailable.value.maybe_applied
            assert len(unavailable.value.reasons) == 1
            assert (await other.range(b"hung/b")).kvs == ()
            assert (await other.range(b"hung/a")).kvs[0].value == b"1"
        finally:
            hung.resume()
        await closing(client, reactor)
        await closing(other, reactor)

    try:
        run(scenario)
    finally:
        etcd_cluster.heal()


def test_a_watch_says_it_is_down_while_there_is_no_quorum_and_resumes_after(
    etcd_cluster: Cluster,
) -> None:
    """The two members the watch is not on are killed: its member has no leader, so the
    watch reports on_connected(False) (its data may be stale); once they are back it
    reports True and sees what is written next, after what it saw before."""

    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_cluster.endpoints, timeout=1.0)
        seen = Recorder()
        start = await client.put(b"quorum-watch/a", b"1")
        watcher = client.watch(
            b"quorum-watch/", prefix_end(b"quorum-watch/"), start, *seen.callbacks()
        )
        await until(reactor, lambda: seen.connected == [True] and len(seen.events) == 1)
        watched = etcd_cluster.member_at(watcher.endpoint)
        for member in etcd_cluster.members:
            if member is not watched:
                member.kill()
        await until(reactor, lambda: seen.connected == [True, False])
        etcd_cluster.heal()
        await until(reactor, lambda: seen.connected == [True, False, True])
        latest = await client.put(b"quorum-watch/a", b"2")
        await until(reactor, lambda: watcher.revision >= latest)
        assert [e.kv.value for e in seen.events] == [b"1", b"2"]
        await closing(client, reactor)

    try:
        run(scenario)
    finally:
        etcd_cluster.heal()


def test_one_member_down_changes_nothing_for_the_client(etcd_cluster: Cluster) -> None:
    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_cluster.endpoints)
        await client.put(b"one-down/a", b"1")
        etcd_cluster.members[0].kill()
        revision = await client.put(b"one-down/a", b"2")
        assert (await client.range(b"one-down/a")).kvs[0].value == b"2"
        result = await client.txn([Compare(b"one-down/a", "MOD", "EQUAL", revision)], [])
        assert result.succeeded
        lease, _ = await client.lease_grant(10)
        assert await client.lease_keepalive(lease) == 10
        await client.lease_revoke(lease)
        assert len(await client.members()) == 3
        assert (await client.status()).revision >= revision
        assert await client.delete(b"one-down/a") == (1, revision + 1)
        await closing(client, reactor)

    try:
        run(scenario)
    finally:
        etcd_cluster.heal()


def test_without_a_quorum_writes_fail_within_the_timeout_and_local_reads_answer(
    etcd_cluster: Cluster,
) -> None:
    """Two of three members killed: a put or a transaction raises EtcdUnavailable within
    the client's timeout (never hangs), a serializable read still answers from the
    survivor, and once the members are back the same client writes again.  A write
    refused by every member (not maybe_applied) never shows up later; one that reached
    the survivor while it still led may (etcd commits what its log holds)."""

    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(hp(reactor), etcd_cluster.endpoints, timeout=3.0)
        revision = await client.put(b"quorum/a", b"1")
        for member in etcd_cluster.members[:2]:
            member.kill()
        with pytest.raises(EtcdUnavailable) as put:
            await client.put(b"quorum/a", b"2")
        with pytest.raises(EtcdUnavailable) as txn:
            await client.txn([], [Put(b"quorum/a", b"3")])
        local = await client.range(b"quorum/a", serializable=True)
        assert [kv.value for kv in local.kvs] == [b"1"] and local.revision >= revision
        etcd_cluster.heal()
        possible = {b"1"}
        possible |= {b"2"} if put.value.maybe_applied else set()
        possible |= {b"3"} if txn.value.maybe_applied else set()
        assert (await client.range(b"quorum/a")).kvs[0].value in possible
        assert await client.put(b"quorum/a", b"4") > revision
        await closing(client, reactor)

    try:
        run(scenario)
    finally:
        etcd_cluster.heal()


# -- TLS -----------------------------------------------------------------------------------


def _certificates(directory: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate (PEM)."""
    now = datetime.datetime.now(datetime.UTC)

    def make(
        name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, ca: bool
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name, issuer_key = issuer if issuer else (subject, key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256()), key

    ca_cert, ca_key = make("homeport test CA", None, True)
    paths: dict[str, Path] = {}
    for name, (cert, key) in {
        "ca": (ca_cert, ca_key),
        "server": make("etcd", (ca_cert.subject, ca_key), False),
        "client": make("homeport", (ca_cert.subject, ca_key), False),
    }.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}-key"] = directory / f"{name}-key.pem"
        paths[f"{name}-key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths


def test_tls_to_etcd_verifies_the_member_and_presents_a_client_certificate(
    tmp_path: Path,
) -> None:
    pem = _certificates(tmp_path)
    tls = ["--cert-file", str(pem["server"]), "--key-file", str(pem["server-key"])]
    tls += ["--trusted-ca-file", str(pem["ca"]), "--client-cert-auth"]
    cluster = Cluster(tmp_path, size=1, extra=tls).start()
    (endpoint,) = cluster.endpoints
    assert endpoint.startswith("https://")

    async def scenario(reactor: EPollReactor) -> None:
        client = EtcdClient(
            hp(reactor), [endpoint], ca=pem["ca"], cert=pem["client"], key=pem["client-key"]
        )
        await client.put(b"tls/a", b"1")
        seen = Recorder()
        watcher = client.watch(b"tls/", prefix_end(b"tls/"), 0, seen.on_events, print)
        await until(reactor, lambda: watcher.revision > 0)
        await client.put(b"tls/a", b"2")
        await until(reactor, lambda: len(seen.events) == 1)
        await closing(client, reactor)
        anonymous = EtcdClient(hp(reactor), [endpoint], ca=pem["ca"], timeout=1.0)
        with pytest.raises(EtcdUnavailable):
            await anonymous.range(b"tls/a")
        await closing(anonymous, reactor)
        untrusting = EtcdClient(
            hp(reactor), [endpoint], cert=pem["client"], key=pem["client-key"], timeout=1.0
        )
        with pytest.raises(EtcdUnavailable):
            await untrusting.range(b"tls/a")
        await closing(untrusting, reactor)

    try:
        run(scenario)
    finally:
        cluster.stop()
