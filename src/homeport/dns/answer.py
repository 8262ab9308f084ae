"""Answers to DNS queries from a catalog snapshot, through the reply cache: pure, no
I/O, no clock.

The hot path of a catalog is DNS, and a parse + build per query with dnslib costs
~150 µs.  So a reply is computed once per (name, type, size limit) from the current
:class:`~.snapshot.Snapshot` and kept as bytes; a query is then answered by gluing its
own ID and question onto the stored bytes, and once every shuffled order of a name is
built, the transport answers straight from :attr:`Responder.udp` /
:attr:`Responder.tcp`, keyed by the query's bytes after the ID.  Round robin comes from
rotating among precomputed shuffled orders.  Any catalog change that matters to DNS
clears it all (:meth:`Responder.invalidate`), so the very next answer is computed afresh.

The steps below it, each its own module, none with Twisted: :mod:`.config` (the
settings), :mod:`.snapshot` (the catalog read once), :mod:`.resolve` (a name to
records) and :mod:`.wire` (packets read and written).

Behaviour follows Consul's ``agent/dns.go`` (see docs/CONSUL-REFERENCE.md): names are parsed
right to left for ``service``/``node``/``addr`` with an optional datacenter label;
``*.in-addr.arpa`` / ``*.ip6.arpa`` names of known node (else service) addresses get PTRs;
NXDOMAIN and NOERROR-without-data carry the SOA; names outside the domain are REFUSED;
UDP replies are trimmed to 512 bytes or the EDNS size, and unlike Consul set TC.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator

from .codes import BADVERS, CLASSIC_UDP_SIZE, OPT_SIZE, SERVFAIL, TCP_SIZE
from .config import Config
from .resolve import Resolution, resolve
from .snapshot import Snapshot
from .wire import Body, Malformed, Query, Unanswerable, assemble, parse_query, render_body

#: Orders precomputed per name: every instance comes first once per rotation, up to this.
MAX_ORDERS = 64


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
        #: Queries given to :meth:`respond`, and those the server's read loops answered
        #: from the byte caches before getting here (the server counts those).
        self.responded = 0
        self.cache_hits = 0

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
        self.responded += 1
        try:
            query = parse_query(packet)
        except Unanswerable:
            return None
        except Malformed as error:
            return error.reply()
        try:
            return self._respond(query, bytes(packet), udp)
        except Exception as error:  # noqa: BLE001 - a bug must cost one answer, not the server
            if self._on_error is not None:
                self._on_error(error)
            return assemble(query, Body(SERVFAIL, False, False, 0, 0, 0, b""), self.config)

    def _respond(self, query: Query, packet: bytes, udp: bool) -> bytes:
        if query.edns is not None and query.edns.version > 0:
            return assemble(query, Body(BADVERS, False, False, 0, 0, 0, b""), self.config)
        template = self._template(query, self.limit(query, udp))
        built = template.built
        body = template.next_body()
        if template.built != built:
            self._charge(len(body.data))
        reply = assemble(query, body, self.config)
        if template.complete and (query.edns is None or not query.edns.has_options):
            # Queries with EDNS options (dig's cookies) differ every time: not worth a slot.
            self._cache(query, packet, udp, template)
        return reply

    def _template(self, query: Query, limit: int) -> _Template:
        """The template of *query*'s name and type for replies up to *limit* bytes."""
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
        return template

    def _cache(self, query: Query, packet: bytes, udp: bool, template: _Template) -> None:
        """Let the transport answer *packet* itself from now on, rotating the bodies."""
        tails = [assemble(query, body, self.config)[2:] for body in template.rotation()]
        self._charge(sum(len(tail) + 64 for tail in tails) + len(packet))
        cache = self.udp if udp else self.tcp
        cache[packet[2:]] = itertools.cycle(tails)


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
