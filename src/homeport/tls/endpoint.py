"""The ``le:<certdir>:<inner endpoint>`` / ``lets:...`` server endpoint: TLS with SNI.

The endpoint wraps any inner server endpoint (``tcp:443``, ``unix:...``) in TLS.  The
certificate is picked per connection by the SNI name from the certificate directory; without
SNI (or for a name with no certificate) the default one is served: the first host name in
sort order, or a self-signed stand-in while the directory has none yet.  :meth:`SNIMap.reload`
re-reads the directory, so a new certificate is used by the next handshake, no restart.

Issuing is not done here: :func:`homeport.tls.build` finds these endpoints among the
``--http`` listeners and starts one issuing service per certificate directory.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamServerEndpoint,
    ITCPTransport,
)
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from zope.interface import implementer

from .challenges import ACME_TLS_1, Challenges, select_alpn
from .store import Certificate, DirectoryStore, ICertificateStore, Listing, new_certificate_key

LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory"

log = Logger(namespace="homeport.tls")


def _context(
    key: Any,
    chain: tuple[x509.Certificate, ...],
    alpn: Callable[[SSL.Connection, list[bytes]], Any],
) -> SSL.Context:
    """A server context with Twisted's defaults (protocols, ciphers) and our ALPN."""
    # Twisted's defaults (protocol versions, ciphers, session ids), our key and chain.
    options = CertificateOptions()
    context: SSL.Context = options.getContext()
    context.use_certificate(chain[0])
    context.use_privatekey(key)
    for certificate in chain[1:]:
        context.add_extra_chain_cert(certificate)
    context.check_privatekey()
    context.set_alpn_select_callback(alpn)
    return context


def _stand_in() -> tuple[Any, tuple[x509.Certificate, ...]]:
    """A self-signed certificate served until the directory holds a real one."""
    key = new_certificate_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homeport (no certificate yet)")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return key, (certificate,)


@implementer(IOpenSSLServerConnectionCreator)
class SNIMap:
    """TLS contexts by host name, built from a certificate store and reloaded on demand."""

    def __init__(self, store: ICertificateStore, challenges: Challenges | None = None) -> None:
        self.store = store
        self.challenges = challenges if challenges is not None else Challenges()
        self.listing: Listing | None = None
        self._contexts: dict[str, SSL.Context] = {}
        self._built: dict[str, tuple[bytes, SSL.Context]] = {}
        self._default: SSL.Context | None = None
        self._stand_in: SSL.Context | None = None
        self._base: SSL.Context | None = None
        self._reported: set[str] = set()

    @property
    def names(self) -> list[str]:
        return sorted(self._contexts)

    def reload(self) -> Listing:
        """Re-read the store; report each bad file once (until it changes)."""
        listing = self.store.load()
        reported = set()
        for error in listing.errors:
            line = str(error)
            reported.add(line)
            if line not in self._reported:
                log.error(
                    "Certificate file {path} is not served: {reason}",
                    path=str(error.path),
                    reason=error.reason,
                )
        self._reported = reported
        contexts: dict[str, SSL.Context] = {}
        built: dict[str, tuple[bytes, SSL.Context]] = {}
        for name, certificate in listing.certificates.items():
            digest = hashlib.sha256(certificate.pem).digest()
            previous = self._built.get(name)
            if previous is not None and previous[0] == digest:
                context = previous[1]
            else:
                context = self._build(certificate)
                log.info(
                    "Serving the certificate for {name} (valid until {until})",
                    name=name,
                    until=certificate.not_after.isoformat(),
                )
            contexts[name] = context
            built[name] = (digest, context)
        self._contexts = contexts
        self._built = built
        self._default = contexts[min(contexts)] if contexts else None
        self.listing = listing
        return listing

    def _build(self, certificate: Certificate) -> SSL.Context:
        return _context(certificate.key, certificate.chain, self._select_alpn)

    def context_for(self, server_name: bytes | None) -> SSL.Context:
        """The context for an SNI name: its own, else the default, else the stand-in."""
        if self.listing is None:
            self.reload()
        if server_name:
            context = self._contexts.get(server_name.decode("ascii", "replace").lower())
            if context is not None:
                return context
        if self._default is not None:
            return self._default
        if self._stand_in is None:
            self._stand_in = _context(*_stand_in(), self._select_alpn)
        return self._stand_in

    def _select_alpn(self, connection: SSL.Connection, offered: list[bytes]) -> Any:
        return select_alpn(self.challenges, connection, offered)

    def _on_server_name(self, connection: SSL.Connection) -> None:
        connection.set_context(self.context_for(connection.get_servername()))

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        if self._base is None:
            base = _context(*_stand_in(), self._select_alpn)
            base.set_tlsext_servername_callback(self._on_server_name)
            self._base = base
        return SSL.Connection(self._base, None)


