"""Back pressure: a paused client is cut off once more than the limit waits for it."""

from __future__ import annotations

from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import MemoryReactor
from zope.interface.verify import verifyObject

from homeport.push.flow import FlowControl


def test_it_is_a_push_producer_whose_stop_is_the_writers() -> None:
    """The transport pauses and resumes it; stopping it calls what the writer gave."""
    stopped: list[bool] = []
    flow = FlowControl(lambda: stopped.append(True))
    assert verifyObject(IPushProducer, flow)
    flow.stopProducing()
    assert stopped == [True]
    FlowControl().stopProducing()  # by default, nothing


def test_writes_while_paused_count_until_the_transport_drains() -> None:
    """Without a readable buffer, the bytes written since the pause are what waits."""
    flow = FlowControl()
    assert not flow.paused
    flow.pauseProducing()
    assert flow.paused
    assert not flow.over_limit(None, 600, 1024)
    assert not flow.over_limit(None, 424, 1024)
    assert flow.over_limit(None, 1, 1024)
    flow.resumeProducing()
    assert not flow.paused and flow.queued == 0


def test_a_plain_socket_is_measured_by_what_its_buffers_hold() -> None:
    """A FileDescriptor's own buffers (less what it already sent) plus this write."""
    transport = FileDescriptor(MemoryReactor())
    transport.dataBuffer = b"x" * 1000
    transport.offset = 400
    transport._tempDataLen = 300
    flow = FlowControl()
    flow.pauseProducing()
    assert flow.queued_bytes(transport, 24) == 924
    assert not flow.over_limit(transport, 124, 1024)
    assert flow.over_limit(transport, 125, 1024)
    assert flow.queued == 0  # measured, not counted
