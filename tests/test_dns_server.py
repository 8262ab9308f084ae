"""The real DNSService on a loopback port, asked by the real ``dig`` and by dnspython.

The server runs in a subprocess (this file, run as a program): a real reactor with
its own catalog, changed through JSON lines on its stdin, each acknowledged only
after the catalog applied it, so "the very next answer" can be tested exactly.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

if TYPE_CHECKING:  # this file also runs as a script (serve), outside the package
    from .daemon import DaemonFactory

SRC = Path(__file__).resolve().parent.parent / "src"
HOST = "127.0.0.1"
IDLE_TIMEOUT = 1.0


# ---------------------------------------------------------------------------
# The server program (run in the subprocess)


def serve(idle_timeout: float) -> None:
    """Run a DNSService on 127.0.0.1 port 0; apply catalog commands read from stdin."""
    from twisted.internet import reactor, stdio
    from twisted.protocols.basic import LineReceiver

    from homeport.catalog.model import Catalog, Check, Node, Service, Weights
    from homeport.dns.server import DNSService, Limits

    catalog = Catalog()
    service = DNSService(
        catalog, HOST, 0, reactor=reactor, limits=Limits(idle_timeout=idle_timeout)
    )

    def apply(command: dict[str, Any]) -> None:
        op = command["op"]
        if op == "register":
            services = [
                Service(
                    command["node"],
                    s["id"],
                    s["name"],
                    tuple(s.get("tags", ())),
                    address=s.get("address", ""),
                    port=s.get("port", 0),
                    weights=Weights(*s.get("weights", (1, 1))),
                )
                for s in command.get("services", ())
            ]
            checks = [
                Check(
                    command["node"],
                    c["id"],
                    c["id"],
                    status=c["status"],
                    service_id=c.get("service_id", ""),
                )
                for c in command.get("checks", ())
            ]
            node = Node(command["node"], command["address"], meta=command.get("meta", {}))
            catalog.register(node, services, checks)
        elif op == "status":
            catalog.update_check(command["node"], command["check"], command["status"], "")
        elif op == "deregister":
            catalog.deregister_service(command["node"], command["id"])
        else:
            raise ValueError(op)

    class Commands(LineReceiver):
        delimiter = b"\n"

        def connectionMade(self) -> None:
            LineReceiver.sendLine(self, f"PORT {service.port}".encode())

        def lineReceived(self, line: bytes) -> None:
            try:
                apply(json.loads(line))
            except Exception as error:  # noqa: BLE001 - any failure goes back to the test
                LineReceiver.sendLine(self, f"error {error!r}".encode())
            else:
                LineReceiver.sendLine(self, b"ok")

        def connectionLost(self, reason: object = None) -> None:
            service.stopService().addBoth(lambda _: reactor.stop())

    service.startService()
    stdio.StandardIO(Commands())
    reactor.run()


# ---------------------------------------------------------------------------
# The test side


class DNSServer:
    """The subprocess: start, change its catalog, stop (no process is left behind)."""

    def __init__(self, log: Path, idle_timeout: float = IDLE_TIMEOUT) -> None:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
        )
        self.log = log
        with open(log, "wb") as errors:
            self.process = subprocess.Popen(
                [sys.executable, __file__, str(idle_timeout)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=env,
            )
        line = self._line(timeout=30)
        assert line.startswith("PORT "), line
        self.port = int(line.split()[1])

    def _line(self, timeout: float = 10.0) -> str:
        assert self.process.stdout is not None
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"no answer from the DNS server:\n{self.log.read_text()}")
        line = self.process.stdout.readline().decode().strip()
        if not line:
            raise RuntimeError(f"the DNS server exited:\n{self.log.read_text()}")
        return line

    def command(self, **command: Any) -> None:
        """Apply one catalog change; returns once the server has applied it."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        self.process.stdin.flush()
        line = self._line()
        assert line == "ok", line

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def populate(server: DNSServer) -> None:
    """The catalog every test here starts from."""
    server.command(
        op="register",
        node="alpha",
        address="10.0.0.1",
        meta={"rack": "r1"},
        services=[
            {"id": "web-1", "name": "web", "tags": ["rails"], "port": 8080},
            {"id": "db", "name": "db", "address": "2001:db8::5", "port": 5432},
        ],
    )
    server.command(
        op="register",
        node="beta",
        address="10.0.0.2",
        services=[
            {
                "id": "web-2",
                "name": "web",
                "tags": ["v2"],
                "address": "10.1.1.2",
                "port": 8081,
                "weights": [10, 3],
            }
        ],
        checks=[{"id": "service:web-2", "service_id": "web-2", "status": "warning"}],
    )
    server.command(
        op="register",
        node="gamma",
        address="10.0.0.3",
        services=[{"id": "web-3", "name": "web", "port": 8082}],
        checks=[{"id": "service:web-3", "service_id": "web-3", "status": "critical"}],
    )
    server.command(op="register", node="v6only", address="2001:db8::9")
    for i in range(40):
        server.command(
            op="register",
            node=f"big-{i:02d}",
            address=f"10.9.0.{i}",
            services=[{"id": "big", "name": "big", "port": 9000 + i}],
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DNSServer]:
    running = DNSServer(tmp_path_factory.mktemp("dns") / "server.log")
    try:
        populate(running)
        yield running
    finally:
        running.stop()


