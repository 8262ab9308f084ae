"""The ACME issuing service: gets and renews the certificate directory's certificates.

:class:`~.authority.AcmeAuthority` speaks ACME v2 (RFC 8555) with certbot's ``acme``
library.  Its calls block, so :class:`AcmeIssuingService` runs them in a thread pool it
owns (one thread: one order at a time) and keeps all decisions on the reactor thread,
timed by the clock passed in:

- at start and then daily: names with an empty file, and certificates expiring within 30
  days, are (re)issued;
- a failure is logged as one line (name, server, reason, next try) and retried with
  exponential backoff; a rate-limit answer's ``Retry-After`` is respected;
- a new certificate is written atomically (0600), the endpoint reloads it at once, and
  one line says it was issued or renewed, by whom, and until when.

The account key is created once, in the certificate directory (``acme-account.key``).
This module imports no ``acme``: that waits for :mod:`.authority`.
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from ..errors import error
from .store import Certificate, ICertificateStore, key_pem, new_certificate_key, parse_pem

if TYPE_CHECKING:
    from .challenges import Challenges
    from .endpoint import SNIMap

HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"
DAY = 24 * 3600.0
RENEW_BEFORE = 30 * DAY
FIRST_RETRY = 10.0
LAST_RETRY = DAY
RATE_LIMIT_DEFAULT = 3600.0
#: The one line for a new certificate: a first one (an empty file), or a renewal.
ISSUED_RENEWED = {
    False: "Issued a certificate for {name} by {server} ({how}), valid until {until}",
    True: "Renewed the certificate for {name} by {server} ({how}), valid until {until}",
}

log = Logger(namespace="homeport.tls")
T = TypeVar("T")


@error
class IssuingFailed(Exception):
    """The ACME server did not give us a certificate; *reason* is one line for the log."""

    reason: str

    def __str__(self) -> str:
        return self.reason


@error
class RateLimited(Exception):
    """The ACME server said to slow down; try again after *retry_after* seconds."""

    detail: str
    retry_after: float | None

    def __str__(self) -> str:
        return f"rate limited: {self.detail}"


@dataclass(frozen=True)
class Issued:
    """A certificate chain (PEM) and the challenge types that validated its names."""

    chain: bytes
    challenges: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """When :class:`AcmeIssuingService` checks, renews and retries (seconds)."""

    check_interval: float = DAY  # how often every name's certificate is looked at
    renew_before: float = RENEW_BEFORE  # renewed when it expires sooner than this
    first_retry: float = FIRST_RETRY  # a failed name is retried after this, doubling...
    last_retry: float = LAST_RETRY  # ...up to this


class Cancelled(Exception):
    """The service stopped while an order was under way."""


class ICertificateAuthority(Interface):
    """Something that turns a CSR into a certificate chain (blocking; run in a thread)."""

    server = Attribute("The ACME directory URL, for log lines.")

    def issue(
        name: str,  # noqa: N805
        csr_pem: bytes,
        challenges: Challenges,
        preference: Sequence[str],
    ) -> Issued:
        """Validate *name* with the first usable challenge type; the PEM chain."""

    def cancel() -> None:
        """Make a running :meth:`issue` give up soon (called from the reactor thread)."""


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) -> seconds from *now*."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


def run_in(pool: Any, reactor: Any) -> Callable[..., defer.Deferred[Any]]:
    from twisted.internet.threads import deferToThreadPool

    def run(f: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        return deferToThreadPool(reactor, pool, f, *args)

    return run


class AcmeIssuingService(Service):
    """Keeps every name in one certificate directory supplied with a valid certificate."""

    def __init__(
        self,
        store: ICertificateStore,
        sni: SNIMap,
        authority: ICertificateAuthority,
        clock: IReactorTime,
        preference: Sequence[str] = (TLS_ALPN_01, HTTP_01),
        run_blocking: Callable[..., defer.Deferred[Any]] | None = None,
        schedule: Schedule = Schedule(),
    ) -> None:
        self.store = store
        self.sni = sni
        self.authority = authority
        self.clock = clock
        self.preference = tuple(preference)
        self._run_blocking = run_blocking
        self.schedule = schedule
        self.failures: dict[str, int] = {}
        self._queue: list[str] = []
        self._busy: set[str] = set()  # queued, being issued, or waiting to retry
        self._why: dict[str, str] = {}  # why each busy name is wanted: requested, renewal
        self._running: str | None = None
        self._retries: dict[str, IDelayedCall] = {}
        self._loop: LoopingCall | None = None
        self._pool: Any = None
        self._current: defer.Deferred[Any] | None = None

    def startService(self) -> None:
        Service.startService(self)
        if self._run_blocking is None:
            from twisted.python.threadpool import ThreadPool

            self._pool = ThreadPool(minthreads=0, maxthreads=1, name="homeport-acme")
            self._pool.start()
            self._run_blocking = run_in(self._pool, self.clock)
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.schedule.check_interval, now=True).addErrback(
            lambda f: log.failure("The certificate check loop stopped", f)
        )

    def stopService(self) -> defer.Deferred[None] | None:
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for call in self._retries.values():
            if call.active():
                call.cancel()
        self._retries.clear()
        self._queue.clear()
        self.authority.cancel()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            self._run_blocking = None
            pool.stop()  # joins the worker; cancel() makes a running order stop soon
        close = getattr(self.authority, "close", None)
        if close is not None:
            close()
        return None

    def check(self) -> None:
        """Re-read the directory; queue empty files and certificates due for renewal."""
        listing = self.sni.reload()
        now = self.clock.seconds()
        for name in listing.wanted:
            self._want(name, "requested")
        for name, certificate in sorted(listing.certificates.items()):
            if certificate.expires - now <= self.schedule.renew_before:
                self._want(name, "renewal")

    def _want(self, name: str, why: str) -> None:
        if name in self._busy or not self.running:
            return
        self._busy.add(name)
        self._why[name] = why
        self._queue.append(name)
        log.info(
            "Asking {server} for a certificate for {name} ({why})",
            server=self.authority.server,
            name=name,
            why=why,
        )
        self._pump()

    def _pump(self) -> None:
        if self._running is not None or not self._queue or self._run_blocking is None:
            return
        name = self._running = self._queue.pop(0)
        failures = self.failures.get(name, 0)
        # After a failure the next attempt leads with the next challenge type.
        shift = failures % len(self.preference)
        preference = self.preference[shift:] + self.preference[:shift]
        d = self._run_blocking(self._issue, name, preference)
        self._current = d
        d.addCallbacks(self._issued, self._failed, callbackArgs=(name,), errbackArgs=(name,))
        d.addBoth(self._next)

    def _issue(self, name: str, preference: Sequence[str]) -> tuple[Certificate, Issued]:
        """In the worker thread: a new key, a CSR, the order, the file."""
        from acme.crypto_util import make_csr

        key = new_certificate_key()
        private = key_pem(key)
        issued = self.authority.issue(
            name, make_csr(private, [name]), self.sni.challenges, preference
        )
        pem = private + issued.chain
        try:
            certificate = parse_pem(name, pem)
        except ValueError as e:
            raise IssuingFailed(f"the server sent an unusable certificate: {e}") from None
        self.store.save(name, pem)
        return certificate, issued

    def _issued(self, result: tuple[Certificate, Issued], name: str) -> None:
        certificate, issued = result
        self.failures.pop(name, None)
        self._busy.discard(name)
        renewed = self._why.pop(name, "requested") == "renewal"
        log.info(
            ISSUED_RENEWED[renewed],
            name=name,
            server=self.authority.server,
            how=", ".join(issued.challenges) or "already authorized",
            until=certificate.not_after.isoformat(),
        )
        self.sni.reload()

    def _failed(self, failure: Failure, name: str) -> None:
        if failure.check(Cancelled) or not self.running:
            self._busy.discard(name)
            return
        count = self.failures[name] = self.failures.get(name, 0) + 1
        delay = min(self.schedule.first_retry * 2 ** (count - 1), self.schedule.last_retry)
        from .authority import describe_error

        error = failure.value
        assert error is not None
        if isinstance(error, RateLimited):
            delay = max(delay, error.retry_after or RATE_LIMIT_DEFAULT)
        log.warn(
            "Could not get a certificate for {name} from {server}: {reason}; "
            "try {count} failed, next in {delay}",
            name=name,
            server=self.authority.server,
            reason=describe_error(error),
            count=count,
            delay=_duration(delay),
        )
        self._retries[name] = self.clock.callLater(delay, self._retry, name)

    def _retry(self, name: str) -> None:
        self._retries.pop(name, None)
        self._busy.discard(name)
        self.check()

    def _next(self, _: object) -> None:
        self._running = None
        self._current = None
        self._pump()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d"
