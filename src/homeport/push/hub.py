"""The event hub: numbered events, topic subscriptions and a bounded, persisted history.

An event is ``(id, topic, data, time)``.  Ids are integers that only grow, unique for the
life of a data directory (the last one handed out is stored with the history), so a client
that reconnects with ``Last-Event-ID`` — even after a restart — resumes where it left off.

Subscriptions name topics exactly (``catalog``) or by prefix with a trailing ``*``
(``zmq/*``; ``*`` alone is everything).  Publishing looks up subscribers in a dict of exact
topics and a short list of prefixes, and calls each subscriber once per event; transports
cache their encoding of an event on the event itself (:meth:`Event.cached`), so an event
going to 4000 SSE clients is framed once.

The history is the part that can be swapped (:class:`IEventHistory`): :class:`MemoryHistory`
keeps recent events per topic within bounds (per topic, in total, and in bytes);
:class:`SQLiteHistory` adds a copy in ``events.sqlite3`` written in batches, gathered on
the reactor thread and written by a thread of :class:`HubService` (WAL,
``synchronous=NORMAL``: an event is history, not a ledger — the log records behind
``logs`` events are stored durably by the log sink itself).
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import Interface, implementer

from ..errors import error
from ..sqlite import open_database

MAX_TOPIC_LENGTH = 200
DEFAULT_PER_TOPIC = 1000
DEFAULT_TOTAL = 100_000
DEFAULT_TOTAL_BYTES = 64 * 1024 * 1024
RESERVED_TOPICS = ("catalog", "kv", "logs")
# Topics a SQLiteHistory keeps in memory only, not in its file.  ``logs``: each of its
# events is a log record the log sink has already committed to logs.sqlite3 (searchable
# there after a restart); copying a flood of them into events.sqlite3 as well, only to
# trim them again, took ~12% of the daemon's CPU per syslog record (bench/syslog.py).
MEMORY_ONLY_TOPICS = frozenset({"logs"})
ZMQ_PREFIX = "zmq/"


@error
class BadTopic(Exception):
    """A topic (or subscription pattern) that cannot be used; a 400 at the edge."""

    topic: str
    reason: str

    def __str__(self) -> str:
        return f"topic {self.topic!r}: {self.reason}"


def check_topic(topic: str, pattern: bool = False) -> str:
    """*topic* if it is usable as a topic (or, with *pattern*, a subscription)."""
    if not topic:
        raise BadTopic(topic, "must not be empty")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise BadTopic(topic[:40] + "...", f"longer than {MAX_TOPIC_LENGTH} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in topic):
        raise BadTopic(topic, "contains control characters")
    star = topic.find("*")
    if star != -1 and (not pattern or star != len(topic) - 1):
        raise BadTopic(topic, "'*' may only end a subscription pattern")
    return topic


def topic_matches(pattern: str, topic: str) -> bool:
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1])
    return pattern == topic


@dataclass(frozen=True)
class Event:
    """One published event.  ``data`` is a JSON value (text, object, list, ...)."""

    id: int
    topic: str
    data: Any
    time: float
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def cached(self, key: str, make: Callable[[Event], Any]) -> Any:
        """``make(self)``, computed once per *key* (one encoding per transport)."""
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = make(self)
            return value

    def size(self) -> int:
        """Roughly what the event costs in memory, for the history's byte budget."""
        size: int = self.cached("size", _size)
        return size

    def data_text(self) -> str:
        """The data as text: a string as is, anything else as compact JSON."""
        text: str = self.cached("text", _text)
        return text

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "topic": self.topic, "data": self.data, "time": self.time}


def _text(event: Event) -> str:
    data = event.data
    if isinstance(data, str):
        return data
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _size(event: Event) -> int:
    return 200 + len(event.topic) + len(event.data_text())


# ---------------------------------------------------------------------------
# History


@dataclass(frozen=True)
class HistoryBatch:
    """Pending events of a :class:`SQLiteHistory`, ready to be written by any thread."""

    rows: str  # a JSON list of [id, topic, time, data]
    count: int
    trims: list[tuple[str, int | None]]  # (topic, first id still kept, None: all gone)
    oldest: int  # the oldest id kept in memory: older ones go from the file
    last_id: int


