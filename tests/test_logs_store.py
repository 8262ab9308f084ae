"""Storing, searching and pruning log records in a real SQLite file (no daemon)."""

from __future__ import annotations

import datetime
import io
import json
import queue
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from homeport.logs import writer, writers
from homeport.logs.database import LogDatabase, encode_value
from homeport.logs.query import BadQuery, LogQuery, parse_query, parse_time
from homeport.logs.record import Record, record_from_fields, records_from_body
from homeport.logs.retention import RetentionError, RetentionService, parse_retention
from homeport.logs.store import LogStore, Stored

T0 = 1_800_000_000.0


def rec(
    message: str, created: float = T0, level: int = 20, name: str = "app", **extra: Any
) -> Record:
    return record_from_fields(
        {"msg": message, "created": created, "levelno": level, "name": name, **extra}, T0
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[LogDatabase]:
    database = LogDatabase(tmp_path / "logs.sqlite3")
    yield database
    database.close()


def find(db: LogDatabase, **args: str) -> list[dict[str, Any]]:
    query = parse_query({k.replace("__", "."): [v] for k, v in args.items()}, now=T0 + 3600)
    records: list[dict[str, Any]] = db.search(query)["records"]
    return records


def messages(db: LogDatabase, **args: str) -> list[str]:
    return [r["message"] for r in find(db, **args)]


def test_records_get_increasing_ids_and_read_back_with_every_field(db: LogDatabase) -> None:
    ids = db.insert([rec("one", user="ann"), rec("two", exc_text="Traceback...\nKeyError: 'x'")])
    assert ids == [1, 2]
    newest, oldest = find(db)
    assert newest["id"] == 2 and newest["exc_text"].endswith("KeyError: 'x'")
    assert oldest["extra"] == {"user": "ann"}
    assert oldest["name"] == "app" and oldest["levelname"] == "INFO"


def test_ids_are_never_reused_after_pruning_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "logs.sqlite3"
    first = LogDatabase(path)
    first.insert([rec("a"), rec("b")])
    assert first.prune_all(cutoff=T0 + 1, max_records=None) == 2
    first.close()
    again = LogDatabase(path)
    assert again.insert([rec("c")]) == [3]
    again.close()


def test_level_is_a_minimum_given_as_a_number_or_a_name(db: LogDatabase) -> None:
    db.insert([rec("dbg", level=10), rec("warn", level=30), rec("err", level=40)])
    assert messages(db, level="warning") == ["err", "warn"]
    assert messages(db, level="40") == ["err"]


def test_logger_matches_by_prefix(db: LogDatabase) -> None:
    db.insert([rec("a", name="app"), rec("b", name="app.worker"), rec("c", name="db")])
    assert messages(db, logger="app") == ["b", "a"]
    assert messages(db, logger="app.w") == ["b"]


def test_text_search_needs_every_word_as_a_word_prefix_in_message_or_traceback(
    db: LogDatabase,
) -> None:
    db.insert(
        [
            rec("Mapper failed on shard 7"),
            rec("mapping done"),
            rec("worker crashed", exc_text="Traceback\nZeroDivisionError: division by zero"),
            rec("Grüße aus Köln"),
        ]
    )
    assert messages(db, q="map") == ["mapping done", "Mapper failed on shard 7"]
    assert messages(db, q="mapper shard") == ["Mapper failed on shard 7"]
    assert messages(db, q="ZeroDivisionError") == ["worker crashed"]
    assert messages(db, q="köln") == ["Grüße aus Köln"]
    assert messages(db, q='"quoted" OR NEAR(') == []  # FTS syntax is data, not query


def test_since_and_until_take_iso_times_epoch_seconds_and_relative_ages(db: LogDatabase) -> None:
    db.insert([rec("old", created=T0 - 7200), rec("mid", created=T0 - 600), rec("new", created=T0)])
    assert messages(db, since=str(T0 - 700)) == ["new", "mid"]
    # "now" is T0 + 3600 in find(): 1h10m ago is T0 - 600
    assert messages(db, since="1h11m", until="1h5m") == ["mid"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 - 7200))
    assert messages(db, until=iso) == ["old"]
    assert parse_time("2026-11-20T16:16:00+01:00", 0) == parse_time("2026-11-20 15:16:00", 0)


