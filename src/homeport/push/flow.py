"""Back pressure for one client that reads too slowly: hold what it cannot take yet, and
cut it off past a byte limit.

An event stream (:mod:`.sse`) and an Engine.IO WebSocket each register a
:class:`FlowControl` with their request or transport as its push producer (Twisted's
public ``IConsumer.registerProducer``): the transport tells it when its send buffer is
full (``pauseProducing``) and when that has drained (``resumeProducing``).  While it is
full, the writer stops writing to the transport, asks :meth:`FlowControl.over_limit`
for each frame, and holds the frame itself; on resume it writes what it held.  Past the
limit it cuts its client off (and counts it): the connection's buffers are freed at once
and the client resumes from the history when it reconnects.  One slow reader thus costs
at most the limit (plus, over TLS, the transport's own buffer, 64 KiB; on a plain TCP
socket the SSE writer also counts what it handed the transport, see :mod:`.sse`).

Nothing here reads a transport's private buffers: what waits is counted as it is held,
so a Twisted upgrade cannot change the measure.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


def _nothing() -> None:
    pass


@implementer(IPushProducer)
class FlowControl:
    """Whether one client's transport is full, and how much has waited since."""

    __slots__ = ("_on_resume", "_on_stop", "paused", "queued")

    def __init__(
        self, on_stop: Callable[[], None] = _nothing, on_resume: Callable[[], None] = _nothing
    ) -> None:
        self.paused = False
        #: Bytes the writer was given since the pause (what it holds, or what waits).
        self.queued = 0
        self._on_stop = on_stop
        self._on_resume = on_resume

    # -- IPushProducer (called by the transport) ---------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        """The transport has sent all it held: the writer writes what it kept."""
        self.paused = False
        self.queued = 0
        self._on_resume()

    def stopProducing(self) -> None:
        self._on_stop()

    # -- asked by the writer while paused -----------------------------------------

    def over_limit(self, transport: object, size: int, limit: int) -> bool:
        """Count *size* more bytes waiting; would that be more than *limit* since the
        pause?  (*transport* is not read: it is there for the writers that pass it.)

        Only meaningful while :attr:`paused`: writers test that first, so a client that
        keeps up costs one attribute read per write.
        """
        self.queued += size
        return self.queued > limit
