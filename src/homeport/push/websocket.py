"""Engine.IO's WebSocket transport on autobahn: one packet per frame, and the upgrade.

Apart from :mod:`.socketio` so that autobahn is imported only when a client first asks
for a WebSocket (:meth:`.socketio.EngineIO.websocket`), not at every start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.logger import Logger

from .flow import FlowControl
from .hub import Event
from .socketio import ProtocolError, Session, event_packet

if TYPE_CHECKING:
    from .socketio import EngineIO


class EngineIOWebSocket(WebSocketServerProtocol):
    """One WebSocket: a session's own transport, or a probe that may upgrade one."""

    log = Logger()
    factory: EngineIOWebSocketFactory

    def __init__(self) -> None:
        WebSocketServerProtocol.__init__(self)
        # The transport's producer once open (as for SSE); stopping it does nothing.
        self.flow = FlowControl()
        self.session: Session | None = None
        self.probing = False

    def onConnect(self, request: ConnectionRequest) -> None:
        engine = self.factory.engine
        params = request.params
        if params.get("EIO", [""])[0] != "4":
            raise ConnectionDeny(400, "Unsupported protocol version")
        sid = params.get("sid", [None])[0]
        if sid is not None:
            session = engine.sessions.get(sid)
            if session is None or session.transport != "polling" or session.probe is not None:
                raise ConnectionDeny(400, "Session ID unknown or already upgraded")
            session.probe = self
            self.session = session
            self.probing = True

    def onOpen(self) -> None:
        # The HTTP channel this connection came in on was the transport's producer.
        transport: Any = self.transport
        try:
            transport.unregisterProducer()
            transport.registerProducer(self.flow, True)
        except (AttributeError, RuntimeError):  # not a plain TCP/TLS transport
            pass
        if self.session is None:
            session = self.factory.engine.new_session("websocket")
            session.ws = self
            self.session = session
            self.send_text(self.factory.engine.open_packet(session, upgrades=[]))

    def send_text(self, packet: str) -> None:
        self._write(packet.encode("utf-8"), None)

    def send_prepared(self, event: Event) -> None:
        prepared = event.cached("eio-ws", self.factory.prepare)
        self._write(None, prepared)

    def _write(self, payload: bytes | None, prepared: Any) -> None:
        size = len(payload) if payload is not None else len(prepared.payload)
        flow = self.flow
        if flow.paused and flow.over_limit(self.transport, size, self.factory.engine.queue_limit):
            self.factory.engine.cut_off += 1
            session = self.session
            if session is not None:
                session.close("too far behind")
            return
        if prepared is not None:
            self.sendPreparedMessage(prepared)
        else:
            WebSocketServerProtocol.sendMessage(self, payload, isBinary=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if session is None:
            return
        try:
            if isBinary:
                if self.probing:
                    raise ProtocolError("binary data on a probe")
                session.on_binary(payload)
                return
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("a text frame that is not UTF-8") from None
            if self.probing:
                if text == "2probe":
                    self.send_text("3probe")
                    if session.poll is not None:
                        session.flush_poll(["6"])
                elif text == "5":
                    self.probing = False
                    session.upgraded(self)
                else:
                    raise ProtocolError("expected 2probe or 5 on a probe")
                return
            session.receive(text)
        except ProtocolError as e:
            self.log.info(
                "Socket.IO session {sid} closed: {reason}", sid=session.sid, reason=e.reason
            )
            session.close(e.reason)
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        if session.ws is self:
            session.ws = None
            session.close("transport close")
        elif session.probe is self:
            session.probe = None


class EngineIOWebSocketFactory(WebSocketServerFactory):
    protocol = EngineIOWebSocket  # type: ignore[assignment]

    def __init__(self, engine: EngineIO, reactor: Any) -> None:
        WebSocketServerFactory.__init__(self, reactor=reactor)
        self.engine = engine
        WebSocketServerFactory.setProtocolOptions(
            self,
            maxFramePayloadSize=engine.max_payload,
            maxMessagePayloadSize=engine.max_payload,
            autoPingInterval=0,
            openHandshakeTimeout=10,
            closeHandshakeTimeout=5,
        )

    def prepare(self, event: Event) -> Any:
        return self.prepareMessage(event.cached("eio", event_packet).encode("utf-8"))
