"""Answers to DNS queries from a catalog snapshot: pure, no I/O, no clock.

The hot path of a catalog is DNS, and a parse + build per query with dnslib costs
~150 µs.  So a reply is computed once per (name, type, size limit) from the current
:class:`Snapshot` and kept as bytes; a query is then answered by gluing its own ID and
question onto the stored bytes, and once every shuffled order of a name is built, the
transport answers straight from :attr:`Responder.udp` / :attr:`Responder.tcp`, keyed by
the query's bytes after the ID.  Round robin comes from rotating among precomputed
shuffled orders.  Any catalog change that matters to DNS clears it all
(:meth:`Responder.invalidate`), so the very next answer is computed afresh.

dnslib builds every record (and its name compression); the query itself is read by
:func:`parse_query`, a strict scan of the header, the one question and the additional
section, because dnslib's full parse costs more than the whole cached answer, accepts
compression pointers in the question and tells nothing about where the question's
bytes are, which the splice needs.

Behaviour follows Consul's ``agent/dns.go`` (see shared/CONSUL.md): names are parsed
right to left for ``service``/``node``/``addr`` with an optional datacenter label;
``*.in-addr.arpa`` / ``*.ip6.arpa`` names of known node (else service) addresses get PTRs;
NXDOMAIN and NOERROR-without-data carry the SOA; names outside the domain are REFUSED;
UDP replies are trimmed to 512 bytes or the EDNS size, and unlike Consul set TC.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnslib import (  # type: ignore[import-untyped]
    AAAA,
    CNAME,
    NS,
    PTR,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
)

from homeport.catalog.model import (
    CRITICAL,
    PASSING,
    Catalog,
    Change,
    Check,
    Node,
    Service,
    aggregate_status,
)

# Record types and classes (RFC 1035, 2782, 3596, 5936, 6891).
TYPE_A = 1
TYPE_NS = 2
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_OPT = 41
TYPE_IXFR = 251
TYPE_AXFR = 252
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

# Response codes.
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16  # extended: 1 in the OPT record, 0 in the header

# Header flag bits.
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010

CLASSIC_UDP_SIZE = 512
TCP_SIZE = 65535
OPT_SIZE = 11  # root name, type, class, ttl, rdlength: our OPT carries no options
#: Orders precomputed per name: every instance comes first once per rotation, up to this.
MAX_ORDERS = 64
_HEADER = struct.Struct("!6H")


# ---------------------------------------------------------------------------
# Configuration


@dataclass
class InvalidConfig(ValueError):
    """A DNS setting that cannot work, named so the daemon can say which."""

    option: str
    value: object
    reason: str

    def __str__(self) -> str:
        return f"invalid {self.option} {self.value!r}: {self.reason}"


@dataclass(frozen=True)
class Config:
    """What the DNS side is told at start-up (``--domain``, ``--dns-ttl``,
    ``--dns-soa-min-ttl``)."""

    domain: str = "consul"
    ttl: int = 0
    soa_min_ttl: int = 0
    #: The largest UDP reply we send, whatever size the client's EDNS offers.
    max_udp_size: int = 4096

    def __post_init__(self) -> None:
        labels = self.domain.lower().strip(".").split(".")
        if not all(labels) or any(len(label.encode()) > 63 for label in labels):
            raise InvalidConfig("--domain", self.domain, "not a DNS name")
        if not all(label.isascii() for label in labels):
            raise InvalidConfig("--domain", self.domain, "not an ASCII DNS name")
        for option, value in (("--dns-ttl", self.ttl), ("--dns-soa-min-ttl", self.soa_min_ttl)):
            if not 0 <= value <= 2**31 - 1:
                raise InvalidConfig(option, value, "must be between 0 and 2147483647")
        if not CLASSIC_UDP_SIZE <= self.max_udp_size <= 65507:
            raise InvalidConfig("max UDP size", self.max_udp_size, "must be 512..65507")
        object.__setattr__(self, "domain", ".".join(labels))

    @property
    def wire_labels(self) -> tuple[bytes, ...]:
        return tuple(label.encode() for label in self.domain.split("."))


# ---------------------------------------------------------------------------
# The snapshot: what DNS needs of the catalog, indexed by lower-case name.


@dataclass(frozen=True)
class Instance:
    """One service instance that DNS may hand out (its checks are not critical)."""

    service: Service
    node: Node
    status: str
    address: str
    tags: frozenset[str]


@dataclass(frozen=True)
class Snapshot:
    datacenter: str
    serial: int
    nodes: Mapping[str, Node]
    services: Mapping[str, tuple[Instance, ...]]
    #: Reverse names (``4.3.2.1.in-addr.arpa``, ``….ip6.arpa``) to what they point at:
    #: ``("node", name)`` for every node with that address, else ``("service", name)``
    #: for the first service registered with it as its own address (as Consul does).
    reverse: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


def take_snapshot(catalog: Catalog, serial: int) -> Snapshot:
    """Read the catalog once: nodes and non-critical instances by lower-case name.

    One pass over checks, services and nodes, so that answering a name costs nothing
    that grows with the catalog.
    """
    statuses: dict[tuple[str, str], list[str]] = {}
    for check in catalog.checks.values():
        statuses.setdefault((check.node, check.service_id), []).append(check.status)
    nodes: dict[str, Node] = {}
    for node in sorted(catalog.nodes.values(), key=lambda n: n.name):
        nodes.setdefault(node.name.lower(), node)
    services: dict[str, list[Instance]] = {}
    for service in sorted(catalog.services.values(), key=lambda s: (s.node, s.id)):
        owner = catalog.nodes.get(service.node)
        if owner is None:
            continue
        status = aggregate_status(
            statuses.get((service.node, ""), []) + statuses.get((service.node, service.id), [])
        )
        if status == CRITICAL:
            continue
        services.setdefault(service.name.lower(), []).append(
            Instance(
                service=service,
                node=owner,
                status=status,
                address=service.address or owner.address,
                tags=frozenset(tag.lower() for tag in service.tags),
            )
        )
    reverse: dict[str, list[tuple[str, str]]] = {}
    for node in nodes.values():
        address = _address(node.address)
        if address is not None:
            reverse.setdefault(address.reverse_pointer, []).append(("node", node.name))
    for service in sorted(catalog.services.values(), key=lambda s: (s.node, s.id)):
        address = _address(service.address)
        if address is not None and address.reverse_pointer not in reverse:
            reverse[address.reverse_pointer] = [("service", service.name)]
    return Snapshot(
        datacenter=catalog.datacenter,
        serial=serial & 0xFFFFFFFF,
        nodes=nodes,
        services={name: tuple(found) for name, found in services.items()},
        reverse={name: tuple(found) for name, found in reverse.items()},
    )


def affects_dns(changes: Iterable[Change]) -> bool:
    """Whether any of these catalog changes can change a DNS answer.

    KV writes cannot, nor can a check result that changes only the output text
    (HTTP checks do that on every run); everything else about nodes, services and
    check statuses can.
    """
    for change in changes:
        if change.kind in ("node", "service"):
            return True
        if change.kind == "check":
            before, after = change.previous, change.value
            if not (isinstance(before, Check) and isinstance(after, Check)):
                return True
            if before.status != after.status:
                return True
    return False


# ---------------------------------------------------------------------------
# Resolution: which records answer a name, before any bytes.


@dataclass(frozen=True)
class Entry:
    """Records that go together: an answer and the additional records it needs."""

    answers: tuple[Any, ...]
    additional: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Resolution:
    rcode: int = NOERROR
    entries: tuple[Entry, ...] = ()
    authority: tuple[Any, ...] = ()
    authoritative: bool = True
    #: Entries are handed out in rotating shuffled orders (service answers).
    shuffle: bool = False


def _dns_name(text: str) -> Any | None:
    """*text* as a dnslib name, or None when it cannot be one (long or empty labels)."""
    labels = [label.encode() for label in text.rstrip(".").split(".")]
    if not all(labels) or any(len(label) > 63 for label in labels):
        return None
    if sum(len(label) + 1 for label in labels) + 1 > 255:
        return None
    return DNSLabel(labels)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _address_record(owner: Any, address: str, qtype: int, ttl: int) -> Any | None:
    """The A, AAAA or (for a host name) CNAME record of *address*, if *qtype* asks for it."""
    ip = _address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        if qtype in (TYPE_A, TYPE_ANY):
            return RR(owner, TYPE_A, ttl=ttl, rdata=A(tuple(ip.packed)))
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if qtype in (TYPE_AAAA, TYPE_ANY):
            return RR(owner, TYPE_AAAA, ttl=ttl, rdata=AAAA(tuple(ip.packed)))
        return None
    target = _dns_name(address) if address else None
    if target is not None and qtype in (TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_CNAME):
        return RR(owner, TYPE_CNAME, ttl=ttl, rdata=CNAME(target))
    return None


class _Resolver:
    """Resolution of one name against one snapshot (a namespace for the helpers)."""

    def __init__(self, snapshot: Snapshot, config: Config, qname: Any, qtype: int) -> None:
        self.snapshot = snapshot
        self.config = config
        self.qname = qname
        self.qtype = qtype
        self.apex = DNSLabel(config.wire_labels)

    def soa(self) -> Any:
        times = (self.snapshot.serial, 3600, 600, 86400, self.config.soa_min_ttl)
        return RR(
            self.apex,
            TYPE_SOA,
            ttl=self.config.soa_min_ttl,
            rdata=SOA(self.apex.add("ns"), self.apex.add("hostmaster"), times),
        )

    def ns(self) -> Any:
        return RR(self.apex, TYPE_NS, ttl=self.config.ttl, rdata=NS(self.apex.add("ns")))

    def nxdomain(self) -> Resolution:
        return Resolution(NXDOMAIN, authority=(self.soa(),))

    def nodata(self) -> Resolution:
        return Resolution(NOERROR, authority=(self.soa(),))

    def answer(self, entries: Sequence[Entry], shuffle: bool = False) -> Resolution:
        if not entries:
            return self.nodata()
        return Resolution(NOERROR, tuple(entries), shuffle=shuffle and len(entries) > 1)

    def at_apex(self) -> Resolution:
        records = []
        if self.qtype in (TYPE_SOA, TYPE_ANY):
            records.append(self.soa())
        if self.qtype in (TYPE_NS, TYPE_ANY):
            records.append(self.ns())
        return self.answer([Entry(tuple(records))] if records else [])

    def service(self, name: str, tag: str) -> Resolution:
        instances = self.snapshot.services.get(name, ())
        if tag:
            instances = tuple(i for i in instances if tag in i.tags)
        if not instances:
            return self.nxdomain()
        if self.qtype == TYPE_SRV:
            return self.answer(self.srv_entries(instances), shuffle=True)
        entries = []
        seen: set[str] = set()
        for instance in instances:
            if instance.address in seen:
                continue
            record = _address_record(self.qname, instance.address, self.qtype, self.config.ttl)
            if record is not None:
                seen.add(instance.address)
                entries.append(Entry((record,)))
        return self.answer(entries, shuffle=True)

    def srv_entries(self, instances: Iterable[Instance]) -> list[Entry]:
        ttl = self.config.ttl
        dc = self.snapshot.datacenter.lower()
        entries = []
        seen: set[tuple[str, int]] = set()
        for instance in instances:
            service = instance.service
            port = min(max(service.port, 0), 0xFFFF)
            weights = service.weights
            weight = weights.passing if instance.status == PASSING else weights.warning
            weight = min(max(weight, 0), 0xFFFF)
            additional: tuple[Any, ...] = ()
            if _address(instance.address) is None and instance.address:
                # A host name: Consul points SRV straight at it.
                target = _dns_name(instance.address)
            else:
                target = _dns_name(f"{instance.node.name}.node.{dc}.{self.config.domain}")
                if target is not None:
                    record = _address_record(target, instance.address, TYPE_ANY, ttl)
                    additional = (record,) if record is not None else ()
            if target is None:
                continue
            key = (str(target).lower(), port)
            if key in seen:
                continue
            seen.add(key)
            srv = RR(self.qname, TYPE_SRV, ttl=ttl, rdata=SRV(1, weight, port, target))
            entries.append(Entry((srv,), additional))
        return entries

    def node(self, name: str) -> Resolution:
        node = self.snapshot.nodes.get(name)
        if node is None:
            return self.nxdomain()
        records = []
        record = _address_record(self.qname, node.address, self.qtype, self.config.ttl)
        if record is not None:
            records.append(record)
        if self.qtype in (TYPE_TXT, TYPE_ANY) and node.meta:
            strings = [f"{k}={v}".encode()[:255] for k, v in sorted(node.meta.items())]
            records.append(RR(self.qname, TYPE_TXT, ttl=self.config.ttl, rdata=TXT(strings)))
        return self.answer([Entry(tuple(records))] if records else [])

    def ptr(self, reverse_name: str) -> Resolution:
        """``dig -x``: a node's (or a service's own) address back to its Consul name.

        An address homeport does not know is not its to answer: REFUSED, as Consul
        without recursors says it.
        """
        found = self.snapshot.reverse.get(reverse_name)
        if not found:
            return Resolution(REFUSED, authoritative=False)
        if self.qtype not in (TYPE_PTR, TYPE_ANY):
            return Resolution(NOERROR)
        dc = self.snapshot.datacenter.lower()
        entries = []
        for kind, name in found:
            target = _dns_name(f"{name.lower()}.{kind}.{dc}.{self.config.domain}")
            if target is not None:
                ptr = RR(self.qname, TYPE_PTR, ttl=self.config.ttl, rdata=PTR(target))
                entries.append(Entry((ptr,)))
        return Resolution(NOERROR, tuple(entries))

    def addr(self, parts: Sequence[str]) -> Resolution:
        """``<hex>.addr.<dc>.<domain>``: Consul's names for bare addresses."""
        if len(parts) != 1:
            return self.nxdomain()
        try:
            packed = bytes.fromhex(parts[0])
        except ValueError:
            return self.nxdomain()
        if len(packed) not in (4, 16):
            return self.nxdomain()
        address = str(ipaddress.ip_address(packed))
        record = _address_record(self.qname, address, self.qtype, self.config.ttl)
        return self.answer([Entry((record,))] if record is not None else [])


