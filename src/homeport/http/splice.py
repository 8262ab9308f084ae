"""A worker's HTTP connections: reads answered here, the rest handed to the primary.

A ``--workers`` process accepts connections on the shared port like the primary.  It
answers, through the usual channel (fast path included), each request that it can
answer from its copy of the catalog (:func:`reads_locally` on the whole head); at the
first request it cannot (a write, ``?consistent``, logs, events, the dashboard, a
WebSocket upgrade, anything pipelined behind another), the connection becomes a plain
byte pipe to the primary's internal socket for the rest of its life, opened with a
PROXY protocol header so that the primary sees the client's own address.  The primary
answers exactly as if the client had reached it: writes are applied there before the
client hears back, and nothing a worker holds needs to survive it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet import reactor as default_reactor
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from .site import HomeportChannel

#: Paths whose GET and HEAD a worker answers from its copy of the catalog.
READ_PREFIXES = (b"/v1/catalog/", b"/v1/health/", b"/v1/kv/")
#: A head this long without its end goes to the primary (which has the limits).
MAX_PENDING = 64 * 1024
UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 44\r\nConnection: close\r\n\r\n"
    b"homeport's primary process is not answering\n"
)


def reads_locally(head: bytes) -> bool:
    """Is *head* (one whole request head, nothing after it) a read a worker answers?"""
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD") or parts[2] != b"HTTP/1.1":
        return False
    path, _, query = parts[1].partition(b"?")
    if not path.startswith(READ_PREFIXES) or b"consistent" in query:
        return False
    lowered = rest.lower()
    return b"\nupgrade:" not in b"\n" + lowered and b"\ncontent-length:" not in b"\n" + lowered


def proxy_header(peer: Any, host: Any) -> bytes:
    """The PROXY protocol v1 line naming the client's and our addresses."""
    family = b"TCP6" if ":" in getattr(peer, "host", "") else b"TCP4"
    return b"PROXY %s %s %s %d %d\r\n" % (
        family,
        peer.host.encode(),
        host.host.encode(),
        peer.port,
        host.port,
    )


class _Pipe(Protocol):
    """The connection to the primary: what it sends goes to the client as it is."""

    def __init__(self, client: SplicingChannel, first: bytes) -> None:
        self.client = client
        self.buffered = [first]
        #: The client left before the primary answered the connection.
        self.orphaned = False

    def connectionMade(self) -> None:
        transport = cast(Any, self.transport)
        if self.orphaned:
            transport.loseConnection()
            return
        transport.writeSequence(self.buffered)
        self.buffered = []
        client = cast(Any, self.client.transport)
        # Each side's transport pauses the other when its own buffer fills.
        client.unregisterProducer()
        client.registerProducer(transport, True)
        transport.registerProducer(client, True)

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self.buffered.append(data)
        else:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        transport = self.client.transport
        assert transport is not None
        transport.write(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        transport = self.client.transport
        if transport is not None:
            transport.loseConnection()


class SplicingChannel(HomeportChannel):
    """A worker's channel (see the module's docstring).  The site gives it
    ``primary`` (an endpoint to the primary's internal socket) and ``local`` (the
    predicate on a head, :func:`reads_locally` unless every request must go through)."""

    _pending = b""
    _pipe: _Pipe | None = None

    def connectionMade(self) -> None:
        HomeportChannel.connectionMade(self)
        self._pending = b""
        self._pipe = None

    def resumeProducing(self) -> None:
        """The transport has sent all it held: a request that came meanwhile (it waits
        while we are not idle) is decided now, or it would wait for more bytes."""
        cast(Any, HomeportChannel).resumeProducing(self)
        if self._pending and self._pipe is None:
            self._next()

    def dataReceived(self, data: bytes) -> None:
        if self._pipe is not None:
            self._pipe.send(data)
            return
        self._pending += data
        self._next()

    def _next(self) -> None:
        """Decide on the request that is waiting, once the last one is answered."""
        if self._pipe is not None or not self._pending or not self._idle():
            return
        end = self._pending.find(b"\r\n\r\n")
        if end < 0:
            if len(self._pending) > MAX_PENDING:
                self._splice()
            return
        local: Callable[[bytes], bool] = getattr(cast(Any, self).site, "local", reads_locally)
        if end + 4 == len(self._pending) and local(self._pending):
            data, self._pending = self._pending, b""
            HomeportChannel.dataReceived(self, data)
        else:
            self._splice()

    def requestDone(self, request: Any) -> None:
        cast(Any, HomeportChannel).requestDone(self, request)
        if self._pending:
            default_reactor.callLater(0, self._next)

    def _splice(self) -> None:
        transport = cast(Any, self.transport)
        cast(Any, self).setTimeout(None)  # the primary's limits apply from here on
        first, self._pending = self._pending, b""
        pipe = _Pipe(self, proxy_header(transport.getPeer(), transport.getHost()) + first)
        self._pipe = pipe
        endpoint: IStreamClientEndpoint = cast(Any, self).site.primary
        factory = Factory.forProtocol(lambda: pipe)
        factory.noisy = False  # one connection per spliced client: no log line each
        endpoint.connect(factory).addErrback(self._unreachable)

    def _unreachable(self, failure: Failure) -> None:
        transport = self.transport
        if transport is not None:
            transport.write(UNAVAILABLE)
            transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        pipe = self._pipe
        if pipe is not None:
            pipe.orphaned = True
            if pipe.transport is not None:
                pipe.transport.loseConnection()
        cast(Any, HomeportChannel).connectionLost(self, reason)
