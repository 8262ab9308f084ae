"""The pure DNS answer function over a catalog snapshot: no sockets, no reactor.

Replies are read back with dnspython, an independent implementation of the wire
format, so these tests do not take dnslib's word for what dnslib wrote.
"""

from __future__ import annotations

import gc
import random
import struct
import tracemalloc
from collections.abc import Callable, Iterable

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeport.catalog.model import (
    CRITICAL,
    PASSING,
    WARNING,
    Catalog,
    Check,
    KVEntry,
    Node,
    Service,
    Weights,
)
from homeport.dns.answer import Responder, answer
from homeport.dns.config import Config, InvalidConfig
from homeport.dns.snapshot import Snapshot, affects_dns, take_snapshot

SERIAL = 1_700_000_000


def make_catalog() -> Catalog:
    """Two web instances (one warning, one critical elsewhere), a db on IPv6, an alias."""
    catalog = Catalog()
    catalog.register(
        Node("alpha", "10.0.0.1", meta={"rack": "r1"}),
        [
            Service("alpha", "web-1", "web", ("rails", "Primary"), port=8080),
            Service("alpha", "db", "db", address="2001:db8::5", port=5432),
            Service("alpha", "ext", "external", address="api.example.com", port=443),
        ],
    )
    catalog.register(
        Node("beta", "10.0.0.2"),
        [
            Service(
                "beta",
                "web-2",
                "web",
                ("v2",),
                address="10.1.1.2",
                port=8081,
                weights=Weights(passing=10, warning=3),
            ),
        ],
        [Check("beta", "service:web-2", "web-2 check", status=WARNING, service_id="web-2")],
    )
    catalog.register(
        Node("gamma", "10.0.0.3"),
        [Service("gamma", "web-3", "web", ("rails",), port=8082)],
        [Check("gamma", "service:web-3", "web-3 check", status=CRITICAL, service_id="web-3")],
    )
    catalog.register(Node("v6only", "2001:db8::9"))
    return catalog


def snapshot(catalog: Catalog | None = None) -> Snapshot:
    return take_snapshot(catalog if catalog is not None else make_catalog(), SERIAL)


def ask(
    name: str,
    rdtype: str = "A",
    snap: Snapshot | None = None,
    config: Config | None = None,
    udp: bool = True,
    **query_options: object,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **query_options)  # type: ignore[arg-type]
    reply = answer(snap or snapshot(), query.to_wire(), config, udp=udp)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.id == query.id
    return message


def records(section: Iterable[dns.rrset.RRset], rdtype: str | None = None) -> list[str]:
    """Each record's data as text, sorted, optionally of one type."""
    return sorted(
        rdata.to_text()
        for rrset in section
        if rdtype is None or rrset.rdtype == dns.rdatatype.from_text(rdtype)
        for rdata in rrset
    )


def soa_only(message: dns.message.Message) -> bool:
    return [r.rdtype for r in message.authority] == [dns.rdatatype.SOA]


# -- services ----------------------------------------------------------------


def test_a_query_returns_one_record_per_instance_without_a_critical_check() -> None:
    """Critical instances are left out, warning ones stay; service address beats node address."""
    reply = ask("web.service.consul")
    assert reply.rcode() == dns.rcode.NOERROR
    assert records(reply.answer) == ["10.0.0.1", "10.1.1.2"]


def test_the_datacenter_may_be_named_and_another_datacenter_is_unknown() -> None:
    """``web.service.dc1.consul`` answers like ``web.service.consul``; ``dc9`` is NXDOMAIN."""
    assert records(ask("web.service.dc1.consul").answer) == ["10.0.0.1", "10.1.1.2"]
    reply = ask("web.service.dc9.consul")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert soa_only(reply)


def test_a_tag_label_filters_instances_case_insensitively() -> None:
    """``<tag>.<service>.service.consul`` keeps instances that carry the tag, in any case."""
    assert records(ask("rails.web.service.consul").answer) == ["10.0.0.1"]
    assert records(ask("primary.web.service.consul").answer) == ["10.0.0.1"]
    assert records(ask("v2.web.service.consul").answer) == ["10.1.1.2"]
    assert ask("nosuchtag.web.service.consul").rcode() == dns.rcode.NXDOMAIN


