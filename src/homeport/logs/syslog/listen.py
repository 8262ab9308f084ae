"""The syslog listeners: UDP datagrams, TCP streams (RFC 6587 framing, or JSON lines),
and the services that bind them.

Each listener is a service: it binds when started, and a port that cannot be bound
stops start-up with one line (:class:`~homeport.errors.StartupError` naming the option,
``--syslog 'udp:5514': cannot listen: ...``).  The records go to the store through one
:class:`~homeport.logs.syslog.ingest.Ingest`, which holds the listeners back when the
store is behind: UDP drops and counts, a TCP connection is not read (the sender's own
buffers and TCP's window do the waiting) until what it sent is committed.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IReactorTime,
    IReactorUDP,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol, Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from ...errors import StartupError
from ..record import Record
from .frames import SyslogFramer
from .ingest import Ingest
from .parse import parse_json_line, parse_syslog

_log = Logger(namespace="homeport")
#: ``parse_syslog`` or ``parse_json_line``.
Parser = Callable[..., Record]
_UDP = re.compile(r"udp:(?:port=)?(\d{1,5})((?::[a-zA-Z]+=[^:]*)*)")


def parse_udp(description: str) -> tuple[int, str]:
    """``udp:PORT[:interface=ADDR]`` -> (port, interface); ValueError otherwise."""
    match = _UDP.fullmatch(description.strip())
    if match is None:
        raise ValueError("expected udp:PORT[:interface=ADDR]")
    port = int(match.group(1))
    interface = ""
    for option in filter(None, match.group(2).split(":")):
        name, _, value = option.partition("=")
        if name != "interface":
            raise ValueError(f"unknown option {name!r}: expected udp:PORT[:interface=ADDR]")
        interface = value
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    return port, interface


def _reason(error: BaseException | None) -> str:
    """Why a port could not be bound, in a few words (``Address already in use``)."""
    if isinstance(error, CannotListenError) and isinstance(error.socketError, OSError):
        return error.socketError.strerror or str(error.socketError)
    return str(error) or type(error).__name__


def _address(port: IListeningPort) -> str:
    host = port.getHost()
    return f"{getattr(host, 'host', host)} port {getattr(host, 'port', '?')}"


# -- UDP --------------------------------------------------------------------------


class SyslogDatagramProtocol(DatagramProtocol):
    """One message per datagram; gathered and handed to the store once per reactor
    turn (or every :attr:`Limits.udp_batch`); dropped and counted while it is behind."""

    noisy = False

    def __init__(self, ingest: Ingest, reactor: IReactorTime, parse: Parser = parse_syslog):
        self.ingest = ingest
        self.reactor = reactor
        self.parse = parse
        self.batch: list[Record] = []
        self._flush_call: IDelayedCall | None = None

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        ingest = self.ingest
        if ingest.pending + len(self.batch) >= ingest.limits.max_pending:
            ingest.counts.dropped += 1
            return
        try:
            record = self.parse(
                datagram,
                ingest.now(),
                peer=str(addr[0]),
                assume=ingest.assume,
                max_size=ingest.limits.max_message,
            )
        except Exception:  # noqa: BLE001 - the reactor's read loop: one datagram, not the port
            _log.failure("Parsing a syslog datagram")
            return
        self.batch.append(record)
        if len(self.batch) >= ingest.limits.udp_batch:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        batch, self.batch = self.batch, []
        if batch and not self.ingest.submit(batch):
            self.ingest.counts.dropped += len(batch)


class UDPListener(Service):
    """``--syslog udp:PORT[:interface=ADDR]``."""

    def __init__(
        self,
        what: str,
        description: str,
        ingest: Ingest,
        reactor: Any,
        parse: Parser = parse_syslog,
    ) -> None:
        self.what = what
        self.port_number, self.interface = parse_udp(description)
        self.protocol = SyslogDatagramProtocol(ingest, reactor, parse)
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        udp: IReactorUDP = self.reactor
        try:
            port = udp.listenUDP(
                self.port_number, self.protocol, interface=self.interface, maxPacketSize=65535
            )
        except CannotListenError as e:
            raise StartupError(f"{self.what}: cannot listen: {_reason(e)}") from None
        self.port = port
        sock = getattr(port, "socket", None)
        if sock is not None:
            try:  # room for a burst while the reactor is busy elsewhere
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            except OSError:
                pass
        Service.startService(self)
        _log.info(
            "{what}: syslog listening on UDP {address}", what=self.what, address=_address(port)
        )

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        self.protocol.flush()
        if self.port is None:
            return None
        port, self.port = self.port, None
        stopped: Deferred[None] | None = port.stopListening()
        return stopped


# -- TCP --------------------------------------------------------------------------


class Connection(Protocol, TimeoutMixin):
    """A stream connection whose records go to the store; not read while too many of
    them wait there (its own, or everyone's), and closed when idle."""

    def __init__(self, factory: StreamFactory) -> None:
        self.factory = factory
        self.ingest = factory.ingest
        self.pending = 0
        self.paused = False
        self.peer: str | None = None

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        # TimeoutMixin's timer, on the reactor the daemon runs on (tests: a clock).
        delayed: IDelayedCall = self.factory.reactor.callLater(period, func)
        return delayed

    def connectionMade(self) -> None:
        assert self.transport is not None
        if not self.factory.opened(self):
            self.transport.abortConnection()  # type: ignore[attr-defined] # ITCPTransport
            return
        self.peer = str(getattr(self.transport.getPeer(), "host", "")) or None
        set_keepalive = getattr(self.transport, "setTcpKeepAlive", None)
        if set_keepalive is not None:
            set_keepalive(1)
        TimeoutMixin.setTimeout(self, self.ingest.limits.idle_timeout)

    def connectionLost(self, reason: Failure | None = None) -> None:
        TimeoutMixin.setTimeout(self, None)
        self.ingest.paused.discard(self)
        self.factory.closed(self)

    def timeoutConnection(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined] # ITCPTransport

    def submit(self, records: list[Record], done: Callable[[Any], None] | None = None) -> None:
        """Hand *records* to the store; stop reading if too many now wait."""
        count = len(records)

        def stored(result: list[int] | BaseException) -> None:
            self.pending -= count
            if done is not None:
                done(result)
            self.store_caught_up()

        self.pending += count
        if not self.ingest.submit(records, stored):
            self.pending -= count
            if self.transport is not None:
                self.transport.loseConnection()  # the daemon is stopping
            return
        self._hold_back()

    def _hold_back(self) -> None:
        limits = self.ingest.limits
        if self.paused or not (
            self.pending >= limits.max_pending_per_connection or self.ingest.congested
        ):
            return
        self.paused = True
        self.ingest.paused.add(self)
        TimeoutMixin.setTimeout(self, None)  # waiting on us is not idleness
        if self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined] # IPushProducer

    def store_caught_up(self) -> None:
        limits = self.ingest.limits
        if not self.paused or self.pending > limits.max_pending_per_connection // 2:
            return
        if self.ingest.pending > limits.max_pending // 2:
            return
        self.paused = False
        self.ingest.paused.discard(self)
        if self.transport is not None and self.factory.listening:
            self.transport.resumeProducing()  # type: ignore[attr-defined] # IPushProducer
            TimeoutMixin.setTimeout(self, limits.idle_timeout)


