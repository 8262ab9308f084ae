"""Consul's user event routes: ``PUT /v1/event/fire/:name`` and ``GET /v1/event/list``.

Both are routes of the catalog's :class:`~homeport.http.api.ApiResource` (token, ``?dc=``,
``?pretty``, errors and metrics as every Consul route).  A blocking list is the one thing
the API resource cannot do for events: Consul's event index is made from the newest
event's ID, not from the catalog's index, and a list blocks while it *equals* the
client's.  :class:`BlockingEventList`, mounted at ``/v1/event`` before the API, parks
those requests and hands every other one (and each parked one, once it may be answered)
to the API resource.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from twisted.application.service import IService
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..http.api import MAX_WAIT, ApiResource, Call, Reply, json_reply
from ..http.args import parse_args
from ..http.errors import ErrorTable
from ..services import OnStop
from ..units import DurationError, parse_duration
from .events import (
    EventBuffer,
    EventTooLarge,
    InvalidEventFilter,
    MissingEventName,
    TagFilterWithoutService,
    UserEvent,
    event_json,
)
from .model import Catalog

#: How Consul answers what firing an event refuses.
ERRORS = ErrorTable(
    {
        MissingEventName: (400, str),
        TagFilterWithoutService: (500, str),
        InvalidEventFilter: (500, str),
        EventTooLarge: (500, str),
    }
)

#: The push hub's topic for every event this agent keeps.
TOPIC = "consul-event"


@dataclass(frozen=True)
class Events:
    """What :func:`routes` gives the catalog's build."""

    buffer: EventBuffer
    #: Mounted at ``/v1/event`` (``{b"event": resource}``), before the API resource.
    resource: Resource
    #: Answers the parked lists when the daemon stops.
    service: IService


def routes(
    api: ApiResource,
    catalog: Catalog,
    node: str,
    reactor: IReactorTime,
    publish: Callable[[str, Any], object] | None = None,
) -> Events:
    """Add the event routes to *api*; each kept event also goes to *publish*'s
    ``consul-event`` topic (in Consul's JSON shape)."""
    buffer = EventBuffer()
    face = EventRoutes(catalog, node, buffer)
    api.errors.rows.update(ERRORS.rows)
    api.route("PUT", "/v1/event/fire/*name", face.fire)
    api.route("GET", "/v1/event/list", face.list, volatile=True)
    blocking = BlockingEventList(api, buffer, reactor)
    buffer.listeners.append(blocking.changed)
    if publish is not None:
        buffer.listeners.append(lambda event: publish(TOPIC, event_json(event)))
    return Events(buffer=buffer, resource=blocking, service=OnStop(blocking.close))


class EventRoutes:
    """The two handlers."""

    def __init__(self, catalog: Catalog, node: str, buffer: EventBuffer) -> None:
        self.catalog = catalog
        self.node = node
        self.buffer = buffer

    def _local_services(self) -> list[tuple[str, tuple[str, ...]]]:
        """The agent's own services (Consul's local state: not the built-in ``consul``)."""
        return [
            (s.id, s.tags)
            for s in self.catalog.services.values()
            if s.node == self.node and s.source != "builtin"
        ]

    def fire(self, call: Call) -> Reply:
        """As Consul: the filters are the first ``?node=``, ``?service=``, ``?tag=``; the
        body, if any, is the payload; the answer is the event with ``LTime`` 0."""
        event = UserEvent(
            id="",
            name=call.params["name"],
            payload=call.body or None,
            node_filter=_first(call, "node"),
            service_filter=_first(call, "service"),
            tag_filter=_first(call, "tag"),
        )
        fired, _ = self.buffer.fire(event, self.node, self._local_services())
        return json_reply(event_json(fired), pretty=call.pretty)

    def list(self, call: Call) -> Reply:
        """The kept events, oldest first; ``X-Consul-Index`` from the newest one's ID."""
        name = _first(call, "name")
        index = str(self.buffer.index(name)).encode()
        reply = json_reply([event_json(e) for e in self.buffer.events(name)], pretty=call.pretty)
        reply.headers = ((b"x-consul-index", index),)
        return reply


