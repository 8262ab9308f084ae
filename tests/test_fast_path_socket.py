"""How a fast answer reaches a plain TCP socket (``http.direct``): sent at once while
Twisted's transport holds nothing for the connection, behind what it holds otherwise.

In process, with real parts: a loopback TCP pair, Twisted's own TCP transport on the
server end, the real ``HomeportSite`` and channel; a ``MemoryReactorClock`` only records
which descriptors want to read and write, so each test plays the reactor's turns itself
and sees what went out at once and what waits.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any, cast

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Request

from homeport.http.hosts import Names
from homeport.http.site import HomeportSite
from homeport.http.splice import SplicingChannel

from .loopback import ADDRESS, LoopbackConnection, socket_pair

BIG = b"b" * 1_000_000


class Pages(Resource):
    """What twisted.web serves: ``/slow`` and (for the fast path's misses) ``/fast``."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return b"slow answer" if request.path == b"/slow" else b"fast answer"


def fast(method: bytes, uri: bytes, headers: dict[bytes, bytes]) -> tuple[bytes, bytes] | None:
    """The fast path's answerer: ``/fast`` and ``/big`` hit its cache."""
    body = {b"/fast": b"fast answer", b"/big": BIG}.get(uri)
    if body is None:
        return None
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nDate: " % len(body)
    return head, b"\r\n\r\n" + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


class Connection:
    """One keep-alive connection to a ``HomeportSite`` with a fast path."""

    def __init__(
        self, rcvbuf: int | None = None, timeout: float | None = None, worker: bool = False
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.site = HomeportSite(cast(Any, Pages)(), reactor=self.reactor, timeout=timeout)
        self.site.serve_fast(fast)
        if worker:  # a worker's channel, reading every request locally
            site: Any = self.site
            site.protocol, site.local = SplicingChannel, lambda head: True
        server, self.client = socket_pair()
        if rcvbuf is not None:
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
        protocol = cast(Any, self.site).buildProtocol(ADDRESS)
        assert protocol is not None
        self.transport = LoopbackConnection(server, protocol, self.reactor)
        protocol.makeConnection(self.transport)
        cast(Any, self.transport).startReading()  # as tcp.Server does once accepted
        self.received = b""

    def ask(self, path: str) -> None:
        """Send a request and play the reactor's read turn, if it is reading."""
        self.client.sendall(get(path))
        self.client.settimeout(5)
        if self.reading():
            reader: Any = self.transport  # doRead is untyped in Twisted
            reader.doRead()

    def reading(self) -> bool:
        return self.transport in self.reactor.getReaders()

    def waiting(self) -> bool:
        """Whether the transport holds bytes for a reactor turn to write."""
        return self.transport in self.reactor.getWriters()

    def arrived(self) -> bytes:
        """What the client can read now, without any reactor turn."""
        self.client.settimeout(0.2)
        try:
            while data := self.client.recv(1 << 16):
                self.received += data
        except TimeoutError:
            pass
        return self.received

    def drain(self) -> bytes:
        """Play write turns and read until the transport holds nothing."""
        while self.waiting():
            writer: Any = self.transport  # doWrite is untyped in Twisted
            writer.doWrite()
            self.arrived()
        return self.arrived()

    def close(self) -> None:
        self.client.close()
        if not self.transport.disconnected:
            self.transport.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def connection() -> Iterator[Connection]:
    c = Connection()
    yield c
    c.close()


def answers(data: bytes) -> list[bytes]:
    """The bodies of the answers in *data*, in order."""
    bodies = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        bodies.append(rest[:length])
        data = rest[length:]
    return bodies


def test_an_idle_connection_s_fast_answer_is_sent_during_the_read(connection: Connection) -> None:
    """Nothing waits in the transport: the answer is on the client's socket before any
    write turn of the reactor."""
    connection.ask("/fast")
    assert not connection.waiting()
    assert answers(connection.arrived()) == [b"fast answer"]
    assert connection.site.fast_answers == 1


def test_a_request_behind_a_buffered_answer_is_answered_behind_it(connection: Connection) -> None:
    """twisted.web's answer is still in the transport (its ``write`` only buffers) when
    the next request comes: that one is not sent past it but queued after it, by
    twisted.web, and the client gets both in order."""
    connection.ask("/slow")
    assert connection.waiting() and connection.arrived() == b""
    connection.ask("/fast")
    assert connection.site.fast_answers == 0
    assert answers(connection.drain()) == [b"slow answer", b"fast answer"]
    connection.ask("/fast")  # the transport holds nothing again
    assert answers(connection.arrived()) == [b"slow answer", b"fast answer", b"fast answer"]
    assert connection.site.fast_answers == 1


def test_what_a_full_socket_does_not_take_waits_and_the_reading_pauses() -> None:
    """A 1 MB answer on small socket buffers: the socket takes part, the transport keeps
    the rest, and the connection reads no more requests until it has all gone; then
    every answer arrives whole, in order."""
    c = Connection(rcvbuf=1 << 16)
    try:
        c.ask("/big")
        assert c.waiting() and not c.reading()
        c.client.sendall(get("/fast"))  # not read while the transport is full
        received = c.drain()
        assert c.reading()
        reader: Any = c.transport
        reader.doRead()
        assert answers(c.arrived()) == [BIG, b"fast answer"]
        assert len(received) < len(c.received)
        assert c.site.fast_answers == 2
    finally:
        c.close()


def test_a_tls_connection_s_fast_answer_goes_through_its_transport() -> None:
    """No plain socket under it: the channel writes through the transport."""
    c = Connection()
    try:
        channel: Any = c.transport.protocol
        assert channel.sock is c.transport.getHandle()
        channel.sock = None  # as on TLS, where plain_socket finds no socket
        c.ask("/fast")
        assert c.waiting() and c.arrived() == b""
        assert answers(c.drain()) == [b"fast answer"]
    finally:
        c.close()


def test_request_heads_are_remembered_with_their_host_check_and_bounded() -> None:
    """``fast_request`` parses a head once: the same bytes again are looked up, a
    refused ``Host`` is remembered as refused, and the memory never grows past
    ``HEADS``."""
    site = HomeportSite(cast(Any, Pages)(), names=Names(["127.0.0.1"]))
    allowed = get("/fast")
    refused = allowed.replace(b"127.0.0.1", b"evil.example")
    assert site.fast_request(allowed) == (b"GET", b"/fast", {b"host": b"127.0.0.1"})
    assert site.fast_request(refused) is None
    assert site.fast_request(allowed) is site.fast_request(allowed)  # the same, remembered
    assert site.fast_request(b"POST /v1/kv/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") is None
    for n in range(3 * site.HEADS):
        assert site.fast_request(get(f"/fast?n={n}")) is not None
        assert len(site._heads) <= site.HEADS
    long = get("/fast?" + "x" * site.HEAD_BYTES)
    assert site.fast_request(long) is not None
    assert long not in site._heads


def test_fast_answers_keep_the_connection_from_its_idle_timeout() -> None:
    """A fast answer notes its time instead of resetting the idle timer: the timer,
    when it fires, waits again for what is left, and closes an idle connection."""
    c = Connection(timeout=10)
    try:
        c.ask("/fast")
        c.reactor.advance(6)
        c.ask("/fast")
        c.reactor.advance(6)  # 12 s since the connection opened, 6 since the last answer
        assert not c.transport.disconnecting
        assert answers(c.arrived()) == [b"fast answer", b"fast answer"]
        c.reactor.advance(5)  # 11 s idle
        assert c.transport.disconnecting
    finally:
        c.close()


def test_a_worker_answers_a_request_that_came_while_its_last_answer_was_buffered() -> None:
    """On a worker's channel a request waits while the transport still holds the last
    answer; once the transport has sent it all, the request is answered (it waited
    for more bytes from the client before)."""
    c = Connection(worker=True)
    try:
        c.ask("/slow")
        assert c.waiting()
        c.ask("/slow")  # read, and kept: the channel is not idle
        assert answers(c.drain()) == [b"slow answer", b"slow answer"]
    finally:
        c.close()