def dig(server: DNSServer, *args: str) -> str:
    command = ["dig", f"@{HOST}", "-p", str(server.port), "+time=3", "+tries=2", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout


def short(server: DNSServer, *args: str) -> list[str]:
    return sorted(line for line in dig(server, "+short", *args).splitlines() if line)


def query(
    server: DNSServer, name: str, rdtype: str = "A", tcp: bool = False, **options: Any
) -> dns.message.Message:
    message = dns.message.make_query(name, rdtype, **options)
    if tcp:
        return dns.query.tcp(message, HOST, port=server.port, timeout=5)
    return dns.query.udp(message, HOST, port=server.port, timeout=5)


def texts(message: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(rd.to_text() for rrset in getattr(message, section) for rd in rrset)


# -- every name form, over UDP and TCP -------------------------------------------------

NAME_FORMS = [
    ("web.service.consul", "A", ["10.0.0.1", "10.1.1.2"]),
    ("web.service.dc1.consul", "A", ["10.0.0.1", "10.1.1.2"]),
    ("rails.web.service.consul", "A", ["10.0.0.1"]),
    ("v2.web.service.dc1.consul", "A", ["10.1.1.2"]),
    ("db.service.consul", "AAAA", ["2001:db8::5"]),
    ("db.service.consul", "ANY", ["2001:db8::5"]),
    (
        "web.service.consul",
        "SRV",
        ["1 1 8080 alpha.node.dc1.consul.", "1 3 8081 beta.node.dc1.consul."],
    ),
    ("_web._rails.service.consul", "SRV", ["1 1 8080 alpha.node.dc1.consul."]),
    (
        "_web._tcp.service.consul",
        "SRV",
        ["1 1 8080 alpha.node.dc1.consul.", "1 3 8081 beta.node.dc1.consul."],
    ),
    (
        "_web._tcp.consul",
        "SRV",
        ["1 1 8080 alpha.node.dc1.consul.", "1 3 8081 beta.node.dc1.consul."],
    ),
    ("alpha.node.consul", "A", ["10.0.0.1"]),
    ("alpha.node.dc1.consul", "A", ["10.0.0.1"]),
    ("alpha.node.consul", "TXT", ['"rack=r1"']),
    ("v6only.node.consul", "AAAA", ["2001:db8::9"]),
    ("WeB.SeRvIcE.CoNsUl", "A", ["10.0.0.1", "10.1.1.2"]),
    ("consul", "NS", ["ns.consul."]),
]


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
@pytest.mark.parametrize(("name", "rdtype", "expected"), NAME_FORMS)
def test_dig_gets_each_name_form_over_udp_and_tcp(
    server: DNSServer, transport: str, name: str, rdtype: str, expected: list[str]
) -> None:
    """``dig @127.0.0.1 -p PORT <name> <type>`` prints the expected records either way."""
    assert short(server, transport, name, rdtype) == expected


def test_dig_shows_aa_set_ra_clear_rd_echoed_and_edns_echoed(server: DNSServer) -> None:
    """dig's header line: ``qr aa rd`` (no ra), ``qr aa`` with +norec; OPT only when sent."""
    output = dig(server, "web.service.consul")
    assert "flags: qr aa rd;" in output
    assert "EDNS: version: 0" in output
    plain = dig(server, "+norec", "+noedns", "web.service.consul")
    assert "flags: qr aa;" in plain
    assert "OPT PSEUDOSECTION" not in plain


def test_srv_answers_carry_the_targets_addresses_in_additional(server: DNSServer) -> None:
    """dnspython sees SRV records and an A record per target in ADDITIONAL."""
    for tcp in (False, True):
        reply = query(server, "web.service.consul", "SRV", tcp=tcp)
        additional = {(r.name.to_text(), rd.to_text()) for r in reply.additional for rd in r}
        assert additional == {
            ("alpha.node.dc1.consul.", "10.0.0.1"),
            ("beta.node.dc1.consul.", "10.1.1.2"),
        }


def test_the_domain_has_an_soa_with_consuls_timers(server: DNSServer) -> None:
    """SOA: ns.consul. hostmaster.consul. <serial> 3600 600 86400 0."""
    (soa,) = short(server, "consul", "SOA")
    mname, rname, serial, *timers = soa.split()
    assert (mname, rname, timers) == (
        "ns.consul.",
        "hostmaster.consul.",
        ["3600", "600", "86400", "0"],
    )
    assert abs(int(serial) - time.time()) < 3600


def test_an_unknown_name_is_nxdomain_with_the_soa_in_authority(server: DNSServer) -> None:
    """dig shows NXDOMAIN and one SOA in AUTHORITY; so does dnspython over TCP."""
    output = dig(server, "nope.service.consul")
    assert "status: NXDOMAIN" in output
    assert "AUTHORITY: 1" in output
    reply = query(server, "nope.service.consul", tcp=True)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert [r.rdtype for r in reply.authority] == [dns.rdatatype.SOA]


def test_a_known_name_without_that_type_is_noerror_empty_with_the_soa(server: DNSServer) -> None:
    """AAAA of an IPv4 node: NOERROR, no answer, the SOA."""
    reply = query(server, "alpha.node.consul", "AAAA")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert [r.rdtype for r in reply.authority] == [dns.rdatatype.SOA]


def test_names_outside_the_domain_are_refused(server: DNSServer) -> None:
    """dig example.com: REFUSED."""
    assert "status: REFUSED" in dig(server, "www.example.com")


def test_zone_transfers_are_not_implemented(server: DNSServer) -> None:
    """AXFR over TCP: NOTIMP (dig reports the transfer failed)."""
    assert "Transfer failed" in dig(server, "consul", "AXFR")
    reply = query(server, "consul", "AXFR", tcp=True)
    assert reply.rcode() == dns.rcode.NOTIMP


def test_an_answer_too_big_for_udp_is_truncated_and_dig_retries_over_tcp(
    server: DNSServer,
) -> None:
    """40 instances: UDP sets TC, dig says it retries over TCP and then shows all 40."""
    output = dig(server, "+noedns", "big.service.consul")
    assert "Truncated, retrying in TCP mode" in output
    assert "ANSWER: 40," in output
    srv = dig(server, "big.service.consul", "SRV")  # dig's EDNS 1232 is not enough either
    assert "Truncated, retrying in TCP mode" in srv
    assert "ANSWER: 40, AUTHORITY: 0, ADDITIONAL: 41" in srv  # 40 addresses + OPT
    truncated = query(server, "big.service.consul")
    assert truncated.flags & dns.flags.TC
    assert 0 < len(texts(truncated)) < 40
    assert len(texts(query(server, "big.service.consul", tcp=True))) == 40


def test_successive_answers_come_in_different_orders(server: DNSServer) -> None:
    """Round robin: many queries see more than one order, and many first records."""
    orders = set()
    for _ in range(40):
        reply = query(server, "big.service.consul", use_edns=0, payload=4096)
        orders.add(tuple(rd.to_text() for rd in reply.answer[0]))
    assert len(orders) > 10
    assert len({order[0] for order in orders}) > 10
    assert all(sorted(order) == sorted(next(iter(orders))) for order in orders)
    dig_orders = {tuple(dig(server, "+short", "web.service.consul").split()) for _ in range(8)}
    assert len(dig_orders) == 2


def test_a_check_going_critical_removes_the_instance_from_the_very_next_answer(
    server: DNSServer,
) -> None:
    """Warm the cache, fail a check, and the next query (UDP and TCP) no longer has it."""
    for name, address in (("flap-a", "10.5.0.1"), ("flap-b", "10.5.0.2")):
        server.command(
            op="register",
            node=name,
            address=address,
            services=[{"id": "flappy", "name": "flappy", "port": 1}],
            checks=[{"id": "service:flappy", "service_id": "flappy", "status": "passing"}],
        )
    for _ in range(5):
        assert texts(query(server, "flappy.service.consul")) == ["10.5.0.1", "10.5.0.2"]
        assert texts(query(server, "flappy.service.consul", tcp=True)) == ["10.5.0.1", "10.5.0.2"]
    server.command(op="status", node="flap-a", check="service:flappy", status="critical")
    assert texts(query(server, "flappy.service.consul")) == ["10.5.0.2"]
    assert texts(query(server, "flappy.service.consul", tcp=True)) == ["10.5.0.2"]
    assert short(server, "flappy.service.consul") == ["10.5.0.2"]
    server.command(op="status", node="flap-a", check="service:flappy", status="warning")
    assert texts(query(server, "flappy.service.consul")) == ["10.5.0.1", "10.5.0.2"]
    server.command(op="deregister", node="flap-a", id="flappy")
    server.command(op="deregister", node="flap-b", id="flappy")
    assert query(server, "flappy.service.consul").rcode() == dns.rcode.NXDOMAIN


# -- bad input on the real sockets ------------------------------------------------------


def udp_exchange(server: DNSServer, packet: bytes, timeout: float = 0.5) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (HOST, server.port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def test_udp_garbage_gets_silence_or_formerr_and_the_server_keeps_answering(
    server: DNSServer,
) -> None:
    """No header: no reply. A header with zero questions: FORMERR. Then normal service."""
    assert udp_exchange(server, b"\x01\x02\x03") is None
    assert udp_exchange(server, b"") is None
    reply = udp_exchange(server, struct.pack("!6H", 0xBEEF, 0x0100, 0, 0, 0, 0))
    assert reply is not None and reply[:2] == b"\xbe\xef"
    assert reply[3] & 0xF == dns.rcode.FORMERR
    notify = udp_exchange(server, struct.pack("!6H", 0xCAFE, 4 << 11, 0, 0, 0, 0))
    assert notify is not None and notify[3] & 0xF == dns.rcode.NOTIMP
    assert short(server, "alpha.node.consul") == ["10.0.0.1"]


def tcp_connect(server: DNSServer) -> socket.socket:
    sock = socket.create_connection((HOST, server.port), timeout=5)
    return sock


def read_frame(sock: socket.socket) -> bytes:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    (length,) = struct.unpack("!H", exactly(2))
    return exactly(length)


def frame(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def test_tcp_answers_pipelined_queries_in_order(server: DNSServer) -> None:
    """Two queries in one write get two framed replies, in order."""
    first = dns.message.make_query("alpha.node.consul", "A")
    second = dns.message.make_query("beta.node.consul", "A")
    with tcp_connect(server) as sock:
        sock.sendall(frame(first.to_wire()) + frame(second.to_wire()))
        replies = [dns.message.from_wire(read_frame(sock)) for _ in range(2)]
    assert [r.id for r in replies] == [first.id, second.id]
    assert [texts(r) for r in replies] == [["10.0.0.1"], ["10.0.0.2"]]


def closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


def test_an_oversized_tcp_length_prefix_closes_the_connection(server: DNSServer) -> None:
    """A prefix beyond any query's size is not waited for: the server hangs up."""
    with tcp_connect(server) as sock:
        sock.sendall(b"\xff\xff" + b"x" * 100)
        assert closed_within(sock, 2.0)


def test_half_open_and_dribbling_tcp_clients_are_dropped_while_others_are_served(
    server: DNSServer,
) -> None:
    """Idle and half-sent connections close after the idle timeout; others go on."""
    silent = tcp_connect(server)
    partial = tcp_connect(server)
    partial.sendall(b"\x00\x20\x12")  # a 32-byte query, 1 byte of it
    try:
        assert short(server, "+tcp", "alpha.node.consul") == ["10.0.0.1"]
        assert closed_within(silent, IDLE_TIMEOUT * 5)
        assert closed_within(partial, IDLE_TIMEOUT * 5)
    finally:
        silent.close()
        partial.close()
    assert short(server, "+tcp", "alpha.node.consul") == ["10.0.0.1"]


def test_tcp_garbage_with_a_header_gets_formerr_and_short_frames_are_skipped(
    server: DNSServer,
) -> None:
    """A framed zero-question header: FORMERR; a 3-byte frame: skipped; then an answer."""
    wanted = dns.message.make_query("alpha.node.consul", "A")
    with tcp_connect(server) as sock:
        sock.sendall(
            frame(struct.pack("!6H", 0x0101, 0x0100, 0, 0, 0, 0))
            + frame(b"abc")
            + frame(wanted.to_wire())
        )
        formerr = read_frame(sock)
        assert formerr[:2] == b"\x01\x01" and formerr[3] & 0xF == dns.rcode.FORMERR
        assert dns.message.from_wire(read_frame(sock)).id == wanted.id


# -- the daemon -------------------------------------------------------------------------


def test_the_daemon_serves_dns_for_services_registered_over_http(
    daemon_factory: Any,
) -> None:
    """``twist homeport --dns 127.0.0.1:0``: register over HTTP, dig finds it at once."""
    daemon = daemon_factory(["--dns", "127.0.0.1:0"]).start()
    deadline = time.monotonic() + 10
    while "homeport-port dns " not in daemon.output() and time.monotonic() < deadline:
        time.sleep(0.05)  # the ports are logged as separate lines: http may come first
    port = daemon.output().split("homeport-port dns ", 1)[1].split()[0]
    status, _, _ = daemon.request(
        "PUT", "/v1/agent/service/register", {"Name": "api", "Port": 7000, "Address": "10.7.0.1"}
    )
    assert status == 200

    def ask(*args: str) -> list[str]:
        command = ["dig", f"@{HOST}", "-p", port, "+short", "+time=3", "+tries=2", *args]
        output = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        return sorted(output.stdout.split("\n"))[1:]

    assert ask("api.service.consul") == ["10.7.0.1"]
    assert ask("api.service.consul", "SRV") == ["1 1 7000 testnode.node.dc1.consul."]
    assert ask("consul.service.consul") == ["127.0.0.1"]
    assert ask("+tcp", "testnode.node.consul") == ["127.0.0.1"]
    status, _, _ = daemon.request("PUT", "/v1/agent/service/deregister/api")
    assert status == 200
    assert (
        "status: NXDOMAIN"
        in subprocess.run(
            ["dig", f"@{HOST}", "-p", port, "api.service.consul"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


if __name__ == "__main__":
    serve(float(sys.argv[1]))


def test_queries_and_cache_hits_are_counted_on_metrics(daemon_factory: DaemonFactory) -> None:
    """``homeport_dns_queries_total`` counts every query, UDP and TCP, cache hit or not."""
    import re

    daemon = daemon_factory(["--dns", "127.0.0.1:0"]).start()
    assert daemon.dns_port is not None
    dig = ["dig", "@127.0.0.1", "-p", str(daemon.dns_port), "+nocookie"]
    for transport in ("+notcp", "+notcp", "+tcp", "+tcp"):
        subprocess.run(
            [*dig, transport, "consul.service.consul"],
            capture_output=True,
            check=True,
            timeout=30,
        )
    body = daemon.request("GET", "/metrics")[2].decode()
    queries = re.search(r"^homeport_dns_queries_total (\S+)$", body, re.M)
    hits = re.search(r"^homeport_dns_cache_hits_total (\S+)$", body, re.M)
    assert queries and hits, body
    assert float(queries.group(1)) == 4
    assert float(hits.group(1)) >= 2  # the second of each pair came from the cache
