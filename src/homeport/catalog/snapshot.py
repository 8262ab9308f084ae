"""Snapshots of the catalog: one archive with every node, service, check, KV entry and
session, and the restore that puts one back.

Consul's snapshot (``GET /v1/snapshot``) is a gzip-compressed tar of ``meta.json`` (Raft's
snapshot metadata), ``state.bin`` (its state machine, msgpack) and ``SHA256SUMS``.
homeport has no Raft, so its archive keeps Consul's shape with its own state:

``meta.json``
    ``{"Format": "homeport-snapshot", "Version": 2, "ID": "<index>-<unix ms>",
    "Index": <catalog index>, "Datacenter": "dc1", "Node": "<agent>",
    "Created": "<RFC 3339 UTC>", "Size": <bytes of state.json>}``
``state.json``
    ``{"Nodes": [...], "Services": [...], "Checks": [...], "KV": [...], "Sessions":
    [...], "Queries": [...]}``: each entity (and prepared query) as the catalog's SQLite
    store keeps it (its fields in snake_case, with its own ``create_index`` and
    ``modify_index``; a KV value in hex).  Version 1 archives (before prepared queries
    were in them) have no ``Queries`` and are still read: a restore of one leaves no
    query, as Consul's restore of a state without any.
``SHA256SUMS``
    ``<sha256 hex>  meta.json`` and ``<sha256 hex>  state.json``, as ``sha256sum`` writes.

Services and checks from ``--config-dir`` and the agent's built-in ones are not in it
(the files and the agent make them); a restore keeps this agent's own, and its node.
Network coordinates are not in it either: homeport keeps them in memory only (a restart
forgets them too), where Consul's snapshot carries its state store's.

Reading checks everything before anything changes: the gzip stream, the tar's members
(exactly these three, as Consul checks its own), the sums, the format, and each entity
(its fields and their types, and that what it names exists).  Consul's own archive
(a ``state.bin``) is refused by name.  Pure: no Twisted, and no I/O but reading the
archive it is handed (a file is read in chunks and inflated as it is read).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
import time
import types
import typing
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any, Literal

from ..errors import error
from . import model, queries
from .errors import BadRequest, CatalogError, ServerRefusal
from .model import (
    Catalog,
    Check,
    KVEntry,
    Node,
    PreparedQuery,
    Service,
    Session,
    Stored,
    StoredKind,
)

FORMAT = "homeport-snapshot"
VERSION = 2
#: The versions this homeport reads (1: without prepared queries).
READS = (1, 2)
META, STATE, SUMS = "meta.json", "state.json", "SHA256SUMS"
#: The most an archive may hold once decompressed (a guard against gzip bombs).
MAX_SIZE = 256 * 1024 * 1024
#: How much of an archive is read (and inflated) at a time.
CHUNK = 1024 * 1024
#: state.json's sections, in order, and the kind of entity each holds.
SECTIONS: tuple[tuple[str, StoredKind], ...] = (
    ("Nodes", "node"),
    ("Services", "service"),
    ("Checks", "check"),
    ("KV", "kv"),
    ("Sessions", "session"),
    ("Queries", "query"),
)


@error
class InvalidSnapshot(CatalogError):
    """An archive that is not a whole, untouched homeport snapshot."""

    reason: str

    def __str__(self) -> str:
        return f"Invalid snapshot: {self.reason}"


@error
class ConsulSnapshot(CatalogError):
    """Consul's own archive: Raft state homeport cannot read."""

    def __str__(self) -> str:
        return (
            "Invalid snapshot: this is a Consul snapshot (Raft state in state.bin), which "
            "homeport cannot restore; restore an archive taken with homeport's "
            f"GET /v1/snapshot ({META} Format {FORMAT!r})"
        )


@dataclass(frozen=True)
class Snapshot:
    """A read archive: its metadata and its entities."""

    meta: Mapping[str, Any]
    entities: tuple[Stored, ...]

    @property
    def index(self) -> int:
        return int(self.meta["Index"])


# ---------------------------------------------------------------------------
# Taking one


def saved(catalog: Catalog) -> Iterable[tuple[StoredKind, Stored]]:
    """What a snapshot holds: everything but the services and checks that files and
    the agent itself make."""
    yield from (("node", n) for n in catalog.nodes.values())
    yield from (("service", s) for s in catalog.services.values() if s.source == "api")
    yield from (("check", c) for c in catalog.checks.values() if c.source == "api")
    yield from (("kv", e) for e in catalog.kv.values())
    yield from (("session", s) for s in catalog.sessions.values())
    yield from (("query", q) for q in catalog.queries.values())


