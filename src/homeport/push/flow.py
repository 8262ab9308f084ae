"""Back pressure for one client that reads too slowly: cut it off past a byte limit.

An event stream (:mod:`.sse`) and an Engine.IO WebSocket (:mod:`.socketio`) are push
producers registered with their transport: it tells them when its send buffer is full
(``pauseProducing``) and when that has drained (``resumeProducing``).  While it is full,
each write first asks :meth:`FlowControl.too_far_behind`; past the limit the writer cuts
its client off (counting it), its buffers are freed at once, and the client resumes from
the history when it reconnects.  One slow reader thus costs at most the limit.
"""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor


class FlowControl:
    """The paused/resumed half of a push producer, and how far behind its client is.

    A base for the producer classes (each says itself what ``stopProducing`` does).
    """

    __slots__ = ("paused", "queued")

    def __init__(self) -> None:
        self.paused = False
        #: Bytes written since the pause, for transports that do not show their buffer.
        self.queued = 0

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.queued = 0

    def queued_bytes(self, transport: object, size: int) -> int:
        """What would wait in *transport* with *size* more bytes.

        Only asked while the transport has said it is full.  For a plain TCP transport
        this reads its buffer sizes (Twisted's ``FileDescriptor`` has kept them under
        these names for twenty years); otherwise it counts the bytes written since the
        pause.
        """
        if isinstance(transport, FileDescriptor):
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen + size
        self.queued += size
        return self.queued

    def too_far_behind(self, transport: object, size: int, limit: int) -> bool:
        """Would writing *size* more bytes leave more than *limit* waiting for the client?"""
        return self.paused and self.queued_bytes(transport, size) > limit
