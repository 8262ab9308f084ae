"""The certificate directory: ``<hostname>.pem`` files holding a private key and a chain.

An empty ``<hostname>.pem`` asks for a certificate for that name.  A file that cannot be read
as a key plus a certificate chain is reported (as a :class:`CorruptFile` in the listing) and
the rest are still served.  Writes are atomic (a temporary file renamed over the old one)
with private-key permissions (0600).  The ACME account key lives in the same directory as
``acme-account.key`` and is created once.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from zope.interface import Interface, implementer

from ..errors import error

ACCOUNT_KEY_FILE = "acme-account.key"
SUFFIX = ".pem"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_PEM_KEY = re.compile(
    rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.+?-----END \1-----", re.S
)


@error
class CorruptFile(Exception):
    """A file in the certificate directory that cannot be served."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Certificate:
    """One host's private key and certificate chain (leaf first), as read from its file."""

    name: str
    key: CertificateIssuerPrivateKeyTypes
    chain: tuple[x509.Certificate, ...]
    pem: bytes = field(repr=False)

    @property
    def not_after(self) -> datetime.datetime:
        return self.chain[0].not_valid_after_utc

    @property
    def expires(self) -> float:
        """Expiry as POSIX seconds, comparable with ``IReactorTime.seconds()``."""
        return self.not_after.timestamp()


@dataclass(frozen=True)
class Listing:
    """What the directory holds: servable certificates, names asking for one, bad files."""

    certificates: dict[str, Certificate]
    wanted: tuple[str, ...]
    errors: tuple[CorruptFile, ...]


def host_name(file_name: str) -> str | None:
    """``Hub.Example.com.pem`` -> ``hub.example.com``; None when it names no host."""
    if not file_name.endswith(SUFFIX) or file_name.startswith("."):
        return None
    name = file_name[: -len(SUFFIX)].lower()
    return name if _HOSTNAME.match(name) else None


def parse_pem(name: str, data: bytes) -> Certificate:
    """A private key and its certificate chain from one PEM file; ValueError when unusable."""
    keys = _PEM_KEY.findall(data)
    if len(keys) != 1:
        raise ValueError(f"expected one private key, found {len(keys)}")
    match = _PEM_KEY.search(data)
    assert match is not None
    try:
        key = serialization.load_pem_private_key(match.group(0), password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"unreadable private key ({e})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    try:
        chain = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as e:
        raise ValueError(f"unreadable certificate ({e})") from None
    if not chain:
        raise ValueError("no certificate")
    public = chain[0].public_key()
    if public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise ValueError("the private key does not match the certificate")
    return Certificate(name=name, key=key, chain=chain, pem=data)


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_certificate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh key for a certificate: ECDSA P-256 (small, fast, accepted everywhere)."""
    return ec.generate_private_key(ec.SECP256R1())


def write_private(path: Path, data: bytes, exclusive: bool = False) -> bool:
    """Write *data* to *path* atomically with mode 0600.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    file is renamed over *path*, so a reader sees the old or the new content, never a
    mix.  With *exclusive*, an existing *path* is left alone and False returned.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)  # fails if path exists: created once, even if racing
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ICertificateStore(Interface):
    """Where certificates live; the issuing service and the endpoint share one."""

    def load() -> Listing:
        """Read every certificate file; bad ones become errors, never exceptions."""

    def save(name: str, pem: bytes) -> None:  # noqa: N805
        """Store *name*'s key and chain (PEM), replacing what was there, atomically."""

    def account_key() -> bytes:
        """The ACME account's private key (PEM), created on first use and kept."""


@implementer(ICertificateStore)
class DirectoryStore:
    """A directory of ``<hostname>.pem`` files (sayhello's and txacme's layout)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._paths: dict[str, Path] = {}

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.path)!r})"

    def ensure(self) -> None:
        """Create the directory (mode 0700) if it does not exist yet."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def load(self) -> Listing:
        certificates: dict[str, Certificate] = {}
        wanted: list[str] = []
        errors: list[CorruptFile] = []
        paths: dict[str, Path] = {}
        try:
            entries = sorted(os.scandir(self.path), key=lambda e: e.name)
        except OSError as e:
            return Listing({}, (), (CorruptFile(self.path, e.strerror or str(e)),))
        for entry in entries:
            if not entry.name.endswith(SUFFIX) or entry.name.startswith("."):
                continue
            path = Path(entry.path)
            name = host_name(entry.name)
            if name is None:
                errors.append(CorruptFile(path, "the file name is not <hostname>.pem"))
                continue
            if name in paths:
                errors.append(CorruptFile(path, f"a second file for {name}"))
                continue
            paths[name] = path
            try:
                data = path.read_bytes()
            except OSError as e:
                errors.append(CorruptFile(path, e.strerror or str(e)))
                continue
            if not data.strip():
                wanted.append(name)
                continue
            try:
                certificates[name] = parse_pem(name, data)
            except ValueError as e:
                errors.append(CorruptFile(path, str(e)))
        self._paths = paths
        return Listing(certificates, tuple(wanted), tuple(errors))

    def save(self, name: str, pem: bytes) -> None:
        self.ensure()
        write_private(self._paths.get(name, self.path / f"{name}{SUFFIX}"), pem)

    def account_key(self) -> bytes:
        path = self.path / ACCOUNT_KEY_FILE
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        self.ensure()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private(path, key_pem(key), exclusive=True)
        return path.read_bytes()
