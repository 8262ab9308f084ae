"""Socket.IO v5 over Engine.IO v4 at ``/socket.io/``, native on twisted.web and autobahn.

python-socketio's server cannot run its WebSocket transport under a WSGI container, so
this speaks the protocol itself (see docs/PROTOCOLS.md): the Engine.IO handshake, the polling
transport (packets joined by the record separator ``\\x1e``; a POST is answered ``ok``),
the WebSocket transport (one packet per frame, via autobahn, in :mod:`.websocket`), the
``2probe``/``3probe``/``5`` upgrade, server pings with a pong deadline; and, inside
Engine.IO messages, the Socket.IO packets of namespace ``/``: CONNECT, DISCONNECT, EVENT
and ACK, and BINARY_EVENT (put back together with its attachments, then handled as an
EVENT).

The application on top is the hub: a client emits ``subscribe`` with a topic or a list
of topics (or ``{"topics": [...], "last_event_id": N}`` to resume), optionally with an
ack, and then receives each event as ``emit(topic, {"id": ..., "data": ...})``;
``unsubscribe`` takes topics off again.

Every bad input is an error for that client only: an unknown ``sid``, a malformed
packet, a second concurrent polling GET or an oversized payload end that session (HTTP
400 or 413, or the WebSocket closed); nothing else is touched.  A client that does not
read is cut off once ``queue_limit`` bytes wait for it.

With ``--acl`` the token is Socket.IO's ``auth`` (CONNECT data ``{"token": SECRET}``),
else the one the polling handshake's request carried (``?token=``, ``X-Consul-Token``,
Bearer, the dashboard's cookie).  An unknown token's CONNECT is refused
(CONNECT_ERROR "ACL not found"); a subscription to a topic the token may not read
(``logs``, a user topic: :func:`.access.topic_rule`) is answered with Consul's denial;
``catalog``, ``kv`` and user events are filtered per event (:func:`.access.readable`).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .. import strictjson
from ..acl import PermissionDenied, TokenNotFound
from ..http.args import parse_args
from ..http.auth import Access, Grant, given_token
from ..http.cors import CORS
from .access import readable, topic_rule
from .hub import BadTopic, Event, Hub, Subscription, check_topic

if TYPE_CHECKING:
    from .websocket import EngineIOWebSocket

RS = "\x1e"
TEXT = b"text/plain; charset=UTF-8"
DEFAULT_QUEUE_LIMIT = 1024 * 1024
REPLAY_LIMIT = 10_000
# Engine.IO's error codes for a refused HTTP request.
UNKNOWN_TRANSPORT = 0
UNKNOWN_SID = 1
BAD_HANDSHAKE_METHOD = 2
BAD_REQUEST = 3
UNSUPPORTED_VERSION = 5
_MESSAGES = {
    UNKNOWN_TRANSPORT: "Transport unknown",
    UNKNOWN_SID: "Session ID unknown",
    BAD_HANDSHAKE_METHOD: "Bad handshake method",
    BAD_REQUEST: "Bad request",
    UNSUPPORTED_VERSION: "Unsupported protocol version",
}


class ProtocolError(Exception):
    """The client broke the protocol; its session ends."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------------------
# Socket.IO packets (pure)


def _with_attachments(value: Any, attachments: Sequence[bytes]) -> Any:
    """*value* with each ``{"_placeholder": true, "num": n}`` replaced by attachment n."""
    if isinstance(value, list):
        return [_with_attachments(v, attachments) for v in value]
    if isinstance(value, dict):
        if value.get("_placeholder") is True and isinstance(value.get("num"), int):
            num = value["num"]
            if not 0 <= num < len(attachments):
                raise ProtocolError(f"a placeholder for attachment {num} that did not come")
            return attachments[num]
        return {k: _with_attachments(v, attachments) for k, v in value.items()}
    return value


