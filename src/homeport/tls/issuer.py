"""The ACME issuing service: gets and renews the certificate directory's certificates.

:class:`AcmeAuthority` speaks ACME v2 (RFC 8555) with certbot's ``acme`` library.  Its calls
block, so :class:`AcmeIssuingService` runs them in a thread pool it owns (one thread: one
order at a time) and keeps all decisions on the reactor thread, timed by the clock passed in:

- at start and then daily: names with an empty file, and certificates expiring within 30
  days, are (re)issued;
- a failure is logged as one line (name, server, reason, next try) and retried with
  exponential backoff; a rate-limit answer's ``Retry-After`` is respected;
- a new certificate is written atomically (0600) and the endpoint reloads it at once.

The account key is created once, in the certificate directory (``acme-account.key``).
"""

from __future__ import annotations

import datetime
import email.utils
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import certifi
import requests
from acme import challenges as acme_challenges
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from acme.crypto_util import make_csr
from cryptography.hazmat.primitives import serialization
from josepy.b64 import b64encode
from josepy.jwa import RS256
from josepy.jwk import JWKRSA
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from .. import __version__
from ..errors import error
from .challenges import Challenges, tls_alpn_certificate
from .endpoint import SNIMap
from .store import Certificate, ICertificateStore, key_pem, new_certificate_key, parse_pem

HTTP_01 = "http-01"
TLS_ALPN_01 = "tls-alpn-01"
DAY = 24 * 3600.0
RENEW_BEFORE = 30 * DAY
FIRST_RETRY = 10.0
LAST_RETRY = DAY
RATE_LIMIT_DEFAULT = 3600.0

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


def describe_error(error: BaseException) -> str:
    """One line saying what went wrong talking to the ACME server."""
    if isinstance(error, IssuingFailed | RateLimited):
        return str(error)
    if isinstance(error, requests.exceptions.SSLError):
        return f"TLS error talking to the ACME server ({_innermost(error)})"
    if isinstance(error, requests.exceptions.Timeout):
        return "the ACME server did not answer in time"
    if isinstance(error, requests.exceptions.ConnectionError):
        return f"cannot reach the ACME server ({_innermost(error)})"
    if isinstance(error, messages.Error):
        return f"the ACME server refused: {error.code or error.typ}: {error.detail}"
    if isinstance(error, acme_errors.TimeoutError):
        return "timed out waiting for the ACME server"
    if isinstance(error, acme_errors.Error):
        return f"ACME error: {type(error).__name__}: {error}"
    return f"{type(error).__name__}: {error}"


def _innermost(error: BaseException) -> str:
    text = str(error)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip().lower()
    match = re.search(r"\((_ssl\.c:\d+|SSL: [^)]*)\)|(CERTIFICATE_VERIFY_FAILED[^'\")]*)", text)
    if match:
        return (match.group(0) or "").strip("()")
    return type(error).__name__


def _key_authorization(token: str, thumbprint: str) -> str:
    return f"{token}.{thumbprint}"