def _first(call: Call, name: str) -> str:
    """Go's ``URL.Query().Get``: the first value ("" when absent)."""
    values = call.args.get(name)
    return values[0] if values else ""


@dataclass
class _Parked:
    request: Request
    name: str
    index: int
    timer: IDelayedCall | None = None


class BlockingEventList(Resource):
    """``/v1/event/*``: parks ``GET /v1/event/list?index=N`` while the list's index is N
    (Consul's rule for events: wait up to ``?wait``, 10 minutes when not given, no
    jitter); everything else goes straight to the API resource."""

    isLeaf = True
    #: The site leaves these requests' metrics to the API, which counts each once on its
    #: route (a parked list when it is answered; one whose client left is not counted).
    measured = True
    log = Logger()

    def __init__(self, api: ApiResource, buffer: EventBuffer, reactor: IReactorTime) -> None:
        Resource.__init__(self)
        self.api = api
        self.buffer = buffer
        self.reactor = reactor
        self.parked: list[_Parked] = []

    def render(self, request: Request) -> bytes | int:
        # Hand the segment back, as V1Dispatch does: the API routes on the whole postpath.
        assert request.prepath is not None and request.postpath is not None
        request.postpath.insert(0, request.prepath.pop())
        blocking = self._blocking(request)
        if blocking is None:
            return self.api.render(request)
        name, index, wait = blocking
        # The API resource answers it now: its own blocking (on the catalog's index) is
        # not the events' rule, so it never sees the client's index.
        request.uri = _without_blocking(request.uri)
        if self.buffer.index(name) != index:
            return self.api.render(request)
        parked = _Parked(request, name, index)
        parked.timer = self.reactor.callLater(wait, self._answer, parked)
        self.parked.append(parked)
        request.notifyFinish().addErrback(lambda _: self._gone(parked))
        return NOT_DONE_YET

    def _blocking(self, request: Request) -> tuple[str, int, float] | None:
        """``(name, index, wait)`` of a valid blocking list; None for anything else (a bad
        ``?index`` or ``?wait`` too: the API resource answers those 400)."""
        path = [s.decode("utf-8", "replace") for s in request.postpath or ()]
        if request.method not in (b"GET", b"HEAD") or [p for p in path if p] != ["event", "list"]:
            return None
        args = parse_args(request.uri)
        try:
            index = int(args.get("index", ["0"])[-1])
            wait = parse_duration(args["wait"][-1]) if "wait" in args else 0.0
        except (ValueError, DurationError):
            return None
        if index <= 0 or wait < 0 or (args.get("dc") and args["dc"][-1] != self.api.datacenter):
            return None
        name = args.get("name", [""])[0]
        return name, index, min(wait, MAX_WAIT) if wait > 0 else MAX_WAIT

    def changed(self, event: UserEvent) -> None:
        """An event was kept: answer each parked list whose index it moved."""
        for parked in [p for p in self.parked if self.buffer.index(p.name) != p.index]:
            self._answer(parked)

    def _answer(self, parked: _Parked) -> None:
        if parked not in self.parked:
            return
        self.parked.remove(parked)
        if parked.timer is not None and parked.timer.active():
            parked.timer.cancel()
        request = parked.request
        try:
            body = self.api.render(request)
        except Exception:  # noqa: BLE001 - a timer or listener callback must not raise
            self.log.failure("Answering a blocking event list")
            request.setResponseCode(500)
            body = b""
        if isinstance(body, bytes):
            request.write(body)
            request.finish()

    def _gone(self, parked: _Parked) -> None:
        """The client hung up."""
        if parked in self.parked:
            self.parked.remove(parked)
        if parked.timer is not None and parked.timer.active():
            parked.timer.cancel()

    def close(self) -> None:
        """Answer every parked list now (at shutdown)."""
        for parked in list(self.parked):
            self._answer(parked)


def _without_blocking(uri: bytes) -> bytes:
    path, _, query = uri.partition(b"?")
    args = parse_args(uri)
    kept = [(k, v) for k, values in args.items() if k not in ("index", "wait") for v in values]
    if not query or not kept:
        return path
    return path + b"?" + urlencode(kept).encode()
