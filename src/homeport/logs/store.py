"""Durable log storage: ``<data-dir>/logs.sqlite3`` with group commit.

:class:`~homeport.logs.database.LogDatabase` is the synchronous core (schema, insert,
prune, search on one connection, see :mod:`homeport.logs.database`).
:class:`LogStore` is the service the daemon runs:

* **one writer** (a helper process, see :mod:`homeport.logs.writer`) owns the write
  connection.  Requests hand their parsed records to :meth:`LogStore.add` with a
  callback; those of one reactor turn go to the writer together, and while one commit
  is under way the next requests wait, so they share the next one.  Each batch is one
  statement, committed (WAL, ``synchronous=FULL``: on disk when the statement returns)
  before the writer answers.  Only then are the callbacks called, on the reactor
  thread, so a 200 means the record survives ``kill -9``.
* **reads** run in a small thread pool, each thread with its own read-only connection
  (WAL lets them read while the writer writes), so a search never blocks the reactor.
* **pruning** is a job for the writer done in chunks, so ingest keeps flowing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from . import query as query_module
from .database import PRUNE_CHUNK, LogDatabase, encode_value, open_reader
from .record import Record
from .writer import HEADER
from .writers import ChildWriter, ThreadWriter, Writer

# (id, record, its JSON value, that value's text) of each record of a commit, for the
# stored-records listeners: the value and text are those stored, made once.
Stored = list[tuple[int, Record, dict[str, Any], str]]
Done = Callable[[list[int] | BaseException], None]


@dataclass
class _Pending:
    """One request's records, encoded when added: ids, JSON values and their UTF-8 texts
    (joined, the INSERT parameter's share), or the error that encoding them raised."""

    records: Sequence[Record]
    done: Done
    first_id: int = 0
    values: list[dict[str, Any]] = field(default_factory=list)
    texts: list[bytes] = field(default_factory=list)
    payload: bytes = b""
    error: BaseException | None = None


@dataclass
class _Job:
    operation: str
    args: list[Any]
    done: Deferred[Any]


@dataclass
class _Commit:
    """One batch on its way through the writer, and the requests behind it."""

    requests: list[_Pending]
    count: int
    error: BaseException | None = None


class LogStore(Service):
    """The daemon's log store: group commit through one writer, pooled readers.

    Group commit is driven from the reactor thread, with one commit in flight at a time:

    * records of requests read while the writer is idle are handed over at the end of the
      reactor turn (or every *hand_over_every* requests in a long turn), together;
    * records of requests read while a commit is under way wait on the reactor thread and
      are handed over, all of them as the next batch, the moment it is done.

    All the Python work — ids, the JSON text of each record, its share of the statement's
    parameter — is done on the reactor thread when the records are added, so that the
    writer, done with one commit, gets the next at once.  The writer (see
    :mod:`homeport.logs.writers`: a child process when the reactor can spawn one, else a
    thread) only runs the statement.  If
    the child dies, what it had is answered with an error and a new one is started a
    second later; records that arrive meanwhile wait for it.  A writer that dies before
    storing anything (it cannot start) gets its waiting records refused too, and the
    next is started after twice the delay, up to *max_restart_delay*.
    """

    log = Logger()

    def __init__(
        self,
        path: Path,
        reactor: Any,
        listeners: Iterable[Callable[[Stored], None]] = (),
        max_batch: int = 2000,
        hand_over_every: int = 16,
        process: bool | None = None,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
    ) -> None:
        self.path = path
        self.reactor = reactor
        self.listeners = list(listeners)
        self.max_batch = max_batch
        self.hand_over_every = hand_over_every
        self.process = IReactorProcess.providedBy(reactor) if process is None else process
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self._next_restart = restart_delay
        self._writer_committed = False
        # Opened now, so that a broken data dir stops start-up with a clear message.
        self.database = LogDatabase(path)
        self._writer: Writer | None = None  # while one runs
        self._incoming: list[_Pending] = []  # not yet handed over
        self._in_flight: _Commit | None = None  # handed over, not yet answered
        self._hand_over_scheduled = False
        self._stopping = False
        self._stopped: Deferred[None] | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self.commits = 0  # transactions that stored records (for tests and /metrics)
        self.stored = 0
        self.pool = ThreadPool(minthreads=1, maxthreads=2, name="homeport-logs-read")

    # -- the reactor side -------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        self._stopping = False
        self._start_writer()
        self.pool.start()

    def _start_writer(self) -> None:
        self._writer_committed = False
        writer = self._make_writer()
        writer.start()
        self._writer = writer

    def _make_writer(self) -> Writer:
        if self.process:
            return ChildWriter(self.reactor, self.path, self._finished, self._writer_ended)
        return ThreadWriter(self.reactor, self.database, self._finished, self._writer_ended)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        self.pool.stop()
        for reader in self._readers:
            reader.close()
        self._readers.clear()
        stopped: Deferred[None] = Deferred()
        self._stopped = stopped
        self._stopping = True
        if self._writer is None:
            self._closed()
            return stopped
        self._hand_over()  # what was added before the stop is still written
        self._finish_if_idle()
        return stopped

    def add(self, records: Sequence[Record], done: Done) -> None:
        """Queue *records*; ``done(ids)`` (or ``done(error)``) on the reactor thread once
        they are committed (or could not be)."""
        if self._stopping:
            raise RuntimeError("the log store is stopping")
        self._incoming.append(self._encode(records, done))
        if self._in_flight is not None:
            return  # they go with the next commit, handed over when this one is done
        if len(self._incoming) >= self.hand_over_every:
            self._hand_over()
        elif not self._hand_over_scheduled:
            # callFromThread works from the reactor thread too: it runs the hand-over at
            # the start of the next turn, after every request ready now has been read.
            self._hand_over_scheduled = True
            self.reactor.callFromThread(self._scheduled_hand_over)

    def _scheduled_hand_over(self) -> None:
        self._hand_over_scheduled = False
        self._hand_over()

    def _encode(self, records: Sequence[Record], done: Done) -> _Pending:
        """*records* with their ids and JSON, made now, while the writer may be busy with
        the last commit: the hand-over that follows it only joins what is ready."""
        pending = _Pending(records, done)
        try:
            first = n = self.database.next_id
            values = []
            texts = []
            for record in records:
                value = record.to_json(n)
                values.append(value)
                texts.append(encode_value(value))
                n += 1
            pending.payload = b",".join(texts)
        except Exception as e:  # noqa: BLE001, RUF100 - blind on purpose, see below
            # A record that cannot be encoded, for any reason: refuse its request only
            # (at the hand-over, in order).  Anything escaping here would fail the sender.
            self.log.failure("Encoding {count} log records", count=len(records))
            pending.error = e
            return pending
        self.database.next_id = n  # taken even if never written: ids may have gaps
        pending.first_id, pending.values, pending.texts = first, values, texts
        return pending

    def _hand_over(self) -> None:
        """Give the writer the waiting records (up to *max_batch*) unless it is busy."""
        writer = self._writer
        if self._in_flight is not None or not self._incoming or writer is None or writer.dead:
            return  # a dead writer's replacement takes them (see _writer_ended)
        count = taken = 0
        for pending in self._incoming:
            count += 1
            taken += len(pending.records)
            if taken >= self.max_batch:
                break
        requests, self._incoming = self._incoming[:count], self._incoming[count:]
        refused = [p for p in requests if p.error is not None]
        if refused:
            requests = [p for p in requests if p.error is None]
            for pending in refused:
                assert pending.error is not None
                pending.done(pending.error)
            if not requests:
                self._hand_over()
                return
        payload = b"[" + b",".join(p.payload for p in requests) + b"]"
        commit = self._in_flight = _Commit(requests, sum(len(p.texts) for p in requests))
        writer.insert(commit, HEADER.pack(b"I", len(payload)) + payload)

    def _finished(self, item: _Commit | _Job, error: BaseException | None, value: Any) -> None:
        """The writer is done with *item* (on the reactor thread, in order)."""
        if isinstance(item, _Job):
            if error is None:
                item.done.callback(value)
            else:
                item.done.errback(error)
            return
        if error is not None:
            self.log.error(
                "Storing {count} log records failed: {error}",
                count=item.count,
                error=error,
            )
        item.error = error
        self._committed(item)

    def _committed(self, commit: _Commit) -> None:
        """The writer is done with *commit*: start the next one, then answer this one."""
        self._in_flight = None
        self._hand_over()
        if commit.error is None:
            self._writer_committed = True
            self._next_restart = self.restart_delay
            self.commits += 1
            self.stored += commit.count
        self._deliver(commit)
        self._finish_if_idle()

    def _finish_if_idle(self) -> None:
        if self._stopping and self._in_flight is None and not self._incoming:
            writer, self._writer = self._writer, None  # no more work goes to it
            if writer is not None:
                writer.finish()

    def _writer_ended(self, error: BaseException | None) -> None:
        if error is None or self._stopping:
            self._writer = None
            self._closed()
            return
        self._writer = None
        delay = self._next_restart
        if self._writer_committed:
            # It worked until now: what waits goes to the next one, a moment from now.
            self._next_restart = self.restart_delay
        else:
            # It never stored anything: what waits is refused at once (503) rather than
            # held while new writers fail too, and they are started less and less often.
            self._next_restart = min(delay * 2, self.max_restart_delay)
            incoming, self._incoming = self._incoming, []
            for pending in incoming:
                pending.done(error)
        self.log.error("{error}; starting a new one in {delay:g} s", error=error, delay=delay)
        self.reactor.callLater(delay, self._restart_writer)

    def _restart_writer(self) -> None:
        if self._stopping:
            return
        self._start_writer()
        self._hand_over()

    def _closed(self) -> None:
        incoming, self._incoming = self._incoming, []  # only if the writer was down
        for pending in incoming:
            pending.done(RuntimeError("the log store stopped before it could write them"))
        self.database.close()
        if self._stopped is not None and not self._stopped.called:
            self._stopped.callback(None)

    def run_job(self, operation: str, *args: Any) -> Deferred[Any]:
        """Run ``LogDatabase.<operation>(*args)`` in the writer, between commits."""
        d: Deferred[Any] = Deferred()
        if self._writer is None:
            d.errback(RuntimeError("the log store's writer is not running"))
        else:
            self._writer.job(_Job(operation, list(args), d), operation, list(args))
        return d

    def prune(self, cutoff: float | None, max_records: int | None) -> Deferred[int]:
        """Prune in chunks, letting queued ingest go between chunks; the number deleted."""
        total = 0
        result: Deferred[int] = Deferred()

        def step(deleted: int) -> None:
            nonlocal total
            total += deleted
            if deleted >= PRUNE_CHUNK and self.running:
                self.run_job("prune", cutoff, max_records).addCallbacks(step, result.errback)
            else:
                result.callback(total)

        self.run_job("prune", cutoff, max_records).addCallbacks(step, result.errback)
        return result

    def search(self, query: query_module.LogQuery) -> Deferred[bytes]:
        """The ``/v1/logs`` answer for *query*, searched and encoded in a reader thread."""
        return deferToThreadPool(self.reactor, self.pool, self._search, query)

    def _search(self, query: query_module.LogQuery) -> bytes:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = open_reader(self.path)
            self._local.db = db
            self._readers.append(db)
        page = query_module.page(db, query)
        return json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode()

    def _deliver(self, commit: _Commit) -> None:
        if commit.error is not None:
            for pending in commit.requests:
                pending.done(commit.error)
            return
        stored: Stored = []
        for pending in commit.requests:
            mine = list(range(pending.first_id, pending.first_id + len(pending.texts)))
            texts = [text.decode("utf-8") for text in pending.texts]
            stored.extend(zip(mine, pending.records, pending.values, texts, strict=True))
            try:
                pending.done(mine)
            except Exception:  # noqa: BLE001, RUF100 - one caller's bug must not stop the rest
                self.log.failure("Answering a log ingest request")
        for listener in self.listeners:
            try:
                listener(stored)
            except Exception:  # noqa: BLE001, RUF100 - one listener's bug must not stop the rest
                self.log.failure("A stored-log listener failed")
