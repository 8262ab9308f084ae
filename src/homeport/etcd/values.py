"""What etcd's v3 API says and is asked, as frozen values; its errors as typed exceptions.

Pure: no Twisted, no I/O.  Keys and values are ``bytes`` (etcd's are byte strings);
revisions, versions and lease ids are ``int``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import error

CompareTarget = Literal["VERSION", "CREATE", "MOD", "VALUE", "LEASE"]
CompareResult = Literal["EQUAL", "GREATER", "LESS", "NOT_EQUAL"]


def prefix_end(prefix: bytes) -> bytes:
    """etcd's ``range_end`` for "every key that starts with *prefix*": the prefix with its
    last byte below 0xff incremented (and what follows it dropped); ``b"\\0"`` (every key)
    for an empty prefix or one of only 0xff bytes."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd stores it (a deleted key in an event has only key and mod_revision)."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class Event:
    """One change a watch saw: a PUT (with the previous value, if any) or a DELETE."""

    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    prev_kv: KeyValue | None


@dataclass(frozen=True)
class Compare:
    """One condition of a transaction: *target* of *key* compared with *value* (an int for
    VERSION, CREATE, MOD and LEASE; bytes for VALUE).  A key that does not exist has
    version, create and mod revision 0."""

    key: bytes
    target: CompareTarget
    result: CompareResult
    value: int | bytes
    range_end: bytes = b""


@dataclass(frozen=True)
class Put:
    """A transaction's put of *value* at *key* (attached to *lease* unless 0)."""

    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False


@dataclass(frozen=True)
class Delete:
    """A transaction's delete of *key* (or of [key, range_end))."""

    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass(frozen=True)
class Range:
    """A transaction's read of *key* (or of [key, range_end))."""

    key: bytes
    range_end: bytes = b""
    limit: int = 0


Op = Put | Delete | Range


@dataclass(frozen=True)
class RangeResult:
    """What a range read found: the keys (at most the limit), the store's revision, whether
    more keys matched than were returned, and how many matched in all."""

    kvs: tuple[KeyValue, ...]
    revision: int
    more: bool
    count: int


@dataclass(frozen=True)
class PutResult:
    """A put inside a transaction: the revision and the key's previous value if asked."""

    revision: int
    prev_kv: KeyValue | None


@dataclass(frozen=True)
class DeleteResult:
    """A delete inside a transaction: how many keys went, and what they held if asked."""

    deleted: int
    revision: int
    prev_kvs: tuple[KeyValue, ...]


TxnResponse = RangeResult | PutResult | DeleteResult


@dataclass(frozen=True)
class TxnResult:
    """A transaction's outcome: whether every compare held (so *success* ran, else
    *failure*), the revision after it, and one response for each operation that ran."""

    succeeded: bool
    revision: int
    responses: tuple[TxnResponse, ...]


@dataclass(frozen=True)
class Member:
    """One member of the etcd cluster."""

    name: str
    id: int
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]


@dataclass(frozen=True)
class Status:
    """What the member that answered says about itself and the cluster."""

    member_id: int
    leader: int
    revision: int
    raft_term: int
    version: str


@error
class EtcdError(Exception):
    """etcd answered with an error: its gRPC *code* and *message*
    (e.g. 5 "etcdserver: requested lease not found", 11 "... is a future revision")."""

    code: int
    message: str

    def __str__(self) -> str:
        return f"etcd error {self.code}: {self.message}"


#: gRPC codes after which another member may well answer (Unavailable, DeadlineExceeded);
#: etcd says "no leader" and "request timed out" with these.
RETRYABLE_CODES = frozenset({14, 4})

#: gRPC code etcd uses for "required revision has been compacted".
OUT_OF_RANGE = 11


@error
class EtcdCompacted(EtcdError):
    """A read asked for a revision etcd has compacted away (*compact_revision* if known)."""

    compact_revision: int = 0


@error
class EtcdUnavailable(Exception):
    """No etcd member answered in time; *reasons* says what each attempt met.
    *maybe_applied* is true when a request reached a member and no answer came: a write
    may have taken effect (or take effect later, when that member's log is committed).
    When false, every member refused before acting (connection refused, "no leader")."""

    reasons: tuple[str, ...]
    maybe_applied: bool = False

    def __str__(self) -> str:
        return "etcd unavailable: " + "; ".join(self.reasons)