def resolve(
    snapshot: Snapshot, config: Config, labels: Sequence[bytes], qtype: int, qclass: int
) -> Resolution:
    """The records that answer *labels* (lower-case wire labels) for *qtype*."""
    if qclass not in (CLASS_IN, CLASS_ANY):
        return Resolution(REFUSED, authoritative=False)
    if qtype in (TYPE_AXFR, TYPE_IXFR):
        return Resolution(NOTIMP, authoritative=False)
    resolver = _Resolver(snapshot, config, DNSLabel(tuple(labels)), qtype)
    if labels and labels[-1] == b"arpa":
        return resolver.ptr(b".".join(labels).decode("ascii", "replace"))
    domain = config.wire_labels
    if len(labels) < len(domain) or tuple(labels[len(labels) - len(domain) :]) != domain:
        return Resolution(REFUSED, authoritative=False)
    rest = [label.decode("utf-8", "replace") for label in labels[: len(labels) - len(domain)]]
    if not rest:
        return resolver.at_apex()
    datacenter: str | None = None
    while rest:
        if qtype == TYPE_SRV and rest[-1].startswith("_"):
            kind, parts = "service", rest
        else:
            kind, parts = rest[-1], rest[:-1]
        if kind in ("service", "node", "addr"):
            if not parts:
                break
            if datacenter is not None and datacenter != snapshot.datacenter.lower():
                break
            if kind == "node":
                return resolver.node(".".join(parts))
            if kind == "addr":
                return resolver.addr(parts)
            if len(parts) == 2 and parts[0].startswith("_") and parts[1].startswith("_"):
                tag = parts[1][1:]
                return resolver.service(parts[0][1:], "" if tag == "tcp" else tag)
            return resolver.service(parts[-1], ".".join(parts[:-1]))
        if datacenter is not None:
            break  # only one label may sit between the kind and the domain
        datacenter, rest = rest[-1], rest[:-1]
    return resolver.nxdomain()


