"""Who runs the log store's write statements: a child process, or a thread.

:class:`~homeport.logs.store.LogStore` prepares each batch on the reactor thread and
hands it to a writer, one commit in flight; the writer runs the INSERT (or a prune
job) and reports back on the reactor thread, in order.

* :class:`ChildWriter` (the daemon's choice): ``python -m homeport.logs.writer PATH``
  (see :mod:`homeport.logs.writer` for the program and its pipe protocol), fed through
  a pipe the reactor writes without blocking and answering through one the reactor
  reads.  The daemon then has no second thread that wants the GIL while the reactor
  serves requests.  With a writer *thread*, every commit made that thread take the GIL
  back three times, and while it waited each of the reactor's syscalls woke it in vain
  (~45 futex wake-ups per commit under load): the child was measured at +10-25%
  durable records/s in bench/ingest.py.
* :class:`ThreadWriter`: the same in a thread, for reactors that cannot spawn processes
  (the in-memory test reactors).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from .database import LogDatabase
from .writer import HEADER, job_frame, run_frame

# (item, error, value) -> None, called on the reactor thread for each item, in order.
Finished = Callable[[Any, BaseException | None, Any], None]
# error (None when the writer ended because it was told to) -> None, on the reactor thread.
Ended = Callable[[BaseException | None], None]


class WriterError(Exception):
    """What went wrong in the writer, as it reported it."""


class Writer(Protocol):
    """What the store asks of a writer (:class:`ChildWriter` or :class:`ThreadWriter`)."""

    @property
    def dead(self) -> bool:
        """True once the writer is gone: it must be sent nothing more."""

    def start(self) -> None: ...

    def insert(self, item: Any, frame: bytes) -> None:
        """Run an :func:`insert_frame`; *item* comes back with its answer."""

    def job(self, item: Any, operation: str, args: list[Any]) -> None:
        """Run ``LogDatabase.<operation>(*args)`` (one of :data:`JOBS`)."""

    def finish(self) -> None:
        """Run what was sent, then end."""


class ChildWriter(ProcessProtocol):
    """The writer as a child process the reactor talks to through pipes."""

    def __init__(self, reactor: Any, path: Path, finished: Finished, ended: Ended) -> None:
        self.reactor = reactor
        self.path = path
        self.finished = finished
        self.ended = ended
        self.waiting: deque[Any] = deque()
        self.buffer = b""
        self.finishing = False
        self.dead = False  # set first thing when the process is gone: send it nothing more

    def start(self) -> None:
        # The child imports homeport the way this process did (a pex, a venv, a source
        # tree): it gets this interpreter and this sys.path.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.reactor.spawnProcess(
            self,
            sys.executable,
            [sys.executable, "-m", "homeport.logs.writer", str(self.path)],
            env=env,
            childFDs={0: "w", 1: "r", 2: 2},
        )

    def insert(self, item: Any, frame: bytes) -> None:
        """Send an :func:`insert_frame`; *item* comes back with its answer."""
        self._send(item, frame)

    def job(self, item: Any, operation: str, args: list[Any]) -> None:
        self._send(item, job_frame(operation, args))

    def _send(self, item: Any, frame: bytes) -> None:
        self.waiting.append(item)
        assert self.transport is not None
        self.transport.write(frame)

    def finish(self) -> None:
        """Write what was sent, then end."""
        self.finishing = True
        if self.transport is not None:
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self.buffer)
            end = HEADER.size + length
            if len(self.buffer) < end:
                break
            payload, self.buffer = self.buffer[HEADER.size : end], self.buffer[end:]
            item = self.waiting.popleft()
            if kind == b"K":
                self.finished(item, None, json.loads(payload))
            else:
                self.finished(item, WriterError(payload.decode("utf-8", "replace")), None)

    def processEnded(self, reason: Failure) -> None:
        self.dead = True
        error = None
        if not self.finishing or self.waiting:
            error = WriterError(f"the log writer process ended: {reason.value}")
            while self.waiting:
                self.finished(self.waiting.popleft(), error, None)
        self.ended(error)


class ThreadWriter:
    """The writer as a thread of this process."""

    dead = False  # a thread does not die under the store

    def __init__(self, reactor: Any, database: LogDatabase, finished: Finished, ended: Ended):
        self.reactor = reactor
        self.database = database
        self.finished = finished
        self.ended = ended
        # Items, then None.  A SimpleQueue: the thread blocks in C, one GIL retake per item.
        self.queue: queue.SimpleQueue[tuple[Any, bytes] | None] = queue.SimpleQueue()

    def start(self) -> None:
        threading.Thread(target=self._run, name="homeport-logs-write", daemon=True).start()

    def insert(self, item: Any, frame: bytes) -> None:
        self.queue.put((item, frame))

    def job(self, item: Any, operation: str, args: list[Any]) -> None:
        self.queue.put((item, job_frame(operation, args)))

    def finish(self) -> None:
        self.queue.put(None)

    def _run(self) -> None:
        while (entry := self.queue.get()) is not None:
            item, frame = entry
            kind, _ = HEADER.unpack_from(frame)
            answer = run_frame(self.database, kind, frame[HEADER.size :])
            result: tuple[BaseException | None, Any]
            if answer[:1] == b"K":
                result = (None, json.loads(answer[HEADER.size :]))
            else:
                result = (WriterError(answer[HEADER.size :].decode()), None)
            self.reactor.callFromThread(self.finished, item, *result)
        self.reactor.callFromThread(self.ended, None)
