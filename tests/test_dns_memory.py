"""A client sending unique names cannot take more of the daemon's memory than
``--dns-cache-size`` says (issue #21 point 5: the budget once meant five times itself).

The real daemon, a small budget, and a UDP flood of names never asked before, each one a
new cache entry: the daemon's peak RSS (``VmHWM``) may grow by the budget and allocator
slack, not by several budgets.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dns.message
import pytest

from .daemon import Daemon, DaemonFactory

BUDGET_MIB = 8
#: Unique names sent: enough to fill the budget several times over, and to reach five
#: budgets if entries were charged a fifth of their cost.
NAMES = 60_000
WINDOW = 64


def kib(daemon: Daemon, field: str) -> int:
    assert daemon.process is not None
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def flood(port: int, names: range) -> int:
    """Ask each of *names* once, in windows of :data:`WINDOW` answered before the next
    (so none is lost in a full socket buffer); the number of answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    answered = 0
    try:
        for start in range(names.start, names.stop, WINDOW):
            batch = range(start, min(start + WINDOW, names.stop))
            for i in batch:
                query = dns.message.make_query(f"x{i}-unknown.service.consul", "A")
                sock.sendto(
                    struct.pack("!H", i & 0xFFFF) + query.to_wire()[2:], ("127.0.0.1", port)
                )
            for _ in batch:
                try:
                    sock.recv(4096)
                except TimeoutError:
                    break
                answered += 1
    finally:
        sock.close()
    return answered


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_flood_of_unique_names_stays_within_the_dns_cache_size(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory().start(
        ["--dns", "127.0.0.1:0", "--dns-cache-size", f"{BUDGET_MIB}MiB"]
    )
    assert daemon.dns_port is not None
    assert flood(daemon.dns_port, range(2_000)) > 1_900  # warm: code paths, snapshot
    before = kib(daemon, "VmRSS")
    assert flood(daemon.dns_port, range(2_000, 2_000 + NAMES)) > NAMES * 0.95
    grown_mib = (kib(daemon, "VmHWM") - before) / 1024
    assert grown_mib < 2 * BUDGET_MIB, f"peak RSS grew {grown_mib:.0f} MiB"
    reply = dns.message.from_wire(flood_one(daemon.dns_port))
    assert reply.rcode() == 3  # still answering, and right
    assert "Traceback" not in daemon.output()


def flood_one(port: int) -> bytes:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(10)
    try:
        sock.sendto(
            dns.message.make_query("nope.service.consul", "A").to_wire(), ("127.0.0.1", port)
        )
        return sock.recv(4096)
    finally:
        sock.close()
