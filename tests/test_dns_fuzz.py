"""A million mutated packets at the real DNS server, then it must still answer right.

A seeded mutation loop (reproducible: the seed is fixed, and printed) turns valid
queries into bit flips, bad counts, compression loops, splices, truncations and plain
noise, and sends them over UDP in windows: after each window a query on a second
socket comes back only once the server has read everything before it, so packets are
not simply lost in a full socket buffer (the kernel's drop counter is subtracted).
Meanwhile a thread throws TCP garbage, oversized length prefixes, mutated frames and
half-open connections.  Afterwards the server must be alive, must not have logged a
traceback, must have closed the idle connections, and must answer exactly as before.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.message
import pytest

from .test_dns_server import (
    HOST,
    IDLE_TIMEOUT,
    DNSServer,
    closed_within,
    frame,
    populate,
    query,
    read_frame,
    texts,
)

SEED = 20261122
PACKETS = int(os.environ.get("HOMEPORT_DNS_FUZZ_PACKETS", "1000000"))
WINDOW = 96


def corpus() -> list[bytes]:
    """Valid queries of every shape the server knows, to mutate."""
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    names = [
        "web.service.consul",
        "rails.web.service.consul",
        "_web._tcp.service.consul",
        "big.service.consul",
        "alpha.node.dc1.consul",
        "db.service.consul",
        "0a000001.addr.dc1.consul",
        "consul",
        "nope.service.consul",
        "www.example.com",
    ]
    packets = []
    for name in names:
        for rdtype in ("A", "AAAA", "SRV", "ANY", "TXT", "SOA", "AXFR"):
            packets.append(dns.message.make_query(name, rdtype).to_wire())
        packets.append(dns.message.make_query(name, "A", use_edns=0, payload=4096).to_wire())
        packets.append(dns.message.make_query(name, "SRV", use_edns=0, options=[cookie]).to_wire())
    return packets


INTERESTING = (0x00, 0x01, 0x3F, 0x40, 0x7F, 0x80, 0xC0, 0xC0, 0xFF)


class Mutator:
    """One mutated packet per call: a seed query bent by one to three operations."""

    def __init__(self, rng: random.Random, seeds: list[bytes]) -> None:
        self.rng = rng
        self.randrange = rng.randrange
        self.choice = rng.choice
        self.seeds = seeds
        self.operations: list[Callable[[bytearray], None]] = [
            *(self.flip, self.flip, self.set_byte, self.set_byte, self.insert, self.delete),
            *(self.truncate, self.duplicate, self.counts, self.pointer, self.pointer),
            *(self.opcode, self.splice),
        ]

    def __call__(self) -> bytes:
        randrange, choice = self.randrange, self.choice
        roll = randrange(100)
        if roll < 3:
            return self.rng.randbytes(randrange(0, 600))
        packet = bytearray(choice(self.seeds))
        for _ in range(randrange(1, 4)):
            if not packet:
                break
            choice(self.operations)(packet)
        return bytes(packet)

    def flip(self, p: bytearray) -> None:
        randrange = self.randrange
        for _ in range(randrange(1, 9)):
            p[randrange(len(p))] ^= 1 << randrange(8)

    def set_byte(self, p: bytearray) -> None:
        randrange = self.randrange
        p[randrange(len(p))] = self.choice(INTERESTING) if randrange(2) else randrange(256)

    def insert(self, p: bytearray) -> None:
        at = self.randrange(len(p) + 1)
        p[at:at] = self.rng.randbytes(self.randrange(1, 40))

    def delete(self, p: bytearray) -> None:
        at = self.randrange(len(p))
        del p[at : at + self.randrange(1, 20)]

    def truncate(self, p: bytearray) -> None:
        del p[self.randrange(len(p)) :]

    def duplicate(self, p: bytearray) -> None:
        at = self.randrange(len(p))
        piece = p[at : at + self.randrange(1, 60)]
        p[at:at] = piece * self.randrange(1, 4)

    def counts(self, p: bytearray) -> None:
        randrange = self.randrange
        if len(p) >= 12:
            at = 4 + 2 * randrange(4)
            count = self.choice((0, 1, 2, 3, 255, 0xFFFF, randrange(65536)))
            p[at : at + 2] = struct.pack("!H", count)

    def pointer(self, p: bytearray) -> None:
        # A compression pointer, often at the question (a loop onto itself) or onward.
        randrange = self.randrange
        at = 12 if randrange(2) else randrange(len(p))
        target = self.choice((12, at, at + 2, randrange(len(p) + 4)))
        p[at : at + 2] = struct.pack("!H", 0xC000 | (target & 0x3FFF))

    def opcode(self, p: bytearray) -> None:
        if len(p) >= 3:
            p[2] = self.randrange(256)

    def splice(self, p: bytearray) -> None:
        other = self.choice(self.seeds)
        at = self.randrange(len(p))
        p[at:] = other[self.randrange(len(other)) :]


def udp_drops() -> int:
    """The kernel's count of UDP packets dropped for full receive buffers (all sockets)."""
    try:
        lines = Path("/proc/net/snmp").read_text().splitlines()
    except OSError:
        return 0
    rows = [line.split() for line in lines if line.startswith("Udp:")]
    header, values = rows[0], rows[1]
    return int(values[header.index("RcvbufErrors")])