def decode_socketio(text: str) -> tuple[int, int, str, int | None, Any]:
    """``<type>[<n>-][<nsp>,][<ack id>][JSON]`` -> (type, attachments, nsp, ack id, data)."""
    if not text or not text[0].isdigit():
        raise ProtocolError("not a Socket.IO packet")
    kind = int(text[0])
    if kind > 6:
        raise ProtocolError(f"unknown Socket.IO packet type {kind}")
    i = 1
    attachments = 0
    if kind in (5, 6):
        dash = text.find("-", i)
        if dash == -1 or not text[i:dash].isdigit():
            raise ProtocolError("a binary packet without its attachment count")
        attachments = int(text[i:dash])
        i = dash + 1
    namespace = "/"
    if text[i : i + 1] == "/":
        comma = text.find(",", i)
        end = comma if comma != -1 else len(text)
        namespace = text[i:end]
        i = end + 1 if comma != -1 else end
    start = i
    while i < len(text) and text[i].isdigit():
        i += 1
    ack = int(text[start:i]) if i > start else None
    data: Any = None
    if i < len(text):
        try:
            data = strictjson.loads(text[i:])  # lone surrogates made U+FFFD, NaN refused
        except ValueError:
            raise ProtocolError("the packet's JSON cannot be read") from None
    return kind, attachments, namespace, ack, data


def encode_socketio(kind: int, data: Any = None, ack: int | None = None, nsp: str = "/") -> str:
    out = str(kind)
    if nsp != "/":
        out += nsp + ","
    if ack is not None:
        out += str(ack)
    if data is not None:
        out += json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return out


def event_packet(event: Event) -> str:
    """An event as the Engine.IO message carrying ``emit(topic, {id, data})``."""
    return "4" + encode_socketio(2, [event.topic, {"id": event.id, "data": event.data}])


def _error_body(code: int) -> bytes:
    return json.dumps({"code": code, "message": _MESSAGES[code]}).encode()


# ---------------------------------------------------------------------------
# Sessions


