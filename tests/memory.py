"""The daemon built in memory: the real Site and resources, a MemoryReactorClock, StubTreq."""

from __future__ import annotations

import json
import queue
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from treq.testing import StubTreq
from twisted.application.service import MultiService
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from homeport.options import Options
from homeport.part import IHomeportReactor
from homeport.tap import HomeportService, makeService


class ThreadedMemoryReactor(MemoryReactorClock):
    """A MemoryReactorClock whose callFromThread queues calls for the test thread to run."""

    def __init__(self) -> None:
        MemoryReactorClock.__init__(self)
        self._from_threads: queue.SimpleQueue[tuple[Any, Any, Any]] = queue.SimpleQueue()

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        self._from_threads.put((f, args, kw))

    def drain(self, until: Callable[[], bool] | None = None, timeout: float = 10.0) -> None:
        """Run what threads handed over; with *until*, wait for it to become true."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                f, args, kw = self._from_threads.get(timeout=0.01 if until else 0)
            except queue.Empty:
                if until is None or until():
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("threads did not finish in time") from None
                continue
            f(*args, **kw)


class InMemoryDaemon:
    def __init__(self, data_dir: Path, args: list[str] | None = None) -> None:
        self.reactor = ThreadedMemoryReactor()
        options = Options()
        options.parseOptions(
            ["--data-dir", str(data_dir), "--node", "testnode", "--advertise", "127.0.0.1"]
            + ["--dns", "none", "--http", "tcp:0"]
            + (args or [])
        )
        service = makeService(options, reactor=cast(IHomeportReactor, self.reactor))
        assert isinstance(service, HomeportService)
        self.service = service
        self.service.startService()
        self.treq: Any = StubTreq(self.service.site.resource)
        self.catalog = self.service.catalog

    def stop(self) -> None:
        d = MultiService.stopService(self.service)
        self.reactor.drain(until=lambda: d is None or d.called)


class APITestCase(SynchronousTestCase):
    args: list[str] = []

    def setUp(self) -> None:
        data = Path(tempfile.mkdtemp(prefix="homeport-test-"))
        self.addCleanup(shutil.rmtree, data, True)
        self.daemon = InMemoryDaemon(data, self.args)
        self.addCleanup(self.daemon.stop)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        """(status, headers, body) of one request through the real Site."""
        if body is not None and not isinstance(body, bytes | str):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        d = self.daemon.treq.request(
            method,
            "http://127.0.0.1" + path,
            data=body,
            headers={k: [v] for k, v in (headers or {}).items()},
            allow_redirects=False,
        )
        self.daemon.treq.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        return response.code, response.headers, content

    def get(self, path: str) -> Any:
        code, _, body = self.request("GET", path)
        assert code == 200, (code, body)
        return json.loads(body)

    def put(self, path: str, body: Any = None) -> bytes:
        code, _, content = self.request("PUT", path, body)
        assert code == 200, (code, content)
        return content