def test_an_ipv6_service_address_answers_aaaa_and_leaves_a_empty() -> None:
    """AAAA carries the IPv6 address; an A query is NOERROR with no answer and the SOA."""
    assert records(ask("db.service.consul", "AAAA").answer) == ["2001:db8::5"]
    empty = ask("db.service.consul", "A")
    assert empty.rcode() == dns.rcode.NOERROR
    assert empty.answer == []
    assert soa_only(empty)


def test_any_returns_every_address_record() -> None:
    """ANY gives the A and AAAA records of the instances."""
    assert records(ask("db.service.consul", "ANY").answer) == ["2001:db8::5"]
    assert records(ask("web.service.consul", "ANY").answer) == ["10.0.0.1", "10.1.1.2"]


def test_a_host_name_address_becomes_a_cname() -> None:
    """A service registered with a host name as address answers A with a CNAME to it."""
    reply = ask("external.service.consul")
    assert records(reply.answer, "CNAME") == ["api.example.com."]


def test_srv_for_a_host_name_address_targets_that_host_name() -> None:
    """As Consul does, SRV points at the registered host name, with no ADDITIONAL."""
    reply = ask("external.service.consul", "SRV")
    assert records(reply.answer) == ["1 1 443 api.example.com."]
    assert reply.additional == []


def test_srv_gives_weight_port_node_target_and_the_address_in_additional() -> None:
    """SRV is ``1 <weight> <port> <node>.node.<dc>.<domain>.`` with A in ADDITIONAL."""
    reply = ask("web.service.consul", "SRV")
    assert records(reply.answer) == [
        "1 1 8080 alpha.node.dc1.consul.",
        "1 3 8081 beta.node.dc1.consul.",  # warning: the Warning weight
    ]
    additional = {(r.name.to_text(), rd.to_text()) for r in reply.additional for rd in r}
    assert additional == {
        ("alpha.node.dc1.consul.", "10.0.0.1"),
        ("beta.node.dc1.consul.", "10.1.1.2"),
    }


def test_srv_uses_the_passing_weight_for_passing_instances() -> None:
    """An instance whose checks pass gets its Passing weight."""
    catalog = make_catalog()
    catalog.update_check("beta", "service:web-2", PASSING, "")
    reply = ask("v2.web.service.consul", "SRV", snap=snapshot(catalog))
    assert records(reply.answer) == ["1 10 8081 beta.node.dc1.consul."]


def test_rfc2782_names_filter_by_tag_and_tcp_means_no_filter() -> None:
    """``_web._rails.service.consul`` filters by tag; ``_web._tcp`` lists every instance."""
    assert records(ask("_web._rails.service.consul", "SRV").answer) == [
        "1 1 8080 alpha.node.dc1.consul."
    ]
    assert len(records(ask("_web._tcp.service.consul", "SRV").answer)) == 2
    assert len(records(ask("_web._tcp.service.dc1.consul", "SRV").answer)) == 2


def test_rfc2782_srv_names_work_without_the_service_label() -> None:
    """``_web._tcp.consul`` SRV is read as a service lookup, as Consul does."""
    assert len(records(ask("_web._tcp.consul", "SRV").answer)) == 2


def test_an_srv_query_for_an_ipv6_service_puts_aaaa_in_additional() -> None:
    """The SRV target's address record is AAAA when the address is IPv6."""
    reply = ask("db.service.consul", "SRV")
    assert records(reply.answer) == ["1 1 5432 alpha.node.dc1.consul."]
    assert records(reply.additional, "AAAA") == ["2001:db8::5"]


def test_an_unknown_service_is_nxdomain_with_the_soa() -> None:
    """No such service: NXDOMAIN, SOA in AUTHORITY."""
    reply = ask("nope.service.consul")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.answer == []
    assert soa_only(reply)


def test_a_service_whose_instances_are_all_critical_is_nxdomain() -> None:
    """When every instance fails, the name does not exist, as in Consul."""
    catalog = make_catalog()
    catalog.update_check("beta", "service:web-2", CRITICAL, "")
    catalog.register_check(
        Check("alpha", "service:web-1", "c", status=CRITICAL, service_id="web-1")
    )
    assert ask("web.service.consul", snap=snapshot(catalog)).rcode() == dns.rcode.NXDOMAIN


def test_a_critical_node_check_removes_every_service_on_that_node() -> None:
    """A node-level check (serfHealth) counts for all of the node's services."""
    catalog = make_catalog()
    catalog.register_check(Check("alpha", "serfHealth", "Serf", status=CRITICAL))
    assert records(ask("web.service.consul", snap=snapshot(catalog)).answer) == ["10.1.1.2"]


