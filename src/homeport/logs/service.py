"""The log sink's service: the store, its retention, console lines and the event feed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from twisted.application.service import MultiService

from ..part import attach
from .console import ConsolePrinter
from .retention import RetentionService
from .store import LogStore, Stored

TOPIC = "logs"


class Publish(Protocol):
    """:meth:`homeport.push.hub.Hub.publish_many`: an event per (*data*, *text*) of
    *items*, *text* being *data* as JSON."""

    def __call__(self, topic: str, items: Iterable[tuple[Any, str | None]]) -> object: ...


def publisher(publish: Publish) -> Callable[[Stored], None]:
    """A stored-records listener that puts each record on the event feed (topic ``logs``),
    with the JSON value and text the store already made for it."""

    def listener(stored: Stored) -> None:
        publish(TOPIC, [(value, text) for _, _, value, text in stored])

    return listener


class LogSink(MultiService):
    def __init__(
        self,
        path: Path,
        reactor: Any,
        publish: Publish | None = None,
        max_age: float | None = 7 * 86400.0,
        max_records: int | None = None,
        console: bool = True,
    ) -> None:
        MultiService.__init__(self)
        listeners: list[Callable[[Stored], None]] = []
        if console:
            listeners.append(ConsolePrinter())
        if publish is not None:
            listeners.append(publisher(publish))
        self.store = LogStore(path, reactor, listeners)
        self.retention = RetentionService(self.store.prune, reactor, max_age, max_records)
        attach(self, self.store, self.retention)
