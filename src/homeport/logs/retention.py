"""Pruning stored log records by age and count, in the background, on a given clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..units import parse_age

DEFAULT_RETENTION = "7d"
DEFAULT_INTERVAL = 60.0

Pruner = Callable[[float | None, int | None], Deferred[int]]


class RetentionError(ValueError):
    """A ``--log-retention`` value that cannot be read."""


def parse_retention(text: str) -> tuple[float | None, int | None]:
    """``7d`` (age), ``7d,1000000`` (age and count), ``1000000`` (count only) or ``none``.

    A bare whole number is a number of records; an age has a unit (``s m h d w``).
    """
    age: float | None = None
    count: int | None = None
    for part in (p.strip() for p in text.split(",")):
        if not part or part.lower() in ("none", "forever"):
            continue
        if part.isdigit():
            if count is not None:
                raise RetentionError(text)
            count = int(part)
        else:
            if age is not None:
                raise RetentionError(text)
            try:
                age = parse_age(part)
            except ValueError:
                raise RetentionError(text) from None
            if age <= 0:
                raise RetentionError(text)
    return age, count


class RetentionService(Service):
    """Every *interval* seconds of *clock*, prune records older than *max_age* and beyond
    the newest *max_records* (either may be None); one pruning at a time."""

    log = Logger()

    def __init__(
        self,
        prune: Pruner,
        clock: IReactorTime,
        max_age: float | None,
        max_records: int | None,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.prune = prune
        self.clock = clock
        self.max_age = max_age
        self.max_records = max_records
        self.interval = interval
        self._loop: LoopingCall | None = None
        self._busy = False
        self.pruned = 0

    def startService(self) -> None:
        Service.startService(self)
        if self.max_age is None and self.max_records is None:
            return
        self._loop = LoopingCall(self.run)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True).addErrback(
            lambda f: self.log.failure("Log retention stopped", f)
        )

    def stopService(self) -> None:
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def run(self) -> None:
        if self._busy:
            return
        self._busy = True
        cutoff = self.clock.seconds() - self.max_age if self.max_age is not None else None
        d = self.prune(cutoff, self.max_records)
        d.addCallback(self._done)
        d.addErrback(lambda f: self.log.failure("Pruning stored log records", f))
        d.addBoth(self._idle)

    def _done(self, deleted: int) -> None:
        self.pruned += deleted
        if deleted:
            self.log.info("Pruned {count} old log records", count=deleted)

    def _idle(self, _: Any) -> None:
        self._busy = False
