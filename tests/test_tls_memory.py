"""TLS in memory: the certificate directory, renewal and retries on a Clock, SNI and ALPN.

The certificate authority here is real (a CA made with ``cryptography`` that signs the
service's CSRs), only local: the ACME protocol itself is tested against pebble in
``test_tls_daemon.py``.  Handshakes run through pyOpenSSL memory BIOs, so they exercise the
same SNI and ALPN callbacks as the listener does.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.web.resource import Resource
from zope.interface import implementer
from zope.interface.verify import verifyObject

from homeport.tls.challenges import (
    ACME_TLS_1,
    ID_PE_ACME_IDENTIFIER,
    Challenges,
    RedirectToHTTPS,
    WellKnown,
    tls_alpn_certificate,
)
from homeport.tls.endpoint import SNIMap
from homeport.tls.issuer import (
    DAY,
    AcmeIssuingService,
    ICertificateAuthority,
    Issued,
    IssuingFailed,
    RateLimited,
    parse_retry_after,
)
from homeport.tls.store import ACCOUNT_KEY_FILE, DirectoryStore, ICertificateStore, key_pem


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


class LocalCA:
    """A certificate authority made on the spot: a root that signs leaf certificates."""

    def __init__(self, name: str = "homeport test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return _pem(self.certificate)

    def sign(
        self,
        public_key: Any,
        names: Sequence[str],
        not_before: datetime.datetime,
        not_after: datetime.datetime,
        ips: Sequence[str] = (),
    ) -> x509.Certificate:
        import ipaddress

        alternative: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        alternative += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )

    def pem_file(
        self,
        names: Sequence[str],
        days: float = 90,
        now: float | None = None,
        ips: Sequence[str] = (),
    ) -> bytes:
        """A ``<hostname>.pem`` body: a new key, then the leaf and this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        start = datetime.datetime.fromtimestamp(
            now if now is not None else time.time(), datetime.UTC
        )
        leaf = self.sign(
            key.public_key(),
            names,
            start - datetime.timedelta(hours=1),
            start + datetime.timedelta(days=days),
            ips,
        )
        return key_pem(key) + _pem(leaf) + self.pem


@implementer(ICertificateAuthority)
class LocalAuthority:
    """Signs the service's CSRs with a LocalCA, 90 days from the clock's now.

    ``down`` makes it fail like an unreachable server; ``rate_limit`` like a rate-limit
    answer with that Retry-After.
    """

    server = "https://ca.test/directory"

    def __init__(self, ca: LocalCA, clock: Clock, days: float = 90) -> None:
        self.ca = ca
        self.clock = clock
        self.days = days
        self.down = False
        self.rate_limit: float | None = None
        self.requests: list[tuple[str, float, tuple[str, ...]]] = []

    def issue(
        self, name: str, csr_pem: bytes, challenges: Challenges, preference: Sequence[str]
    ) -> Issued:
        self.requests.append((name, self.clock.seconds(), tuple(preference)))
        if self.down:
            raise IssuingFailed("cannot reach the ACME server (connection refused)")
        if self.rate_limit is not None:
            raise RateLimited("too many certificates already issued", self.rate_limit)
        csr = x509.load_pem_x509_csr(csr_pem)
        names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        leaf = self.ca.sign(
            csr.public_key(),
            names.value.get_values_for_type(x509.DNSName),
            now,
            now + datetime.timedelta(days=self.days),
        )
        return Issued(_pem(leaf) + self.ca.pem, (preference[0],))

    def cancel(self) -> None:
        pass


def synchronously(f: Any, *args: Any) -> defer.Deferred[Any]:
    """Run the 'blocking' part at once: the Clock decides all timing."""
    return defer.maybeDeferred(f, *args)


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(time.time())
    return clock


@pytest.fixture
def logs() -> Iterator[Sequence[LogEvent]]:
    with capturedLogs() as events:
        yield events


def lines(events: Sequence[LogEvent], text: str) -> list[str]:
    return [m for m in (formatEvent(e) for e in events) if text in m]


def handshake(
    sni: SNIMap, server_name: bytes | None, alpn: list[bytes] | None = None
) -> tuple[x509.Certificate, bytes | None]:
    """A TLS handshake in memory against the listener's connection creator."""
    server = sni.serverConnectionForTLS(None)
    server.set_accept_state()
    context = SSL.Context(SSL.TLS_METHOD)
    if alpn:
        context.set_alpn_protos(alpn)
    client = SSL.Connection(context, None)
    client.set_connect_state()
    if server_name:
        client.set_tlsext_host_name(server_name)
    for _ in range(20):
        for a, b in ((client, server), (server, client)):
            try:
                a.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                b.bio_write(a.bio_read(1 << 16))
            except SSL.WantReadError:
                pass
    peer = client.get_peer_certificate(as_cryptography=True)
    assert peer is not None
    return peer, client.get_alpn_proto_negotiated() or None


