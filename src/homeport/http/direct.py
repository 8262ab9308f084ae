"""Sending on a plain TCP socket at once, while its Twisted transport holds nothing.

Twisted's ``ITransport.write`` only buffers: it asks the reactor for a writable event
and sends on the next turn of the loop, two ``epoll_ctl`` calls and a turn per answer,
which is more than the rest of a cached read or an event frame costs.  The kernel takes
a small write whole, so the answers that must be fast (the HTTP read fast path, SSE
frames) are sent on the socket itself, and the transport gets only what the socket did
not take.

That is safe only while the transport holds nothing, or bytes would overtake the ones
it still has.  Public interfaces tell: with the transport's ``bufferSize`` at 0, it
pauses its producer (``IPushProducer.pauseProducing``) as soon as it buffers a byte and
resumes it once it has sent them all, so between a resume and the next pause nothing is
waiting in it.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from twisted.internet.interfaces import ISSLTransport, ISystemHandle, ITCPTransport

#: Buffers one ``sendmsg`` takes at most (Linux's UIO_MAXIOV).
IOV_MAX = 1024


def plain_socket(transport: Any) -> socket.socket | None:
    """*transport*'s socket when it is plain TCP whose send buffer tells its producer
    when it fills (a ``bufferSize``); None for TLS and anything else."""
    system: Any = transport  # the interfaces below are checked on it, not narrowed
    if not (ITCPTransport.providedBy(transport) and ISystemHandle.providedBy(transport)):
        return None
    if ISSLTransport.providedBy(transport) or not isinstance(
        getattr(system, "bufferSize", None), int
    ):
        return None
    handle = system.getHandle()
    return handle if isinstance(handle, socket.socket) else None


def send_one(sock: socket.socket, transport: Any, data: bytes) -> int:
    """As :func:`send_now` for one piece of bytes."""
    try:
        sent = sock.send(data)
    except OSError:  # full (EAGAIN), or broken: the transport finds out and closes
        sent = 0
    if sent == len(data):
        return 0
    rest = data[sent:] if sent else data
    transport.write(rest)
    return len(rest)


def send_now(sock: socket.socket, transport: Any, chunks: Sequence[bytes]) -> int:
    """Send *chunks* on *sock* now (one ``send``, or one ``sendmsg`` without joining
    them); *transport*, which must hold nothing, gets what the socket does not take.
    Returns how many bytes that was."""
    try:
        sent = sock.send(chunks[0]) if len(chunks) == 1 else sock.sendmsg(chunks[:IOV_MAX])
    except OSError:  # full (EAGAIN), or broken: the transport finds out and closes
        sent = 0
    done = 0
    for data in chunks:  # the chunks sent whole
        if sent < len(data):
            break
        sent -= len(data)
        done += 1
    if done == len(chunks):
        return 0
    rest = list(chunks[done:])
    if sent:
        rest[0] = rest[0][sent:]
    transport.writeSequence(rest)
    return sum(map(len, rest))
