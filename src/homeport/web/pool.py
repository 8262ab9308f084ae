"""The dashboard's WSGI thread pool, as a service, and the app made on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool


class ThreadPoolService(Service):
    """Owns a thread pool (for the WSGI dashboard) from start to stop.

    The pool is joined in a thread of its own, not on the reactor thread: a dashboard
    request still in a worker waits for the reactor (WSGIResource writes its answer,
    and the facts are read with blockingCallFromThread), so joining there would wait
    for ever - a daemon asked to stop while a page loaded never exited.
    """

    def __init__(self, pool: ThreadPool, reactor: IReactorFromThreads) -> None:
        self.pool = pool
        self.reactor = reactor

    def startService(self) -> None:
        Service.startService(self)
        self.pool.start()

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        joined: Deferred[None] = Deferred()

        def join() -> None:
            self.pool.stop()
            self.reactor.callFromThread(joined.callback, None)

        threading.Thread(target=join, name="homeport-wsgi-stop", daemon=True).start()
        return joined


#: A WSGI application (PEP 3333): environ and start_response in, the body out.
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class LazyApp:
    """A WSGI application made by *make* on its first request (on that request's pool
    thread; concurrent first requests wait for the one app)."""

    def __init__(self, make: Callable[[], WSGIApp]) -> None:
        self._make = make
        self._app: WSGIApp | None = None
        self._lock = threading.Lock()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        return self.app()(environ, start_response)

    def app(self) -> WSGIApp:
        with self._lock:
            if self._app is None:
                self._app = self._make()
            return self._app
