"""Listening sockets several processes share (``SO_REUSEPORT``): ``--workers``.

Each process binds its own socket to the same address; the kernel spreads new TCP
connections (and UDP flows) over them, so the primary and its workers all accept,
with no process handing connections to another.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, tcp, udp
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer


def share(sock: socket.socket) -> socket.socket:
    """*sock*, set to share its address with the other processes' (before bind)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


class SharedTCPPort(tcp.Port):
    """A TCP port bound with ``SO_REUSEPORT``."""

    def createInternetSocket(self) -> socket.socket:
        return share(tcp.Port.createInternetSocket(self))


class SharedUDPPort(udp.Port):
    """A UDP port bound with ``SO_REUSEPORT``."""

    def createInternetSocket(self) -> socket.socket:
        return share(udp.Port.createInternetSocket(self))


@implementer(IStreamServerEndpoint)
class SharedTCPEndpoint:
    """``tcp:PORT:interface=HOST``, bound so that the workers can bind it too."""

    def __init__(self, reactor: Any, port: int, interface: str = "", backlog: int = 50) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        return defer.execute(self._listen, factory)

    def _listen(self, factory: IProtocolFactory) -> IListeningPort:
        port = SharedTCPPort(self.port, factory, self.backlog, self.interface, self.reactor)
        port.startListening()
        return port
