"""Resolution: which records answer a name, before any bytes.

:func:`resolve` reads a query's name right to left as Consul's ``agent/dns.go`` does
(``service``/``node``/``addr`` with an optional datacenter label, RFC 2782
``_name._tag`` for SRV, ``*.in-addr.arpa``/``*.ip6.arpa`` for PTR) and gives a
:class:`Resolution`: dnslib records grouped in :class:`Entry` values, which
:mod:`.wire` packs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dnslib import AAAA, CNAME, NS, PTR, RR, SOA, SRV, TXT, A, DNSLabel

from homeport.catalog.model import PASSING

from .codes import (
    CLASS_ANY,
    CLASS_IN,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    REFUSED,
    TYPE_A,
    TYPE_AAAA,
    TYPE_ANY,
    TYPE_AXFR,
    TYPE_CNAME,
    TYPE_IXFR,
    TYPE_NS,
    TYPE_PTR,
    TYPE_SOA,
    TYPE_SRV,
    TYPE_TXT,
)
from .config import Config
from .snapshot import Instance, Snapshot, parse_address


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


def _address_record(owner: Any, address: str, qtype: int, ttl: int) -> Any | None:
    """The A, AAAA or (for a host name) CNAME record of *address*, if *qtype* asks for it."""
    ip = parse_address(address)
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

    def in_domain(self, rest: list[str]) -> Resolution:
        """The name by its labels left of the domain, read right to left."""
        if not rest:
            return self.at_apex()
        datacenter: str | None = None
        while rest:
            if self.qtype == TYPE_SRV and rest[-1].startswith("_"):
                kind, parts = "service", rest
            else:
                kind, parts = rest[-1], rest[:-1]
            if kind in ("service", "node", "addr", "query"):
                if not parts:
                    break
                if datacenter is not None and datacenter != self.snapshot.datacenter.lower():
                    break
                return self.lookup(kind, parts)
            if datacenter is not None:
                break  # only one label may sit between the kind and the domain
            datacenter, rest = rest[-1], rest[:-1]
        return self.nxdomain()

    def lookup(self, kind: str, parts: list[str]) -> Resolution:
        """``<parts>.<kind>`` (``service``, ``node`` or ``addr``) in this datacenter."""
        if kind == "node":
            return self.node(".".join(parts))
        if kind == "addr":
            return self.addr(parts)
        if kind == "query":
            return self.prepared(".".join(parts))
        if len(parts) == 2 and parts[0].startswith("_") and parts[1].startswith("_"):
            tag = parts[1][1:]
            return self.service(parts[0][1:], "" if tag == "tcp" else tag)
        return self.service(parts[-1], ".".join(parts[:-1]))

    def service(self, name: str, tag: str) -> Resolution:
        instances = self.snapshot.services.get(name, ())
        if tag:
            instances = tuple(i for i in instances if tag in i.tags)
        if not instances:
            return self.nxdomain()
        return self.instances(instances, self.config.ttl, shuffle=True)

    def prepared(self, name: str) -> Resolution:
        """``<name>.query``: a prepared query's instances, with its own DNS TTL if it
        sets one, in its order when it names a ``Near`` node (Consul's
        ``preparedQueryLookup``)."""
        result = self.snapshot.prepared(name)
        if result is None or not result.entries:
            return self.nxdomain()
        instances = [
            Instance(
                service=e.service,
                node=e.node,
                status=e.status,
                address=e.service.address or e.node.address,
                tags=frozenset(t.lower() for t in e.service.tags),
            )
            for e in result.entries
        ]
        ttl = self.config.ttl if result.dns_ttl is None else int(result.dns_ttl)
        near = bool(result.query.definition["Service"]["Near"])
        return self.instances(instances, ttl, shuffle=not near)

    def instances(self, instances: Sequence[Instance], ttl: int, shuffle: bool) -> Resolution:
        if self.qtype == TYPE_SRV:
            return self.answer(self.srv_entries(instances, ttl), shuffle=shuffle)
        entries = []
        seen: set[str] = set()
        for instance in instances:
            if instance.address in seen:
                continue
            record = _address_record(self.qname, instance.address, self.qtype, ttl)
            if record is not None:
                seen.add(instance.address)
                entries.append(Entry((record,)))
        return self.answer(entries, shuffle=shuffle)

    def srv_entries(self, instances: Iterable[Instance], ttl: int) -> list[Entry]:
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
            if parse_address(instance.address) is None and instance.address:
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
    return resolver.in_domain(rest)