class Session:
    """One Engine.IO session and the Socket.IO connection on it."""

    log = Logger()

    def __init__(self, engine: EngineIO, sid: str, transport: str) -> None:
        self.engine = engine
        self.sid = sid
        self.transport = transport  # "polling" or "websocket"
        self.queue: list[str] = []
        self.queued = 0
        self.poll: Request | None = None
        self.ws: EngineIOWebSocket | None = None
        self.probe: EngineIOWebSocket | None = None
        self.closed = False
        self.connected = False
        self.socket_sid: str | None = None
        self.subscription: Subscription | None = None
        self.attachments_left = 0
        # A BINARY_EVENT waiting for its attachments: (ack id, data), and what came so far.
        self._binary: tuple[int | None, Any] | None = None
        self._attachments: list[bytes] = []
        self._ping: IDelayedCall | None = None
        self._pong: IDelayedCall | None = None
        #: ``--acl``: the token of the handshake's request, and the connection's grant.
        self.secret: str | bytes | None = None
        self.grant: Grant | None = None
        self.schedule_ping()

    # -- heartbeat -------------------------------------------------------------

    def schedule_ping(self) -> None:
        self._ping = self.engine.reactor.callLater(self.engine.ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        self._ping = None
        self.send("2")
        if not self.closed:
            self._pong = self.engine.reactor.callLater(
                self.engine.ping_timeout, self.close, "ping timeout"
            )

    def _got_pong(self) -> None:
        if self._pong is not None and self._pong.active():
            self._pong.cancel()
            self._pong = None
            if self._ping is None and not self.closed:
                self.schedule_ping()

    # -- sending ---------------------------------------------------------------

    def send(self, packet: str) -> None:
        if self.closed:
            return
        if self.transport == "websocket" and self.ws is not None:
            self.ws.send_text(packet)
            return
        self.queue.append(packet)
        self.queued += len(packet)
        if self.queued > self.engine.queue_limit:
            self.engine.cut_off += 1
            self.close("too far behind")
            return
        if self.poll is not None:
            self.flush_poll()

    def send_event(self, event: Event) -> None:
        if self.closed:
            return
        if self.grant is not None and not self.may_read(event):
            return
        if self.transport == "websocket" and self.ws is not None:
            self.ws.send_prepared(event)
        else:
            self.send(event.cached("eio", event_packet))

    def may_read(self, event: Event) -> bool:
        """May the connection's token read *event*?  A token gone ends the session."""
        assert self.grant is not None
        try:
            return readable(self.grant.current(), event)
        except TokenNotFound:
            self.close("ACL not found")
            return False

    def flush_poll(self, packets: list[str] | None = None) -> None:
        request, self.poll = self.poll, None
        if request is None:
            return
        if packets is None:
            packets, self.queue, self.queued = self.queue, [], 0
        body = RS.join(packets).encode("utf-8")
        if request.channel is None:  # gone meanwhile: keep them for the next poll
            self.queue[:0] = packets
            self.queued += sum(len(p) for p in packets)
            return
        request.setHeader(b"content-type", TEXT)
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()

    # -- receiving -------------------------------------------------------------

    def receive(self, packet: str) -> None:
        """One Engine.IO packet from the client (any transport)."""
        if not packet:
            raise ProtocolError("an empty packet")
        kind = packet[0]
        if kind == "4":
            self.on_message(packet[1:])
        elif kind == "3":
            self._got_pong()
        elif kind == "2":
            self.send("3" + packet[1:])
        elif kind == "1":
            self.close("client close")
        elif kind == "6":
            pass
        elif kind == "b":
            try:
                data = base64.b64decode(packet[1:], validate=True)
            except (binascii.Error, ValueError):
                raise ProtocolError("bad base64 in a binary packet") from None
            self.on_binary(data)
        else:
            raise ProtocolError(f"unknown Engine.IO packet type {kind!r}")

    def on_binary(self, data: bytes) -> None:
        if self.attachments_left <= 0:
            raise ProtocolError("a binary packet that no Socket.IO packet announced")
        self.attachments_left -= 1
        self._attachments.append(data)
        if self.attachments_left == 0 and self._binary is not None:
            (ack, packet), attachments = self._binary, self._attachments
            self._binary, self._attachments = None, []
            # Answered like any event (subscribe wants topic names, so bytes get an error).
            self.on_event(_with_attachments(packet, attachments), ack)

    def on_message(self, text: str) -> None:
        if self.attachments_left:
            raise ProtocolError("a packet where a binary attachment was expected")
        kind, attachments, nsp, ack, data = decode_socketio(text)
        if kind == 0:  # CONNECT
            self._on_connect(nsp, data)
            return
        if nsp != "/":
            return  # not connected to that namespace: ignored, as Socket.IO servers do
        if not self.connected:
            raise ProtocolError("a packet before CONNECT")
        if kind == 1:  # DISCONNECT
            self.connected = False
            self._unsubscribe()
        elif kind == 2:  # EVENT
            self.on_event(data, ack)
        elif kind == 3:  # ACK of something we emitted with an id: we never ask for one
            pass
        elif kind in (5, 6):  # BINARY_EVENT, BINARY_ACK: the attachments follow
            self._on_binary_header(kind == 5, attachments, ack, data)
        else:  # CONNECT_ERROR comes from servers only
            raise ProtocolError(f"a client may not send Socket.IO packet type {kind}")

    def _on_connect(self, nsp: str, data: Any) -> None:
        if nsp != "/":
            self.send("4" + encode_socketio(4, {"message": "Invalid namespace"}, nsp=nsp))
            return
        if data is not None and not isinstance(data, dict):
            raise ProtocolError("CONNECT data must be an object")
        access = self.engine.access
        if access is not None and access.acl:
            given = (data or {}).get("token")
            secret = given if isinstance(given, str) and given else self.secret
            try:
                self.grant = access.grant(secret, "CONNECT /socket.io/")
            except TokenNotFound as e:
                self.send("4" + encode_socketio(4, {"message": str(e)}))
                return
        if self.socket_sid is None:
            self.socket_sid = secrets.token_urlsafe(15)
        self.connected = True
        self.send("4" + encode_socketio(0, {"sid": self.socket_sid}))

    def _on_binary_header(self, event: bool, attachments: int, ack: int | None, data: Any) -> None:
        """A BINARY_EVENT (*event*) or BINARY_ACK: wait for its *attachments*."""
        if attachments > 16:
            raise ProtocolError("more than 16 binary attachments")
        self.attachments_left = attachments
        self._binary = (ack, data) if event else None
        self._attachments = []
        if attachments == 0 and event:
            self._binary = None
            self.on_event(data, ack)

    def on_event(self, data: Any, ack: int | None) -> None:
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            raise ProtocolError("an EVENT must be a list starting with the event name")
        name, args = data[0], data[1:]
        try:
            if name == "subscribe":
                reply: Any = self.subscribe(args[0] if args else None)
            elif name == "unsubscribe":
                reply = self.unsubscribe(args[0] if args else None)
            else:
                reply = {"error": f"unknown event {name!r}: use subscribe or unsubscribe"}
        except (BadTopic, PermissionDenied, TokenNotFound) as e:
            reply = {"error": str(e)}
        if ack is not None:
            self.send("4" + encode_socketio(3, [reply], ack=ack))
        elif "error" in reply:
            self.send("4" + encode_socketio(2, ["error", reply]))

    # -- subscriptions ---------------------------------------------------------

    @staticmethod
    def _topics(value: Any) -> tuple[list[str], int | None]:
        last_id = None
        if isinstance(value, dict):
            raw_last = value.get("last_event_id")
            if raw_last is not None:
                if not isinstance(raw_last, int) or isinstance(raw_last, bool) or raw_last < 0:
                    raise BadTopic(str(raw_last), "last_event_id must be an event id")
                last_id = raw_last
            value = value.get("topics", value.get("topic"))
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
            raise BadTopic(repr(value)[:40], "give a topic or a list of topics")
        return [check_topic(t, pattern=True) for t in value], last_id

    def subscribe(self, value: Any) -> dict[str, Any]:
        topics, last_id = self._topics(value)
        if self.grant is not None:
            for topic in topics:
                rule = None if topic.endswith("*") else topic_rule(topic)
                if rule is not None:
                    where = f"subscribe /socket.io/{topic}"
                    Access.check_grant(self.grant, rule[0], rule[1], "read", where)
        current = list(self.subscription.patterns) if self.subscription else []
        self._unsubscribe()
        patterns = list(dict.fromkeys(current + topics))
        if last_id is not None:
            for event in self.engine.hub.replay(last_id, topics, REPLAY_LIMIT):
                self.send_event(event)
        self.subscription = self.engine.hub.subscribe(patterns, self.send_event)
        return {"topics": patterns}

    def unsubscribe(self, value: Any) -> dict[str, Any]:
        topics, _ = self._topics(value)
        current = list(self.subscription.patterns) if self.subscription else []
        self._unsubscribe()
        patterns = [t for t in current if t not in topics]
        if patterns:
            self.subscription = self.engine.hub.subscribe(patterns, self.send_event)
        return {"topics": patterns}

    def _unsubscribe(self) -> None:
        if self.subscription is not None:
            self.subscription.cancel()
            self.subscription = None

    # -- transports ------------------------------------------------------------

    def upgraded(self, ws: EngineIOWebSocket) -> None:
        """The client sent ``5`` on its probe WebSocket: switch to it."""
        self.probe = None
        self.ws = ws
        self.transport = "websocket"
        if self.poll is not None:
            self.flush_poll(["6"])
        queued, self.queue, self.queued = self.queue, [], 0
        for packet in queued:
            ws.send_text(packet)

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        self._unsubscribe()
        for timer in (self._ping, self._pong):
            if timer is not None and timer.active():
                timer.cancel()
        self._ping = self._pong = None
        self.engine.sessions.pop(self.sid, None)
        if self.poll is not None:
            request, self.poll = self.poll, None
            if request.channel is not None:
                request.setHeader(b"content-type", TEXT)
                request.write(b"1")
                request.finish()
        for ws in (self.ws, self.probe):
            if ws is not None:
                ws.session = None
                ws.dropConnection(abort=reason != "client close")
        self.ws = self.probe = None


# ---------------------------------------------------------------------------
# The service and the HTTP resource


class EngineIO(Service):
    """All Engine.IO sessions; the resource for ``/socket.io/``."""

    log = Logger()

    def __init__(
        self,
        hub: Hub,
        reactor: Any,
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        max_payload: int = 1_000_000,
        cors: CORS | None = None,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        access: Access | None = None,
    ) -> None:
        self.hub = hub
        #: Who a connection is (``--acl``); None: anyone may subscribe.
        self.access = access
        self.reactor = reactor
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_payload = max_payload
        self.queue_limit = queue_limit
        self.cors = cors or CORS()
        self.sessions: dict[str, Session] = {}
        self.cut_off = 0
        self._websocket: Any = None  # autobahn's WebSocketResource, made on first use
        self.resource = EngineIOResource(self)

    def websocket(self) -> Any:
        """The WebSocket transport's resource, made on first use: it imports autobahn,
        which a daemon whose clients only poll (or that has none) never needs."""
        if self._websocket is None:
            from autobahn.twisted.resource import WebSocketResource

            from .websocket import EngineIOWebSocketFactory

            self._websocket = WebSocketResource(EngineIOWebSocketFactory(self, self.reactor))
        return self._websocket

    def stopService(self) -> None:
        Service.stopService(self)
        for session in list(self.sessions.values()):
            session.close("server shutting down")

    def new_session(self, transport: str) -> Session:
        sid = secrets.token_urlsafe(15)
        session = Session(self, sid, transport)
        self.sessions[sid] = session
        return session

    def open_packet(self, session: Session, upgrades: Sequence[str]) -> str:
        return "0" + json.dumps(
            {
                "sid": session.sid,
                "upgrades": list(upgrades),
                "pingInterval": int(self.ping_interval * 1000),
                "pingTimeout": int(self.ping_timeout * 1000),
                "maxPayload": self.max_payload,
            },
            separators=(",", ":"),
        )


class EngineIOResource(Resource):
    """``/socket.io/``: the polling transport, and the door to the WebSocket one."""

    isLeaf = True
    log = Logger()
    #: What ``--acl`` asks of the token (see the module's docstring).
    acl_rule = "topic read (push.access)"

    def __init__(self, engine: EngineIO) -> None:
        Resource.__init__(self)
        self.engine = engine

    def _refuse(self, request: Request, code: int, status: int = 400) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return _error_body(code)

    def render(self, request: Request) -> bytes | int:
        self.engine.cors.apply(request, b"GET, POST, OPTIONS")
        if request.method == b"OPTIONS":
            request.setHeader(b"allow", b"GET, POST, OPTIONS")
            return b""
        args = parse_args(request.uri)
        if _last(args, "EIO") != "4":
            return self._refuse(request, UNSUPPORTED_VERSION)
        transport = _last(args, "transport")
        sid = _last(args, "sid")
        if transport == "websocket":
            return self._websocket(request, sid)
        if transport != "polling":
            return self._refuse(request, UNKNOWN_TRANSPORT)
        return self._polling(request, sid)

    def _websocket(self, request: Request, sid: str | None) -> bytes | int:
        """The WebSocket handshake: a new session, or the upgrade of polling session *sid*."""
        if request.method != b"GET" or (request.getHeader(b"upgrade") or b"").lower() != (
            b"websocket"
        ):
            return self._refuse(request, BAD_REQUEST)
        if sid is not None:
            session = self.engine.sessions.get(sid)
            if session is None or session.transport != "polling" or session.probe is not None:
                return self._refuse(request, UNKNOWN_SID)
        result: bytes | int = self.engine.websocket().render(request)
        return result

    def _polling(self, request: Request, sid: str | None) -> bytes | int:
        """The polling transport: the handshake (no *sid*), a poll (GET) or a send (POST)."""
        engine = self.engine
        if sid is None:
            if request.method != b"GET":
                return self._refuse(request, BAD_HANDSHAKE_METHOD)
            session = engine.new_session("polling")
            if engine.access is not None and engine.access.acl:
                session.secret = _last(parse_args(request.uri), "token") or given_token(request)
            request.setHeader(b"content-type", TEXT)
            return engine.open_packet(session, upgrades=["websocket"]).encode()
        found = engine.sessions.get(sid)
        if found is None:
            return self._refuse(request, UNKNOWN_SID)
        if found.transport != "polling":
            return self._refuse(request, BAD_REQUEST)  # upgraded: polling is over
        if request.method == b"GET":
            return self._poll(request, found)
        if request.method == b"POST":
            return self._post(request, found)
        request.setHeader(b"allow", b"GET, POST, OPTIONS")
        return self._refuse(request, BAD_HANDSHAKE_METHOD, 405)

    def _poll(self, request: Request, session: Session) -> bytes | int:
        if session.poll is not None:
            session.close("a second concurrent poll")
            return self._refuse(request, BAD_REQUEST)
        session.poll = request

        def gone(_: object) -> None:
            if session.poll is request:
                session.poll = None

        request.notifyFinish().addErrback(gone)
        if session.queue:
            session.flush_poll()
        return NOT_DONE_YET

    def _post(self, request: Request, session: Session) -> bytes:
        if getattr(request, "too_large", False):
            session.close("payload too large")
            return self._refuse(request, BAD_REQUEST, 413)
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read(self.engine.max_payload + 1)
        if len(body) > self.engine.max_payload:
            session.close("payload too large")
            return self._refuse(request, BAD_REQUEST, 413)
        try:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("the body is not UTF-8") from None
            for packet in text.split(RS):
                session.receive(packet)
                if session.closed:
                    break
        except ProtocolError as e:
            self.log.info(
                "Socket.IO session {sid} closed: {reason}", sid=session.sid, reason=e.reason
            )
            session.close(e.reason)
            return self._refuse(request, BAD_REQUEST)
        request.setHeader(b"content-type", b"text/html")
        return b"ok"


def _last(args: dict[str, list[str]], name: str) -> str | None:
    """The last value of query argument *name*, if it was given."""
    values = args.get(name)
    return values[-1] if values else None
