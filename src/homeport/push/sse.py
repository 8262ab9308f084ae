"""``GET /v1/events`` (Server-Sent Events) and ``POST /v1/events/TOPIC`` (publish).

The hot path is fan-out: an event going to thousands of connections is framed once —
``id:``/``event:``/``data:`` lines, and the HTTP/1.1 chunk header around them — cached on
the event, and written straight to each connection (``Request.write`` per client costs
three times as much; ``bench/fanout.py`` measures the fan-out against nginx + nchan).

On a plain TCP socket (``ITCPTransport.getHandle()``; not TLS, whose transport's handle
is no socket) a frame is sent on the socket at once while Twisted's transport holds
nothing for it, as nginx does, instead of queued for the reactor's next turn: that
saves two ``epoll_ctl`` calls and an ``epoll_wait`` entry per client and event (the
``send`` itself is the same).  Whether the transport holds anything is told through
public interfaces only: the stream sets the transport's documented ``bufferSize`` to 0,
so that any byte the transport has to keep pauses the request's producer
(:class:`~.flow.FlowControl`), and the transport resumes it when it has sent them all.
What the socket does not take is handed to ``ITransport.write`` (which pauses us).

Each connection registers that push producer with its request, so the transport tells it
when its send buffer is full (``pauseProducing``) and when it has drained
(``resumeProducing``).  While it is full the connection holds its frames itself
(references to the shared frames, not copies) and counts their bytes — and what it
handed the transport — against ``queue_limit``; on resume it sends them in one go.  Past
the limit the connection is aborted — its buffers freed at once — and the browser
reconnects with ``Last-Event-ID`` and resumes from the history.  One slow reader thus
costs at most the limit, never more.

One timer for all connections writes the heartbeat comment every 15 s.

With ``--acl`` a stream delivers only the events its token may read (:mod:`.access`:
a topic whose rule the topic alone decides is refused up front with Consul's 403,
the others are filtered per event), and publishing needs event write on the topic.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .. import strictjson
from ..acl import PermissionDenied, TokenNotFound
from ..http.args import parse_args
from ..http.auth import Access, Grant, Token, given_token
from ..http.cors import CORS
from ..http.direct import plain_socket, send_now, send_one
from ..http.errors import ErrorTable
from ..logs.query import BadQuery, LogQuery, parse_query
from .access import readable, topic_rule
from .errors import (
    BadBody,
    BadLastEventID,
    BodyTooLarge,
    EventsError,
    MethodNotAllowed,
    MissingTopic,
    ReservedTopic,
    WriteDenied,
)
from .flow import FlowControl
from .hub import RESERVED_TOPICS, ZMQ_PREFIX, BadTopic, Event, Hub, check_topic, topic_matches
from .logfilter import is_filtering, record_matches

HEARTBEAT_INTERVAL = 15.0
RETRY_MS = 2000
DEFAULT_QUEUE_LIMIT = 1024 * 1024
REPLAY_LIMIT = 10_000
TEXT = b"text/plain; charset=utf-8"
_LINES = re.compile(r"\r\n|\r|\n")


def sse_frame(event: Event) -> bytes:
    """One event in the text/event-stream format (a blank line ends it).

    ``time:`` (publish time, Unix seconds) is not a standard field: ``EventSource``
    ignores it, as the spec says of unknown fields; the dashboard's stream reader shows it.
    """
    lines = [f"id: {event.id}", f"event: {event.topic}", f"time: {event.time:.3f}"]
    lines.extend("data: " + line for line in _LINES.split(event.data_text()))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def chunk(data: bytes) -> bytes:
    """*data* as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _plain(event: Event) -> bytes:
    return sse_frame(event)


def _chunked(event: Event) -> bytes:
    return chunk(event.cached("sse", _plain))


HEARTBEAT = b": heartbeat\n\n"
HEARTBEAT_CHUNKED = chunk(HEARTBEAT)
#: The stream's first frame after ``retry:`` (before any replayed event).
OPENED = b": homeport events\n\n"
OPENED_CHUNKED = chunk(OPENED)


