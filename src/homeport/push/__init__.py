"""Event push: the hub, ZeroMQ in, Server-Sent Events and Socket.IO out.

:func:`validate_options` checks the push options of ``twist homeport``; :func:`build`
makes the parts for ``makeService``: one :class:`~twisted.application.service.MultiService`
to add to the daemon, the hub (whose ``publish`` the log sink and the catalog feed), and
the resources to mount at ``/v1/events`` and ``/socket.io/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage
from twisted.web.resource import Resource

from ..units import parse_seconds, parse_size
from .hub import Hub, HubService, SQLiteHistory, check_topic

OPTION_PARAMETERS: list[list[Any]] = [
    ["socketio-ping-interval", None, "25s", "Engine.IO ping interval."],
    ["socketio-ping-timeout", None, "20s", "Engine.IO ping timeout."],
    ["socketio-max-payload", None, "1000000", "Engine.IO largest payload (bytes)."],
    [
        "sse-queue-limit",
        None,
        "1MiB",
        "Bytes an event stream may fall behind before it is closed (it then resumes).",
    ],
    ["event-history", None, "1000", "Events kept per topic for clients that resume."],
]
LIST_OPTIONS = ("zmq-connect", "zmq-bind", "zmq-topic", "cors-origin")


def validate_options(options: Any) -> None:
    """Check and convert the push options in place; ``usage.UsageError`` on a bad one."""
    from .zmq import check_address

    for name in ("socketio-ping-interval", "socketio-ping-timeout"):
        try:
            options[name] = parse_seconds(options[name])
            if not 0 < options[name] <= 3600:
                raise ValueError
        except ValueError:
            raise usage.UsageError(
                f"--{name} {options[name]!r}: expected a duration like 25s or 500ms"
            ) from None
    for name in ("socketio-max-payload", "sse-queue-limit"):
        try:
            options[name] = parse_size(str(options[name]))
            if options[name] < 1024:
                raise ValueError
        except ValueError:
            raise usage.UsageError(
                f"--{name} {options[name]!r}: expected a size of at least 1024 bytes"
            ) from None
    try:
        options["event-history"] = int(options["event-history"])
        if options["event-history"] < 0:
            raise ValueError
    except ValueError:
        raise usage.UsageError(
            f"--event-history {options['event-history']!r}: expected a whole number"
        ) from None
    for name in ("zmq-connect", "zmq-bind"):
        for address in options[name]:
            try:
                check_address(address)
            except ValueError:
                raise usage.UsageError(
                    f"--{name} {address!r}: expected a ZeroMQ address like tcp://127.0.0.1:5556"
                ) from None
    for topic in options["zmq-topic"]:
        try:
            check_topic("zmq/" + topic)
        except Exception:
            raise usage.UsageError(f"--zmq-topic {topic!r}: not a usable topic prefix") from None
    if options["zmq-topic"] and not (options["zmq-connect"] or options["zmq-bind"]):
        raise usage.UsageError("--zmq-topic: give --zmq-connect or --zmq-bind too")


@dataclass
class Push:
    service: MultiService
    hub: Hub
    events: Resource
    socketio: Resource | None
    stats: dict[str, Any]


def build(options: Any, reactor: Any, data_dir: Path, metrics: Any = None) -> Push:
    """Every push part from *options* (already validated); nothing runs until started."""
    from ..http.auth import Token
    from ..http.cors import CORS
    from .sse import EventsResource, SSEService

    service = MultiService()
    history = SQLiteHistory(data_dir / "events.sqlite3", per_topic=options["event-history"])
    hub = Hub(history, reactor.seconds)
    HubService(hub, reactor).setServiceParent(service)
    cors = CORS(options["cors-origin"])
    sse = SSEService(hub, reactor, queue_limit=options["sse-queue-limit"])
    sse.setServiceParent(service)
    events = EventsResource(sse, reactor.seconds, Token(options["token"]), cors)
    zmq_service = None
    if options["zmq-connect"] or options["zmq-bind"]:
        from .zmq import ZmqSubscriber

        zmq_service = ZmqSubscriber(
            hub,
            reactor,
            connect=options["zmq-connect"],
            bind=options["zmq-bind"],
            topics=options["zmq-topic"],
        )
        zmq_service.setServiceParent(service)
    socketio: Resource | None = None
    try:
        from .socketio import EngineIO
    except ImportError:  # pragma: no cover - the Socket.IO part lands separately
        engine = None
    else:
        engine = EngineIO(
            hub,
            reactor,
            ping_interval=options["socketio-ping-interval"],
            ping_timeout=options["socketio-ping-timeout"],
            max_payload=options["socketio-max-payload"],
            cors=cors,
        )
        engine.setServiceParent(service)
        socketio = engine.resource
    if metrics is not None:
        metrics.gauge(
            "homeport_events_published", "Events published since start", lambda: hub.published
        )
        metrics.gauge("homeport_events_last_id", "The newest event id", lambda: hub.last_id)
        metrics.gauge(
            "homeport_sse_connections", "Open event streams", lambda: len(sse.connections)
        )
        metrics.gauge(
            "homeport_sse_cut_off",
            "Event streams closed because the client fell too far behind",
            lambda: sse.cut_off,
        )
        if zmq_service is not None:
            zs = zmq_service
            metrics.gauge("homeport_zmq_received", "ZeroMQ messages received", lambda: zs.received)
            metrics.gauge(
                "homeport_zmq_malformed",
                "ZeroMQ messages dropped because of their shape",
                lambda: zs.malformed,
            )
        if engine is not None:
            en = engine
            metrics.gauge(
                "homeport_socketio_sessions", "Engine.IO sessions", lambda: len(en.sessions)
            )
    return Push(service, hub, events, socketio, {"sse": sse, "zmq": zmq_service, "engine": engine})
