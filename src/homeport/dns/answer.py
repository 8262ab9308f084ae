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

# What the cache charges for the Python objects behind a reply, beyond the length of
# its bytes: CPython 3.11 on 64 bits, measured with tracemalloc (tests/test_dns_answer.py
# checks the charge against the traced memory for several kinds of name), so that the
# budget is the memory the cache really holds.
#: A template: the object, its key in the templates dict, its query's name and lists.
TEMPLATE_COST = 520
#: Each label of the name (a bytes object in the labels tuple).
LABEL_COST = 50
#: The resolution (a name's records as dnslib objects), kept until every order of the
#: name is built: a fixed part, each record (an RR and its rdata) and each authority
#: record (an SOA: an RR, three names and its numbers).
RESOLUTION_COST = 200
RECORD_COST = 400
AUTHORITY_COST = 900
#: Each shuffled order: its tuple (8 bytes per entry) and its body's object.
ORDER_COST = 200
#: A bytes object (its header) in a list: every cached body and reply.
BYTES_COST = 50
#: A byte-cache entry: its slot in the dict, its key and the cycle of replies.
ENTRY_COST = 330


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
        #: Needed until every order is built, then let go (the bodies say it all).
        self.resolution: Resolution | None = resolution
        self.orders: list[tuple[int, ...]] | None = orders
        self.count = len(orders)
        self.room = room
        self.bodies: list[Body | None] = [None] * len(orders)
        self.position = 0
        self.built = 0
        records = sum(len(e.answers) + len(e.additional) for e in resolution.entries)
        #: What the resolution and the orders are charged (given back once let go).
        self.scaffold = (
            RESOLUTION_COST
            + RECORD_COST * records
            + AUTHORITY_COST * len(resolution.authority)
            + sum(8 * len(order) for order in orders)
        )
        #: What the rest is charged: the template itself and a slot per order.
        self.cost = (
            TEMPLATE_COST
            + len(query.key)
            + sum(LABEL_COST + len(label) for label in query.labels)
            + ORDER_COST * len(orders)
        )

    def next_body(self) -> Body:
        index = self.position
        self.position = (index + 1) % self.count
        body = self.bodies[index]
        if body is None:
            assert self.resolution is not None and self.orders is not None
            body = render_body(
                self.labels, self.qtype, self.qclass, self.resolution, self.orders[index], self.room
            )
            self.bodies[index] = body
            self.built += 1
            if self.complete:
                self.resolution = self.orders = None
        return body

    @property
    def complete(self) -> bool:
        return self.built == self.count

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
        """Account for *size* more cached bytes (what is about to be kept, or given back
        when negative); over the budget, start again from empty, then keep it."""
        if self.cached_bytes + size > self._max_bytes:
            self._forget()
        self.cached_bytes += size

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
            # A new body; the last one lets the resolution go, and its charge with it.
            released = template.scaffold if template.complete else 0
            self._charge(BYTES_COST + len(body.data) - released)
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
            self._charge(template.cost + template.scaffold)
            self._templates[key] = template
        return template

    def _cache(self, query: Query, packet: bytes, udp: bool, template: _Template) -> None:
        """Let the transport answer *packet* itself from now on, rotating the bodies."""
        cache = self.udp if udp else self.tcp
        if packet[2:] in cache:
            return  # the server's read loop would have answered it: nothing new to hold
        tails = [assemble(query, body, self.config)[2:] for body in template.rotation()]
        self._charge(ENTRY_COST + len(packet) + sum(BYTES_COST + len(t) for t in tails))
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