class SSEConnection:
    """One open event stream: filters, frames and writes events; cut off when too slow."""

    __slots__ = (
        "buffer_size",
        "chunked",
        "closed",
        "direct",
        "flow",
        "grant",
        "held",
        "log_query",
        "request",
        "service",
        "sock",
        "subscription",
        "transport",
    )

    def __init__(
        self,
        service: SSEService,
        request: Request,
        log_query: LogQuery | None,
        grant: Grant | None = None,
    ) -> None:
        self.service = service
        #: ``--acl``: the token whose read rights filter the events; None: all pass.
        self.grant = grant
        self.request = request
        self.chunked = bool(request.chunked)
        channel = request.channel
        self.direct = isinstance(channel, HTTPChannel) and channel.transport is not None
        self.transport: Any = channel.transport if self.direct else None
        #: The socket frames are sent on at once while the transport holds nothing.
        self.sock: socket.socket | None = None
        self.buffer_size = 0  # the transport's own, while the stream has set it to 0
        self.log_query = log_query
        self.closed = False
        #: Frames kept while the transport is full, written when it has drained.
        self.held: list[bytes] = []
        # The request's producer: the transport pauses and resumes it, and stopping it
        # closes the stream.
        self.flow = FlowControl(self.close, self.flush)
        self.subscription: Any = None

    # -- writing ----------------------------------------------------------------

    def deliver(self, event: Event) -> None:
        if self.grant is not None and not self.may_read(event):
            return
        if self.log_query is not None and event.topic == "logs":
            if not record_matches(self.log_query, event.data):
                return
        if self.chunked:
            self.write(event.cached("sse-chunked", _chunked))
        else:
            self.write(event.cached("sse", _plain))

    def may_read(self, event: Event) -> bool:
        """May the stream's token read *event*?  A token gone (deleted, expired) ends
        the stream."""
        assert self.grant is not None
        try:
            return readable(self.grant.current(), event)
        except TokenNotFound:
            self.abort()
            return False

    def heartbeat(self) -> None:
        self.write(HEARTBEAT_CHUNKED if self.chunked else HEARTBEAT)
        reset = getattr(self.request.channel, "resetTimeout", None)
        if reset is not None:
            reset()

    def start(self) -> None:
        """Write the first frame; on a plain TCP socket, arm the direct sends.

        The response's head is still in the transport (its ``write`` only buffers), so
        the first frame goes there too, after ``bufferSize`` is 0: that pauses us until
        the transport has sent it all.  A transport that does not pause us then would
        give no signal either: it keeps the ordinary writes.
        """
        if self.closed:  # the connection went while it was being opened
            return
        first = OPENED_CHUNKED if self.chunked else OPENED
        sock = plain_socket(self.transport) if self.direct else None
        if sock is None:
            self.write(first)
            return
        transport = self.transport
        self.buffer_size = transport.bufferSize
        transport.bufferSize = 0
        transport.write(first)
        if self.flow.paused:
            self.sock = sock
        else:
            transport.bufferSize = self.buffer_size

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        flow = self.flow
        if flow.paused:
            if flow.over_limit(None, len(data), self.service.queue_limit):
                self.service.cut_off += 1
                self.abort()
            else:
                self.held.append(data)
        elif (sock := self.sock) is not None:
            self.send(sock, data)
        elif self.direct:
            self.transport.write(data)
        else:  # HTTP/2 and other channels: through the request
            self.request.write(self.unchunked(data))

    def send(self, sock: socket.socket, data: bytes) -> None:
        """Send *data* on *sock* now (the transport holds nothing); the transport gets
        what the socket does not take, and pauses us until it has sent it."""
        self.flow.queued += send_one(sock, self.transport, data)

    def flush(self) -> None:
        """The transport drained: write what was held (it may pause us again)."""
        if not self.held or self.closed:  # (no new list for a stream that had none)
            return
        held, self.held = self.held, []
        if (sock := self.sock) is not None:
            self.flow.queued += send_now(sock, self.transport, held)
        elif self.direct:
            self.transport.writeSequence(held)
        else:
            for data in held:
                self.request.write(self.unchunked(data))

    def unchunked(self, data: bytes) -> bytes:
        """*data* without its HTTP/1.1 chunk framing (the request frames it itself)."""
        return data[data.index(b"\r\n") + 2 : -2] if self.chunked else data

    def write_text(self, text: str) -> None:
        data = text.encode("utf-8")
        self.write(chunk(data) if self.chunked else data)

    def abort(self) -> None:
        transport: Any = self.request.channel.transport if self.request.channel else None
        self.close()
        if transport is not None:
            transport.abortConnection()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.held = []
        if self.sock is not None:
            self.sock = None
            self.transport.bufferSize = self.buffer_size  # its ordinary buffering again
        if self.subscription is not None:
            self.subscription.cancel()
            self.subscription = None
        self.service.connections.pop(self, None)


