"""The log sink as one service: store, retention, console lines, event feed, resources.

``makeService`` builds a :class:`LogSink`, adds it to the daemon and mounts
:attr:`LogSink.ingest` at ``/log`` and :attr:`LogSink.search` at ``/v1/logs``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from twisted.application.service import MultiService

from ..http.auth import Token
from .console import ConsolePrinter
from .http import LogIngestResource, LogSearchResource
from .retention import RetentionService
from .store import LogStore, Stored

TOPIC = "logs"


class Publish(Protocol):
    """:meth:`homeport.push.hub.Hub.publish`: *text*, when given, is *data* as JSON."""

    def __call__(self, topic: str, data: Any, text: str | None = None) -> object: ...


def publisher(publish: Publish) -> Callable[[Stored], None]:
    """A stored-records listener that puts each record on the event feed (topic ``logs``),
    with the JSON text the store already made for it."""

    def listener(stored: Stored) -> None:
        for id, record, text in stored:
            publish(TOPIC, record.to_json(id), text)

    return listener


class LogSink(MultiService):
    def __init__(
        self,
        path: Path,
        reactor: Any,
        token: str | None = None,
        publish: Publish | None = None,
        max_age: float | None = 7 * 86400.0,
        max_records: int | None = None,
        console: bool = True,
    ) -> None:
        super().__init__()
        listeners: list[Callable[[Stored], None]] = []
        if console:
            listeners.append(ConsolePrinter())
        if publish is not None:
            listeners.append(publisher(publish))
        self.store = LogStore(path, reactor, listeners)
        self.store.setServiceParent(self)
        self.retention = RetentionService(self.store.prune, reactor, max_age, max_records)
        self.retention.setServiceParent(self)
        self.ingest = LogIngestResource(self.store.add, reactor.seconds, Token(token))
        self.search = LogSearchResource(self.store.search, reactor.seconds)
