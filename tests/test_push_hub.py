"""The event hub in memory: ids, subscriptions, bounded and persisted history, and the
pure parts of the transports (SSE framing, ZeroMQ shapes, Socket.IO packets, log filters)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from homeport.logs.query import parse_query
from homeport.push.hub import (
    BadTopic,
    Event,
    Hub,
    HubService,
    IEventHistory,
    MemoryHistory,
    SQLiteHistory,
    check_topic,
)
from homeport.push.logfilter import record_matches
from homeport.push.socketio import ProtocolError, decode_socketio, encode_socketio
from homeport.push.sse import chunk, sse_frame
from homeport.push.zmq import BadMessage, parse_message


def collect(hub: Hub, *patterns: str) -> list[Event]:
    got: list[Event] = []
    hub.subscribe(patterns, got.append)
    return got


def test_ids_increase_and_events_carry_topic_data_and_time() -> None:
    """Each published event gets the next integer id and the hub's clock time."""
    clock = Clock()
    clock.advance(1000)
    hub = Hub(MemoryHistory(), clock.seconds)
    first = hub.publish("a", {"x": 1})
    clock.advance(5)
    second = hub.publish("b", "text")
    assert (first.id, first.topic, first.data, first.time) == (1, "a", {"x": 1}, 1000)
    assert (second.id, second.time) == (2, 1005)
    assert hub.last_id == 2


def test_subscriptions_match_exact_topics_and_prefixes_with_a_star() -> None:
    """``zmq/*`` gets every zmq/ topic, ``catalog`` only itself, ``*`` everything."""
    hub = Hub()
    exact = collect(hub, "catalog")
    prefix = collect(hub, "zmq/*")
    everything = collect(hub, "*")
    for topic in ("catalog", "catalogue", "zmq/build", "zmq/", "kv"):
        hub.publish(topic, None)
    assert [e.topic for e in exact] == ["catalog"]
    assert [e.topic for e in prefix] == ["zmq/build", "zmq/"]
    assert len(everything) == 5


def test_a_subscriber_matching_twice_gets_an_event_once() -> None:
    """Overlapping patterns of one subscription deliver each event once."""
    hub = Hub()
    got = collect(hub, "zmq/a", "zmq/*", "*")
    hub.publish("zmq/a", 1)
    assert [e.id for e in got] == [1]


def test_a_cancelled_subscription_gets_nothing_more() -> None:
    hub = Hub()
    got: list[Event] = []
    sub = hub.subscribe(["t", "u*"], got.append)
    hub.publish("t", 1)
    sub.cancel()
    hub.publish("t", 2)
    hub.publish("ux", 3)
    assert [e.data for e in got] == [1]
    assert hub.subscriber_count() == 0


def test_a_failing_subscriber_does_not_stop_delivery_to_others() -> None:
    hub = Hub()

    def broken(event: Event) -> None:
        raise RuntimeError("boom")

    hub.subscribe(["t"], broken)
    got = collect(hub, "t")
    hub.publish("t", 1)
    assert len(got) == 1
    assert hub.subscriber_errors == 1


@pytest.mark.parametrize("bad", ["", "a*b", "*x", "tab\there", "x" * 201])
def test_unusable_topics_are_refused(bad: str) -> None:
    with pytest.raises(BadTopic):
        check_topic(bad, pattern=True)


def test_a_star_ends_only_patterns_not_topics() -> None:
    assert check_topic("zmq/*", pattern=True) == "zmq/*"
    with pytest.raises(BadTopic):
        check_topic("zmq/*")


