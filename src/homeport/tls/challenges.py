"""ACME challenge answers: http-01 under ``/.well-known/acme-challenge/`` and tls-alpn-01.

:class:`Challenges` holds what is being validated right now.  The issuing service fills it
from its worker thread and the reactor thread reads it (single dict operations, which are
atomic in CPython, so no lock is needed).  The http-01 answers are served by
:class:`WellKnown` on every plain HTTP listener; the tls-alpn-01 answers by the le:/lets:
endpoint's ALPN callback (:func:`select_alpn`), which swaps in the validation certificate
when a validator offers ``acme-tls/1`` (RFC 8737).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, ObjectIdentifier
from OpenSSL import SSL
from twisted.web.resource import Resource
from twisted.web.server import Request

from ..http.site import PlainNotFound

ACME_TLS_1 = b"acme-tls/1"
HTTP_1_1 = b"http/1.1"
ID_PE_ACME_IDENTIFIER = ObjectIdentifier("1.3.6.1.5.5.7.1.31")


@dataclass(frozen=True)
class ValidationCertificate:
    """The self-signed certificate a tls-alpn-01 validator must see for one name."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


@dataclass
class Challenges:
    """Answers currently published: http-01 by token, tls-alpn-01 by host name."""

    http01: dict[str, bytes] = field(default_factory=dict)
    tlsalpn01: dict[str, ValidationCertificate] = field(default_factory=dict)


def tls_alpn_certificate(name: str, key_authorization: str) -> ValidationCertificate:
    """RFC 8737: SAN = *name*, critical acmeIdentifier = SHA-256 of the key authorization."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme tls-alpn-01")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(
            # extnValue is the DER of an OCTET STRING holding the 32-byte digest.
            x509.UnrecognizedExtension(ID_PE_ACME_IDENTIFIER, b"\x04\x20" + digest),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return ValidationCertificate(certificate, key)


def select_alpn(challenges: Challenges, connection: SSL.Connection, offered: list[bytes]) -> Any:
    """The ALPN choice for every context of an le:/lets: listener.

    ``acme-tls/1`` with a pending challenge for the SNI name: serve the validation
    certificate (swapped in here, before the server's certificate is sent) and select
    ``acme-tls/1``.  ``acme-tls/1`` without one: no overlap, and the validator fails
    cleanly.  Otherwise ``http/1.1`` when offered (all that the site speaks).
    """
    if ACME_TLS_1 in offered:
        server_name = connection.get_servername()
        name = server_name.decode("ascii", "replace").lower() if server_name else ""
        validation = challenges.tlsalpn01.get(name)
        if validation is None:
            return SSL.NO_OVERLAPPING_PROTOCOLS
        connection.use_certificate(validation.certificate)
        connection.use_privatekey(validation.key)
        return ACME_TLS_1
    if HTTP_1_1 in offered:
        return HTTP_1_1
    return SSL.NO_OVERLAPPING_PROTOCOLS


class ChallengeResource(Resource):
    """``/.well-known/acme-challenge/<token>``: the key authorization as plain text."""

    def __init__(self, challenges: Challenges) -> None:
        Resource.__init__(self)
        self.challenges = challenges

    def getChild(self, path: bytes, request: Request) -> Resource:
        answer = self.challenges.http01.get(path.decode("ascii", "replace"))
        if answer is None or request.postpath:
            return PlainNotFound()
        return _Answer(answer)

    def render(self, request: Request) -> bytes:
        return PlainNotFound().render(request)


class _Answer(Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        Resource.__init__(self)
        self.body = body

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain")
        return self.body

    render_HEAD = render_GET


class WellKnown(Resource):
    """``/.well-known/``: only ``acme-challenge/`` lives here."""

    def __init__(self, challenges: Challenges) -> None:
        Resource.__init__(self)
        self.challenge = ChallengeResource(challenges)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"acme-challenge":
            return self.challenge
        return PlainNotFound()

    def render(self, request: Request) -> bytes:
        return PlainNotFound().render(request)


class RedirectToHTTPS(Resource):
    """A plain-HTTP listener's root while le:/lets: is in use: ACME answers, else HTTPS.

    GET and HEAD get 301; other methods 308, which keeps the method and body.
    *https_port* says where the TLS listener is (None: not listening yet, use 443).
    """

    def __init__(self, challenges: Challenges, https_port: Callable[[], int | None]) -> None:
        Resource.__init__(self)
        self.well_known = WellKnown(challenges)
        self.https_port = https_port

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b".well-known":
            return self.well_known
        return _Redirect(self.https_port)

    def render(self, request: Request) -> bytes:
        return _Redirect(self.https_port).render(request)


class _Redirect(Resource):
    isLeaf = True

    def __init__(self, https_port: Callable[[], int | None]) -> None:
        Resource.__init__(self)
        self.https_port = https_port

    def render(self, request: Request) -> bytes:
        host = request.getRequestHostname().decode("ascii", "replace")
        if ":" in host:
            host = f"[{host}]"
        port = self.https_port()
        netloc = host if port in (None, 443) else f"{host}:{port}"
        location = f"https://{netloc}".encode("ascii", "replace") + request.uri
        request.setResponseCode(301 if request.method in (b"GET", b"HEAD") else 308)
        request.setHeader(b"location", location)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Moved to " + location + b"\n"