def test_a_known_service_without_the_asked_type_is_noerror_empty_with_the_soa() -> None:
    """TXT on a service: NOERROR, no answer, SOA in AUTHORITY."""
    reply = ask("web.service.consul", "TXT")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert soa_only(reply)


# -- nodes, apex, refusals --------------------------------------------------------


def test_node_names_answer_a_with_or_without_the_datacenter() -> None:
    """``<node>.node[.<dc>].consul`` gives the node address."""
    assert records(ask("alpha.node.consul").answer) == ["10.0.0.1"]
    assert records(ask("alpha.node.dc1.consul").answer) == ["10.0.0.1"]
    assert records(ask("v6only.node.consul", "AAAA").answer) == ["2001:db8::9"]


def test_node_meta_is_served_as_txt() -> None:
    """TXT on a node lists its meta as key=value strings."""
    assert records(ask("alpha.node.consul", "TXT").answer) == ['"rack=r1"']


def test_a_node_without_the_asked_type_is_noerror_empty_and_unknown_is_nxdomain() -> None:
    """AAAA of an IPv4 node is NOERROR + SOA; an unknown node is NXDOMAIN + SOA."""
    empty = ask("alpha.node.consul", "AAAA")
    assert (empty.rcode(), empty.answer, soa_only(empty)) == (dns.rcode.NOERROR, [], True)
    missing = ask("nobody.node.consul")
    assert (missing.rcode(), soa_only(missing)) == (dns.rcode.NXDOMAIN, True)


def test_addr_names_decode_hex_addresses() -> None:
    """``<hex>.addr.<dc>.consul`` is Consul's name for a bare address."""
    assert records(ask("0a000001.addr.dc1.consul").answer) == ["10.0.0.1"]
    assert records(ask("20010db8000000000000000000000005.addr.dc1.consul", "AAAA").answer) == [
        "2001:db8::5"
    ]
    assert ask("zz.addr.dc1.consul").rcode() == dns.rcode.NXDOMAIN


def test_reverse_names_of_node_addresses_point_at_the_node() -> None:
    """``dig -x 10.0.0.1``: the node's name, as Consul answers it, IPv4 and IPv6."""
    reply = ask("1.0.0.10.in-addr.arpa", "PTR")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.flags & dns.flags.AA
    assert records(reply.answer) == ["alpha.node.dc1.consul."]
    v6 = dns.reversename.from_address("2001:db8::9").to_text()
    assert records(ask(v6, "PTR").answer) == ["v6only.node.dc1.consul."]
    assert records(ask("1.0.0.10.IN-ADDR.ARPA", "ANY").answer) == ["alpha.node.dc1.consul."]
    # A known address asked for another type: no data, no error.
    other = ask("1.0.0.10.in-addr.arpa", "A")
    assert (other.rcode(), other.answer) == (dns.rcode.NOERROR, [])


def test_reverse_names_of_service_addresses_point_at_the_service() -> None:
    """An address only a service registered as its own gets the service's name; every
    node sharing an address is listed; an address nobody has is not ours: REFUSED."""
    assert records(ask("2.1.1.10.in-addr.arpa", "PTR").answer) == ["web.service.dc1.consul."]
    v6 = dns.reversename.from_address("2001:db8::5").to_text()
    assert records(ask(v6, "PTR").answer) == ["db.service.dc1.consul."]
    catalog = make_catalog()
    catalog.register(Node("alpha-twin", "10.0.0.1"))
    twins = ask("1.0.0.10.in-addr.arpa", "PTR", snap=snapshot(catalog))
    assert records(twins.answer) == ["alpha-twin.node.dc1.consul.", "alpha.node.dc1.consul."]
    for name in ("9.9.9.10.in-addr.arpa", "0.10.in-addr.arpa", "in-addr.arpa", "arpa"):
        reply = ask(name, "PTR")
        assert reply.rcode() == dns.rcode.REFUSED, name
        assert not reply.flags & dns.flags.AA
    config = Config(domain="internal", ttl=30)
    reply = ask("1.0.0.10.in-addr.arpa", "PTR", config=config)
    assert [(r.ttl, r.to_text().split()[-1]) for r in reply.answer] == [
        (30, "alpha.node.dc1.internal.")
    ]


