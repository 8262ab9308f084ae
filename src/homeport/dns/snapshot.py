"""The snapshot: what DNS needs of the catalog, read once and indexed by lower-case name.

:func:`take_snapshot` makes one from a :class:`~homeport.catalog.model.Catalog`, so
that answering a name costs nothing that grows with the catalog; :func:`affects_dns`
says whether catalog changes make the current one stale.  With ``--acl`` it is taken
through the anonymous token's :class:`~homeport.acl.Authorizer`, as Consul's DNS asks
with the agent's token: what that token may not read is not in it, so it is answered
as a name that does not exist (NXDOMAIN, Consul's answer when its filtered lookup
comes back empty).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from homeport.acl import Authorizer
from homeport.catalog import queries
from homeport.catalog.errors import CatalogError
from homeport.catalog.model import (
    CRITICAL,
    Catalog,
    Change,
    Check,
    Node,
    PreparedQuery,
    Service,
    aggregate_status,
)

#: What a reverse name points at: ``("node", name)`` or ``("service", name)``.
Pointer = tuple[str, str]


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
    reverse: Mapping[str, tuple[Pointer, ...]] = field(default_factory=dict)
    #: ``<name>.query``: the prepared query's result (None: no such query).
    prepared: Callable[[str], queries.Result | None] = field(
        default=lambda name: None, compare=False, repr=False
    )


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """*text* as an IP address, or None when it is a host name (or nothing)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def take_snapshot(catalog: Catalog, serial: int, may: Authorizer | None = None) -> Snapshot:
    """Read the catalog once: nodes and non-critical instances by lower-case name.

    One pass over checks, services and nodes, so that answering a name costs nothing
    that grows with the catalog.  With *may* (``--acl``: the anonymous token's rules)
    only what it may read: nodes by ``node:read``, instances and the services of
    reverse names by ``service:read`` and their node's ``node:read`` (Consul's
    Health.ServiceNodes filter), prepared queries by ``query:read`` and their results
    as instances are.
    """
    if may is not None and may.management:
        may = None
    nodes: dict[str, Node] = {}
    for node in sorted(catalog.nodes.values(), key=lambda n: n.name):
        if may is None or may.allows("node", node.name, "read"):
            nodes.setdefault(node.name.lower(), node)
    ordered = sorted(catalog.services.values(), key=lambda s: (s.node, s.id))
    if may is not None:
        ordered = [s for s in ordered if _may_read(may, s.name, s.node)]
    return Snapshot(
        datacenter=catalog.datacenter,
        serial=serial & 0xFFFFFFFF,
        nodes=nodes,
        services=_instances(catalog, ordered),
        reverse=_reverse(nodes.values(), ordered),
        prepared=_prepared(catalog, may),
    )


def _may_read(may: Authorizer, service: str, node: str) -> bool:
    """May *may* read this instance: ``service:read`` on it and ``node:read`` on its node?"""
    return may.allows("service", service, "read") and may.allows("node", node, "read")


def _prepared(catalog: Catalog, may: Authorizer | None) -> Callable[[str], queries.Result | None]:
    """Run a prepared query by name as Consul's DNS does: from this agent (the node of
    its built-in ``consul`` service), with no ``?near``; with *may*, only a query it may
    read (``query:read``, as the HTTP guard asks), and only the instances it may read."""
    agent = next((s.node for s in catalog.services.values() if s.source == "builtin"), "")

    def run(name: str) -> queries.Result | None:
        try:
            result = queries.execute(catalog, name, queries.Source(agent_node=agent))
        except CatalogError:
            return None
        if may is None:
            return result
        if not may.allows("query", _query_name(result.query, name), "read"):
            return None
        kept = tuple(e for e in result.entries if _may_read(may, e.service.name, e.node.name))
        return replace(result, entries=kept)

    return run


def _query_name(query: PreparedQuery, asked: str) -> str:
    """The name the ``query`` rules judge: the stored query's (asked by ID or by its
    own name), else the name asked (a template's match), as the HTTP guard does."""
    if asked in (query.id, query.name.lower()):
        return query.name
    return asked


def _instances(catalog: Catalog, services: Iterable[Service]) -> dict[str, tuple[Instance, ...]]:
    """The non-critical instances of *services* on known nodes, by lower-case name."""
    statuses: dict[tuple[str, str], list[str]] = {}
    for check in catalog.checks.values():
        statuses.setdefault((check.node, check.service_id), []).append(check.status)
    found: dict[str, list[Instance]] = {}
    for service in services:
        owner = catalog.nodes.get(service.node)
        if owner is None:
            continue
        status = aggregate_status(
            statuses.get((service.node, ""), []) + statuses.get((service.node, service.id), [])
        )
        if status == CRITICAL:
            continue
        found.setdefault(service.name.lower(), []).append(
            Instance(
                service=service,
                node=owner,
                status=status,
                address=service.address or owner.address,
                tags=frozenset(tag.lower() for tag in service.tags),
            )
        )
    return {name: tuple(instances) for name, instances in found.items()}


def _reverse(nodes: Iterable[Node], services: Iterable[Service]) -> dict[str, tuple[Pointer, ...]]:
    """Reverse names to every node with that address, else the first such service."""
    found: dict[str, list[Pointer]] = {}
    for node in nodes:
        address = parse_address(node.address)
        if address is not None:
            found.setdefault(address.reverse_pointer, []).append(("node", node.name))
    for service in services:
        address = parse_address(service.address)
        if address is not None and address.reverse_pointer not in found:
            found[address.reverse_pointer] = [("service", service.name)]
    return {name: tuple(pointers) for name, pointers in found.items()}


def affects_dns(changes: Iterable[Change]) -> bool:
    """Whether any of these catalog changes can change a DNS answer.

    KV writes cannot, nor can a check result that changes only the output text
    (HTTP checks do that on every run); everything else about nodes, services and
    check statuses can.
    """
    for change in changes:
        if change.kind in ("node", "service", "query"):
            return True
        if change.kind == "check":
            before, after = change.previous, change.value
            if not (isinstance(before, Check) and isinstance(after, Check)):
                return True
            if before.status != after.status:
                return True
    return False
