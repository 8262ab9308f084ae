"""The syslog listeners of the log part, made from their option strings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString

from ...http.listen import exposed_interfaces
from ...http.metrics import Metrics
from .ingest import Ingest
from .listen import StreamFactory, StreamListener, UDPListener, json_lines_factory
from .relp import RelpFactory


@dataclass(frozen=True, kw_only=True)
class Endpoints:
    """Where to listen, as given: ``--syslog``, ``--syslog-tls`` (a TLS endpoint string:
    ``le:<certdir>:tcp:6514`` serves the certificates of that directory, or ``ssl:``),
    ``--relp``, ``--json-lines``."""

    syslog: tuple[str, ...] = ()
    syslog_tls: tuple[str, ...] = ()
    relp: tuple[str, ...] = ()
    json_lines: tuple[str, ...] = ()

    @property
    def exposed(self) -> bool:
        """Does any of them listen beyond loopback?"""
        every = (*self.syslog, *self.syslog_tls, *self.relp, *self.json_lines)
        return any(exposed_interfaces(stream_description(d)) for d in every)


def stream_description(description: str) -> str:
    """``--relp 2514`` is ``tcp:2514``; anything else is a Twisted endpoint string."""
    text = description.strip()
    return f"tcp:{text}" if text.isdigit() else text


def is_udp(description: str) -> bool:
    return description.strip().lower().startswith("udp:")


def check(option: str, description: str, reactor: Any = None) -> None:
    """ValueError (with the reason) unless *description* is one *option* can use."""
    from .listen import parse_udp

    if option == "--syslog" and is_udp(description):
        parse_udp(description)
        return
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        serverFromString(reactor, stream_description(description))
    except Exception as e:  # noqa: BLE001 - endpoint parsers raise every type there is
        raise ValueError(f"not a valid endpoint ({e or type(e).__name__})") from None


def listeners(endpoints: Endpoints, ingest: Ingest, reactor: Any) -> list[IService]:
    """A service for each endpoint: it binds when started."""
    services: list[IService] = []
    for description in endpoints.syslog:
        what = f"--syslog {description!r}"
        if is_udp(description):
            services.append(UDPListener(what, description, ingest, reactor))
        else:
            services.append(
                _stream(what, "syslog (TCP)", description, StreamFactory(ingest, reactor))
            )
    for description in endpoints.syslog_tls:
        factory = StreamFactory(ingest, reactor)
        what = f"--syslog-tls {description!r}"
        services.append(_stream(what, "syslog (TLS)", description, factory))
    for description in endpoints.relp:
        relp = RelpFactory(ingest, reactor)
        services.append(_stream(f"--relp {description!r}", "RELP", description, relp))
    for description in endpoints.json_lines:
        factory = json_lines_factory(ingest, reactor)
        services.append(
            _stream(f"--json-lines {description!r}", "JSON lines", description, factory)
        )
    return services


def certificate_reloads(services: list[IService]) -> list[Callable[[], None]]:
    """What SIGHUP calls so that TLS listeners on a certificate directory (``le:``) serve
    the certificates it has now (renewed ones)."""
    reloads: list[Callable[[], None]] = []
    for service in services:
        sni = getattr(getattr(service, "endpoint", None), "sni", None)
        reload = getattr(sni, "reload", None)
        if callable(reload):
            reloads.append(_calling(reload))
    return reloads


def _calling(reload: Callable[[], object]) -> Callable[[], None]:
    def call() -> None:
        reload()

    return call


def _stream(what: str, kind: str, description: str, factory: StreamFactory) -> StreamListener:
    endpoint = serverFromString(factory.reactor, stream_description(description))
    return StreamListener(what, kind, endpoint, factory)


def register_metrics(metrics: Metrics, ingest: Ingest) -> None:
    """The listeners' counts on ``/metrics``."""
    counts = ingest.counts
    metrics.counter(
        "homeport_syslog_received", "Syslog records received", lambda: float(counts.received)
    )
    metrics.counter(
        "homeport_syslog_stored", "Syslog records committed to the store", lambda: counts.stored
    )
    metrics.counter(
        "homeport_syslog_dropped",
        "Syslog UDP datagrams dropped because the store was behind",
        lambda: float(counts.dropped),
    )
    metrics.counter(
        "homeport_syslog_failed", "Syslog records the store could not commit", lambda: counts.failed
    )
    metrics.gauge(
        "homeport_syslog_pending",
        "Syslog records handed to the store, not yet committed",
        lambda: float(ingest.pending),
    )
    metrics.gauge(
        "homeport_syslog_connections",
        "Open syslog TCP, RELP and JSON-lines connections",
        lambda: float(counts.connections),
    )