def test_the_domain_itself_has_soa_and_ns() -> None:
    """SOA: ns./hostmaster., refresh/retry/expire/minimum 3600/600/86400/0; NS: ns.<domain>."""
    soa = ask("consul", "SOA")
    assert records(soa.answer) == [f"ns.consul. hostmaster.consul. {SERIAL} 3600 600 86400 0"]
    assert records(ask("consul", "NS").answer) == ["ns.consul."]
    assert len(ask("consul", "ANY").answer) == 2
    empty = ask("consul", "A")
    assert (empty.rcode(), soa_only(empty)) == (dns.rcode.NOERROR, True)


@pytest.mark.parametrize(
    "name",
    ["service.consul", "foo.consul", "a.b.c.consul", "web.service.dc1.extra.consul", "node.consul"],
)
def test_names_that_do_not_parse_are_nxdomain_with_the_soa(name: str) -> None:
    """Anything inside the domain that names nothing is NXDOMAIN with the SOA."""
    reply = ask(name)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert soa_only(reply)


def test_names_outside_the_domain_are_refused_without_authority() -> None:
    """example.com: REFUSED, AA clear, nothing in any section."""
    reply = ask("www.example.com")
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & dns.flags.AA
    assert reply.answer == reply.authority == []
    assert ask("notconsul").rcode() == dns.rcode.REFUSED


def test_zone_transfers_are_not_implemented() -> None:
    """AXFR and IXFR: NOTIMP."""
    assert ask("consul", "AXFR", udp=False).rcode() == dns.rcode.NOTIMP
    assert ask("consul", "IXFR", udp=False).rcode() == dns.rcode.NOTIMP


def test_other_classes_are_refused() -> None:
    """CHAOS queries (version.bind) are REFUSED."""
    query = dns.message.make_query("version.bind", "TXT", "CH")
    reply = dns.message.from_wire(answer(snapshot(), query.to_wire()) or b"")
    assert reply.rcode() == dns.rcode.REFUSED


# -- header, case, EDNS ------------------------------------------------------------


def test_aa_is_set_ra_is_clear_and_rd_is_echoed() -> None:
    """Authoritative, no recursion available, RD copied from the query either way."""
    with_rd = ask("web.service.consul")
    assert with_rd.flags & dns.flags.AA
    assert with_rd.flags & dns.flags.RD
    assert not with_rd.flags & dns.flags.RA
    without_rd = ask("web.service.consul", flags=0)
    assert not without_rd.flags & dns.flags.RD
    assert without_rd.flags & dns.flags.AA


def test_names_are_case_insensitive_and_the_question_is_echoed_as_sent() -> None:
    """``WeB.SeRvIcE.CoNsUl`` answers; the question keeps the query's spelling."""
    query = dns.message.make_query("WeB.SeRvIcE.CoNsUl", "A")
    raw = answer(snapshot(), query.to_wire())
    assert raw is not None
    reply = dns.message.from_wire(raw)
    assert records(reply.answer) == ["10.0.0.1", "10.1.1.2"]
    assert b"\x03WeB\x07SeRvIcE\x06CoNsUl\x00" in raw[12:48]
    assert reply.question[0].name.to_text() == "WeB.SeRvIcE.CoNsUl."


def test_edns_is_echoed_only_when_the_query_has_it() -> None:
    """A query with OPT gets an OPT (version 0) back; one without gets none."""
    with_edns = ask("web.service.consul", use_edns=0, payload=1232)
    assert with_edns.edns == 0
    assert with_edns.payload == 4096
    assert ask("web.service.consul").edns == -1


def test_edns_version_above_zero_is_badvers() -> None:
    """EDNS version 1: BADVERS (extended rcode 16) and an OPT of version 0."""
    reply = ask("web.service.consul", use_edns=1)
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0


def test_the_ttl_and_domain_come_from_the_config() -> None:
    """``--domain`` and ``--dns-ttl``: another domain's names, records with that TTL."""
    config = Config(domain="Service.Internal.", ttl=30)
    reply = ask("web.service.service.internal", "SRV", config=config)
    assert {r.ttl for r in reply.answer} == {30}
    assert "1 1 8080 alpha.node.dc1.service.internal." in records(reply.answer)
    assert ask("web.service.consul", config=config).rcode() == dns.rcode.REFUSED