class SSEService(Service):
    """The open event streams and their heartbeat timer."""

    log = Logger()

    def __init__(
        self,
        hub: Hub,
        reactor: Any,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        heartbeat: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.hub = hub
        self.reactor = reactor
        self.queue_limit = queue_limit
        self.heartbeat_interval = heartbeat
        self.connections: dict[SSEConnection, None] = {}
        self.cut_off = 0
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        Service.startService(self)
        self._loop = LoopingCall(self.beat)
        self._loop.clock = self.reactor
        self._loop.start(self.heartbeat_interval, now=False)

    def stopService(self) -> None:
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        for connection in list(self.connections):
            request = connection.request
            connection.close()
            if request.channel is not None and request.channel.transport is not None:
                request.channel.transport.loseConnection()

    def beat(self) -> None:
        for connection in list(self.connections):
            connection.heartbeat()

    def open(
        self,
        request: Request,
        patterns: Sequence[str],
        last_id: int | None,
        log_query: LogQuery | None,
        grant: Grant | None = None,
    ) -> SSEConnection:
        """Start the stream on *request*: replay from *last_id*, then follow live (only
        what *grant*'s token may read, when given)."""
        connection = SSEConnection(self, request, log_query, grant)
        self.connections[connection] = None
        request.registerProducer(connection.flow, True)
        request.notifyFinish().addBoth(lambda _: connection.close())
        connection.start()
        if last_id is not None:
            oldest = self.hub.history.oldest_id(patterns)
            if last_id < self.hub.last_id:
                events = self.hub.replay(last_id, patterns, REPLAY_LIMIT)
                first = events[0].id if events else oldest
                if first is not None and first > last_id + 1 and last_id > 0:
                    connection.write_text(
                        f": history kept from id {first}; earlier events are gone\n\n"
                    )
                for event in events:
                    connection.deliver(event)
        if not connection.closed:
            connection.subscription = self.hub.subscribe(patterns, connection.deliver)
        return connection


#: The one place each refusal gets its status; the text is the error's ``str()``.
ERRORS = ErrorTable(
    {
        MethodNotAllowed: (405, str),
        MissingTopic: (400, str),
        BadTopic: (400, str),
        BadLastEventID: (400, str),
        BadQuery: (400, str),
        WriteDenied: (403, str),
        ReservedTopic: (400, str),
        BodyTooLarge: (413, str),
        BadBody: (400, str),
        PermissionDenied: (403, str),
        TokenNotFound: (403, str),
    }
)
#: What the resource refuses a request with (every kind has a row in :data:`ERRORS`).
REFUSALS = (EventsError, BadTopic, BadQuery, PermissionDenied, TokenNotFound)


def _text(request: Request, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", TEXT)
    return text.encode("utf-8") + b"\n"


def _refuse(request: Request, error: Exception) -> bytes:
    """The plain-text answer :data:`ERRORS` gives *error* (and ``Allow`` on a 405)."""
    answer = ERRORS.answer(error)
    if answer is None:  # not a refusal: a bug, raised as before
        raise error
    if isinstance(error, MethodNotAllowed):
        request.setHeader(b"allow", error.allow.encode("ascii"))
    return _text(request, answer.status, answer.text)


class EventsResource(Resource):
    """``/v1/events``: the stream (GET), and publishing (``POST /v1/events/TOPIC``)."""

    isLeaf = True
    log = Logger()
    #: What ``--acl`` asks of the token (:mod:`.access` maps each topic to its rule).
    acl_rule = "topic read (push.access); POST: event:write"

    def __init__(
        self,
        service: SSEService,
        now: Callable[[], float],
        token: Token | Access | None = None,
        cors: CORS | None = None,
    ) -> None:
        Resource.__init__(self)
        self.service = service
        self.hub = service.hub
        self.now = now
        self.token = token or Token(None)
        self.cors = cors or CORS()

    def render(self, request: Request) -> bytes | int:
        self.cors.apply(request)
        try:
            return self.dispatch(request)
        except REFUSALS as error:
            return _refuse(request, error)

    def dispatch(self, request: Request) -> bytes | int:
        segments = [s for s in request.postpath or () if s]
        allow = "POST, OPTIONS" if segments else "GET, OPTIONS"
        if request.method == b"OPTIONS":
            request.setHeader(b"allow", allow.encode("ascii"))
            return b""
        if request.method != (b"POST" if segments else b"GET"):
            raise MethodNotAllowed(request.method.decode("latin-1"), allow)
        if not segments:
            return self.stream(request)
        topic = "/".join(unquote(s.decode("utf-8", "replace")) for s in segments)
        return self.publish(request, topic)

    def stream(self, request: Request) -> int:
        args = parse_args(request.uri)
        patterns = [t for value in args.get("topic", ()) for t in value.split(",") if t]
        if not patterns:
            raise MissingTopic()
        for pattern in patterns:
            check_topic(pattern, pattern=True)
        last_id = _last_event_id(request, args)
        log_query: LogQuery | None = None
        if any(topic_matches(p, "logs") for p in patterns):
            log_query = parse_query(args, self.now())
            if not is_filtering(log_query):
                log_query = None
        grant = self._grant(request, args, patterns)
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-accel-buffering", b"no")
        request.write(f"retry: {RETRY_MS}\n".encode())  # and the head: the rest follows
        self.service.open(request, patterns, last_id, log_query, grant)
        return NOT_DONE_YET

    def _grant(
        self, request: Request, args: dict[str, list[str]], patterns: Sequence[str]
    ) -> Grant | None:
        """``--acl``: the stream's token, which must read every topic it names exactly
        whose rule the topic alone decides (``logs``, a user topic); else None."""
        access = self.token
        if not isinstance(access, Access) or not access.acl:
            return None
        where = f"GET {request.path.decode('utf-8', 'replace')}"
        grant = access.grant(_last(args.get("token")) or given_token(request), where)
        for pattern in patterns:
            rule = None if pattern.endswith("*") else topic_rule(pattern)
            if rule is not None:
                access.check_grant(grant, rule[0], rule[1], "read", where)
        return grant

    def publish(self, request: Request, topic: str) -> bytes:
        query_token = _last(parse_args(request.uri).get("token"))
        if isinstance(self.token, Access) and self.token.acl:
            self.token.check(request, "event", topic, "write", query_token)
        elif not self.token.allows(request, query_token):
            raise WriteDenied()
        check_topic(topic)
        if topic in RESERVED_TOPICS or topic.startswith(ZMQ_PREFIX):
            raise ReservedTopic(topic)
        if getattr(request, "too_large", False):
            raise BodyTooLarge()
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read()
        content_type = (request.getHeader(b"content-type") or b"").lower()
        event = self.hub.publish(topic, _event_data(body, declared_json=b"json" in content_type))
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"id": event.id, "topic": topic}).encode()


def _last_event_id(request: Request, args: dict[str, list[str]]) -> int | None:
    """Where the client resumes: the ``Last-Event-ID`` header, else ``?last_event_id``."""
    raw = request.getHeader(b"last-event-id")
    given = raw.decode("latin-1") if raw is not None else None
    if given is None and args.get("last_event_id"):
        given = args["last_event_id"][-1]
    if given is None or given.strip() == "":
        return None
    try:
        last_id = int(given.strip())
    except ValueError:
        raise BadLastEventID(given) from None
    if last_id < 0:
        raise BadLastEventID(given)
    return last_id


def _event_data(body: bytes, declared_json: bool) -> Any:
    """An event's data: the body as JSON when it parses, else as text (UTF-8 only)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody(json=False) from None
    try:
        return strictjson.loads(text)  # NaN would break browsers and the history
    except ValueError:
        if declared_json:
            raise BadBody(json=True) from None
    return text


def _last(values: list[str] | None) -> str | None:
    return values[-1] if values else None