# ---------------------------------------------------------------------------
# Reading queries


class Unanswerable(Exception):
    """A packet that gets no reply at all: no readable header, or itself a reply."""


@dataclass
class Malformed(Exception):
    """A readable header on a query we will not take: answered with *rcode*, no sections."""

    id: int
    flags: int
    rcode: int
    reason: str

    def reply(self) -> bytes:
        flags = QR | (self.flags & (0x7800 | RD | CD)) | self.rcode
        return _HEADER.pack(self.id, flags, 0, 0, 0, 0)


@dataclass(frozen=True)
class Edns:
    udp_size: int
    version: int
    dnssec_ok: bool
    has_options: bool


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    #: The question section exactly as sent (name, type, class): echoed in the reply.
    question: bytes
    #: The question with the name lower-cased: the same for every spelling of a name.
    key: bytes
    labels: tuple[bytes, ...]
    qtype: int
    qclass: int
    edns: Edns | None


def _skip_name(data: bytes, offset: int) -> int:
    """The offset after the (possibly compressed) name at *offset*."""
    while True:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            if offset + 2 > len(data):
                raise IndexError(offset)
            return offset + 2
        if length & 0xC0:
            raise ValueError(f"bad label type at {offset}")
        offset += 1 + length


def parse_query(data: bytes) -> Query:
    """Read a query packet, strictly: one question, no answers, at most one OPT.

    Raises :class:`Unanswerable` or :class:`Malformed`.
    """
    data = bytes(data)
    if len(data) < 12:
        raise Unanswerable()
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & QR:
        raise Unanswerable()

    def bad(rcode: int, reason: str) -> Malformed:
        return Malformed(ident, flags, rcode, reason)

    if (flags >> 11) & 0xF:
        raise bad(NOTIMP, f"opcode {(flags >> 11) & 0xF}")
    if qdcount != 1:
        raise bad(FORMERR, f"{qdcount} questions")
    if ancount or nscount:
        raise bad(FORMERR, "answer or authority records in a query")
    offset = 12
    labels = []
    size = 1
    while True:
        if offset >= len(data):
            raise bad(FORMERR, "question name runs off the end")
        length = data[offset]
        if length == 0:
            offset += 1
            break
        if length > 63:
            raise bad(FORMERR, "compressed or invalid label in the question")
        size += length + 1
        end = offset + 1 + length
        if end > len(data) or size > 255:
            raise bad(FORMERR, "question name too long")
        labels.append(data[offset + 1 : end].lower())
        offset = end
    if offset + 4 > len(data):
        raise bad(FORMERR, "question without type and class")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    question = data[12 : offset + 4]
    key = data[12:offset].lower() + data[offset : offset + 4]
    offset += 4
    edns = None
    try:
        for _ in range(arcount):
            start = offset
            offset = _skip_name(data, offset)
            rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
            offset += 10 + rdlength
            if offset > len(data):
                raise bad(FORMERR, "record runs off the end")
            if rtype == TYPE_OPT:
                if edns is not None or data[start] != 0:
                    raise bad(FORMERR, "more than one OPT record, or one not at the root")
                edns = Edns(
                    udp_size=rclass,
                    version=(ttl >> 16) & 0xFF,
                    dnssec_ok=bool(ttl & 0x8000),
                    has_options=rdlength > 0,
                )
    except (IndexError, ValueError, struct.error) as error:
        raise bad(FORMERR, f"additional section: {error}") from None
    if offset != len(data):
        raise bad(FORMERR, "bytes after the last record")
    return Query(ident, flags, question, key, tuple(labels), qtype, qclass, edns)