def take(catalog: Catalog, node: str, now: float) -> bytes:
    """The catalog as it is now, as an archive (*now* is Unix time)."""
    state: dict[str, list[dict[str, Any]]] = {section: [] for section, _ in SECTIONS}
    sections = {kind: section for section, kind in SECTIONS}
    for kind, entity in saved(catalog):
        state[sections[kind]].append(model.entity_to_dict(entity))
    state_bytes = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    meta = {
        "Format": FORMAT,
        "Version": VERSION,
        "ID": f"{catalog.index}-{int(now * 1000)}",
        "Index": catalog.index,
        "Datacenter": catalog.datacenter,
        "Node": node,
        "Created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "Size": len(state_bytes),
    }
    meta_bytes = json.dumps(meta, indent=2).encode() + b"\n"
    sums = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n"
        for name, data in ((META, meta_bytes), (STATE, state_bytes))
    ).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((META, meta_bytes), (STATE, state_bytes), (SUMS, sums)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(now)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(archive.getvalue(), mtime=int(now))


# ---------------------------------------------------------------------------
# Reading one


def read(archive: bytes | IO[bytes]) -> Snapshot:
    """The snapshot in *archive* (its bytes, or a file read from where it is, in
    chunks); raises :class:`InvalidSnapshot` (or :class:`ConsulSnapshot`) for anything
    else, having changed nothing."""
    source = io.BytesIO(archive) if isinstance(archive, bytes) else archive
    inflated = _Inflated(source)
    files = _members(io.BufferedReader(inflated, CHUNK))
    inflated.drain()  # the gzip stream whole, its CRC checked, even past the tar's end
    _verify(files)
    meta = _meta(files[META])
    return Snapshot(meta=meta, entities=tuple(_entities(files[STATE], meta["Version"])))


class _Inflated(io.RawIOBase):
    """The gzip stream in *source*, decompressed as it is read, never more than
    :data:`MAX_SIZE` bytes of it (a guard against gzip bombs)."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.inflater = zlib.decompressobj(wbits=31)
        self.pending = b""
        self.total = 0
        self.started = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending and not self.inflater.eof:
            self._inflate()
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def _inflate(self) -> None:
        chunk = self.inflater.unconsumed_tail or self.source.read(CHUNK)
        if not self.started:
            if chunk[:2] != b"\x1f\x8b":
                raise InvalidSnapshot("failed to decompress snapshot: not a gzip stream")
            self.started = True
        if not chunk:
            raise InvalidSnapshot("failed to decompress snapshot: the gzip stream is cut short")
        try:
            self.pending = self.inflater.decompress(chunk, CHUNK)
        except zlib.error as e:
            raise InvalidSnapshot(f"failed to decompress snapshot: {e}") from None
        self.total += len(self.pending)
        if self.total > MAX_SIZE:
            raise InvalidSnapshot(f"more than {MAX_SIZE} bytes once decompressed")

    def drain(self) -> None:
        while not self.inflater.eof:
            self.pending = b""
            self._inflate()


def _members(data: IO[bytes]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=data, mode="r|") as tar:
            for info in tar:
                if info.name == "state.bin":
                    raise ConsulSnapshot()
                if info.name not in (META, STATE, SUMS) or not info.isfile():
                    raise InvalidSnapshot(f"unexpected file {info.name!r} in snapshot")
                if info.name in files:
                    raise InvalidSnapshot(f"{info.name} twice in snapshot")
                member = tar.extractfile(info)
                assert member is not None  # a regular file
                files[info.name] = member.read()
    except tarfile.TarError as e:
        raise InvalidSnapshot(f"failed reading snapshot: {e}") from None
    return files


def _verify(files: Mapping[str, bytes]) -> None:
    """Consul's ``DecodeAndVerify``: every file summed, every sum right."""
    for name in (META, STATE, SUMS):
        if name not in files:
            raise InvalidSnapshot(f"file missing for {name!r}")
    sums: dict[str, str] = {}
    for line in files[SUMS].decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    for name in (META, STATE):
        if name not in sums:
            raise InvalidSnapshot(f"list missing hash for {name!r}")
        if hashlib.sha256(files[name]).hexdigest() != sums[name].lower():
            raise InvalidSnapshot(
                f"failed checking integrity of snapshot: hash check failed for {name!r}"
            )


def _meta(data: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidSnapshot(f"failed to decode snapshot metadata: {e}") from None
    if not isinstance(meta, dict):
        raise InvalidSnapshot("failed to decode snapshot metadata: not an object")
    if meta.get("Format") != FORMAT:
        if "Term" in meta:  # Raft's SnapshotMeta, without its state.bin
            raise ConsulSnapshot()
        raise InvalidSnapshot(f"{META} does not say Format {FORMAT!r}")
    if meta.get("Version") not in READS or isinstance(meta.get("Version"), bool):
        raise InvalidSnapshot(
            f"format version {meta.get('Version')!r}; this homeport reads "
            f"{' and '.join(map(str, READS))}"
        )
    if (
        not isinstance(meta.get("Index"), int)
        or isinstance(meta["Index"], bool)
        or meta["Index"] < 0
    ):
        raise InvalidSnapshot(f"{META} has no Index")
    return meta


def _entities(data: bytes, version: int) -> Iterable[Stored]:
    try:
        state = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidSnapshot(f"failed to decode {STATE}: {e}") from None
    sections = SECTIONS if version >= 2 else SECTIONS[:-1]
    if not isinstance(state, dict) or set(state) != {s for s, _ in sections}:
        raise InvalidSnapshot(f"{STATE} must hold exactly {', '.join(s for s, _ in sections)}")
    for section, kind in sections:
        items = state[section]
        if not isinstance(items, list):
            raise InvalidSnapshot(f"{STATE}: {section} is not a list")
        for n, item in enumerate(items):
            yield _entity(kind, item, f"{section}[{n}]")


def _entity(kind: StoredKind, data: Any, where: str) -> Stored:
    try:
        if not isinstance(data, dict):
            raise TypeError("not an object")
        entity = model.stored_from_dict(kind, dict(data))
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise InvalidSnapshot(f"{STATE}: {where}: {e}") from None
    wrong = _wrong_field(entity)
    if wrong:
        raise InvalidSnapshot(f"{STATE}: {where}: {wrong} has the wrong type")
    if isinstance(entity, Service | Check) and entity.source != "api":
        raise InvalidSnapshot(f"{STATE}: {where}: source {entity.source!r} is not stored")
    if isinstance(entity, PreparedQuery):
        try:
            queries.check_stored(entity)
        except (BadRequest, ServerRefusal) as e:
            raise InvalidSnapshot(f"{STATE}: {where}: {e}") from None
    return entity


def _wrong_field(value: Any) -> str:
    """The first field of dataclass *value* whose value is not of its declared type."""
    hints = typing.get_type_hints(type(value), vars(model))
    for f in dataclasses.fields(value):
        if not _conforms(getattr(value, f.name), hints[f.name]):
            return f.name
    return ""


def _conforms(value: Any, hint: Any) -> bool:  # noqa: PLR0911 - one answer per kind of type
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return value in args
    if origin in (types.UnionType, typing.Union):
        return any(_conforms(value, a) for a in args)
    if origin is Mapping or origin is dict:
        return isinstance(value, Mapping) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items()
        )
    if origin is tuple:
        return isinstance(value, tuple) and all(_conforms(v, args[0]) for v in value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return isinstance(value, hint) and not _wrong_field(value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


# ---------------------------------------------------------------------------
# Restoring one


def _key(entity: Stored) -> tuple[str, ...]:
    if isinstance(entity, PreparedQuery):
        return ("query", entity.id)
    if isinstance(entity, Node):
        return ("node", entity.name)
    if isinstance(entity, Service):
        return ("service", entity.node, entity.id)
    if isinstance(entity, Check):
        return ("check", entity.node, entity.check_id)
    if isinstance(entity, Session):
        return ("session", entity.id)
    assert isinstance(entity, KVEntry)  # ACL records are not in a snapshot
    return ("kv", entity.key)


def restored(catalog: Catalog, snapshot: Snapshot, node: str) -> list[Stored]:
    """What the catalog holds once *snapshot* is restored: its entities and prepared
    queries (nodes in this datacenter), this agent's node as it is, and the services and
    checks that files and the agent make.  Raises :class:`InvalidSnapshot` if something
    names what is not there (a service's node, a check's service, a session's node, a
    lock's or a query's session), or two queries share a name."""
    kept: list[Stored] = [n for n in catalog.nodes.values() if n.name == node]
    kept += [s for s in catalog.services.values() if s.source != "api"]
    kept += [c for c in catalog.checks.values() if c.source != "api"]
    taken = {_key(e) for e in kept}
    final = [
        dataclasses.replace(e, datacenter=catalog.datacenter) if isinstance(e, Node) else e
        for e in snapshot.entities
        if _key(e) not in taken
    ]
    final += kept
    _check_references(final)
    return final


def _check_references(entities: list[Stored]) -> None:
    keys = {_key(e) for e in entities}
    _check_query_names(e for e in entities if isinstance(e, PreparedQuery))
    for entity in entities:
        missing: tuple[str, ...] | None = None
        if isinstance(entity, Service | Check | Session) and ("node", entity.node) not in keys:
            missing = ("node", entity.node)
        elif isinstance(entity, Check) and entity.service_id:
            if ("service", entity.node, entity.service_id) not in keys:
                missing = ("service", entity.node, entity.service_id)
        elif isinstance(entity, KVEntry | PreparedQuery) and entity.session:
            if ("session", entity.session) not in keys:
                missing = ("session", entity.session)
        if missing is not None:
            what = " ".join(_key(entity))
            raise InvalidSnapshot(
                f"{what} names {missing[0]} {' '.join(missing[1:])!r}, which is not in it"
            )


def _check_query_names(found: Iterable[PreparedQuery]) -> None:
    """As Consul's state store: no two queries share a name (whatever its case)."""
    names: set[str] = set()
    for query in found:
        if query.name and query.name.lower() in names:
            raise InvalidSnapshot(f"two prepared queries are named {query.name!r}")
        names.add(query.name.lower())


def restore(catalog: Catalog, archive: bytes | IO[bytes], node: str) -> Snapshot:
    """Replace the catalog's contents with the snapshot in *archive*, in one change;
    nothing changes when the archive is refused."""
    snapshot = read(archive)
    catalog.restore(restored(catalog, snapshot, node), index=snapshot.index)
    return snapshot