def test_field_filters_match_extra_and_standard_fields_as_text(db: LogDatabase) -> None:
    db.insert([rec("a", user="ann", n=3), rec("b", user="bob"), rec("c", funcName="handle")])
    assert messages(db, field__user="bob") == ["b"]
    assert messages(db, field__n="3") == ["a"]
    assert messages(db, field__funcName="handle") == ["c"]
    assert messages(db, field__name="app", field__user="ann") == ["a"]


def test_pages_follow_the_after_cursor_in_either_order(db: LogDatabase) -> None:
    db.insert([rec(f"m{i}") for i in range(7)])
    query = parse_query({"limit": ["3"]}, T0)
    seen: list[str] = []
    while True:
        page = db.search(query)
        seen += [r["message"] for r in page["records"]]
        if page["next_after"] is None:
            break
        query = parse_query({"limit": ["3"], "after": [str(page["next_after"])]}, T0)
    assert seen == [f"m{i}" for i in reversed(range(7))]
    assert messages(db, order="asc", after="5") == ["m5", "m6"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("level", "loud"),
        ("since", "yesterday-ish"),
        ("limit", "0"),
        ("after", "x"),
        ("order", "up"),
    ],
)
def test_unusable_query_values_are_refused_naming_the_parameter(name: str, value: str) -> None:
    with pytest.raises(BadQuery) as caught:
        parse_query({name: [value]}, T0)
    assert caught.value.name == name


def test_text_search_uses_the_full_text_index(db: LogDatabase) -> None:
    from homeport.logs.query import build_sql

    sql, params = build_sql(LogQuery(text="mapper", min_level=30))
    plan = " ".join(str(row) for row in db.db.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert "logs_fts VIRTUAL TABLE" in plan
    assert "SCAN logs " not in plan + " "


def test_pruning_removes_records_older_than_the_cutoff_or_beyond_the_count(
    db: LogDatabase,
) -> None:
    db.insert([rec(f"m{i}", created=T0 + i) for i in range(10)])
    assert db.prune_all(cutoff=T0 + 3, max_records=None) == 3
    assert db.prune_all(cutoff=None, max_records=5) == 2
    assert messages(db, order="asc") == ["m5", "m6", "m7", "m8", "m9"]
    assert messages(db, q="m3") == []  # the text index forgets pruned records too


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", (7 * 86400.0, None)),
        ("12h,1000000", (43200.0, 1_000_000)),
        ("500", (None, 500)),
        ("none", (None, None)),
    ],
)
def test_retention_reads_an_age_a_count_or_both(
    text: str, expected: tuple[float | None, int | None]
) -> None:
    assert parse_retention(text) == expected


@pytest.mark.parametrize("text", ["7x", "1d,2d", "-3d", "0d"])
def test_unreadable_retention_values_are_refused(text: str) -> None:
    with pytest.raises(RetentionError):
        parse_retention(text)


def test_retention_prunes_by_age_on_its_clock_every_interval(db: LogDatabase) -> None:
    clock = Clock()
    clock.advance(T0)
    db.insert([rec("old", created=T0 - 100), rec("new", created=T0 - 10)])

    def prune(cutoff: float | None, max_records: int | None) -> Deferred[int]:
        return succeed(db.prune_all(cutoff, max_records))

    service = RetentionService(prune, clock, max_age=50, max_records=None, interval=60)
    service.startService()
    assert messages(db) == ["new"]  # pruned once at start
    clock.advance(30)
    assert messages(db) == ["new"]  # T0-10 is 40 s old: kept
    clock.advance(30)
    assert messages(db) == []  # the next round, 70 s old
    assert service.pruned == 2
    service.stopService()
    assert clock.getDelayedCalls() == []


