"""The dashboard: a Flask app (:mod:`.ui`, templates, static files) served at ``/ui/``.

:func:`build` hosts it in twisted.web's ``WSGIResource`` on a thread pool of its own.
Flask is imported and the app made on the first ``/ui`` request (:class:`.pool.LazyApp`),
not at start-up: a daemon nobody opens the dashboard of never pays for it, and the
others answer their first API request sooner (about 0.1 s of a container's start).
With ``--acl`` every page needs the ``ui`` rule's read (asked on the reactor thread,
where the ACL records live).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.web.wsgi import WSGIResource

from ..part import IHomeportReactor, Part

if TYPE_CHECKING:
    from ..http.auth import Access


class Dashboard(WSGIResource):
    """``/ui/``: the Flask app on its thread pool."""

    #: What ``--acl`` asks of the token (tests/test_acl_routes.py lists every face's).
    acl_rule = "ui:read"

    def __init__(self, reactor: Any, pool: Any, app: Any) -> None:
        WSGIResource.__init__(self, reactor, pool, app)


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: Asked for (once, kept in a cookie) before any page shows.
    token: str | None = None
    #: Threads serving dashboard requests.
    threads: int = 8


def build(
    settings: Settings,
    reactor: IHomeportReactor,
    facts: Callable[[], dict[str, Any]],
    access: Access | None = None,
) -> Part:
    """The dashboard; *facts* (the header's node, counts, ...) is called on the reactor
    thread, the pages themselves render on the pool's threads; *access* (``--acl``, once
    bound) decides who may see them."""
    from twisted.internet.threads import blockingCallFromThread
    from twisted.python.threadpool import ThreadPool

    from .pool import LazyApp, ThreadPoolService, WSGIApp

    def info() -> dict[str, Any]:  # on a WSGI thread
        found: dict[str, Any] = blockingCallFromThread(reactor, facts)
        return found

    def check(secret: str | None, where: str) -> str | None:  # on a WSGI thread
        assert access is not None
        denial: str | None = blockingCallFromThread(
            reactor, access.check_secret, secret, "ui", "", "read", where
        )
        return denial

    def make_app() -> WSGIApp:  # on a WSGI thread, once: the wiring has bound --acl
        from .ui import create_app

        acl = access is not None and access.acl
        return create_app(info, settings.token, check if acl else None)

    pool = ThreadPool(minthreads=1, maxthreads=settings.threads, name="homeport-wsgi")
    return Part(
        service=ThreadPoolService(pool, reactor),
        resources={b"ui": Dashboard(reactor, pool, LazyApp(make_app))},
    )
