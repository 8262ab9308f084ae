"""Back pressure for one client that reads too slowly: cut it off past a byte limit.

An event stream (:mod:`.sse`) and an Engine.IO WebSocket (:mod:`.socketio`) each register
a :class:`FlowControl` with their transport as its push producer: the transport tells it
when its send buffer is full (``pauseProducing``) and when that has drained
(``resumeProducing``).  While it is full, the writer asks :meth:`FlowControl.over_limit`
before each write; past the limit it cuts its client off (and counts it), the
connection's buffers are freed at once, and the client resumes from the history when it
reconnects.  One slow reader thus costs at most the limit.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


def _nothing() -> None:
    pass


@implementer(IPushProducer)
class FlowControl:
    """Whether one client's transport is full, and how much then waits in it."""

    __slots__ = ("_on_stop", "paused", "queued")

    def __init__(self, on_stop: Callable[[], None] = _nothing) -> None:
        self.paused = False
        #: Bytes written since the pause, for transports that do not show their buffer.
        self.queued = 0
        self._on_stop = on_stop

    # -- IPushProducer (called by the transport) ---------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.queued = 0

    def stopProducing(self) -> None:
        self._on_stop()

    # -- asked by the writer while paused -----------------------------------------

    def queued_bytes(self, transport: object, size: int) -> int:
        """What would wait in *transport* with *size* more bytes.

        For a plain TCP transport this reads its buffer sizes (Twisted's
        ``FileDescriptor`` has kept them under these names for twenty years); otherwise
        it counts the bytes written since the pause.
        """
        if isinstance(transport, FileDescriptor):
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen + size
        self.queued += size
        return self.queued

    def over_limit(self, transport: object, size: int, limit: int) -> bool:
        """Would *size* more bytes leave more than *limit* bytes waiting in *transport*?

        Only meaningful while :attr:`paused`: writers test that first, so a client that
        keeps up costs one attribute read per write.
        """
        return self.queued_bytes(transport, size) > limit