class HistoryContract:
    """What every IEventHistory does; run against each implementation."""

    def make(self, tmp_path: Path, **kw: int) -> IEventHistory:
        raise NotImplementedError

    def test_it_provides_the_interface(self, tmp_path: Path) -> None:
        assert verifyObject(IEventHistory, self.make(tmp_path))

    def test_resume_returns_later_events_on_matching_topics_in_order(self, tmp_path: Path) -> None:
        """After id N: the matching events newer than N, oldest first."""
        hub = Hub(self.make(tmp_path))
        for i, topic in enumerate(["a", "b", "zmq/x", "a", "zmq/y", "b"]):
            hub.publish(topic, i)
        assert [e.id for e in hub.replay(1, ["a", "zmq/*"])] == [3, 4, 5]
        assert [e.id for e in hub.replay(0, ["b"])] == [2, 6]
        assert hub.replay(6, ["*"]) == []

    def test_history_is_bounded_per_topic(self, tmp_path: Path) -> None:
        """Only the newest ``per_topic`` events of a topic are kept."""
        hub = Hub(self.make(tmp_path, per_topic=3))
        for i in range(10):
            hub.publish("a", i)
        hub.publish("b", "x")
        assert [e.data for e in hub.replay(0, ["a"])] == [7, 8, 9]
        assert hub.history.oldest_id(["a"]) == 8
        assert [e.data for e in hub.replay(0, ["b"])] == ["x"]

    def test_history_is_bounded_in_total_across_many_topics(self, tmp_path: Path) -> None:
        """A flood of distinct topics keeps at most ``total`` events."""
        hub = Hub(self.make(tmp_path, per_topic=10, total=50))
        for i in range(1000):
            hub.publish(f"zmq/t{i}", i)
        kept = hub.replay(0, ["*"])
        assert len(kept) <= 50
        assert kept[-1].data == 999

    def test_history_is_bounded_in_bytes(self, tmp_path: Path) -> None:
        hub = Hub(self.make(tmp_path, total_bytes=100_000))
        for i in range(100):
            hub.publish("big", "x" * 10_000 + str(i))
        kept = hub.replay(0, ["big"])
        assert 0 < len(kept) <= 10
        assert kept[-1].data.endswith("99")

    @pytest.mark.parametrize(
        ("batches", "bounds"),
        [
            ([3, 1, 4], {}),  # under every bound
            ([2, 9, 1, 12], {"per_topic": 5}),  # batches longer than the topic keeps
            ([7, 7, 7], {"per_topic": 10, "total": 12}),
            ([4, 4, 4], {"total_bytes": 1500}),
        ],
    )
    def test_publishing_a_batch_keeps_what_publishing_each_would(
        self, tmp_path: Path, batches: list[int], bounds: dict[str, int]
    ) -> None:
        """publish_many on a topic: the same ids, kept events and oldest ids as publish
        one by one, and each subscriber hears every event once, in order."""
        one = Hub(self.make(tmp_path / "one", **bounds))
        many = Hub(self.make(tmp_path / "many", **bounds))
        heard: dict[str, list[int]] = {"exact": [], "prefix": [], "other": []}
        many.subscribe(["logs"], lambda e: heard["exact"].append(e.id))
        many.subscribe(["lo*"], lambda e: heard["prefix"].append(e.id))
        many.subscribe(["zmq/*"], lambda e: heard["other"].append(e.id))
        n = 0
        for size in batches:
            one.publish("other", "x" * 100)
            many.publish("other", "x" * 100)
            items = [({"n": n + k, "pad": "y" * 80}, None) for k in range(size)]
            for data, _ in items:
                one.publish("logs", data)
            events = many.publish_many("logs", items)
            assert [e.data for e in events] == [data for data, _ in items]
            n += size
        assert many.last_id == one.last_id
        for patterns in (["logs"], ["other"], ["*"]):
            assert [(e.id, e.data) for e in many.replay(0, patterns)] == [
                (e.id, e.data) for e in one.replay(0, patterns)
            ]
            assert many.history.oldest_id(patterns) == one.history.oldest_id(patterns)
        logs_ids = [e.id for e in one.replay(0, ["logs"])]
        assert heard["exact"] == heard["prefix"]
        assert heard["exact"][-len(logs_ids) :] == logs_ids
        assert len(heard["exact"]) == sum(batches) and heard["other"] == []

    def test_a_batch_carries_the_text_its_publisher_made(self, tmp_path: Path) -> None:
        hub = Hub(self.make(tmp_path))
        (event,) = hub.publish_many("logs", [({"a": 1}, '{"a":1}')])
        assert event.data_text() == '{"a":1}'
        assert hub.publish_many("logs", []) == []
        assert hub.last_id == 1

    def test_after_a_flush_nothing_is_left_to_write(self, tmp_path: Path) -> None:
        """flush() writes what is pending; then prepare() has no batch, and flush() no events."""
        history = self.make(tmp_path)
        hub = Hub(history)
        hub.publish("a", 1)
        assert history.flush() >= 0
        assert history.prepare() is None
        assert history.flush() == 0
        assert [e.data for e in hub.replay(0, ["a"])] == [1]

    def test_the_service_runs_on_a_clock_and_leaves_it_clean(self, tmp_path: Path) -> None:
        """HubService flushes any history on its timer and cancels the timer at stop."""
        clock = Clock()
        hub = Hub(self.make(tmp_path), clock.seconds)
        service = HubService(hub, clock, interval=0.25)
        service.startService()
        hub.publish("a", 1)
        clock.advance(0.25)
        assert service.stopService() is None
        assert not clock.getDelayedCalls()


