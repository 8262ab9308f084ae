"""The log sink as one service: store, retention, console lines, event feed, resources.

``makeService`` builds a :class:`LogSink`, adds it to the daemon and mounts
:attr:`LogSink.ingest` at ``/log`` and :attr:`LogSink.search` at ``/v1/logs``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import MultiService

from .console import ConsolePrinter
from .http import LogIngestResource, LogSearchResource
from .record import Record
from .retention import RetentionService
from .store import LogStore

Publish = Callable[[str, dict[str, Any]], object]  # what it returns is ignored
TOPIC = "logs"


def publisher(publish: Publish) -> Callable[[list[tuple[int, Record]]], None]:
    """A stored-records listener that puts each record on the event feed (topic ``logs``)."""

    def listener(stored: list[tuple[int, Record]]) -> None:
        for id, record in stored:
            publish(TOPIC, record.to_json(id))

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
        listeners: list[Callable[[list[tuple[int, Record]]], None]] = []
        if console:
            listeners.append(ConsolePrinter())
        if publish is not None:
            listeners.append(publisher(publish))
        self.store = LogStore(path, reactor, listeners)
        self.store.setServiceParent(self)
        self.retention = RetentionService(self.store.prune, reactor, max_age, max_records)
        self.retention.setServiceParent(self)
        self.ingest = LogIngestResource(self.store.add, reactor.seconds, token)
        self.search = LogSearchResource(self.store.search, reactor.seconds)