def test_a_bad_domain_or_ttl_is_refused_with_the_field_named() -> None:
    """Config errors carry the field and value, and name the setting (never a CLI flag)."""
    with pytest.raises(InvalidConfig) as caught:
        Config(domain="a..b")
    assert (caught.value.field, caught.value.value) == ("domain", "a..b")
    assert str(caught.value) == "invalid DNS domain 'a..b': not a DNS name"
    with pytest.raises(InvalidConfig) as caught:
        Config(domain="bücher.example")
    assert str(caught.value) == "invalid DNS domain 'bücher.example': not an ASCII DNS name"
    with pytest.raises(InvalidConfig) as caught:
        Config(ttl=-1)
    assert caught.value.field == "ttl"
    assert str(caught.value) == "invalid TTL -1: must be between 0 and 2147483647"
    with pytest.raises(InvalidConfig) as caught:
        Config(soa_min_ttl=2**31)
    assert caught.value.field == "soa_min_ttl"
    assert (
        str(caught.value) == "invalid SOA minimum TTL 2147483648: must be between 0 and 2147483647"
    )
    with pytest.raises(InvalidConfig) as caught:
        Config(max_udp_size=100)
    assert caught.value.field == "max_udp_size"
    assert str(caught.value) == "invalid max UDP size 100: must be 512..65507"
    assert isinstance(caught.value, ValueError)


# -- size limits --------------------------------------------------------------------


def big_catalog(count: int = 40) -> Catalog:
    catalog = Catalog()
    for i in range(count):
        catalog.register(
            Node(f"big-node-{i:02d}", f"10.9.0.{i}"),
            [Service(f"big-node-{i:02d}", "big", "big", port=9000 + i)],
        )
    return catalog


def test_a_udp_reply_that_does_not_fit_512_bytes_is_trimmed_with_tc() -> None:
    """40 SRV records and their addresses: a UDP reply of at most 512 bytes, TC set."""
    query = dns.message.make_query("big.service.consul", "SRV")
    raw = answer(snapshot(big_catalog()), query.to_wire())
    assert raw is not None and len(raw) <= 512
    reply = dns.message.from_wire(raw)
    assert reply.flags & dns.flags.TC
    assert 0 < len(records(reply.answer)) < 40
    # Every SRV kept still has its target's address.
    assert len(records(reply.additional)) == len(records(reply.answer))


def test_the_edns_size_raises_the_udp_limit() -> None:
    """With EDNS 4096 the 40 A records fit; with 1232 the 40 SRV + A do not."""
    snap = snapshot(big_catalog())
    fits = ask("big.service.consul", snap=snap, use_edns=0, payload=4096)
    assert not fits.flags & dns.flags.TC
    assert len(records(fits.answer)) == 40
    query = dns.message.make_query("big.service.consul", "SRV", use_edns=0, payload=1232)
    raw = answer(snap, query.to_wire())
    assert raw is not None and len(raw) <= 1232
    assert dns.message.from_wire(raw).flags & dns.flags.TC


def test_tcp_replies_carry_everything() -> None:
    """Over TCP the 40 SRV records and 40 addresses come whole, without TC."""
    reply = ask("big.service.consul", "SRV", snap=snapshot(big_catalog()), udp=False)
    assert not reply.flags & dns.flags.TC
    assert len(records(reply.answer)) == 40
    assert len(records(reply.additional)) == 40


# -- round robin and caching --------------------------------------------------------


def test_the_responder_rotates_among_shuffled_orders_with_each_instance_first() -> None:
    """Successive answers come in different orders; every instance leads once per round."""
    responder = Responder(Config(), lambda: snapshot(big_catalog(5)), rng=random.Random(1))
    wire = dns.message.make_query("big.service.consul", "A").to_wire()
    orders = []
    for _ in range(10):
        raw = responder.respond(wire)
        assert raw is not None
        rrset = dns.message.from_wire(raw).answer[0]
        orders.append(tuple(rd.to_text() for rd in rrset))
    assert len(set(orders)) == 5
    assert {order[0] for order in orders[:5]} == {f"10.9.0.{i}" for i in range(5)}
    assert orders[5:] == orders[:5]


