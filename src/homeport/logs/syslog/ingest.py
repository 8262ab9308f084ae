"""What every syslog listener shares: the way into the store, its limits and counts.

:class:`Ingest` hands parsed records to the log store (``LogStore.add``: the callback
comes once they are committed) and keeps the count of records on their way.  Past
:attr:`Limits.max_pending` of them the listeners hold back: UDP drops (and counts) what
arrives, TCP and RELP connections stop being read until the store has caught up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Protocol

from twisted.logger import Logger

from ..record import Record
from .parse import MAX_MESSAGE

Done = Callable[[list[int] | BaseException], None]
Sink = Callable[[Sequence[Record], Done], None]
_log = Logger(namespace="homeport")


@dataclass(frozen=True, kw_only=True)
class Limits:
    """How much of the daemon the syslog listeners may take."""

    #: Bytes of one message; beyond, it is cut and marked ``truncated``.
    max_message: int = MAX_MESSAGE
    #: Records handed to the store and not yet committed, over every listener.
    max_pending: int = 20_000
    #: The same for one TCP or RELP connection: past it, it is not read for a while.
    max_pending_per_connection: int = 2_000
    #: Seconds a connection may send nothing before it is closed (a peer that vanished
    #: without a FIN is found this way, or by TCP keepalive).
    idle_timeout: float = 600.0
    #: Open connections per listener; one more is refused.
    max_connections: int = 1024
    #: Datagrams gathered into one hand-over to the store (also once per reactor turn).
    udp_batch: int = 512


class Pausable(Protocol):
    """A connection that stops being read while the store is behind."""

    def store_caught_up(self) -> None: ...


@dataclass
class Counts:
    """What the listeners did, for ``/metrics`` and tests."""

    received: int = 0
    stored: int = 0
    dropped: int = 0  # UDP datagrams not taken: too many records on their way
    failed: int = 0  # records the store could not commit
    connections: int = 0


class Ingest:
    """The store's ``add`` with back pressure, and the listeners' shared counts."""

    def __init__(
        self,
        add: Sink,
        now: Callable[[], float],
        limits: Limits = Limits(),
        assume: tzinfo | None = None,
    ) -> None:
        self.add = add
        self.now = now
        self.limits = limits
        #: The time zone of dates that carry none (RFC 3164): None is the host's own.
        self.assume = assume
        self.pending = 0
        self.counts = Counts()
        self.paused: set[Pausable] = set()

    @property
    def congested(self) -> bool:
        return self.pending >= self.limits.max_pending

    def submit(self, records: Sequence[Record], done: Done | None = None) -> bool:
        """Hand *records* to the store; ``done(ids or error)`` once committed.  False
        (and *done* not called) when the store takes nothing more: it is stopping."""
        count = len(records)
        self.counts.received += count

        def finished(result: list[int] | BaseException) -> None:
            self.pending -= count
            if isinstance(result, BaseException):
                self.counts.failed += count
                _log.warn("Syslog: {count} records not stored: {error}", count=count, error=result)
            else:
                self.counts.stored += count
            if done is not None:
                done(result)
            self._wake()

        self.pending += count
        try:
            self.add(records, finished)
        except RuntimeError:  # the store is stopping
            self.pending -= count
            self.counts.failed += count
            return False
        return True

    def _wake(self) -> None:
        if self.paused and self.pending <= self.limits.max_pending // 2:
            for reader in list(self.paused):
                reader.store_caught_up()
