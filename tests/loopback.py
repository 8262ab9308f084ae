"""A loopback TCP connection served by Twisted's own TCP transport, in process: the
reactor is a ``MemoryReactorClock``, so a test plays the reactor's turns itself."""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock

ADDRESS = IPv4Address("TCP", "127.0.0.1", 0)


class LoopbackConnection(tcp.Connection):
    """Twisted's TCP transport on an accepted socket (``tcp.Server`` without a port)."""

    def __init__(self, skt: socket.socket, protocol: Protocol, reactor: MemoryReactorClock):
        tcp.Connection.__init__(self, skt, protocol, reactor)
        self.connected = True  # as tcp.Server, once accepted

    def getPeer(self) -> IPv4Address:
        return ADDRESS

    def getHost(self) -> IPv4Address:
        return ADDRESS


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(server end, client end) of a loopback TCP connection."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    client.settimeout(5)
    return server, client