# ---------------------------------------------------------------------------
# Writing replies


@dataclass(frozen=True)
class Body:
    """Everything of a reply after its question, and what its header must say."""

    rcode: int
    authoritative: bool
    truncated: bool
    answers: int
    authority: int
    additional: int
    data: bytes


def question_size(labels: Sequence[bytes]) -> int:
    return sum(len(label) + 1 for label in labels) + 1 + 4


def render_body(
    labels: Sequence[bytes],
    qtype: int,
    qclass: int,
    resolution: Resolution,
    order: Sequence[int],
    room: int,
) -> Body:
    """Pack the resolution's entries in *order*, as many as fit in *room* bytes.

    Entries go whole (an SRV record with its target's address); when some do not fit
    the reply is marked truncated, so that the client asks again over TCP.
    """
    qname = DNSLabel(tuple(labels))
    entries = [resolution.entries[i] for i in order]

    def pack(count: int) -> tuple[bytes, int, int]:
        record = DNSRecord(DNSHeader(id=0, qr=1), q=DNSQuestion(qname, qtype, qclass))
        for entry in entries[:count]:
            record.rr.extend(entry.answers)
            record.ar.extend(entry.additional)
        record.auth.extend(resolution.authority)
        return record.pack(), len(record.rr), len(record.ar)

    packed = pack(len(entries))
    kept = len(entries)
    if len(packed[0]) > room and entries:
        # Largest prefix that fits: sizes grow with the count, so bisect.
        low, high = 0, len(entries) - 1
        packs = {}
        while low < high:
            middle = (low + high + 1) // 2
            packs[middle] = pack(middle)
            if len(packs[middle][0]) <= room:
                low = middle
            else:
                high = middle - 1
        kept = low
        packed = packs[low] if low in packs else pack(low)
    data, answers, additional = packed
    return Body(
        rcode=resolution.rcode,
        authoritative=resolution.authoritative,
        truncated=kept < len(entries),
        answers=answers,
        authority=len(resolution.authority),
        additional=additional,
        data=data[12 + question_size(labels) :],
    )


