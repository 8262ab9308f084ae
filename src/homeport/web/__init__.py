"""The dashboard: a Flask app (:mod:`.ui`, templates, static files) served at ``/ui/``.

:func:`build` hosts it in twisted.web's ``WSGIResource`` on a thread pool of its own.
Flask is imported and the app made on the first ``/ui`` request (:class:`.pool.LazyApp`),
not at start-up: a daemon nobody opens the dashboard of never pays for it, and the
others answer their first API request sooner (about 0.1 s of a container's start).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..part import IHomeportReactor, Part


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: Asked for (once, kept in a cookie) before any page shows.
    token: str | None = None
    #: Threads serving dashboard requests.
    threads: int = 8


def build(
    settings: Settings, reactor: IHomeportReactor, facts: Callable[[], dict[str, Any]]
) -> Part:
    """The dashboard; *facts* (the header's node, counts, ...) is called on the reactor
    thread, the pages themselves render on the pool's threads."""
    from twisted.internet.threads import blockingCallFromThread
    from twisted.python.threadpool import ThreadPool
    from twisted.web.wsgi import WSGIResource

    from .pool import LazyApp, ThreadPoolService, WSGIApp

    def info() -> dict[str, Any]:  # on a WSGI thread
        found: dict[str, Any] = blockingCallFromThread(reactor, facts)
        return found

    def make_app() -> WSGIApp:  # on a WSGI thread, once
        from .ui import create_app

        return create_app(info, settings.token)

    pool = ThreadPool(minthreads=1, maxthreads=settings.threads, name="homeport-wsgi")
    return Part(
        service=ThreadPoolService(pool, reactor),
        resources={b"ui": WSGIResource(reactor, pool, LazyApp(make_app))},
    )