class IEventHistory(Interface):
    """Recent events per topic, bounded; where resuming clients are served from."""

    def last_id() -> int:
        """The id of the newest event ever recorded (0 if none)."""

    def add(event: Event) -> None:  # noqa: N805
        """Record *event* (its id is greater than every recorded id)."""

    def add_many(events: Sequence[Event]) -> None:  # noqa: N805
        """Record *events*, all on one topic, in id order: as :meth:`add` of each."""

    def after(last_id: int, patterns: Sequence[str], limit: int) -> list[Event]:  # noqa: N805
        """Events with id > *last_id* on topics matching *patterns*, oldest first, at most
        *limit* (the newest ones when there are more)."""

    def oldest_id(patterns: Sequence[str]) -> int | None:  # noqa: N805
        """The id of the oldest kept event matching *patterns*, if any."""

    def flush() -> int:
        """Write what is pending to the history's store, on this thread; how many events."""

    def prepare() -> HistoryBatch | None:
        """Take what is pending as one batch for :meth:`write` (None: nothing to write).

        Called on the thread that publishes: only this half looks at the kept events.
        """

    def write(batch: HistoryBatch) -> int:  # noqa: N805
        """Write a batch from :meth:`prepare`, on any thread; how many events it held.

        Batches are written one at a time, in the order they were prepared.
        """

    def close() -> None:
        """Release resources (flush what is pending)."""


@implementer(IEventHistory)
class MemoryHistory:
    """Per-topic deques of recent events, bounded per topic, in total and in bytes."""

    def __init__(
        self,
        per_topic: int = DEFAULT_PER_TOPIC,
        total: int = DEFAULT_TOTAL,
        total_bytes: int = DEFAULT_TOTAL_BYTES,
    ) -> None:
        self.per_topic = per_topic
        self.total = total
        self.total_bytes = total_bytes
        self.topics: dict[str, deque[Event]] = {}
        # (id, topic) of every kept event in id order — not the events: entries already
        # trimmed from their topic are skipped when they reach the front, and must not
        # hold their data meanwhile.  Its length is bounded by ``total``.
        self._order: deque[tuple[int, str]] = deque()
        self._bytes = 0
        self._last_id = 0

    def last_id(self) -> int:
        return self._last_id

    def add(self, event: Event) -> None:
        self._last_id = max(self._last_id, event.id)
        kept = self.topics.get(event.topic)
        if kept is None:
            kept = self.topics[event.topic] = deque()
        kept.append(event)
        self._order.append((event.id, event.topic))
        self._bytes += event.size()
        if len(kept) > self.per_topic:
            self._bytes -= kept.popleft().size()
        while self._order and (len(self._order) > self.total or self._bytes > self.total_bytes):
            self._evict_oldest()

    def add_many(self, events: Sequence[Event]) -> None:
        if not events:
            return
        self._last_id = max(self._last_id, events[-1].id)
        topic = events[0].topic
        kept = self.topics.get(topic)
        if kept is None:
            kept = self.topics[topic] = deque()
        # Those the topic's bound would trim at once are never kept (nor their order).
        newest = events[-self.per_topic :] if len(events) > self.per_topic else events
        order = self._order
        for event in newest:
            kept.append(event)
            order.append((event.id, topic))
            self._bytes += event.size()
        while len(kept) > self.per_topic:
            self._bytes -= kept.popleft().size()
        while order and (len(order) > self.total or self._bytes > self.total_bytes):
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        old_id, topic = self._order.popleft()
        kept = self.topics.get(topic)
        if kept and kept[0].id == old_id:
            self._bytes -= kept.popleft().size()
            if not kept:
                del self.topics[topic]

    def _matching(self, patterns: Sequence[str]) -> Iterator[deque[Event]]:
        exact = [p for p in patterns if not p.endswith("*")]
        prefixes = [p[:-1] for p in patterns if p.endswith("*")]
        if prefixes:
            for topic, kept in self.topics.items():
                if topic in exact or any(topic.startswith(p) for p in prefixes):
                    yield kept
        else:
            for topic in dict.fromkeys(exact):
                found = self.topics.get(topic)
                if found:
                    yield found

    def after(self, last_id: int, patterns: Sequence[str], limit: int) -> list[Event]:
        streams = []
        for kept in self._matching(patterns):
            if kept[-1].id <= last_id:
                continue
            streams.append(_newer(kept, last_id))
        merged = list(heapq.merge(*streams, key=lambda e: e.id))
        return merged[-limit:] if limit > 0 else []

    def oldest_id(self, patterns: Sequence[str]) -> int | None:
        firsts = [kept[0].id for kept in self._matching(patterns) if kept]
        return min(firsts) if firsts else None

    def events(self) -> Iterator[Event]:
        """Every kept event, oldest first."""
        return heapq.merge(*self.topics.values(), key=lambda e: e.id)

    def flush(self) -> int:
        return 0  # memory is the whole store

    def prepare(self) -> HistoryBatch | None:
        return None

    def write(self, batch: HistoryBatch) -> int:
        return 0  # never prepared one

    def close(self) -> None:
        pass


