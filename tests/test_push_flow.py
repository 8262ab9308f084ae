"""Back pressure: a paused client is cut off once more than the limit waits for it."""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.internet.testing import MemoryReactor

from homeport.push.flow import FlowControl


def test_a_client_that_keeps_up_is_never_behind() -> None:
    """While the transport is not full, no write counts, however large."""
    flow = FlowControl()
    assert not flow.too_far_behind(object(), 10_000_000, 1024)
    assert flow.queued == 0


def test_writes_while_paused_count_until_the_transport_drains() -> None:
    """Without a readable buffer, the bytes written since the pause are what waits."""
    flow = FlowControl()
    flow.pauseProducing()
    assert not flow.too_far_behind(None, 600, 1024)
    assert not flow.too_far_behind(None, 424, 1024)
    assert flow.too_far_behind(None, 1, 1024)
    flow.resumeProducing()
    assert not flow.paused and flow.queued == 0
    assert not flow.too_far_behind(None, 5000, 1024)


def test_a_plain_socket_is_measured_by_what_its_buffers_hold() -> None:
    """A FileDescriptor's own buffers (less what it already sent) plus this write."""
    transport = FileDescriptor(MemoryReactor())
    transport.dataBuffer = b"x" * 1000
    transport.offset = 400
    transport._tempDataLen = 300
    flow = FlowControl()
    flow.pauseProducing()
    assert flow.queued_bytes(transport, 24) == 924
    assert not flow.too_far_behind(transport, 124, 1024)
    assert flow.too_far_behind(transport, 125, 1024)
    assert flow.queued == 0  # measured, not counted
