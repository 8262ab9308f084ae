"""DNS over UDP and TCP on one ``HOST:PORT``, answering from :mod:`homeport.dns.answer`.

The transports only move bytes.  UDP is the hot path, so :class:`_AnsweringPort`
answers cache hits inside its own read loop with a direct ``socket.sendto`` (Twisted's
``Port.write`` checks the address of every datagram, ~2.6 µs, a third of a cached
answer) and hands everything else to :meth:`Responder.respond`.  TCP (RFC 7766) frames
queries with a two-byte length, refuses lengths that no query needs, stops reading
from a client that does not read its answers, and drops connections that stay idle.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from twisted.application.service import Service
from twisted.internet import udp
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTCP, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from homeport.acl import Authorizer
from homeport.catalog.model import Catalog, Change
from homeport.errors import StartupError
from homeport.http.reuseport import SharedTCPPort, share

from .answer import Responder
from .config import Config
from .snapshot import Snapshot, affects_dns, take_snapshot

#: The largest TCP query we read: a question and an OPT record need far less.
MAX_TCP_QUERY = 4096
_log = Logger()

# Errors from recvfrom that mean "nothing more to read now" (or an ICMP
# error for an earlier reply, which a server that never connects can ignore).
_READ_AGAIN = {
    errno.EAGAIN,
    errno.EWOULDBLOCK,
    errno.EINTR,
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EMSGSIZE,
    errno.ENOBUFS,
    errno.ENOMEM,
}


class DNSDatagramProtocol(DatagramProtocol):
    """UDP queries in, replies out (the slow path; :class:`_AnsweringPort` has the fast one)."""

    noisy = False

    def __init__(self, responder: Responder) -> None:
        self.responder = responder

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        reply = self.responder.respond(datagram, udp=True)
        if reply is not None and self.transport is not None:
            try:
                self.transport.write(reply, addr)
            except OSError:
                pass


class _AnsweringPort(udp.Port):
    """A UDP port that answers queries itself, cache hits first, straight from its read loop."""

    protocol: DNSDatagramProtocol
    #: Bind with ``SO_REUSEPORT`` (``--workers``).
    reuse_port = False

    def __init__(self, port: int, protocol: DNSDatagramProtocol, interface: str, reactor: Any):
        udp.Port.__init__(self, port, protocol, interface, maxPacketSize=65535, reactor=reactor)

    def createInternetSocket(self) -> socket.socket:
        sock = udp.Port.createInternetSocket(self)
        return share(sock) if self.reuse_port else sock

    def listen(self) -> int:
        """Start listening, with roomy socket buffers; the bound port number."""
        udp.Port.startListening(self)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                self.socket.setsockopt(socket.SOL_SOCKET, option, 4 * 1024 * 1024)
            except OSError:
                pass
        return int(udp.Port.getHost(self).port)

    def doRead(self) -> None:
        responder = self.protocol.responder
        cached = responder.udp.get  # invalidate() clears this dict, never replaces it
        respond = responder.respond
        recvfrom = self.socket.recvfrom
        sendto = self.socket.sendto
        size = self.maxPacketSize
        read = hits = 0
        try:
            while read < self.maxThroughput:
                try:
                    data, addr = recvfrom(size)
                except OSError as error:
                    if error.errno not in _READ_AGAIN:
                        _log.warn("DNS UDP read failed: {error}", error=error)
                    return
                read += len(data) + 64  # a floor per packet, so tiny floods still yield
                rotor = cached(data[2:])
                if rotor is not None:
                    hits += 1
                    try:
                        sendto(data[:2] + next(rotor), addr)
                    except OSError:
                        pass
                    continue
                self._answer(respond, sendto, data, addr)
        finally:
            responder.cache_hits += hits

    @staticmethod
    def _answer(
        respond: Callable[[bytes, bool], bytes | None],
        sendto: Callable[[bytes, Any], object],
        data: bytes,
        addr: Any,
    ) -> None:
        """A query the byte cache did not have: through the responder."""
        try:
            reply = respond(data, True)
            if reply is not None:
                sendto(reply, addr)
        except OSError:
            pass
        except Exception:  # noqa: BLE001 - the reactor's read loop: one packet, not the port
            _log.failure("DNS UDP query failed")


class DNSStreamProtocol(Protocol, TimeoutMixin):
    """DNS over TCP: length-prefixed queries, answered in order, with limits.

    - a length prefix beyond :data:`MAX_TCP_QUERY` closes the connection;
    - a message too short for a header is skipped (silence, as over UDP);
    - a client that lets replies pile up (more than the transport's buffer) is not
      read from until it catches up, so it cannot grow our memory;
    - no complete query for ``idle_timeout`` seconds closes the connection (half-open
      clients, slow drips).
    """

    def __init__(self, factory: DNSStreamFactory) -> None:
        self.factory = factory
        self._buffer = bytearray()
        self._paused = False

    def callLater(self, period: float, func: Callable[[], object]) -> IDelayedCall:
        """TimeoutMixin's timer, on the factory's reactor (not the global one)."""
        reactor: IReactorTime = self.factory.reactor
        return reactor.callLater(period, func)

    def connectionMade(self) -> None:
        self.factory.opened(self)
        TimeoutMixin.setTimeout(self, self.factory.idle_timeout)
        assert self.transport is not None
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure | None = None) -> None:
        TimeoutMixin.setTimeout(self, None)
        self.factory.closed(self)

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        self._answer()

    def _answer(self) -> None:
        buffer = self._buffer
        responder = self.factory.responder
        transport = self.transport
        assert transport is not None
        while len(buffer) >= 2 and not self._paused:
            length = (buffer[0] << 8) | buffer[1]
            if length > MAX_TCP_QUERY:
                transport.abortConnection()  # type: ignore[attr-defined]
                buffer.clear()
                return
            if len(buffer) < 2 + length:
                return
            query = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            TimeoutMixin.resetTimeout(self)
            rotor = responder.tcp.get(query[2:]) if length >= 12 else None
            if rotor is not None:
                responder.cache_hits += 1
                reply: bytes | None = query[:2] + next(rotor)
            else:
                reply = responder.respond(query, udp=False)
            if reply is not None:
                transport.write(len(reply).to_bytes(2, "big") + reply)

    def timeoutConnection(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # IPushProducer, as the transport's producer: its write buffer is full / drained.
    def pauseProducing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.stopReading()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        self._paused = False
        if self.transport is not None:
            self.transport.startReading()  # type: ignore[attr-defined]
        self._answer()

    def stopProducing(self) -> None:
        self._paused = True


class DNSStreamFactory(ServerFactory):
    """Makes :class:`DNSStreamProtocol` and keeps the number of connections bounded."""

    noisy = False

    def __init__(
        self, responder: Responder, reactor: Any, idle_timeout: float, max_connections: int
    ) -> None:
        self.responder = responder
        self.reactor = reactor
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        #: Open connections, oldest first (dicts keep insertion order).
        self.connections: dict[DNSStreamProtocol, None] = {}
        self._waiting: dict[DNSStreamProtocol, list[Deferred[None]]] = {}

    def buildProtocol(self, addr: Any) -> DNSStreamProtocol:
        return DNSStreamProtocol(self)

    def opened(self, protocol: DNSStreamProtocol) -> None:
        self.connections[protocol] = None
        while len(self.connections) > self.max_connections:
            oldest = next(iter(self.connections))
            del self.connections[oldest]
            if oldest.transport is not None:
                oldest.transport.abortConnection()  # type: ignore[attr-defined]

    def closed(self, protocol: DNSStreamProtocol) -> None:
        self.connections.pop(protocol, None)
        for waiter in self._waiting.pop(protocol, []):
            waiter.callback(None)

    def close_all(self) -> Deferred[Any]:
        """Abort every connection; fires when all of them are gone."""
        waiters = []
        for protocol in list(self.connections):
            waiter: Deferred[None] = Deferred()
            self._waiting.setdefault(protocol, []).append(waiter)
            waiters.append(waiter)
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]
        return gatherResults(waiters)


@dataclass(frozen=True)
class Limits:
    """How much of the server one client may take."""

    #: Seconds a TCP connection may go without a complete query before it is closed.
    idle_timeout: float = 10.0
    #: Open TCP connections; past this, the oldest is closed.
    max_connections: int = 1024
    #: The largest UDP reply we send, whatever size the client's EDNS offers.
    max_udp_size: int = 4096
    #: What the precomputed replies may hold in memory (``--dns-cache-size``): past it
    #: the caches start again from empty.
    cache_size: int = 64 * 2**20
    #: Bind with ``SO_REUSEPORT`` (the primary and ``--workers`` share the port).
    reuse_port: bool = False


class DNSService(Service):
    """The catalog's DNS answers on UDP and TCP ``interface:port``.

    ``port`` 0 picks a free port for both; :attr:`port` is the bound one once started.
    Every catalog change that can change an answer clears the reply cache, so the next
    query sees it.  With *authorizer* (``--acl``: the anonymous token's rules, asked
    afresh for each snapshot) the snapshot holds only what it may read; call
    :meth:`acl_changed` on any ACL change so the next query is answered under the new
    rules.  A port that cannot be bound stops start-up with one line
    (:class:`~homeport.errors.StartupError`) naming *what* (``--dns 127.0.0.1:8600``).
    """

    def __init__(
        self,
        catalog: Catalog,
        interface: str,
        port: int,
        config: Config = Config(),
        reactor: Any = None,
        *,
        limits: Limits = Limits(),
        what: str | None = None,
        authorizer: Callable[[], Authorizer] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.catalog = catalog
        self.authorizer = authorizer
        self.interface = interface
        self.port = port
        self.config = replace(config, max_udp_size=limits.max_udp_size)
        self.what = what or f"DNS {interface}:{port}"
        self.reactor = reactor
        self.responder = Responder(
            self.config, self._snapshot, max_bytes=limits.cache_size, on_error=self._failed
        )
        self.factory = DNSStreamFactory(
            self.responder, reactor, limits.idle_timeout, limits.max_connections
        )
        self._requested_port = port
        self._reuse_port = limits.reuse_port
        self._udp: IListeningPort | None = None
        self._tcp: IListeningPort | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def _snapshot(self) -> Snapshot:
        may = self.authorizer() if self.authorizer is not None else None
        return take_snapshot(self.catalog, serial=int(self.reactor.seconds()), may=may)

    def acl_changed(self) -> None:
        """A token, policy or role changed: answer the next query under the new rules."""
        self.responder.invalidate()

    def _changed(self, changes: list[Change]) -> None:
        if affects_dns(changes):
            self.responder.invalidate()

    def _failed(self, error: BaseException) -> None:
        _log.failure("DNS answer failed", failure=Failure(error))

    def startService(self) -> None:
        self._unsubscribe = self.catalog.subscribe(self._changed)
        self.responder.invalidate()
        try:
            self._listen()
        except BaseException as e:
            self._unsubscribe()
            self._unsubscribe = None
            if isinstance(e, CannotListenError):
                reason = e.socketError.strerror if isinstance(e.socketError, OSError) else None
                raise StartupError(f"{self.what}: cannot listen: {reason or e}") from None
            raise
        Service.startService(self)

    def _listen(self) -> None:
        """Bind UDP, then TCP on the same number; with port 0, retry if TCP's is taken."""
        attempts = 1 if self._requested_port else 20
        for attempt in range(attempts):
            udp_port = _AnsweringPort(
                self._requested_port,
                DNSDatagramProtocol(self.responder),
                self.interface,
                reactor=self.reactor,
            )
            udp_port.reuse_port = self._reuse_port
            number = udp_port.listen()
            try:
                self._tcp = self._listen_tcp(number)
            except CannotListenError:
                udp.Port.stopListening(udp_port)
                if attempt == attempts - 1:
                    raise
                continue
            self._udp = udp_port
            self.port = number
            _log.info(
                "DNS for {domain} on {interface}:{port} (UDP and TCP)",
                domain=self.config.domain,
                interface=self.interface,
                port=number,
            )
            return

    def _listen_tcp(self, number: int) -> IListeningPort:
        if not self._reuse_port:
            tcp_reactor: IReactorTCP = self.reactor
            return tcp_reactor.listenTCP(
                number, self.factory, backlog=128, interface=self.interface
            )
        port = SharedTCPPort(number, self.factory, 128, self.interface, self.reactor)
        port.startListening()
        return port

    def stopService(self) -> Deferred[Any]:
        Service.stopService(self)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        stopping = [maybeDeferred(p.stopListening) for p in (self._udp, self._tcp) if p]
        self._udp = self._tcp = None
        stopping.append(self.factory.close_all())
        self.responder.invalidate()
        return gatherResults(stopping).addCallback(lambda _: None)