class ThreadReactor:
    """Just enough reactor for LogStore outside a running reactor: calls made from the
    writer thread are queued and run when the test pumps them."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.calls.put((f, args))

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        self.calls.put((f, args))  # soon enough for these tests

    def seconds(self) -> float:
        return time.time()

    def pump(self, until: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            f, args = self.calls.get(timeout=max(0.01, deadline - time.monotonic()))
            f(*args)


def test_concurrent_requests_share_one_commit_and_hear_back_only_after_it(tmp_path: Path) -> None:
    reactor = ThreadReactor()
    stored: Stored = []
    store = LogStore(
        tmp_path / "logs.sqlite3",
        reactor,
        listeners=[stored.extend],
    )
    store.startService()
    answers: dict[int, list[int] | BaseException] = {}

    def answer(n: int) -> Callable[[list[int] | BaseException], None]:
        return lambda result: answers.__setitem__(n, result)

    for n in range(20):
        store.add([rec(f"r{n}")], answer(n))
    reactor.pump(lambda: len(answers) == 20)
    assert sorted(i for ids in answers.values() if isinstance(ids, list) for i in ids) == list(
        range(1, 21)
    )
    assert [id for id, _, _, _ in stored] == list(range(1, 21))
    # listeners get each record's JSON value and its text: the stored body, the event
    # feed's data
    for id, record, value, text in stored:
        assert json.loads(text) == value == record.to_json(id)
    # every answer came after the commit: a fresh connection sees all 20
    check = sqlite3.connect(tmp_path / "logs.sqlite3")
    assert check.execute("SELECT count(*) FROM logs").fetchone()[0] == 20
    assert [json.loads(b) for (b,) in check.execute("SELECT body FROM logs ORDER BY id")] == [
        json.loads(text) for _, _, _, text in stored
    ]
    check.close()
    assert store.commits == 2  # 16 handed over at once, then the 4 that waited for them
    stopping = store.stopService()
    reactor.pump(lambda: stopping.called)


def test_the_writer_child_answers_each_frame_in_order_and_reports_errors(tmp_path: Path) -> None:
    """The child's loop (``python -m homeport.logs.writer``) on in-memory pipes: an
    insert, a frame it cannot run and a prune each get their answer, in order."""
    path = tmp_path / "logs.sqlite3"
    parent = LogDatabase(path)  # the daemon's side: ids and texts
    batch = parent.prepare([rec("one"), rec("two", created=T0 - 10 * 86400)])
    frames = (
        writer.insert_frame(batch.param())
        + writer.insert_frame("[not json")
        + writer.job_frame("prune", [T0 - 86400, None])
    )
    out = io.BytesIO()
    writer.serve(path, io.BytesIO(frames), out)
    answers = []
    data = out.getvalue()
    while data:
        kind, length = writer.HEADER.unpack_from(data)
        answers.append((kind, data[writer.HEADER.size : writer.HEADER.size + length]))
        data = data[writer.HEADER.size + length :]
    assert answers[0] == (b"K", b"null")
    assert answers[1][0] == b"E" and b"malformed JSON" in answers[1][1]
    assert answers[2] == (b"K", b"1")  # "two" was older than a day
    assert messages(parent) == ["one"]
    parent.close()


def test_the_writer_child_stops_at_the_end_of_its_input_and_ignores_sigterm(
    tmp_path: Path,
) -> None:
    path = tmp_path / "logs.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-m", "homeport.logs.writer", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    batch = LogDatabase(path).prepare([rec("kept")])
    child.stdin.write(writer.insert_frame(batch.param()))
    child.stdin.flush()
    assert child.stdout.read(writer.HEADER.size + 4) == writer.HEADER.pack(b"K", 4) + b"null"
    child.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    assert child.poll() is None  # the daemon, not a signal, ends it
    child.stdin.close()
    assert child.wait(10) == 0
    check = sqlite3.connect(path)
    assert check.execute("SELECT message FROM logs").fetchall() == [("kept",)]
    check.close()


def test_the_writer_child_whose_reader_is_gone_commits_its_frame_and_exits_quietly(
    tmp_path: Path,
) -> None:
    """As after ``kill -9`` of the daemon: the answer to a frame cannot be written (no
    one reads the pipe any more).  The frame is committed all the same, and the child
    exits 0 without a word on stderr (it is the daemon's: no BrokenPipeError there)."""
    path = tmp_path / "logs.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-m", "homeport.logs.writer", str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    parent = LogDatabase(path)
    child.stdin.write(writer.insert_frame(parent.prepare([rec("answered")]).param()))
    child.stdin.flush()
    assert child.stdout.read(writer.HEADER.size + 4) == writer.HEADER.pack(b"K", 4) + b"null"
    child.stdout.close()  # the daemon is gone
    child.stdin.write(writer.insert_frame(parent.prepare([rec("unanswered")]).param()))
    child.stdin.close()
    assert child.wait(10) == 0
    assert child.stderr.read() == b""
    assert sorted(messages(parent)) == ["answered", "unanswered"]
    parent.close()


def test_the_writer_child_imports_no_twisted() -> None:
    """``python -m homeport.logs.writer`` loads SQLite, JSON and the log database, not
    Twisted or zope: it is started with the daemon and again after a crash."""
    code = (
        "import runpy, sys; sys.argv = ['writer']\n"
        "try:\n    runpy.run_module('homeport.logs.writer', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout.strip().replace("'", '"'))
    assert "homeport" in loaded
    assert not {"twisted", "zope", "attr", "autobahn", "treq"} & set(loaded), loaded


class ClockReactor(Clock):
    """A Clock that also takes ``callFromThread`` (run on the next ``advance(0)``)."""

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.callLater(0, f, *args)


class BrokenWriter:
    """A writer that dies the moment it is started, like a child that cannot start."""

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self.items: list[Any] = []
        self.dead = False

    def start(self) -> None:
        self.store.reactor.callLater(0, self.die)

    def insert(self, item: Any, param: str) -> None:
        self.items.append(item)

    def die(self) -> None:
        self.dead = True
        error = writers.WriterError("the log writer process ended: exit code 1")
        for item in self.items:
            self.store._finished(item, error, None)
        self.store._writer_ended(error)


def test_a_writer_that_cannot_start_gets_waiting_records_refused_and_backs_off(
    tmp_path: Path,
) -> None:
    clock = ClockReactor()
    broken = True

    class Store(LogStore):
        def _make_writer(self) -> Any:
            return BrokenWriter(self) if broken else super()._make_writer()

    store = Store(
        tmp_path / "logs.sqlite3", clock, process=False, restart_delay=1.0, hand_over_every=1
    )
    store.startService()
    answers: list[Any] = []
    store.add([rec("first")], answers.append)  # handed to the writer at once
    store.add([rec("second")], answers.append)  # waits for the next commit
    assert len(store._incoming) == 1
    clock.advance(0)
    # Neither hangs: the batch the writer had and what waited behind it are refused.
    assert len(answers) == 2
    assert all(isinstance(a, writers.WriterError) for a in answers)
    # New writers are started 1, 2, 4, ... seconds apart while they keep failing.
    starts = []
    for _ in range(7):
        delay = min(call.getTime() for call in clock.getDelayedCalls()) - clock.seconds()
        starts.append(delay)
        clock.advance(delay)
        clock.advance(0)
    assert starts == [1, 2, 4, 8, 16, 30, 30]
    # Once one works, records are stored again and the delay is back to a second.
    broken = False
    delay = min(call.getTime() for call in clock.getDelayedCalls()) - clock.seconds()
    clock.advance(delay)
    assert store._next_restart == 30
    done: list[Any] = []
    store.add([rec("third")], done.append)
    deadline = time.monotonic() + 10
    while not done and time.monotonic() < deadline:
        clock.advance(0)
        time.sleep(0.01)
    assert done == [[3]]  # ids 1 and 2 went with the records never stored
    assert store._next_restart == 1.0
    stopping = store.stopService()
    deadline = time.monotonic() + 10
    while not stopping.called and time.monotonic() < deadline:
        clock.advance(0)
        time.sleep(0.01)
    assert stopping.called


def test_non_finite_json_numbers_are_kept_as_text_and_do_not_sink_the_batch(
    db: LogDatabase,
) -> None:
    """NaN, Infinity and 1e999 in a JSON body are not strict JSON: kept as text, so the
    record stores, and so does the other client's record committed with it."""
    body = b'[{"msg": "other client"}, {"msg": "x", "a": NaN, "b": 1e999, "c": -Infinity}]'
    records = records_from_body("application/json", body, T0)
    db.insert(records)
    assert sorted(messages(db)) == ["other client", "x"]
    (text,) = db.db.execute("SELECT body FROM logs WHERE message = 'x'").fetchone()
    assert json.loads(text)["extra"] == {"a": "NaN", "b": "1e999", "c": "-Infinity"}


def test_a_record_that_cannot_be_encoded_is_refused_alone_and_the_store_goes_on(
    tmp_path: Path,
) -> None:
    """Defence behind the parser: if a record still held a lone surrogate, its request
    gets an error, the other request of the same batch is stored, and later ones too
    (once such a record left a commit 'in flight' for ever)."""
    reactor = ThreadReactor()
    store = LogStore(tmp_path / "logs.sqlite3", reactor, process=False, hand_over_every=2)
    store.startService()
    answers: dict[str, Any] = {}
    store.add([rec("fine")], lambda r: answers.__setitem__("fine", r))
    store.add([rec("bad \udcff")], lambda r: answers.__setitem__("bad", r))
    reactor.pump(lambda: len(answers) == 2)
    assert isinstance(answers["bad"], UnicodeEncodeError)
    assert isinstance(answers["fine"], list)
    store.add([rec("later")], lambda r: answers.__setitem__("later", r))
    reactor.pump(lambda: "later" in answers)
    assert isinstance(answers["later"], list)
    check = sqlite3.connect(tmp_path / "logs.sqlite3")
    assert sorted(m for (m,) in check.execute("SELECT message FROM logs")) == ["fine", "later"]
    check.close()
    stopping = store.stopService()
    reactor.pump(lambda: stopping.called)


@pytest.mark.parametrize(
    "value",
    [
        {"id": 1, "created": T0 + 0.125, "message": "caf\u00e9 \u2603 \U0001f600", "args": None},
        {"extra": {"nested": [1, 2.5, True, None, {"k": "v"}], 7: "int key"}, "e": 1e-07},
        {"huge": 2**70, "neg": -(2**64)},  # beyond orjson's 64 bits: the fallback writes it
        {"deep": json.loads("[" * 300 + "]" * 300)},  # past orjson's nesting limit
        {"when": datetime.date(2026, 1, 2)},  # not JSON's: default=str
    ],
)
def test_a_record_value_encodes_as_the_standard_encoder_reads_it(value: dict[str, Any]) -> None:
    """encode_value (orjson, with the standard library's encoder as the fallback) writes
    what json.loads reads back as the value json.dumps(..., default=str) would give."""
    expected = json.loads(json.dumps(value, default=str))
    assert json.loads(encode_value(value)) == expected


def test_text_that_is_not_unicode_is_refused_not_stored_mangled() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_value({"message": "half a pair: \ud800"})
