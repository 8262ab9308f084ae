"""The log sink: ``logging.handlers.HTTPHandler`` records in, stored, searched, tailed.

:mod:`.record` reads a record from HTTPHandler's fields, :mod:`.store` keeps records in
SQLite (committed in batches by a writer child process, :mod:`.writer`), :mod:`.query` is
the search language, :mod:`.retention` prunes, and :mod:`.http` is the face: ``/log`` to
ingest and ``/v1/logs`` to search.  :mod:`.syslog` takes syslog (UDP, TCP, RELP) and
syslog-ng's JSON lines into the same store.  :func:`build` makes all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only for annotations: importing this package (as ``python -m
    # homeport.logs.writer`` does) imports no Twisted.
    from ..http.auth import Access
    from ..http.metrics import Metrics
    from ..part import IHomeportReactor, Part
    from .service import LogSink, Publish


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: Prune records older than this (seconds) and beyond this count; None: no limit.
    max_age: float | None = 7 * 86400.0
    max_records: int | None = None
    token: str | None = None
    #: Print each record on the daemon's console.
    console: bool = True
    #: Syslog listeners (endpoint strings, none by default): ``udp:PORT[:interface=ADDR]``
    #: or ``tcp:PORT[...]`` (RFC 5424/3164, RFC 6587 framing); RELP (``PORT`` or ``tcp:``);
    #: syslog-ng's JSON lines.
    syslog: tuple[str, ...] = ()
    #: RFC 5425 syslog over TLS: TLS endpoint strings (``le:<certdir>:tcp:6514``, ``ssl:``).
    syslog_tls: tuple[str, ...] = ()
    relp: tuple[str, ...] = ()
    json_lines: tuple[str, ...] = ()
    #: Their limits: bytes of one message (longer ones are cut), records on their way to
    #: the store (past it UDP drops and TCP readers pause), open connections per
    #: listener, and seconds a connection may stay silent.
    syslog_max_message: int = 64 * 1024
    syslog_max_pending: int = 20_000
    syslog_max_connections: int = 1024
    syslog_idle_timeout: float = 600.0


def build(
    settings: Settings,
    reactor: IHomeportReactor,
    data_dir: Path,
    publish: Publish | None = None,
    metrics: Metrics | None = None,
    access: Access | None = None,
) -> Part:
    """The sink on ``<data_dir>/logs.sqlite3``; every stored record is published on
    *publish*'s topic ``logs``; the syslog listeners' counts go on *metrics*; *access*
    (else ``--token`` alone) says who may ingest and search.  Raises what opening the
    database raises."""
    from ..http.auth import Access, Token
    from ..part import Part
    from .http import LogIngestResource, LogSearchResource
    from .service import LogSink

    sink = LogSink(
        data_dir / "logs.sqlite3",
        reactor,
        publish=publish,
        max_age=settings.max_age,
        max_records=settings.max_records,
        console=settings.console,
    )
    access = access or Access(Token(settings.token))
    ingest = LogIngestResource(sink.store.add, reactor.seconds, access)
    search = LogSearchResource(sink.store.search, reactor.seconds, access)
    exposed, reloads = _syslog(settings, sink, reactor, metrics)
    return Part(
        service=sink,
        resources={b"log": ingest},
        v1={b"logs": search},
        on_hangup=reloads,
        exposed=exposed,
    )


def _syslog(
    settings: Settings, sink: LogSink, reactor: IHomeportReactor, metrics: Metrics | None
) -> tuple[bool, list[Callable[[], None]]]:
    """The syslog listeners, children of *sink* (started after its store, stopped before
    it); whether any listens beyond loopback, and what SIGHUP reloads (certificates)."""
    from ..part import attach
    from .syslog.ingest import Ingest, Limits
    from .syslog.service import Endpoints, certificate_reloads, listeners, register_metrics

    endpoints = Endpoints(
        syslog=settings.syslog,
        syslog_tls=settings.syslog_tls,
        relp=settings.relp,
        json_lines=settings.json_lines,
    )
    limits = Limits(
        max_message=settings.syslog_max_message,
        max_pending=settings.syslog_max_pending,
        max_pending_per_connection=max(1, min(2_000, settings.syslog_max_pending // 4)),
        max_connections=settings.syslog_max_connections,
        idle_timeout=settings.syslog_idle_timeout,
    )
    ingest = Ingest(sink.store.add, reactor.seconds, limits)
    if metrics is not None:
        register_metrics(metrics, ingest)
    services = listeners(endpoints, ingest, reactor)
    attach(sink, *services)
    return endpoints.exposed, certificate_reloads(services)