def tcp_abuse(server: DNSServer, rng: random.Random, stop: threading.Event) -> dict[str, int]:
    """Garbage, oversized prefixes and mutated frames over TCP until *stop* is set."""
    seeds = corpus()
    mutate = Mutator(rng, seeds)
    done = {"frames": 0, "connections": 0, "answered": 0}
    good = dns.message.make_query("alpha.node.consul", "A")
    while not stop.is_set():
        kind = rng.randrange(4)
        try:
            with socket.create_connection((HOST, server.port), timeout=5) as sock:
                done["connections"] += 1
                if kind == 0:  # noise, framed or not
                    sock.sendall(rng.randbytes(rng.randrange(1, 3000)))
                elif kind == 1:  # an oversized prefix, then a trickle
                    sock.sendall(struct.pack("!H", rng.randrange(4097, 65536)) + b"\x00" * 50)
                    closed_within(sock, 2.0)
                else:  # mutated frames, then a good query that must be answered
                    frames = [mutate() for _ in range(200)]
                    sock.sendall(b"".join(frame(f) for f in frames if len(f) < 4096))
                    sock.sendall(frame(good.to_wire()))
                    done["frames"] += len(frames) + 1
                    while True:
                        reply = read_frame(sock)
                        if reply[:2] == good.to_wire()[:2]:
                            message = dns.message.from_wire(reply)
                            if message.question == good.question:
                                assert texts(message) == ["10.0.0.1"]
                                done["answered"] += 1
                                break
        except (ConnectionError, TimeoutError):
            pass
    return done


@pytest.fixture
def server(tmp_path: Path) -> Iterator[DNSServer]:
    running = DNSServer(tmp_path / "server.log")
    try:
        populate(running)
        yield running
    finally:
        running.stop()


def healthy(server: DNSServer) -> None:
    """The answers a fresh server gives, over UDP and TCP."""
    for tcp in (False, True):
        assert texts(query(server, "web.service.consul", tcp=tcp)) == ["10.0.0.1", "10.1.1.2"]
        assert texts(query(server, "web.service.consul", "SRV", tcp=tcp)) == [
            "1 1 8080 alpha.node.dc1.consul.",
            "1 3 8081 beta.node.dc1.consul.",
        ]
        assert query(server, "nope.service.consul", tcp=tcp).rcode() == 3
        assert len(texts(query(server, "big.service.consul", tcp=True))) == 40


@dataclass
class Flood:
    """What the UDP flood sent and got back."""

    sent: int = 0
    replies: int = 0
    windows: int = 0


def udp_flood(server: DNSServer, mutate: Mutator) -> Flood:
    """:data:`PACKETS` mutated packets that the server read, in windows, each closed by a
    probe that comes back once the server has read everything before it."""
    fuzz = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fuzz.setblocking(False)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.settimeout(10)
    target = (HOST, server.port)
    sentinel = dns.message.make_query("alpha.node.consul", "A").to_wire()
    drops_before = udp_drops()
    flood = Flood()
    try:
        while flood.sent - (udp_drops() - drops_before) < PACKETS:
            for _ in range(WINDOW):
                try:
                    fuzz.sendto(mutate(), target)
                except OSError:
                    continue  # e.g. a packet the kernel will not send (too big)
                flood.sent += 1
            flood.windows += 1
            ident = struct.pack("!H", flood.windows & 0xFFFF)
            probe.sendto(ident + sentinel[2:], target)
            while True:  # the server has read the window when the probe comes back
                reply = probe.recv(65535)
                if reply[:2] == ident:
                    break
            flood.replies += drain(fuzz, check=flood.windows % 200 == 0)
    finally:
        fuzz.close()
        probe.close()
    return flood


def drain(sock: socket.socket, check: bool) -> int:
    """Read every reply waiting on *sock*; with *check*, each must be well-formed DNS."""
    count = 0
    while True:
        try:
            reply = sock.recv(65535)
        except BlockingIOError:
            return count
        count += 1
        if check:
            dns.message.from_wire(reply)


def assert_settled(server: DNSServer, half_open: list[socket.socket]) -> None:
    """Alive, answering as before, idle connections closed, no traceback, bounded memory."""
    assert server.alive()
    healthy(server)
    for sock in half_open:
        assert closed_within(sock, IDLE_TIMEOUT * 5)
        sock.close()
    log = server.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]
    assert "DNS answer failed" not in log
    status = Path(f"/proc/{server.process.pid}/status")
    if status.exists():
        rss = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS"))
        assert int(rss.split()[1]) < 512 * 1024, rss


def test_a_million_mutated_packets_leave_the_server_answering_correctly(
    server: DNSServer,
) -> None:
    """Never a crash, a stall or a wrong answer, whatever arrives over UDP and TCP."""
    healthy(server)
    rng = random.Random(SEED)
    mutate = Mutator(rng, corpus())
    half_open = [socket.create_connection((HOST, server.port)) for _ in range(20)]
    for sock in half_open[10:]:
        sock.sendall(b"\x00\x40" + b"\x00" * 10)  # a 64-byte frame, never finished
    stop = threading.Event()
    tcp_result: dict[str, int] = {}
    tcp_thread = threading.Thread(
        target=lambda: tcp_result.update(tcp_abuse(server, random.Random(SEED + 1), stop))
    )
    tcp_thread.start()
    drops_before = udp_drops()
    started = time.monotonic()
    try:
        flood = udp_flood(server, mutate)
    finally:
        stop.set()
        tcp_thread.join(60)
    elapsed = time.monotonic() - started
    dropped = udp_drops() - drops_before
    print(
        f"seed {SEED}: {flood.sent} UDP packets ({dropped} dropped by the kernel), "
        f"{flood.replies} replies, {elapsed:.0f}s; TCP {tcp_result}"
    )
    assert flood.sent - dropped >= PACKETS
    assert tcp_result.get("answered", 0) > 0
    assert_settled(server, half_open)
