"""How an SSE frame reaches a plain TCP socket: sent during the publish while Twisted's
transport holds nothing for it, through the transport (next reactor turn) otherwise.

In process, with real parts: a loopback TCP pair, Twisted's own TCP transport on the
server end, the real ``Site``/``HTTPChannel`` and events resource.  The reactor is a
``MemoryReactorClock``: it only records which descriptors want to write, so each test
plays the reactor's turn itself (``doRead``/``doWrite``) and can see whether a frame
went out at once or waits for a turn (issue #22 item 7: public Twisted interfaces only).
"""

from __future__ import annotations

import re
import select
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web.server import Site

from homeport.http.direct import plain_socket
from homeport.push.hub import Hub
from homeport.push.sse import EventsResource, SSEService

from .loopback import ADDRESS, LoopbackConnection, socket_pair


class Stream:
    """One ``GET /?topic=t`` event stream served over a real socket."""

    def __init__(self, queue_limit: int = 1 << 20, rcvbuf: int | None = None) -> None:
        self.reactor = MemoryReactorClock()
        self.hub = Hub()
        self.service = SSEService(self.hub, self.reactor, queue_limit=queue_limit)
        site = Site(EventsResource(self.service, now=lambda: 0.0), reactor=self.reactor)
        server, self.client = socket_pair()
        if rcvbuf is not None:
            self.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
        protocol = site.buildProtocol(ADDRESS)
        assert protocol is not None
        self.transport = LoopbackConnection(server, protocol, self.reactor)
        protocol.makeConnection(self.transport)
        self.client.sendall(b"GET /?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
        self.transport.doRead()
        self.body = b""

    def waiting(self) -> bool:
        """Whether the transport waits for a reactor turn to write."""
        return self.transport in self.reactor.getWriters()

    def turn(self) -> None:
        """The reactor's turn: the transport writes what it holds, if it is waiting."""
        if self.waiting():
            writer: Any = self.transport  # doWrite is untyped in Twisted
            writer.doWrite()

    def read(self, until: bytes) -> bytes:
        """What the client has read once *until* is in it."""
        while until not in self.body:
            data = self.client.recv(1 << 16)
            assert data, "the stream ended"
            self.body += data
        return self.body

    def close(self) -> None:
        self.client.close()
        if not self.transport.disconnected:
            self.transport.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def stream() -> Iterator[Stream]:
    s = Stream()
    yield s
    s.close()


def test_on_an_idle_socket_a_frame_is_sent_during_the_publish(stream: Stream) -> None:
    """Once the response's head has gone, an event reaches the client's socket while
    ``publish`` runs: nothing is left for the reactor's next turn."""
    assert stream.waiting()  # the head, ``retry:`` and the opening comment
    stream.turn()
    assert not stream.waiting()
    assert stream.read(b": homeport events\n\n").startswith(b"HTTP/1.1 200 OK\r\n")
    for n in range(3):
        event = stream.hub.publish("t", f"hello {n}")
        assert not stream.waiting()
        frame = f"id: {event.id}\nevent: t\ntime: 0.000\ndata: hello {n}\n\n".encode()
        assert stream.read(frame).endswith(b"%x\r\n%s\r\n" % (len(frame), frame))


def test_an_event_published_before_the_head_has_gone_waits_behind_it(stream: Stream) -> None:
    """The head is still in the transport: the frame is not sent before it, but after
    it, in the same turn."""
    event = stream.hub.publish("t", "early")
    assert stream.waiting()
    assert select.select([stream.client], [], [], 0.2)[0] == []  # nothing sent yet
    stream.turn()  # the head, then (the transport drained, resuming us) the frame
    body = stream.read(b"data: early\n\n")
    assert body.index(b"HTTP/1.1 200") == 0
    assert body.index(b": homeport events") < body.index(f"id: {event.id}\n".encode())


def test_what_a_full_socket_does_not_take_waits_and_comes_whole_and_in_order() -> None:
    """A client that stops reading: the socket takes part of a frame, the transport
    keeps the rest, the stream holds the next frames; once the client reads again,
    every frame arrives once, whole, in order."""
    s = Stream(queue_limit=64 << 20, rcvbuf=1 << 16)
    try:
        s.turn()
        s.read(b": homeport events\n\n")
        payload = "x" * 200_000
        ids = [s.hub.publish("t", f"{n} {payload}").id for n in range(40)]
        assert s.waiting()  # the socket is full: the rest waits for a turn
        last = f"id: {ids[-1]}\n".encode()
        while last not in s.body or not s.body.endswith(b"\n\n\r\n"):
            s.turn()
            try:
                s.body += s.client.recv(1 << 16)
            except TimeoutError:
                pytest.fail("the stream stalled")
        found = [int(i) for i in re.findall(rb"id: (\d+)\n", s.body)]
        assert found == ids
        assert s.body.count(payload.encode()) == len(ids)
    finally:
        s.close()


def test_a_client_past_the_queue_limit_is_cut_off() -> None:
    """What waits for a client that does not read counts against the limit (what the
    transport keeps and what the stream holds): past it the connection is aborted."""
    s = Stream(queue_limit=256 << 10, rcvbuf=4096)
    try:
        s.turn()
        s.read(b": homeport events\n\n")
        for n in range(40):
            s.hub.publish("t", f"{n} " + "x" * 20_000)
        assert s.service.cut_off == 1
        assert not s.service.connections
        s.reactor.advance(0)  # the abort's connectionLost
        assert s.transport.disconnected
    finally:
        s.client.close()


def test_only_a_plain_tcp_transport_is_sent_on_directly() -> None:
    """A TLS transport over the same TCP connection has no socket for a handle: its
    frames go through its ``write`` (encrypted), never straight to the socket."""
    server, client = socket_pair()
    reactor = MemoryReactorClock()
    try:
        plain = LoopbackConnection(server, Protocol(), reactor)
        assert plain_socket(plain) is server
        tls = TLSMemoryBIOFactory(
            optionsForClientTLS("example.com"), True, Factory.forProtocol(Protocol)
        ).buildProtocol(ADDRESS)
        assert tls is not None
        tls.makeConnection(plain)
        assert plain_socket(tls) is None
        assert plain_socket(object()) is None
    finally:
        server.close()
        client.close()