def names_of(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(san.value.get_values_for_type(x509.DNSName))


# -- the directory ------------------------------------------------------------------


def test_the_directory_store_provides_the_certificate_store_interface(tmp_path: Path) -> None:
    assert verifyObject(ICertificateStore, DirectoryStore(tmp_path))


def test_an_empty_file_asks_for_a_certificate_and_a_corrupt_one_is_reported_alone(
    tmp_path: Path,
) -> None:
    """Empty files are wanted; a bad file is an error naming it; good ones still load."""
    ca = LocalCA()
    (tmp_path / "good.test.pem").write_bytes(ca.pem_file(["good.test"]))
    (tmp_path / "wanted.test.pem").write_bytes(b"")
    (tmp_path / "corrupt.test.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n")
    (tmp_path / "notes.txt").write_text("not a certificate file, ignored")
    listing = DirectoryStore(tmp_path).load()
    assert sorted(listing.certificates) == ["good.test"]
    assert listing.wanted == ("wanted.test",)
    assert [e.path.name for e in listing.errors] == ["corrupt.test.pem"]
    assert "private key" in listing.errors[0].reason


def test_a_key_that_does_not_match_its_certificate_is_reported(tmp_path: Path) -> None:
    ca = LocalCA()
    one, other = ca.pem_file(["a.test"]), ca.pem_file(["a.test"])
    key_of_one = one.split(b"-----BEGIN CERTIFICATE-----")[0]
    chain_of_other = (
        b"-----BEGIN CERTIFICATE-----" + other.split(b"-----BEGIN CERTIFICATE-----", 1)[1]
    )
    (tmp_path / "a.test.pem").write_bytes(key_of_one + chain_of_other)
    listing = DirectoryStore(tmp_path).load()
    assert listing.certificates == {}
    assert "does not match" in listing.errors[0].reason


def test_saved_certificates_are_private_and_replace_the_file_atomically(tmp_path: Path) -> None:
    """A save leaves mode 0600, the new content, and no temporary file behind."""
    ca = LocalCA()
    store = DirectoryStore(tmp_path / "certs")
    store.save("a.test", b"old")
    new = ca.pem_file(["a.test"])
    store.save("a.test", new)
    path = tmp_path / "certs" / "a.test.pem"
    assert path.read_bytes() == new
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "certs").stat().st_mode) == 0o700
    assert sorted(os.listdir(tmp_path / "certs")) == ["a.test.pem"]


def test_the_account_key_is_created_once_and_kept(tmp_path: Path) -> None:
    first = DirectoryStore(tmp_path).account_key()
    again = DirectoryStore(tmp_path).account_key()
    assert first == again
    assert b"PRIVATE KEY" in first
    assert stat.S_IMODE((tmp_path / ACCOUNT_KEY_FILE).stat().st_mode) == 0o600


# -- SNI and ALPN -----------------------------------------------------------------------


def test_sni_picks_the_certificate_by_name_and_the_default_serves_no_sni(tmp_path: Path) -> None:
    ca = LocalCA()
    (tmp_path / "b.test.pem").write_bytes(ca.pem_file(["b.test"]))
    (tmp_path / "a.test.pem").write_bytes(ca.pem_file(["a.test"]))
    sni = SNIMap(DirectoryStore(tmp_path))
    assert names_of(handshake(sni, b"a.test")[0]) == ["a.test"]
    assert names_of(handshake(sni, b"B.TEST")[0]) == ["b.test"]
    assert names_of(handshake(sni, None)[0]) == ["a.test"]  # default: first name
    assert names_of(handshake(sni, b"unknown.test")[0]) == ["a.test"]


def test_a_new_file_is_served_after_reload_without_a_new_listener(tmp_path: Path) -> None:
    ca = LocalCA()
    (tmp_path / "a.test.pem").write_bytes(ca.pem_file(["a.test"]))
    sni = SNIMap(DirectoryStore(tmp_path))
    before = handshake(sni, b"a.test")[0]
    (tmp_path / "a.test.pem").write_bytes(ca.pem_file(["a.test"]))
    (tmp_path / "c.test.pem").write_bytes(ca.pem_file(["c.test"]))
    sni.reload()
    assert handshake(sni, b"a.test")[0].serial_number != before.serial_number
    assert names_of(handshake(sni, b"c.test")[0]) == ["c.test"]


def test_an_empty_directory_still_completes_handshakes_with_a_stand_in(tmp_path: Path) -> None:
    peer, protocol = handshake(SNIMap(DirectoryStore(tmp_path)), b"a.test", [b"http/1.1"])
    assert "no certificate yet" in peer.subject.rfc4514_string()
    assert protocol == b"http/1.1"