def test_events_trimmed_from_a_topic_are_not_held_anywhere() -> None:
    """A flood on one topic leaves only the kept events alive (bounded memory)."""
    hub = Hub(MemoryHistory(per_topic=2))
    refs = [weakref.ref(hub.publish("flood", "x" * 100)) for _ in range(50)]
    gc.collect()
    assert sum(ref() is not None for ref in refs) == 2


class TestMemoryHistory(HistoryContract):
    def make(self, tmp_path: Path, **kw: int) -> IEventHistory:
        return MemoryHistory(**kw)


class TestSQLiteHistory(HistoryContract):
    def make(self, tmp_path: Path, **kw: int) -> IEventHistory:
        return SQLiteHistory(tmp_path / "events.sqlite3", **kw)

    def test_history_and_ids_survive_reopening(self, tmp_path: Path) -> None:
        """A restart resumes from the stored history and goes on numbering after it."""
        hub = Hub(SQLiteHistory(tmp_path / "events.sqlite3", per_topic=2))
        for i in range(5):
            hub.publish("a", {"n": i})
        hub.history.close()
        again = Hub(SQLiteHistory(tmp_path / "events.sqlite3", per_topic=2))
        assert [(e.id, e.data) for e in again.replay(0, ["a"])] == [(4, {"n": 3}), (5, {"n": 4})]
        assert again.publish("a", None).id == 6

    def test_ids_keep_growing_after_every_event_was_trimmed(self, tmp_path: Path) -> None:
        history = SQLiteHistory(tmp_path / "events.sqlite3", per_topic=1, total=1)
        hub = Hub(history)
        for i in range(3):
            hub.publish(f"t{i}", i)
        history.close()
        assert Hub(SQLiteHistory(tmp_path / "events.sqlite3")).publish("x", 0).id == 4

    def test_logs_events_stay_in_memory_but_their_ids_are_never_reused(
        self, tmp_path: Path
    ) -> None:
        """``logs`` events (records already in logs.sqlite3) are replayed from memory and
        not written to the file; the last id they took is, so numbering goes on after."""
        path = tmp_path / "events.sqlite3"
        history = SQLiteHistory(path)
        hub = Hub(history)
        hub.publish("a", 0)
        for i in range(3):
            hub.publish("logs", {"message": str(i)})
        assert [e.id for e in hub.replay(0, ["logs"])] == [2, 3, 4]
        history.close()
        again = Hub(SQLiteHistory(path))
        assert [e.data for e in again.replay(0, ["*"])] == [0]
        assert again.publish("logs", {}).id == 5

    def test_a_batch_is_prepared_here_and_written_in_one_go(self, tmp_path: Path) -> None:
        """prepare() takes the pending events as one batch; write() stores them all."""
        path = tmp_path / "events.sqlite3"
        history = SQLiteHistory(path)
        hub = Hub(history)
        for i in range(3):
            hub.publish("a", i)
        batch = history.prepare()
        assert batch is not None and batch.count == 3 and batch.last_id == 3
        assert history.prepare() is None
        assert SQLiteHistory(path).last_id() == 0
        assert history.write(batch) == 3
        assert [e.data for e in Hub(SQLiteHistory(path)).replay(0, ["a"])] == [0, 1, 2]

    def test_the_service_flushes_on_a_timer_and_at_stop(self, tmp_path: Path) -> None:
        """Pending events reach the file within a flush interval, and all of them at stop."""
        path = tmp_path / "events.sqlite3"
        clock = Clock()
        history = SQLiteHistory(path)
        hub = Hub(history, clock.seconds)
        service = HubService(hub, clock, interval=0.25)
        service.startService()
        hub.publish("a", 1)
        assert SQLiteHistory(path).last_id() == 0
        clock.advance(0.25)
        assert SQLiteHistory(path).last_id() == 1
        hub.publish("a", 2)
        service.stopService()
        assert SQLiteHistory(path).last_id() == 2
        assert not clock.getDelayedCalls()


