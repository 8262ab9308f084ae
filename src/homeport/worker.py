"""``--workers N``: read-serving processes beside the primary, on the same ports.

The primary (``tap.py``) binds its HTTP and DNS ports with ``SO_REUSEPORT`` and starts
N-1 copies of ``python -m homeport.worker``, each fed on its stdin: first who it is (the
settings, this agent, the ports to share, the primary's internal socket), then the
whole catalog, then every change as the primary makes it (:mod:`.catalog.reader`).  A
worker binds the same ports, answers catalog, health and KV reads from its copy (fast
path and blocking queries included) and DNS queries, and hands every other request's
connection to the primary (:mod:`.http.splice`).  A worker that dies is started again;
one whose primary goes away (its stdin closes) exits.

Nothing is ever acknowledged by a worker alone, so killing one loses nothing.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from .catalog.reader import change_frame, snapshot_frame

if TYPE_CHECKING:
    from .catalog.api import Agent
    from .catalog.model import Catalog, Change
    from .options import Settings
    from .part import IHomeportReactor

log = Logger(namespace="homeport")
#: Seconds before a worker that ended is started again.
RESTART_DELAY = 1.0
#: Largest frame (a whole catalog, pickled).
MAX_FRAME = 2**31 - 1


@dataclass(frozen=True)
class Hello:
    """A worker's first frame: what it needs to be the primary's copy."""

    settings: Settings
    agent: Agent
    #: (interface, port) of each plain TCP ``--http`` listener, bound by now.
    http: tuple[tuple[str, int], ...]
    dns_port: int | None
    #: The primary's internal socket (PROXY protocol over UNIX).
    primary: str
    #: Answer reads here (False with ``--acl``: every request goes to the primary).
    reads: bool


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


class _Worker(protocol.ProcessProtocol):
    """One worker process, as the primary sees it."""

    def __init__(self, pool: WorkerPool, number: int) -> None:
        self.pool = pool
        self.number = number
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._partial = {1: b"", 2: b""}

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(frame(pickle.dumps(self.pool.hello(), protocol=5)))
        self.transport.write(frame(snapshot_frame(self.pool.catalog)))

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._partial.get(childFD, b"") + data).split(b"\n")
        self._partial[childFD] = lines.pop()
        for line in lines:
            if line.strip():
                log.info("worker {n}: {line}", n=self.number, line=line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.pool.ended(self, reason)


class WorkerPool(Service):
    """The primary's workers: started once the ports are bound, fed, started again."""

    def __init__(
        self,
        reactor: IHomeportReactor,
        count: int,
        catalog: Catalog,
        hello: Callable[[], Hello],
    ) -> None:
        self.reactor = reactor
        self.count = count
        self.catalog = catalog
        self.hello = hello
        self.workers: dict[int, _Worker] = {}
        self._unsubscribe: Callable[[], None] | None = None

    def startService(self) -> None:
        Service.startService(self)
        self._unsubscribe = self.catalog.subscribe(self._changed)
        self.reactor.callWhenRunning(self._start_all)

    def _start_all(self) -> None:
        for number in range(1, self.count + 1):
            self.start(number)
        log.info("{count} worker process(es) share the HTTP and DNS ports", count=self.count)

    def start(self, number: int) -> None:
        if not self.running:
            return
        worker = _Worker(self, number)
        self.workers[number] = worker
        command = [sys.executable, "-m", "homeport.worker"]
        self.reactor.spawnProcess(
            worker, sys.executable, command, env=dict(os.environ), childFDs={0: "w", 1: "r", 2: "r"}
        )

    def pids(self) -> list[int]:
        return [w.transport.pid for w in self.workers.values() if w.transport is not None]

    def _changed(self, changes: list[Change]) -> None:
        body = change_frame(changes)
        if body is None:
            return
        data = frame(body)
        for worker in self.workers.values():
            worker.send(data)

    def ended(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.number) is not worker:
            return
        del self.workers[worker.number]
        if self.running:
            log.warn(
                "worker {n} ended ({reason}); starting it again",
                n=worker.number,
                reason=reason.getErrorMessage(),
            )
            self.reactor.callLater(RESTART_DELAY, self.start, worker.number)

    def stopService(self) -> defer.Deferred[Any]:
        Service.stopService(self)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        ending = [w.ended for w in self.workers.values()]
        for worker in self.workers.values():
            if worker.transport is not None:
                try:
                    worker.transport.signalProcess("TERM")
                except OSError:
                    pass
        return defer.DeferredList(ending)


# -- the worker process -------------------------------------------------------------


class _Feed(Int32StringReceiver):
    """The worker's stdin: the hello, then the catalog's frames."""

    MAX_LENGTH = MAX_FRAME

    def __init__(self, reactor: IHomeportReactor) -> None:
        self.reactor = reactor
        self.receive: Callable[[bytes], None] | None = None

    def stringReceived(self, string: bytes) -> None:
        if self.receive is None:
            self.receive = serve(pickle.loads(string), self.reactor)
        else:
            self.receive(string)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        if self.reactor.running:
            self.reactor.stop()  # the primary is gone


def serve(hello: Hello, reactor: IHomeportReactor) -> Callable[[bytes], None]:
    """Listen as *hello* says; what applies the primary's frames."""
    from twisted.internet.endpoints import UNIXClientEndpoint

    from . import dns
    from .catalog.reader import build_reader
    from .http.metrics import Metrics
    from .http.reuseport import SharedTCPEndpoint
    from .http.site import Root, V1Dispatch
    from .http.splice import SplicingChannel, reads_locally
    from .tap import host_names, http_site

    settings = hello.settings
    metrics = Metrics()
    reader = build_reader(settings.catalog, reactor, hello.agent, metrics)
    root = Root()
    root.putChild(b"v1", V1Dispatch(reader.api))
    site: Any = http_site(settings, root, metrics, host_names(settings, hello.agent.node))
    site.protocol = SplicingChannel
    site.primary = UNIXClientEndpoint(reactor, hello.primary)
    site.local = reads_locally if hello.reads else (lambda head: False)
    site.serve_fast(reader.api.fast_answer if settings.fast_path else None)
    for interface, port in hello.http:
        SharedTCPEndpoint(reactor, port, interface, backlog=1024).listen(site)
    # With --acl (no reads here) DNS is the primary's alone: this copy holds no ACL
    # records, so it could not filter answers to what the anonymous token may read.
    if settings.dns is not None and hello.dns_port is not None and hello.reads:
        shared = replace(settings.dns, port=hello.dns_port, reuse_port=True)
        dns.build(shared, reactor, reader.catalog, metrics).service.startService()
    log.info("serving reads on {ports} (pid {pid})", ports=hello.http, pid=os.getpid())
    return reader.receive


def main() -> None:
    """``python -m homeport.worker``: started by the primary, never by hand."""
    from twisted.internet import reactor, stdio
    from twisted.logger import FileLogObserver, eventAsText, globalLogBeginner

    def line(event: dict[str, Any]) -> str:  # the primary's log adds the time
        return eventAsText(event, includeTimestamp=False, includeSystem=False) + "\n"

    globalLogBeginner.beginLoggingTo([FileLogObserver(sys.stderr, line)])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the primary's to handle
    stdio.StandardIO(_Feed(cast(Any, reactor)))
    reactor.run()


if __name__ == "__main__":
    main()