def test_acme_tls_1_gets_the_validation_certificate_only_while_a_challenge_is_pending(
    tmp_path: Path,
) -> None:
    """RFC 8737: SAN = the name, critical acmeIdentifier = SHA-256(key authorization)."""
    ca = LocalCA()
    (tmp_path / "a.test.pem").write_bytes(ca.pem_file(["a.test"]))
    sni = SNIMap(DirectoryStore(tmp_path), Challenges())
    sni.challenges.tlsalpn01["a.test"] = tls_alpn_certificate("a.test", "token.thumbprint")
    peer, protocol = handshake(sni, b"a.test", [ACME_TLS_1])
    assert protocol == ACME_TLS_1
    extension = peer.extensions.get_extension_for_oid(ID_PE_ACME_IDENTIFIER)
    assert extension.critical
    value = extension.value
    assert isinstance(value, x509.UnrecognizedExtension)
    assert value.value == b"\x04\x20" + hashlib.sha256(b"token.thumbprint").digest()
    assert names_of(peer) == ["a.test"]
    # Browsers on the same name keep getting the real certificate meanwhile.
    peer, protocol = handshake(sni, b"a.test", [b"h2", b"http/1.1"])
    assert peer.issuer == ca.certificate.subject and protocol == b"http/1.1"
    # No pending challenge: acme-tls/1 is not selected at all.
    del sni.challenges.tlsalpn01["a.test"]
    peer, protocol = handshake(sni, b"a.test", [ACME_TLS_1])
    assert protocol is None and peer.issuer == ca.certificate.subject


# -- http-01 and the redirect ------------------------------------------------------------


def test_http_01_answers_are_served_and_unknown_tokens_are_404() -> None:
    challenges = Challenges()
    root = Resource()
    root.putChild(b".well-known", WellKnown(challenges))
    challenges.http01["tok"] = b"tok.thumb"
    client: Any = StubTreq(root)  # its request methods are set on the instance
    response = client.get("http://a.test/.well-known/acme-challenge/tok")
    assert _result(response).code == 200
    assert _result(client.content(_result(response))) == b"tok.thumb"
    response = _result(client.get("http://a.test/.well-known/acme-challenge/other"))
    assert response.code == 404


def test_plain_http_is_redirected_to_the_https_port_except_acme_answers() -> None:
    challenges = Challenges()
    challenges.http01["tok"] = b"tok.thumb"
    port: list[int | None] = [8443]
    client: Any = StubTreq(RedirectToHTTPS(challenges, lambda: port[0]))  # as above
    response = _result(client.get("http://a.test:8080/v1/kv/x?raw", allow_redirects=False))
    assert response.code == 301
    assert response.headers.getRawHeaders("location") == ["https://a.test:8443/v1/kv/x?raw"]
    response = _result(client.put("http://a.test/v1/kv/x", b"1", allow_redirects=False))
    assert response.code == 308  # keeps the method and body
    port[0] = 443
    response = _result(client.get("http://a.test/", allow_redirects=False))
    assert response.headers.getRawHeaders("location") == ["https://a.test/"]
    response = _result(client.get("http://a.test/.well-known/acme-challenge/tok"))
    assert response.code == 200


def _result(d: Any) -> Any:
    results: list[Any] = []

    def keep(result: Any) -> Any:
        results.append(result)
        return result

    d.addBoth(keep)
    assert results, "did not fire"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


# -- the issuing service on a Clock ---------------------------------------------------------


def make_service(
    tmp_path: Path, clock: Clock, authority: LocalAuthority
) -> tuple[AcmeIssuingService, SNIMap]:
    store = DirectoryStore(tmp_path)
    sni = SNIMap(store)
    service = AcmeIssuingService(store, sni, authority, clock, run_blocking=synchronously)
    return service, sni


def test_an_empty_file_gets_a_certificate_at_start(tmp_path: Path, clock: Clock) -> None:
    ca = LocalCA()
    (tmp_path / "a.test.pem").write_bytes(b"")
    authority = LocalAuthority(ca, clock)
    service, sni = make_service(tmp_path, clock, authority)
    service.startService()
    try:
        peer = handshake(sni, b"a.test")[0]
        assert names_of(peer) == ["a.test"] and peer.issuer == ca.certificate.subject
        assert stat.S_IMODE((tmp_path / "a.test.pem").stat().st_mode) == 0o600
    finally:
        service.stopService()
    assert clock.getDelayedCalls() == []