class SyslogConnection(Connection):
    """Syslog over TCP (RFC 6587), or JSON lines: records in, nothing sent back."""

    def __init__(self, factory: StreamFactory) -> None:
        Connection.__init__(self, factory)
        self.framer = SyslogFramer(
            max_size=self.ingest.limits.max_message,
            octet_counting=factory.parse is parse_syslog,
        )

    def dataReceived(self, data: bytes) -> None:
        TimeoutMixin.resetTimeout(self)
        now = self.ingest.now()
        parse = self.factory.parse
        assume = self.ingest.assume
        size = self.ingest.limits.max_message
        records = [
            parse(message, now, peer=self.peer, truncated=cut, assume=assume, max_size=size)
            for message, cut in self.framer.feed(data)
        ]
        if records:
            self.submit(records)

    def connectionLost(self, reason: Failure | None = None) -> None:
        rest = self.framer.pending().strip(b"\r\n\x00 ")
        if rest:  # the last message of a stream needs no line end
            size = self.ingest.limits.max_message
            self.submit(
                [self.factory.parse(rest, self.ingest.now(), peer=self.peer, max_size=size)]
            )
        Connection.connectionLost(self, reason)


class StreamFactory(ServerFactory):
    """Connections of one stream listener, counted and closed with it."""

    noisy = False

    def __init__(
        self,
        ingest: Ingest,
        reactor: Any,
        parse: Parser = parse_syslog,
        connection: type[Connection] = SyslogConnection,
    ) -> None:
        self.ingest = ingest
        self.reactor = reactor
        self.parse = parse
        self.connection = connection
        self.connections: set[Connection] = set()
        self.listening = True

    def buildProtocol(self, addr: Any) -> Connection:
        return self.connection(self)

    def opened(self, connection: Connection) -> bool:
        if len(self.connections) >= self.ingest.limits.max_connections:
            _log.warn("Syslog: too many connections, one refused")
            return False
        self.connections.add(connection)
        self.ingest.counts.connections += 1
        return True

    def closed(self, connection: Connection) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.ingest.counts.connections -= 1

    def close_all(self) -> None:
        self.listening = False
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.loseConnection()


class StreamListener(Service):
    """``--syslog tcp:PORT``, ``--json-lines tcp:PORT``, ``--relp PORT``: one endpoint."""

    def __init__(
        self, what: str, kind: str, endpoint: IStreamServerEndpoint, factory: StreamFactory
    ) -> None:
        self.what = what
        self.kind = kind
        self.endpoint = endpoint
        self.factory = factory
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        failure: list[Failure] = []
        self.factory.listening = True
        d = self.endpoint.listen(self.factory)
        d.addCallbacks(self._listening, failure.append)
        if failure:
            raise StartupError(f"{self.what}: cannot listen: {_reason(failure[0].value)}")
        if self.port is None:
            d.addErrback(self._failed_later)
        Service.startService(self)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        _log.info(
            "{what}: {kind} listening on {address}",
            what=self.what,
            kind=self.kind,
            address=_address(port),
        )
        return port

    def _failed_later(self, failure: Failure) -> None:
        _log.critical(
            "{what}: cannot listen: {reason}", what=self.what, reason=_reason(failure.value)
        )

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        stopping: list[Deferred[Any]] = []
        if self.port is not None:
            port, self.port = self.port, None
            stopping.append(maybeDeferred(port.stopListening))
        self.factory.close_all()
        return gatherResults(stopping).addCallback(lambda _: None)


def json_lines_factory(ingest: Ingest, reactor: Any) -> StreamFactory:
    return StreamFactory(ingest, reactor, parse_json_line)
