"""The site's body limit on a StringTransport and a Clock: 413 first, then a lingering close."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.server import Site

from homeport.http.site import HomeportRequest, HomeportSite, Root

HEAD = b"PUT /v1/kv/big HTTP/1.1\r\nHost: hub\r\n"


def connect(max_body: int = 10) -> tuple[Clock, StringTransport, IProtocol]:
    clock = Clock()
    site = HomeportSite(Root(), max_body=max_body, reactor=clock)
    protocol = Site.buildProtocol(site, IPv4Address("TCP", "127.0.0.1", 40000))
    assert protocol is not None
    transport = StringTransport()
    protocol.makeConnection(transport)
    return clock, transport, protocol


def test_a_declared_length_over_the_limit_is_answered_then_drained_then_closed() -> None:
    _, transport, protocol = connect()
    protocol.dataReceived(HEAD + b"Content-Length: 25\r\nExpect: 100-continue\r\n\r\n")
    sent = transport.value()
    assert sent.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert b"Connection: close\r\n" in sent
    assert sent.endswith(b"Request body too large: the limit is 10 bytes\n")
    assert b"100 Continue" not in sent
    # The body still on its way is read and dropped before the close, so the client
    # is not reset while it writes.
    protocol.dataReceived(b"x" * 24)
    assert not transport.disconnecting
    protocol.dataReceived(b"x")
    assert transport.disconnecting
    assert transport.value() == sent


def test_a_chunked_body_is_refused_where_it_crosses_the_limit() -> None:
    _, transport, protocol = connect()
    protocol.dataReceived(HEAD + b"Transfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n")
    assert transport.value() == b""
    protocol.dataReceived(b"8\r\n12345678\r\n")
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    assert not transport.disconnecting
    protocol.dataReceived(b"0\r\n\r\n")
    assert transport.disconnecting


def test_a_client_that_stops_sending_is_closed_after_the_linger_time() -> None:
    clock, transport, protocol = connect()
    protocol.dataReceived(HEAD + b"Content-Length: 1000000\r\n\r\n" + b"x" * 1000)
    assert transport.value().startswith(b"HTTP/1.1 413 ")
    clock.advance(HomeportRequest.LINGER - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_a_body_within_the_limit_is_served() -> None:
    _, transport, protocol = connect()
    protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: hub\r\nContent-Length: 10\r\n\r\n0123456789")
    assert transport.value().startswith(b"HTTP/1.1 302 ")
    assert not transport.disconnecting


def test_counters_are_counters_named_total_and_gauges_are_gauges() -> None:
    """Prometheus types: a count that only grows is a counter exposed as ``_total``."""
    from homeport.http.metrics import Metrics

    metrics = Metrics()
    metrics.counter("homeport_things_received", "Things received", lambda: 7)
    metrics.gauge("homeport_things_open", "Things open now", lambda: 2)
    text = metrics.render().decode()
    assert "# TYPE homeport_things_received_total counter" in text
    assert "homeport_things_received_total 7.0" in text
    assert "# TYPE homeport_things_open gauge" in text
    assert "homeport_things_open 2.0" in text
