"""Event push: the hub, ZeroMQ in, Server-Sent Events and Socket.IO out.

:func:`build` makes the part: the hub (whose ``publish`` the log sink and the catalog
feed), the services that run it, ``/v1/events`` and ``/socket.io/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.application.service import MultiService

from ..http.auth import Access
from ..http.metrics import Metrics
from ..part import IHomeportReactor, Part, attach

if TYPE_CHECKING:
    from .hub import Hub
    from .socketio import EngineIO
    from .sse import SSEService
    from .zmq import ZmqSubscriber


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: Engine.IO's ping interval and timeout (seconds) and largest payload (bytes).
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000
    #: Bytes an event stream may fall behind before it is closed.
    sse_queue_limit: int = 1024 * 1024
    #: Events kept per topic for clients that resume.
    event_history: int = 1000
    zmq_connect: tuple[str, ...] = ()
    zmq_bind: tuple[str, ...] = ()
    zmq_topics: tuple[str, ...] = ()
    #: CURVE: the server's secret-key certificate and the allowed clients' directory.
    zmq_curve_server_key: Path | None = None
    zmq_curve_clients: Path | None = None
    token: str | None = None
    cors_origins: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PushPart(Part):
    hub: Hub


def build(
    settings: Settings,
    reactor: IHomeportReactor,
    data_dir: Path,
    metrics: Metrics,
    access: Access | None = None,
) -> PushPart:
    """Every push part; nothing runs until started; *access* (else ``--token`` alone)
    says who may read and publish what.  Raises what opening
    ``<data_dir>/events.sqlite3`` raises (``sqlite3.Error``, ``OSError``)."""
    from ..http.auth import Token
    from ..http.cors import CORS
    from .hub import Hub, HubService, SQLiteHistory
    from .socketio import EngineIO
    from .sse import EventsResource, SSEService

    service = MultiService()
    history = SQLiteHistory(data_dir / "events.sqlite3", per_topic=settings.event_history)
    hub = Hub(history, reactor.seconds)
    cors = CORS(settings.cors_origins)
    sse = SSEService(hub, reactor, queue_limit=settings.sse_queue_limit)
    access = access or Access(Token(settings.token))
    events = EventsResource(sse, reactor.seconds, access, cors)
    zmq = None
    if settings.zmq_connect or settings.zmq_bind:
        from .zmq import Curve, ZmqSubscriber

        curve = None
        if settings.zmq_curve_server_key is not None and settings.zmq_curve_clients is not None:
            curve = Curve(settings.zmq_curve_server_key, settings.zmq_curve_clients)

        zmq = ZmqSubscriber(
            hub,
            reactor,
            connect=list(settings.zmq_connect),
            bind=list(settings.zmq_bind),
            topics=list(settings.zmq_topics),
            curve=curve,
        )
    engine = EngineIO(
        hub,
        reactor,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        max_payload=settings.max_payload,
        cors=cors,
        access=access,
    )
    attach(service, HubService(hub, reactor), sse, *([zmq] if zmq else []), engine)
    _gauges(metrics, hub, sse, zmq, engine)
    return PushPart(
        service=service,
        resources={b"socket.io": engine.resource},
        v1={b"events": events},
        hub=hub,
    )


def _gauges(
    metrics: Metrics, hub: Hub, sse: SSEService, zmq: ZmqSubscriber | None, engine: EngineIO
) -> None:
    gauge, counter = metrics.gauge, metrics.counter
    counter("homeport_events_published", "Events published since start", lambda: hub.published)
    gauge("homeport_events_last_id", "The newest event id", lambda: hub.last_id)
    gauge("homeport_sse_connections", "Open event streams", lambda: len(sse.connections))
    counter(
        "homeport_sse_cut_off",
        "Event streams closed because the client fell too far behind",
        lambda: sse.cut_off,
    )
    if zmq is not None:
        zs = zmq
        counter("homeport_zmq_received", "ZeroMQ messages received", lambda: zs.received)
        counter(
            "homeport_zmq_malformed",
            "ZeroMQ messages dropped because of their shape",
            lambda: zs.malformed,
        )
    gauge("homeport_socketio_sessions", "Engine.IO sessions", lambda: len(engine.sessions))