def test_once_every_order_is_built_the_query_is_served_from_the_byte_cache() -> None:
    """The UDP cache maps the query after its ID to replies after their ID."""
    responder = Responder(Config(), lambda: snapshot(big_catalog(3)), rng=random.Random(2))
    wire = dns.message.make_query("big.service.consul", "A").to_wire()
    served = [responder.respond(wire) for _ in range(3)]
    rotor = responder.udp[wire[2:]]
    cached = [wire[:2] + next(rotor) for _ in range(3)]
    assert sorted(cached, key=bytes) == sorted(served, key=bytes)  # type: ignore[arg-type]
    assert responder.tcp == {}


def test_queries_with_edns_options_are_answered_but_not_cached_by_bytes() -> None:
    """dig's cookie differs per query: such queries do not fill the byte cache."""
    responder = Responder(Config(), lambda: snapshot(), rng=random.Random(3))
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"12345678")
    wire = dns.message.make_query("alpha.node.consul", "A", use_edns=0, options=[cookie])
    for _ in range(3):
        assert responder.respond(wire.to_wire()) is not None
    assert responder.udp == {}


def test_the_caches_stay_within_their_byte_budget_under_a_flood_of_spellings() -> None:
    """Every case spelling of a name is its own byte-cache entry: the budget still holds."""
    budget = 60_000
    responder = Responder(Config(), lambda: snapshot(big_catalog(10)), max_bytes=budget)
    rng = random.Random(4)
    for _ in range(400):
        name = "".join(c.upper() if rng.random() < 0.5 else c for c in "big.service.consul")
        wire = dns.message.make_query(name, "SRV").to_wire()
        for _ in range(3):
            raw = responder.respond(wire, udp=False)
            assert raw is not None
            assert len(records(dns.message.from_wire(raw).answer)) == 10
            assert responder.cached_bytes <= budget
    assert 0 < len(responder.tcp) < 400


def test_invalidating_the_responder_shows_a_check_gone_critical_in_the_next_answer() -> None:
    """After a catalog change and invalidate(), the next answer is computed from the new state."""
    catalog = make_catalog()
    responder = Responder(Config(), lambda: take_snapshot(catalog, SERIAL))
    wire = dns.message.make_query("web.service.consul", "A").to_wire()
    for _ in range(4):
        responder.respond(wire)
    assert wire[2:] in responder.udp
    changes: list[object] = []
    catalog.subscribe(changes.append)
    catalog.register_check(
        Check("alpha", "service:web-1", "c", status=CRITICAL, service_id="web-1")
    )
    assert affects_dns(changes[0])  # type: ignore[arg-type]
    responder.invalidate()
    raw = responder.respond(wire)
    assert raw is not None
    assert records(dns.message.from_wire(raw).answer) == ["10.1.1.2"]


def test_only_changes_that_can_change_an_answer_affect_dns() -> None:
    """KV writes and check output changes do not clear the cache; status changes do."""
    catalog = make_catalog()
    seen: list[list[object]] = []
    catalog.subscribe(seen.append)  # type: ignore[arg-type]
    catalog.kv_put("k", b"v")
    catalog.update_check("beta", "service:web-2", WARNING, "new output")
    catalog.update_check("beta", "service:web-2", PASSING, "new output")
    flags = [affects_dns(batch) for batch in seen]  # type: ignore[arg-type]
    assert flags == [False, False, True]
    assert isinstance(seen[0][0].value, KVEntry)  # type: ignore[attr-defined]


# -- malformed input ------------------------------------------------------------------


def raw_answer(packet: bytes) -> bytes | None:
    return answer(snapshot(), packet)


