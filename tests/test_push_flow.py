"""Back pressure: a paused client is cut off once more than the limit waits for it."""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
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
    """The bytes given to the writer since the pause are what waits."""
    flow = FlowControl()
    assert not flow.paused
    flow.pauseProducing()
    assert flow.paused
    assert not flow.over_limit(None, 600, 1024)
    assert not flow.over_limit(None, 424, 1024)
    assert flow.over_limit(None, 1, 1024)
    flow.resumeProducing()
    assert not flow.paused and flow.queued == 0


def test_resuming_hands_the_writer_back_its_turn() -> None:
    """The transport's resume (its buffer drained) tells the writer to write what it held."""
    resumed: list[bool] = []
    flow = FlowControl(on_resume=lambda: resumed.append(flow.paused))
    flow.pauseProducing()
    flow.over_limit(None, 2000, 1024)
    flow.resumeProducing()
    assert resumed == [False] and flow.queued == 0


def test_no_transport_private_attribute_is_read() -> None:
    """The measure is the writer's own count: the flow and SSE modules use Twisted's
    public interfaces only (issue #22, item 7)."""
    import inspect
    import re

    from homeport.push import flow, sse

    for module in (flow, sse):
        source = inspect.getsource(module)
        for private in ("_tempDataLen", "writeSomeData", "dataBuffer", "_writeDisconnected"):
            assert private not in source, (module.__name__, private)
        assert not re.search(r"transport\)?\._", source), module.__name__