def test_sse_frames_have_id_event_and_one_data_line_per_payload_line() -> None:
    """Frames also carry the publish time in a ``time:`` field, which EventSource ignores."""
    frame = sse_frame(Event(7, "zmq/build", "line one\nline two\r\nthree", 0.0))
    assert frame == (
        b"id: 7\nevent: zmq/build\ntime: 0.000\ndata: line one\ndata: line two\ndata: three\n\n"
    )
    assert sse_frame(Event(8, "kv", {"key": "a"}, 1795318829.6292)) == (
        b'id: 8\nevent: kv\ntime: 1795318829.629\ndata: {"key":"a"}\n\n'
    )
    assert chunk(b"hello") == b"5\r\nhello\r\n"


def test_an_event_is_encoded_once_per_transport() -> None:
    event = Event(1, "t", "x", 0.0)
    calls: list[int] = []

    def frame(_: Event) -> bytes:
        calls.append(1)
        return b"frame"

    for _ in range(3):
        assert event.cached("k", frame) == b"frame"
    assert len(calls) == 1


def test_zmq_multipart_and_single_frame_messages_become_zmq_topics() -> None:
    assert parse_message([b"build", b'{"ok": true}']) == ("zmq/build", {"ok": True})
    assert parse_message([b"sensor temp=21.5 unit=C"]) == ("zmq/sensor", "temp=21.5 unit=C")
    assert parse_message([b"job", b"a", b"b"]) == ("zmq/job", ["a", "b"])
    assert parse_message([b"t", b"\xff\xfe"]) == ("zmq/t", {"base64": "//4="})
    assert parse_message([b"heartbeat"]) == ("zmq/heartbeat", "")


@pytest.mark.parametrize(
    "frames", [[b"\xff\xfe", b"x"], [b" leading space"], [b""], [b"a\x01b", b"x"], []]
)
def test_zmq_messages_of_other_shapes_are_refused(frames: list[bytes]) -> None:
    with pytest.raises(BadMessage):
        parse_message(frames)


def test_socketio_packets_decode_and_encode() -> None:
    assert decode_socketio("0") == (0, 0, "/", None, None)
    assert decode_socketio('2["subscribe","a"]') == (2, 0, "/", None, ["subscribe", "a"])
    assert decode_socketio('2/admin,12["e",1]') == (2, 0, "/admin", 12, ["e", 1])
    assert decode_socketio('51-["e",{"_placeholder":true,"num":0}]')[:2] == (5, 1)
    assert encode_socketio(3, [{"ok": 1}], ack=4) == '34[{"ok":1}]'
    assert encode_socketio(4, {"message": "x"}, nsp="/n") == '4/n,{"message":"x"}'
    for bad in ("", "x", "9", "2[oops", "5[]"):
        with pytest.raises(ProtocolError):
            decode_socketio(bad)


def test_live_log_records_obey_the_same_filters_as_a_search() -> None:
    """level is a minimum, logger a prefix, q word prefixes, field.X equality."""
    record = {
        "levelno": 30,
        "name": "app.db",
        "message": "Slow query on orders_table took 3s",
        "created": 1000.0,
        "extra": {"user": "ann", "n": 3},
    }

    def passes(**args: str) -> bool:
        return record_matches(parse_query({k: [v] for k, v in args.items()}, 2000.0), record)

    assert passes(level="WARNING", logger="app")
    assert not passes(level="ERROR")
    assert not passes(logger="web")
    assert passes(q="slow ORD")
    assert passes(q="table")  # '_' separates words, as in FTS5
    assert not passes(q="fast")
    assert passes(**{"field.user": "ann", "field.n": "3"})
    assert not passes(**{"field.user": "bob"})
    assert passes(since="999", until="1001")
    assert not passes(since="1001")
