"""Login attempts per client address: a few wrong tokens, then an exponential wait.

``FREE`` wrong tokens in a row cost nothing; each one after locks the address out for
``BASE`` seconds, doubled per further failure up to ``CAP``.  While locked out every
attempt is answered 429 with ``Retry-After``, the right token included (so the lockout
is no oracle).  A right token forgets the address; so does ``FORGET`` seconds without a
failure.  At most ``KEEP`` addresses are remembered (the oldest go first).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FREE = 5
BASE = 10.0
CAP = 900.0
FORGET = 3600.0
KEEP = 4096


@dataclass
class _Record:
    failures: int
    last: float
    until: float


class Throttle:
    """Failed logins per address; safe to use from several WSGI threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.records: OrderedDict[str, _Record] = OrderedDict()

    def wait(self, address: str) -> int:
        """Whole seconds *address* must wait before trying again (0: it may now)."""
        with self.lock:
            record = self.records.get(address)
            if record is None:
                return 0
            return max(0, math.ceil(record.until - self.clock()))

    def failed(self, address: str) -> None:
        """One more wrong token from *address*."""
        now = self.clock()
        with self.lock:
            record = self.records.pop(address, None)
            if record is None or now - record.last > FORGET:
                record = _Record(0, now, now)
            record.failures += 1
            record.last = now
            if record.failures >= FREE:
                record.until = now + min(CAP, BASE * 2 ** (record.failures - FREE))
            self.records[address] = record
            while len(self.records) > KEEP:
                self.records.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self.lock:
            self.records.pop(address, None)