def _newer(kept: deque[Event], last_id: int) -> list[Event]:
    # Deques are in id order: walk back from the newest end.
    out: list[Event] = []
    for event in reversed(kept):
        if event.id <= last_id:
            break
        out.append(event)
    out.reverse()
    return out


SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    time REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_topic ON events(topic, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# A batch of events is one parameter, a JSON list of [id, topic, time, data] rows, so the
# writing thread takes the GIL once per statement, not once per row.
INSERT_ROWS = (
    "INSERT OR REPLACE INTO events (id, topic, time, data) "
    "SELECT value->>0, value->>1, value->>2, value->3 FROM json_each(?)"
)


@implementer(IEventHistory)
class SQLiteHistory:
    """:class:`MemoryHistory` mirrored to ``events.sqlite3``, loaded at start.

    New events (but those of :data:`MEMORY_ONLY_TOPICS`: only the last id they took) are
    written in batches by :meth:`flush` (the hub's service calls it a few times a second
    and at stop); trimmed topics are trimmed on disk in the same transaction, so the file
    stays as bounded as the memory.
    """

    def __init__(
        self,
        path: Path,
        per_topic: int = DEFAULT_PER_TOPIC,
        total: int = DEFAULT_TOTAL,
        total_bytes: int = DEFAULT_TOTAL_BYTES,
    ) -> None:
        self.memory = MemoryHistory(per_topic, total, total_bytes)
        # NORMAL, not FULL: history is a convenience for resuming clients, and the
        # last commits before a power loss may go (never a corrupt file).
        self.db = open_database(path, synchronous="NORMAL")
        self.db.executescript(SCHEMA)
        self._pending: list[Event] = []
        self._load()
        self._prepared_last_id = self.last_id()

    def _load(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'last_id'").fetchone()
        stored_last = int(row[0]) if row else 0
        max_row = self.db.execute("SELECT max(id) FROM events").fetchone()
        rows = self.db.execute(
            "SELECT id, topic, time, data FROM events WHERE id > ("
            "  SELECT coalesce(max(id), 0) FROM events) - ? ORDER BY id",
            (self.memory.total * 4,),
        )
        for id, topic, time, data in rows:
            try:
                value = json.loads(data)
            except ValueError:
                continue
            self.memory.add(Event(id, topic, value, time))
        self.memory._last_id = max(stored_last, max_row[0] or 0, self.memory._last_id)

    def last_id(self) -> int:
        return self.memory.last_id()

    def add(self, event: Event) -> None:
        self.memory.add(event)
        if event.topic not in MEMORY_ONLY_TOPICS:
            self._pending.append(event)

    def add_many(self, events: Sequence[Event]) -> None:
        self.memory.add_many(events)
        if events and events[0].topic not in MEMORY_ONLY_TOPICS:
            self._pending.extend(events)

    def after(self, last_id: int, patterns: Sequence[str], limit: int) -> list[Event]:
        return self.memory.after(last_id, patterns, limit)

    def oldest_id(self, patterns: Sequence[str]) -> int | None:
        return self.memory.oldest_id(patterns)

    def flush(self) -> int:
        """Write pending events and trim what memory no longer keeps; returns how many."""
        batch = self.prepare()
        return self.write(batch) if batch is not None else 0

    def prepare(self) -> HistoryBatch | None:
        """Take the pending events as one batch for :meth:`write` (None if there are none).

        Only this half looks at the in-memory history, so it runs on the thread that
        publishes; :meth:`write` may then run on another thread.
        """
        pending, self._pending = self._pending, []
        if not pending and self.last_id() == self._prepared_last_id:
            return None  # (memory-only events still move the stored last id on)
        self._prepared_last_id = self.last_id()
        # Only what memory still keeps is worth writing (a flood may have pushed most of
        # the batch out already).  Each event's JSON is the text transports already made
        # (Event.data_text), not a second encoding; the rows go to SQLite as one JSON
        # list, so the insert is one statement however many events there are.
        kept_topics = self.memory.topics
        topics: dict[str, str] = {}
        rows: list[str] = []
        for e in pending:
            topic = topics.get(e.topic)
            if topic is None:
                topic = topics[e.topic] = json.dumps(e.topic, ensure_ascii=False)
            kept = kept_topics.get(e.topic)
            if not kept or e.id < kept[0].id:
                continue
            data = e.data_text()
            if isinstance(e.data, str):
                data = json.dumps(data, ensure_ascii=False)
            rows.append(f"[{e.id},{topic},{float(e.time)!r},{data}]")
        trims = []
        for name in topics:
            kept = kept_topics.get(name)
            trims.append((name, kept[0].id if kept else None))
        order = self.memory._order
        return HistoryBatch(
            rows="[" + ",".join(rows) + "]",
            count=len(rows),
            trims=trims,
            oldest=order[0][0] if order else self.last_id() + 1,
            last_id=self.last_id(),
        )

    def write(self, batch: HistoryBatch) -> int:
        """Write a batch from :meth:`prepare` in one transaction; how many events it held.

        Batches must be written one at a time and in the order they were prepared.
        """
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(INSERT_ROWS, (batch.rows,))
            for topic, first_kept in batch.trims:
                if first_kept is not None:
                    self.db.execute(
                        "DELETE FROM events WHERE topic = ? AND id < ?", (topic, first_kept)
                    )
                else:
                    self.db.execute("DELETE FROM events WHERE topic = ?", (topic,))
            self.db.execute("DELETE FROM events WHERE id < ?", (batch.oldest,))
            self.db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_id', ?)", (batch.last_id,)
            )
        return batch.count

    def close(self) -> None:
        self.flush()
        self.db.close()


# ---------------------------------------------------------------------------
# The hub


class Subscription:
    """Some topic patterns and a callback; ``cancel()`` when done."""

    __slots__ = ("_hub", "deliver", "patterns")

    def __init__(self, hub: Hub, patterns: tuple[str, ...], deliver: Callable[[Event], None]):
        self._hub = hub
        self.patterns = patterns
        self.deliver = deliver

    def cancel(self) -> None:
        self._hub._remove(self)


class Hub:
    """Publishes events to subscribers and keeps the history.  Pure: the clock is passed in."""

    log = Logger()

    def __init__(
        self, history: IEventHistory | None = None, now: Callable[[], float] = lambda: 0.0
    ) -> None:
        self.history: IEventHistory = history if history is not None else MemoryHistory()
        self.now = now
        self._exact: dict[str, dict[Subscription, None]] = {}
        self._prefix: dict[str, dict[Subscription, None]] = {}
        self.published = 0
        self.subscriber_errors = 0

    @property
    def last_id(self) -> int:
        return self.history.last_id()

    def publish(self, topic: str, data: Any, text: str | None = None) -> Event:
        """Record and deliver one event; returns it.

        *text*, when the publisher already has it, is *data* encoded as compact JSON: it
        is used as the event's :meth:`~Event.data_text` instead of encoding *data* again.
        """
        event = Event(self.history.last_id() + 1, topic, data, self.now())
        if text is not None:
            event._cache["text"] = text
        self.history.add(event)
        self.published += 1
        self._deliver(event)
        return event

    def publish_many(self, topic: str, items: Iterable[tuple[Any, str | None]]) -> list[Event]:
        """:meth:`publish` of each (*data*, *text*) of *items* on *topic*, in order, with
        one history update and one look-up of the subscribers (a commit of log records
        is published this way); the events."""
        now = self.now()
        n = self.history.last_id()
        events = []
        for data, text in items:
            n += 1
            event = Event(n, topic, data, now)
            if text is not None:
                event._cache["text"] = text
            events.append(event)
        if events:
            self.history.add_many(events)
            self.published += len(events)
            for sub in self._targets(topic):
                for event in events:
                    self._deliver_to(sub, event)
        return events

    def _targets(self, topic: str) -> list[Subscription]:
        exact = self._exact.get(topic)
        if not self._prefix:
            return list(exact) if exact else []
        combined: dict[Subscription, None] = dict(exact) if exact else {}
        for prefix, subs in self._prefix.items():
            if topic.startswith(prefix):
                combined.update(subs)
        return list(combined)

    def _deliver(self, event: Event) -> None:
        for sub in self._targets(event.topic):
            self._deliver_to(sub, event)

    def _deliver_to(self, sub: Subscription, event: Event) -> None:
        try:
            sub.deliver(event)
        except Exception:  # noqa: BLE001, RUF100 - a failing subscriber must not stop the rest
            self.subscriber_errors += 1
            self.log.failure("Delivering event {id} on {topic}", id=event.id, topic=event.topic)

    def subscribe(self, patterns: Iterable[str], deliver: Callable[[Event], None]) -> Subscription:
        """Call *deliver* with each new event whose topic matches one of *patterns*."""
        unique = tuple(dict.fromkeys(check_topic(p, pattern=True) for p in patterns))
        sub = Subscription(self, unique, deliver)
        for pattern in unique:
            if pattern.endswith("*"):
                self._prefix.setdefault(pattern[:-1], {})[sub] = None
            else:
                self._exact.setdefault(pattern, {})[sub] = None
        return sub

    def _remove(self, sub: Subscription) -> None:
        for pattern in sub.patterns:
            table = self._prefix if pattern.endswith("*") else self._exact
            key = pattern[:-1] if pattern.endswith("*") else pattern
            subs = table.get(key)
            if subs is not None:
                subs.pop(sub, None)
                if not subs:
                    del table[key]

    def subscriber_count(self) -> int:
        subs: set[Subscription] = set()
        for table in (self._exact, self._prefix):
            for group in table.values():
                subs.update(group)
        return len(subs)

    def replay(self, last_id: int, patterns: Sequence[str], limit: int = 10_000) -> list[Event]:
        """Kept events after *last_id* matching *patterns*, oldest first."""
        return self.history.after(last_id, patterns, limit)


class HubService(Service):
    """Owns the hub's history file: flushes it a few times a second and at stop.

    With a reactor that runs threads, the SQLite writes happen on a thread of the
    service's own (the reactor thread only gathers the pending events into one JSON
    parameter): a flush under a flood of log records costs the reactor no disk I/O and
    no per-row work.  With a bare :class:`~twisted.internet.task.Clock` (tests) the
    flush is written inline.
    """

    def __init__(self, hub: Hub, reactor: IReactorTime, interval: float = 0.25) -> None:
        self.hub = hub
        self.reactor = reactor
        self.interval = interval
        self._loop: LoopingCall | None = None
        self._pool: ThreadPool | None = None
        self._threads: IReactorThreads | None = None
        self._writing: Deferred[int] | None = None

    def startService(self) -> None:
        Service.startService(self)
        self._threads = IReactorThreads(self.reactor, None)
        if self._threads is not None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="homeport-events-write")
            self._pool.start()
        self._loop = LoopingCall(self._flush)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=False)

    def _flush(self) -> None:
        history = self.hub.history
        if self._pool is None or self._threads is None:
            try:
                history.flush()
            except sqlite3.Error:
                self.hub.log.failure("Writing the event history")
            return
        if self._writing is not None:
            return  # the last batch is still being written: the next tick takes these too
        batch = history.prepare()
        if batch is None:
            return
        writing: Deferred[int] = deferToThreadPool(self._threads, self._pool, history.write, batch)
        writing.addErrback(self._failed)
        writing.addBoth(self._written)
        if not writing.called:
            self._writing = writing

    def _failed(self, failure: Failure) -> None:
        self.hub.log.failure("Writing the event history", failure)

    def _written(self, _: object) -> None:
        self._writing = None

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._writing is None:
            self._close()
            return None
        done: Deferred[None] = Deferred()

        def close(_: object) -> None:
            self._close()
            done.callback(None)

        self._writing.addBoth(close)
        return done

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
        self.hub.history.close()  # writes what is still pending, on this thread