def _opt(config: Config, rcode: int) -> bytes:
    return b"\x00" + struct.pack("!HHBBHH", TYPE_OPT, config.max_udp_size, rcode >> 4, 0, 0, 0)


def assemble(query: Query, body: Body, config: Config) -> bytes:
    """The reply to *query*: its ID, its flags echoed, its question as sent, then *body*."""
    flags = QR | (query.flags & (RD | CD)) | (body.rcode & 0xF)
    if body.authoritative:
        flags |= AA
    if body.truncated:
        flags |= TC
    additional = body.additional
    opt = b""
    if query.edns is not None:
        opt = _opt(config, body.rcode)
        additional += 1
    header = _HEADER.pack(query.id, flags, 1, body.answers, body.authority, additional)
    return header + query.question + body.data + opt


def shuffled_orders(
    count: int, rng: random.Random, limit: int = MAX_ORDERS
) -> list[tuple[int, ...]]:
    """Orders of *count* entries to rotate among: each entry first in one, the rest shuffled."""
    if count <= 1:
        return [tuple(range(count))]
    firsts = list(range(count))
    rng.shuffle(firsts)
    orders = []
    for first in firsts[:limit]:
        rest = [i for i in range(count) if i != first]
        rng.shuffle(rest)
        orders.append((first, *rest))
    return orders


