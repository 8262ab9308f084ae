"""DNS interface to the catalog (Consul's ``<service>.service.consul`` names).

The core (no Twisted) takes a catalog snapshot and a query packet and gives reply
bytes, with the precomputed reply cache that makes it fast; :mod:`.server` is the thin
transport: :class:`~.server.DNSService` owns a UDP and a TCP port on the same
``HOST:PORT`` and answers from that cache.  :func:`build` makes the part.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..part import IHomeportReactor, Part

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..acl import Authorizer
    from ..catalog.model import Catalog
    from ..http.metrics import Metrics


@dataclass(frozen=True)
class Acl:
    """What DNS needs of the ACL system (``--acl``), given by the wiring so that DNS
    never reaches into the catalog's face: the anonymous token's Authorizer (asked
    afresh for each snapshot), and *watch*, which calls its argument after any token,
    policy or role change, here or from another agent."""

    authorizer: Callable[[], Authorizer]
    watch: Callable[[Callable[[], None]], object]


@dataclass(frozen=True, kw_only=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8600
    domain: str = "consul"
    #: TTL of answers, and the SOA minimum (how long "no such name" may be cached).
    ttl: int = 0
    soa_min_ttl: int = 0
    #: Memory the precomputed replies may take (``--dns-cache-size``).
    cache_size: int = 64 * 2**20
    #: Bind with ``SO_REUSEPORT``, sharing the port with ``--workers``.
    reuse_port: bool = False


def build(
    settings: Settings,
    reactor: IHomeportReactor,
    catalog: Catalog,
    metrics: Metrics | None = None,
    acl: Acl | None = None,
) -> Part:
    """DNS for *catalog* on ``settings.host:port`` (UDP and TCP), once started; its
    query counts on *metrics*; with *acl*, only what the anonymous token may read."""
    from .config import Config
    from .server import DNSService, Limits

    config = Config(domain=settings.domain, ttl=settings.ttl, soa_min_ttl=settings.soa_min_ttl)
    where = f"[{settings.host}]" if ":" in settings.host else settings.host
    service = DNSService(
        catalog,
        settings.host,
        settings.port,
        config,
        reactor,
        limits=Limits(cache_size=settings.cache_size, reuse_port=settings.reuse_port),
        what=f"--dns {where}:{settings.port}",
        authorizer=acl.authorizer if acl is not None else None,
    )
    if acl is not None:
        acl.watch(service.acl_changed)
    if metrics is not None:
        responder = service.responder
        metrics.counter(
            "homeport_dns_queries",
            "DNS queries received (UDP and TCP)",
            lambda: responder.responded + responder.cache_hits,
        )
        metrics.counter(
            "homeport_dns_cache_hits",
            "DNS queries answered from the precomputed replies in the read loops",
            lambda: responder.cache_hits,
        )
    return Part(service=service, exposed=not ipaddress.ip_address(settings.host).is_loopback)