@implementer(ICertificateAuthority)
class AcmeAuthority:
    """An ACME v2 server reached with certbot's ``acme`` library (blocking calls).

    *account_key* returns the account key's PEM (read or created on first use, so file
    I/O and key generation happen in the worker thread).  *ca_file* adds a trust root for
    the server's own HTTPS certificate (pebble's) to the usual ones.
    """

    def __init__(
        self,
        server: str,
        account_key: Callable[[], bytes],
        email: str | None = None,
        ca_file: str | None = None,
        timeout: int = 30,
        validation_deadline: float = 120.0,
    ) -> None:
        self.server = server
        self._account_key = account_key
        self.email = email
        self.ca_file = ca_file
        self.timeout = timeout
        self.validation_deadline = validation_deadline
        self._client: Any = None
        self._jwk: Any = None
        self._bundle: str | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def close(self) -> None:
        if self._bundle is not None:
            os.unlink(self._bundle)
            self._bundle = None

    def _check_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled()

    def _verify(self) -> bool | str:
        if self.ca_file is None:
            return True
        if self._bundle is None:
            with open(certifi.where(), "rb") as f:
                bundle = f.read()
            with open(self.ca_file, "rb") as f:
                bundle += b"\n" + f.read()
            fd, path = tempfile.mkstemp(prefix="homeport-acme-ca-", suffix=".pem")
            with os.fdopen(fd, "wb") as out:
                out.write(bundle)
            self._bundle = path
        return self._bundle

    def _connect(self) -> Any:
        """The client, registered with the account key (once per server, then reused)."""
        if self._client is not None:
            return self._client
        key = serialization.load_pem_private_key(self._account_key(), password=None)
        self._jwk = JWKRSA(key=key)
        network = _Network(
            key=self._jwk,
            alg=RS256,
            verify_ssl=self._verify(),  # type: ignore[arg-type]  # requests takes a path
            user_agent=f"homeport/{__version__} acme-python",
            timeout=self.timeout,
        )
        directory = acme_client.ClientV2.get_directory(self.server, network)
        acme = acme_client.ClientV2(directory, network)
        registration = messages.NewRegistration.from_data(
            email=self.email, terms_of_service_agreed=True
        )
        try:
            account = acme.new_account(registration)
        except acme_errors.ConflictError as e:  # this key already has an account: use it
            account = messages.RegistrationResource(uri=e.location, body=messages.Registration())
        network.account = account
        self._client = acme
        return acme

    def issue(
        self, name: str, csr_pem: bytes, challenges: Challenges, preference: Sequence[str]
    ) -> Issued:
        self._cancelled.clear()
        try:
            return self._issue(name, csr_pem, challenges, preference)
        except BaseException:
            self._client = None  # reconnect and re-register next time (server may be new)
            raise

    def _issue(
        self, name: str, csr_pem: bytes, challenges: Challenges, preference: Sequence[str]
    ) -> Issued:
        acme = self._connect()
        thumbprint = b64encode(self._jwk.thumbprint()).decode("ascii")
        order = acme.new_order(csr_pem)
        tokens: list[str] = []
        names: list[str] = []
        used: list[str] = []
        try:
            pending = []
            for authorization in order.authorizations:
                if authorization.body.status == messages.STATUS_VALID:
                    continue
                identifier = authorization.body.identifier.value
                offered = {
                    c.to_partial_json().get("type"): c for c in authorization.body.challenges
                }
                kind = next((k for k in preference if k in offered), None)
                if kind is None:
                    raise IssuingFailed(
                        f"no usable challenge for {identifier}: the server offers "
                        f"{', '.join(sorted(str(k) for k in offered))}"
                    )
                body = offered[kind]
                used.append(kind)
                token = body.to_partial_json()["token"]
                answer = _key_authorization(token, thumbprint)
                if kind == HTTP_01:
                    challenges.http01[token] = answer.encode("ascii")
                    tokens.append(token)
                else:
                    challenges.tlsalpn01[identifier] = tls_alpn_certificate(identifier, answer)
                    names.append(identifier)
                self._check_cancelled()
                # Not acme.answer_challenge: it insists on a Link "up" header that
                # RFC 8555 servers need not send (pebble 2.4 does not).
                acme.net.post(body.uri, _Ready(), new_nonce_url=acme.directory["newNonce"])
                pending.append(authorization)
            deadline = time.monotonic() + self.validation_deadline
            for authorization in pending:
                self._wait_valid(acme, authorization, deadline)
            self._check_cancelled()
            finished = acme.finalize_order(
                order,
                datetime.datetime.now() + datetime.timedelta(seconds=self.validation_deadline),
            )
            return Issued(str(finished.fullchain_pem).encode("ascii"), tuple(used))
        finally:
            for token in tokens:
                challenges.http01.pop(token, None)
            for identifier in names:
                challenges.tlsalpn01.pop(identifier, None)

    def _wait_valid(self, acme: Any, authorization: Any, deadline: float) -> None:
        while True:
            self._check_cancelled()
            authorization, response = acme.poll(authorization)
            status = authorization.body.status
            if status == messages.STATUS_VALID:
                return
            if status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                identifier = authorization.body.identifier.value
                for challenge in authorization.body.challenges:
                    if challenge.error is not None:
                        kind = challenge.to_partial_json().get("type")
                        raise IssuingFailed(
                            f"{kind} validation of {identifier} failed: "
                            f"{challenge.error.detail or challenge.error.typ}"
                        )
                raise IssuingFailed(f"authorization of {identifier} is {status}")
            if time.monotonic() > deadline:
                raise IssuingFailed("timed out waiting for validation")
            wait = parse_retry_after(response.headers.get("Retry-After"), time.time())
            time.sleep(min(max(wait or 1.0, 0.2), 5.0))


class _Ready(acme_challenges.ChallengeResponse):
    """The RFC 8555 challenge response: an empty object meaning "validate now"."""

    typ = "ready"

    def __bool__(self) -> bool:
        # acme signs an empty payload (POST-as-GET) for a falsy object, and a response
        # with no fields is falsy; the server must get "{}" to start validating.
        return True


class _Network(acme_client.ClientNetwork):
    """acme's ClientNetwork, turning a ``rateLimited`` problem into :class:`RateLimited`."""

    @classmethod
    def _check_response(cls, response: Any, content_type: str | None = None) -> Any:
        try:
            return super()._check_response(response, content_type=content_type)
        except messages.Error as e:
            if e.code == "rateLimited":
                raise RateLimited(
                    detail=str(e.detail or "rateLimited"),
                    retry_after=parse_retry_after(response.headers.get("Retry-After"), time.time()),
                ) from None
            raise


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
        log.info(
            "Got a certificate for {name} from {server} ({how}), valid until {until}",
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
