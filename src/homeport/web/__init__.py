"""The dashboard: a Flask app (:mod:`.ui`, templates, static files) served at ``/ui/``.

:func:`build` hosts it in twisted.web's ``WSGIResource`` on a thread pool of its own.
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

    from .pool import ThreadPoolService
    from .ui import create_app

    def info() -> dict[str, Any]:  # on a WSGI thread
        found: dict[str, Any] = blockingCallFromThread(reactor, facts)
        return found

    pool = ThreadPool(minthreads=1, maxthreads=settings.threads, name="homeport-wsgi")
    app = create_app(info, settings.token)
    return Part(
        service=ThreadPoolService(pool, reactor),
        resources={b"ui": WSGIResource(reactor, pool, app)},
    )