class _Template:
    """The bodies of one name's reply, one per order, built the first time each is used."""

    def __init__(
        self, query: Query, resolution: Resolution, orders: list[tuple[int, ...]], room: int
    ) -> None:
        self.labels = query.labels
        self.qtype = query.qtype
        self.qclass = query.qclass
        self.resolution = resolution
        self.orders = orders
        self.room = room
        self.bodies: list[Body | None] = [None] * len(orders)
        self.position = 0
        self.built = 0

    def next_body(self) -> Body:
        index = self.position
        self.position = (index + 1) % len(self.orders)
        body = self.bodies[index]
        if body is None:
            body = render_body(
                self.labels, self.qtype, self.qclass, self.resolution, self.orders[index], self.room
            )
            self.bodies[index] = body
            self.built += 1
        return body

    @property
    def complete(self) -> bool:
        return self.built == len(self.orders)

    def rotation(self) -> list[Body]:
        """All bodies, starting with the one to be served next."""
        bodies = [b for b in self.bodies if b is not None]
        return bodies[self.position :] + bodies[: self.position]


class Responder:
    """Replies to query packets from the current snapshot, through the caches.

    :attr:`udp` and :attr:`tcp` map a query's bytes after its ID to an endless cycle
    of reply bytes after the ID: the transport may answer a packet ``p`` found there
    with ``p[:2] + next(cycle)`` without calling :meth:`respond`.  A name's entry
    appears there once every shuffled order of it has been built.
    """

    def __init__(
        self,
        config: Config,
        snapshot: Callable[[], Snapshot],
        rng: random.Random | None = None,
        max_bytes: int = 64 * 2**20,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.config = config
        self._source = snapshot
        self._rng = rng if rng is not None else random.Random()
        self._max_bytes = max_bytes
        self._on_error = on_error
        self._snapshot: Snapshot | None = None
        self._templates: dict[tuple[bytes, int, bool], _Template] = {}
        #: Bytes held by templates and the byte caches: a flood of name spellings,
        #: EDNS sizes or random names must not grow memory without bound.
        self.cached_bytes = 0
        self.udp: dict[bytes, Iterator[bytes]] = {}
        self.tcp: dict[bytes, Iterator[bytes]] = {}

    def invalidate(self) -> None:
        """Forget every answer: the next query of each name is computed afresh."""
        self._snapshot = None
        self._forget()

    def _forget(self) -> None:
        self._templates.clear()
        self.udp.clear()
        self.tcp.clear()
        self.cached_bytes = 0

    def _charge(self, size: int) -> None:
        """Account for *size* more cached bytes; over the budget, start again from empty."""
        self.cached_bytes += size
        if self.cached_bytes > self._max_bytes:
            self._forget()

    def limit(self, query: Query, udp: bool) -> int:
        """The largest reply *query* may get."""
        if not udp:
            return TCP_SIZE
        if query.edns is None:
            return CLASSIC_UDP_SIZE
        return max(CLASSIC_UDP_SIZE, min(query.edns.udp_size, self.config.max_udp_size))

    def respond(self, packet: bytes, udp: bool = True) -> bytes | None:
        """The reply to *packet*, or None when it deserves none."""
        try:
            query = parse_query(packet)
        except Unanswerable:
            return None
        except Malformed as error:
            return error.reply()
        try:
            return self._respond(query, bytes(packet), udp)
        except Exception as error:  # a bug must cost one answer, not the server
            if self._on_error is not None:
                self._on_error(error)
            return assemble(query, Body(SERVFAIL, False, False, 0, 0, 0, b""), self.config)

    def _respond(self, query: Query, packet: bytes, udp: bool) -> bytes:
        if query.edns is not None and query.edns.version > 0:
            return assemble(query, Body(BADVERS, False, False, 0, 0, 0, b""), self.config)
        limit = self.limit(query, udp)
        key = (query.key, limit, query.edns is not None)
        template = self._templates.get(key)
        if template is None:
            if self._snapshot is None:
                self._snapshot = self._source()
            resolution = resolve(
                self._snapshot, self.config, query.labels, query.qtype, query.qclass
            )
            if resolution.shuffle:
                orders = shuffled_orders(len(resolution.entries), self._rng)
            else:
                orders = [tuple(range(len(resolution.entries)))]
            room = limit - (OPT_SIZE if query.edns is not None else 0)
            template = _Template(query, resolution, orders, room)
            self._charge(256 + len(query.key))
            self._templates[key] = template
        built = template.built
        body = template.next_body()
        if template.built != built:
            self._charge(len(body.data))
        reply = assemble(query, body, self.config)
        if template.complete and (query.edns is None or not query.edns.has_options):
            # Queries with EDNS options (dig's cookies) differ every time: not worth a slot.
            tails = [assemble(query, body, self.config)[2:] for body in template.rotation()]
            self._charge(sum(len(tail) + 64 for tail in tails) + len(packet))
            cache = self.udp if udp else self.tcp
            cache[packet[2:]] = itertools.cycle(tails)
        return reply


def answer(
    snapshot: Snapshot,
    packet: bytes,
    config: Config | None = None,
    udp: bool = True,
    rng: random.Random | None = None,
) -> bytes | None:
    """The reply to one query packet from *snapshot* (no caching across calls)."""
    responder = Responder(config or Config(), lambda: snapshot, rng=rng)
    return responder.respond(packet, udp=udp)
