"""Every push class that says it provides an interface does, checked with verifyObject."""

from __future__ import annotations

from pathlib import Path

from twisted.application.service import IService
from twisted.internet.interfaces import IPushProducer, IReadDescriptor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import IResource
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel
from zope.interface.verify import verifyClass, verifyObject

from homeport.push.hub import Hub, HubService, IEventHistory, MemoryHistory, SQLiteHistory
from homeport.push.socketio import EngineIO
from homeport.push.sse import EventsResource, SSEConnection, SSEService
from homeport.push.websocket import EngineIOWebSocket
from homeport.push.zmq import ZmqSubscriber


def test_both_histories_provide_the_event_history(tmp_path: Path) -> None:
    """MemoryHistory and SQLiteHistory have every method the hub and its service call."""
    for history in (MemoryHistory(), SQLiteHistory(tmp_path / "events.sqlite3")):
        assert verifyClass(IEventHistory, type(history))
        assert verifyObject(IEventHistory, history)
        history.close()


def test_an_event_stream_and_a_websocket_give_their_transport_a_push_producer() -> None:
    """The transport pauses, resumes and stops an SSE connection or a WebSocket."""
    service = SSEService(Hub(), Clock())
    connection = SSEConnection(service, Request(DummyChannel()), None)
    assert verifyObject(IPushProducer, connection.flow)
    assert verifyObject(IPushProducer, EngineIOWebSocket().flow)
    connection.flow.stopProducing()
    assert connection.closed


def test_the_zeromq_subscriber_is_a_read_descriptor() -> None:
    """The reactor reads the SUB socket's descriptor through it (none before start)."""
    subscriber = ZmqSubscriber(Hub(), MemoryReactorClock(), connect=["tcp://127.0.0.1:1"])
    assert verifyObject(IReadDescriptor, subscriber)
    assert subscriber.fileno() == -1


def test_the_push_services_and_resources_provide_their_interfaces(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    hub = Hub()
    sse = SSEService(hub, reactor)
    engine = EngineIO(hub, reactor)
    for service in (HubService(hub, reactor), sse, engine, ZmqSubscriber(hub, reactor)):
        assert verifyObject(IService, service)
    for resource in (EventsResource(sse, reactor.seconds), engine.resource):
        assert verifyObject(IResource, resource)