def header(
    ident: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!6H", ident, flags, qd, an, 0, ar)


QUESTION = b"\x03web\x07service\x06consul\x00\x00\x01\x00\x01"


def rcode_of(reply: bytes | None) -> int:
    assert reply is not None
    flags: int = struct.unpack("!H", reply[2:4])[0]
    return flags & 0xF


def test_packets_without_a_readable_header_get_no_reply() -> None:
    """Fewer than 12 bytes: silence."""
    for length in range(12):
        assert raw_answer(b"\xab" * length) is None


def test_replies_are_never_answered() -> None:
    """A packet with QR set is itself a reply: silence (no reflection loops)."""
    assert raw_answer(header(flags=0x8000) + QUESTION) is None


def test_other_opcodes_get_notimp_with_the_id() -> None:
    """NOTIFY, UPDATE and STATUS: NOTIMP, same ID, opcode echoed."""
    for opcode in (dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE):
        reply = raw_answer(header(flags=opcode << 11) + QUESTION)
        assert reply is not None and reply[:2] == b"\x12\x34"
        assert rcode_of(reply) == dns.rcode.NOTIMP
        assert (struct.unpack("!H", reply[2:4])[0] >> 11) & 0xF == opcode


@pytest.mark.parametrize(
    ("packet", "why"),
    [
        (header(qd=0), "zero questions"),
        (header(qd=2) + QUESTION + QUESTION, "two questions"),
        (header(an=1) + QUESTION, "an answer in a query"),
        (header() + b"\xc0\x0c\x00\x01\x00\x01", "a compression loop in the question"),
        (header() + b"\x03web\x07serv", "a truncated name"),
        (header() + b"\x03web\x00\x00", "no type and class"),
        (header() + QUESTION + b"junk", "trailing bytes"),
        (header(ar=1) + QUESTION + b"\x00\x00\x29", "a truncated OPT"),
        (header(ar=2) + QUESTION + (b"\x00\x00\x29\x10\x00" + b"\x00" * 6) * 2, "two OPTs"),
        (
            header() + b"\x3f" + b"a" * 63 + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",
            "a name over 255",
        ),
    ],
)
def test_malformed_queries_with_a_readable_header_get_formerr(packet: bytes, why: str) -> None:
    """FORMERR with the query's ID, and nothing else."""
    reply = raw_answer(packet)
    assert reply is not None, why
    assert reply[:2] == packet[:2]
    assert rcode_of(reply) == dns.rcode.FORMERR, why


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_get_either_silence_or_a_reply_with_their_id(packet: bytes) -> None:
    """Arbitrary input never raises; a reply always carries the query's ID and QR."""
    reply = raw_answer(packet)
    if reply is not None:
        assert reply[:2] == packet[:2]
        assert reply[2] & 0x80
        dns.message.from_wire(reply, ignore_trailing=False)


def _query_wire(name: str, rdtype: str = "A", payload: int | None = None) -> bytes:
    query = dns.message.make_query(name, rdtype, use_edns=0 if payload else None, payload=payload)
    query.id = 7
    return query.to_wire()


#: Floods of queries a UDP client can send, each query a new cache entry: unknown
#: service names, refused names, many labels, every EDNS size, every spelling of a big
#: answer (its shuffled orders built as they are asked for), reverse lookups.
FLOODS: dict[str, tuple[Callable[[int], bytes], int, int]] = {
    "unknown service": (lambda i: _query_wire(f"x{i}abcdefgh.service.consul"), 2000, 1),
    "unknown, EDNS": (lambda i: _query_wire(f"x{i}.service.consul", payload=1232), 2000, 1),
    "refused": (lambda i: _query_wire(f"host{i}.example.com"), 2000, 1),
    "many labels": (lambda i: _query_wire(f"a.b.c.d.e.f.g{i}.node.dc1.consul"), 2000, 1),
    "EDNS sizes": (lambda i: _query_wire("alpha.node.consul", payload=600 + i), 2000, 1),
    "big answer": (lambda i: _query_wire("big.service.consul", payload=600 + i), 200, 12),
    "reverse": (
        lambda i: _query_wire(f"{i & 255}.{(i >> 8) & 255}.0.10.in-addr.arpa", "PTR"),
        2000,
        1,
    ),
}


@pytest.mark.parametrize("flood", sorted(FLOODS))
def test_the_cache_charges_what_its_entries_really_cost(flood: str) -> None:
    """The byte budget is the memory the caches hold: what an entry is charged is within
    a factor of what tracemalloc sees it allocate (it was a fifth of it, so a 64 MiB
    budget let unique names take ~330 MB)."""
    make, count, repeat = FLOODS[flood]
    responder = Responder(Config(), lambda: snapshot(big_catalog(10)), max_bytes=2**40)
    for i in range(1, 40):  # warm up: the snapshot, dnslib's and the rng's own state
        for _ in range(repeat):
            responder.respond(make(-i), udp=True)
    packets = [make(i) for i in range(count)]
    gc.collect()
    tracemalloc.start()
    try:
        traced_before, charged_before = tracemalloc.get_traced_memory()[0], responder.cached_bytes
        for packet in packets:
            for _ in range(repeat):
                responder.respond(packet, udp=True)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced_before
    finally:
        tracemalloc.stop()
    charged = responder.cached_bytes - charged_before
    assert 0.6 * traced <= charged <= 1.6 * traced, (flood, traced / count, charged / count)