def test_a_certificate_is_renewed_when_30_days_are_left_by_the_daily_check(
    tmp_path: Path, clock: Clock, logs: Sequence[LogEvent]
) -> None:
    """Valid for 60 days: untouched for 29 days, renewed by the check on day 30, and one
    line says so."""
    ca = LocalCA()
    (tmp_path / "a.test.pem").write_bytes(ca.pem_file(["a.test"], days=60, now=clock.seconds()))
    authority = LocalAuthority(ca, clock)
    service, sni = make_service(tmp_path, clock, authority)
    service.startService()
    try:
        original = handshake(sni, b"a.test")[0]
        for _ in range(29):
            clock.advance(DAY)
        assert authority.requests == []
        clock.advance(DAY)
        assert [name for name, _, _ in authority.requests] == ["a.test"]
        renewed = handshake(sni, b"a.test")[0]
        assert renewed.serial_number != original.serial_number
        assert renewed.not_valid_after_utc > original.not_valid_after_utc
        until = renewed.not_valid_after_utc.isoformat()
        assert lines(logs, "Renewed the certificate for a.test") == [
            f"Renewed the certificate for a.test by {authority.server} (tls-alpn-01), "
            f"valid until {until}"
        ]
        assert not lines(logs, "Issued a certificate")
        for _ in range(40):  # the renewed one (90 days) is not due again yet
            clock.advance(DAY)
        assert len(authority.requests) == 1
    finally:
        service.stopService()
    assert clock.getDelayedCalls() == []


def test_failures_are_retried_with_backoff_and_one_log_line_each(
    tmp_path: Path, clock: Clock, logs: Sequence[LogEvent]
) -> None:
    """While the CA is down: 10s, 20s, 40s between tries; an existing certificate is kept."""
    ca = LocalCA()
    (tmp_path / "a.test.pem").write_bytes(ca.pem_file(["a.test"]))
    (tmp_path / "b.test.pem").write_bytes(b"")
    authority = LocalAuthority(ca, clock)
    authority.down = True
    service, sni = make_service(tmp_path, clock, authority)
    start = clock.seconds()
    service.startService()
    try:
        for _ in range(70):
            clock.advance(1)
        times = [round(t - start) for name, t, _ in authority.requests]
        assert times == [0, 10, 30, 70]
        failures = lines(logs, "Could not get a certificate for b.test")
        assert len(failures) == 4
        assert "cannot reach the ACME server (connection refused)" in failures[0]
        assert "next in 10s" in failures[0] and "next in 20s" in failures[1]
        assert not [e for e in logs if e.get("log_failure")]  # no tracebacks
        assert names_of(handshake(sni, b"a.test")[0]) == ["a.test"]
        # The challenge type leading each try alternates, in case one of them cannot work.
        assert [p[0] for _, _, p in authority.requests[:2]] == ["tls-alpn-01", "http-01"]
        authority.down = False
        clock.advance(80)
        assert names_of(handshake(sni, b"b.test")[0]) == ["b.test"]
        assert lines(logs, "Issued a certificate for b.test by ")
    finally:
        service.stopService()
    assert clock.getDelayedCalls() == []


def test_a_rate_limit_answer_is_respected(tmp_path: Path, clock: Clock) -> None:
    """Retry-After of an hour: no new try before the hour is over."""
    (tmp_path / "a.test.pem").write_bytes(b"")
    authority = LocalAuthority(LocalCA(), clock)
    authority.rate_limit = 3600
    service, sni = make_service(tmp_path, clock, authority)
    start = clock.seconds()
    service.startService()
    try:
        clock.advance(3599)
        assert len(authority.requests) == 1
        authority.rate_limit = None
        clock.advance(1)
        assert [round(t - start) for _, t, _ in authority.requests] == [0, 3600]
        assert names_of(handshake(sni, b"a.test")[0]) == ["a.test"]
    finally:
        service.stopService()


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert parse_retry_after("120", 0) == 120
    assert parse_retry_after("Thu, 01 Jan 1970 00:10:00 GMT", 0) == 600
    assert parse_retry_after("soon", 0) is None and parse_retry_after(None, 0) is None


def test_a_corrupt_file_is_logged_once_and_the_others_are_served(
    tmp_path: Path, clock: Clock, logs: Sequence[LogEvent]
) -> None:
    ca = LocalCA()
    (tmp_path / "a.test.pem").write_bytes(ca.pem_file(["a.test"]))
    (tmp_path / "bad.test.pem").write_bytes(b"garbage")
    authority = LocalAuthority(ca, clock)
    service, sni = make_service(tmp_path, clock, authority)
    service.startService()
    try:
        clock.advance(DAY)
        clock.advance(DAY)
        reports = lines(logs, "bad.test.pem is not served")
        assert len(reports) == 1
        assert names_of(handshake(sni, b"a.test")[0]) == ["a.test"]
        assert authority.requests == []  # a bad file is not an order for a new one
    finally:
        service.stopService()