class _TLSProtocol(BufferingTLSTransport):
    """Closes an ``acme-tls/1`` connection that sends data: it was for validation only."""

    def dataReceived(self, data: bytes) -> None:
        if self._handshakeDone and self.negotiatedProtocol == ACME_TLS_1:
            cast(ITCPTransport, self.transport).abortConnection()
            return
        BufferingTLSTransport.dataReceived(self, data)


class _TLSFactory(TLSMemoryBIOFactory):
    protocol = _TLSProtocol


@implementer(IStreamServerEndpoint)
class AcmeEndpoint:
    """TLS over *inner*, certificates from *directory* chosen by SNI."""

    def __init__(
        self,
        reactor: Any,
        directory: Path,
        staging: bool,
        inner: IStreamServerEndpoint,
        inner_description: str,
    ) -> None:
        self.reactor = reactor
        self.directory = directory
        self.staging = staging
        self.inner = inner
        self.inner_description = inner_description
        self.store = DirectoryStore(directory)
        self.sni = SNIMap(self.store)
        self.port: IListeningPort | None = None

    @property
    def acme_directory(self) -> str:
        """The ACME server this endpoint's prefix means (overridden by --acme-directory)."""
        return LETS_ENCRYPT_STAGING if self.staging else LETS_ENCRYPT

    def __repr__(self) -> str:
        prefix = "lets" if self.staging else "le"
        return f"<AcmeEndpoint {prefix}:{self.directory}:{self.inner_description}>"

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        def prepare() -> None:
            self.store.ensure()
            if self.sni.listing is None:
                self.sni.reload()

        try:
            prepare()
        except OSError as e:
            return defer.fail(
                OSError(e.errno, f"certificate directory {str(self.directory)!r}: {e.strerror}")
            )
        factory = _TLSFactory(self.sni, False, protocolFactory, clock=self.reactor)
        d: defer.Deferred[IListeningPort] = self.inner.listen(factory)

        def listening(port: IListeningPort) -> IListeningPort:
            self.port = port
            return port

        d.addCallback(listening)
        return d


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(":", "\\:")


def parse(reactor: Any, staging: bool, *args: str, **kwargs: str) -> AcmeEndpoint:
    """``le:/srv/www/certs:tcp:443:interface=::`` -> an AcmeEndpoint (called by the plugin)."""
    if len(args) < 2:
        prefix = "lets" if staging else "le"
        raise ValueError(
            f"expected {prefix}:<certificate directory>:<endpoint>, e.g. "
            f"{prefix}:/srv/www/certs:tcp:443"
        )
    certdir, *rest = args
    inner_description = ":".join(
        [_escape(a) for a in rest] + [f"{_escape(k)}={_escape(v)}" for k, v in kwargs.items()]
    )
    inner = serverFromString(reactor, inner_description)
    return AcmeEndpoint(
        reactor, Path(certdir).expanduser().absolute(), staging, inner, inner_description
    )
