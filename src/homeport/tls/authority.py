"""ACME v2 with certbot's ``acme`` library: :class:`AcmeAuthority`, blocking calls.

:class:`~.issuer.AcmeIssuingService` runs them in its worker thread.  This module (and
with it ``acme``, ``josepy`` and ``requests``, about a tenth of the daemon's start-up)
is imported only by a daemon with an ``le:``/``lets:`` listener.
"""

from __future__ import annotations

import datetime
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import certifi
import requests
from acme import challenges as acme_challenges
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography.hazmat.primitives import serialization
from josepy.b64 import b64encode
from josepy.jwa import RS256
from josepy.jwk import JWKRSA
from zope.interface import implementer

from .. import __version__
from .challenges import Challenges, tls_alpn_certificate
from .issuer import (
    HTTP_01,
    Cancelled,
    ICertificateAuthority,
    Issued,
    IssuingFailed,
    RateLimited,
    parse_retry_after,
)


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
