"""Syslog ingest: durable TCP, RELP and UDP against parse-and-discard, in one run.

    python3 bench/syslog.py [--messages 40000] [--rounds 3] [--connections 4]
                            [--udp-rate 50000] [--udp-seconds 3]

1. Starts the real daemon (``twist homeport --syslog tcp:0 --syslog udp:0 --relp tcp:0``:
   durable, WAL, synchronous=FULL, group commit, a console line per record) and, as the
   peer, the same listeners in a process whose store parses and discards
   (``--serve-discard``).
2. TCP: *connections* senders blast *messages* octet-counted RFC 5424 messages between
   them; the rate is messages over the time until the last one is stored (the daemon's
   database) or parsed (the peer's count).  The two are measured in back-to-back pairs,
   the order swapped every round; the ratio is the median of the pairs' ratios (target:
   durable >= 0.7 of parse-and-discard).
3. RELP: one session (as rsyslog's ``omrelp``: a window of 128 frames not yet answered),
   acknowledged records/s, durable and discard.
4. UDP: datagrams at *udp-rate* per second for *udp-seconds*; the share stored and the
   share lost (dropped by homeport or by the kernel's socket buffer).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "interface=127.0.0.1"
WINDOW = 128


def message(name: str, n: int) -> bytes:
    return (
        b"<30>1 2026-01-01T00:00:00.000Z bench.example %s 4242 ID47 "
        b'[meta sequenceId="%d"] job %d finished in 37 ms' % (name.encode(), n, n)
    )


def octet_counted(name: str, first: int, count: int) -> bytes:
    return b"".join(
        b"%d %s" % (len(m), m) for m in (message(name, n) for n in range(first, first + count))
    )


# -- the peer: the same listeners, a store that discards ------------------------------


def serve_discard() -> None:
    from twisted.internet import reactor as global_reactor
    from twisted.internet.task import LoopingCall

    from homeport.logs.syslog.ingest import Ingest
    from homeport.logs.syslog.listen import StreamListener, UDPListener
    from homeport.logs.syslog.service import Endpoints, listeners
    from homeport.part import IHomeportReactor

    reactor = cast(IHomeportReactor, global_reactor)

    def discard(records: Any, done: Any) -> None:
        done([0] * len(records))

    ingest = Ingest(discard, reactor.seconds)
    endpoints = Endpoints(
        syslog=(f"tcp:0:{LOOPBACK}", f"udp:0:{LOOPBACK}"), relp=(f"tcp:0:{LOOPBACK}",)
    )
    services = listeners(endpoints, ingest, reactor)
    for service in services:
        assert isinstance(service, UDPListener | StreamListener)
        service.startService()
        assert service.port is not None
        kind = (
            "udp"
            if isinstance(service, UDPListener)
            else "relp"
            if "relp" in service.what
            else "tcp"
        )
        print(f"bench-port {kind} {getattr(service.port.getHost(), 'port', 0)}", flush=True)

    def report() -> None:
        print(f"bench-count {ingest.counts.received}", flush=True)

    LoopingCall(report).start(0.05)
    reactor.run()


# -- starting and counting ------------------------------------------------------------


def start(command: list[str], log: Path, ports: str) -> tuple[subprocess.Popen[bytes], str]:
    out = open(log, "wb")  # the child writes it for its whole life
    env = dict(os.environ, HOMEPORT_PRINT_PORTS="1", PYTHONPATH=str(ROOT / "src"))
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if ports in text:
            return process, text
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"server did not start:\n{log.read_text(errors='replace')}")


def daemon_ports(text: str) -> dict[str, int]:
    http = re.search(r"homeport-port http (\d+)", text)
    assert http, text
    found: dict[str, int] = {"http": int(http.group(1))}
    for option, kind, key in (
        ("syslog", "tcp", "tcp"),
        ("syslog", "udp", "udp"),
        ("relp", "tcp", "relp"),
    ):
        match = re.search(rf"--{option} '{kind}:0[^']*': .* listening on .* port (\d+)", text)
        assert match, text
        found[key] = int(match.group(1))
    return found


class Counter:
    """How many records a server has: the daemon's database, or the peer's own count."""

    def __init__(self, data_dir: Path | None = None, log: Path | None = None) -> None:
        self.data_dir = data_dir
        self.log = log

    def count(self, name: str) -> int:
        if self.data_dir is not None:
            from homeport.logs.database import open_reader

            db = open_reader(self.data_dir / "logs.sqlite3")
            try:
                (number,) = db.execute(
                    "SELECT count(*) FROM logs WHERE logger = ?", (name,)
                ).fetchone()
                return int(number)
            finally:
                db.close()
        assert self.log is not None
        counts = re.findall(r"bench-count (\d+)", self.log.read_text(errors="replace")[-4000:])
        return int(counts[-1]) if counts else 0

    def wait(self, name: str, target: int, timeout: float = 120.0) -> float:
        """When the count of *name* reached *target* (monotonic time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(name) >= target:
                return time.monotonic()
            time.sleep(0.02)
        raise SystemExit(f"{name}: only {self.count(name)} of {target} arrived")


# -- the loads ------------------------------------------------------------------------


def tcp_round(port: int, counter: Counter, name: str, total: int, connections: int) -> float:
    """Records/s of *total* messages over *connections*, until the last is in."""
    each = total // connections
    payloads = [octet_counted(name, c * each, each) for c in range(connections)]
    base = counter.count(name)
    senders = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    began = time.monotonic()
    for sock in senders:
        sock.setblocking(False)
    pending = dict(zip(senders, [memoryview(p) for p in payloads], strict=True))
    while pending:
        for sock in list(pending):
            try:
                sent = sock.send(pending[sock][:262144])
            except BlockingIOError:
                continue
            pending[sock] = pending[sock][sent:]
            if not pending[sock]:
                del pending[sock]
        time.sleep(0.0005)
    ended = counter.wait(name, base + each * connections)
    for sock in senders:
        sock.close()
    return each * connections / (ended - began)


def relp_round(port: int, total: int, name: str) -> float:
    """Acknowledged records/s over one RELP session with a window of 128."""
    sock = socket.create_connection(("127.0.0.1", port))
    offers = b"relp_version=0\nrelp_software=bench\ncommands=syslog"
    sock.sendall(b"1 open %d %s\n" % (len(offers), offers))
    buffer = b""
    while b"\n" not in buffer or not buffer.startswith(b"1 rsp"):
        buffer += sock.recv(65536)
    buffer = b""
    began = time.monotonic()
    sent = acked = 0
    while acked < total:
        batch = []
        while sent < total and sent - acked < WINDOW:
            data = message(name, sent)
            batch.append(b"%d syslog %d %s\n" % (sent + 2, len(data), data))
            sent += 1
        if batch:
            sock.sendall(b"".join(batch))
        buffer += sock.recv(65536)
        answers = buffer.count(b" rsp 6 200 OK\n")
        acked += answers
        buffer = buffer[buffer.rfind(b"\n") + 1 :]
    elapsed = time.monotonic() - began
    sock.close()
    return total / elapsed


def udp_flood(port: int, rate: int, seconds: float, name: str) -> int:
    """Datagrams at *rate* per second for *seconds*; how many were sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagrams = [message(name, n) for n in range(int(rate * seconds))]
    began = time.monotonic()
    for n, datagram in enumerate(datagrams):
        if n % 500 == 0:
            ahead = began + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        sock.sendto(datagram, ("127.0.0.1", port))
    sock.close()
    return len(datagrams)


# -- the run --------------------------------------------------------------------------


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=40000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--relp-messages", type=int, default=20000)
    parser.add_argument("--udp-rate", type=int, default=50000)
    parser.add_argument("--udp-seconds", type=float, default=3.0)
    parser.add_argument("--serve-discard", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def _rates(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in values) + ")"


def _pairs(label: str, durable: list[float], discard: list[float], target: float | None) -> None:
    ratios = [d / p for d, p in zip(durable, discard, strict=True)]
    print(label)
    print(f"  parse-and-discard : {statistics.median(discard):9.0f} records/s  {_rates(discard)}")
    print(f"  durable (homeport): {statistics.median(durable):9.0f} records/s  {_rates(durable)}")
    goal = f"; target >= {target:.2f}" if target else ""
    print(
        f"  ratio durable/discard: {statistics.median(ratios):.2f}  "
        f"(pairs {', '.join(f'{r:.2f}' for r in ratios)}{goal})"
    )


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process *pid* and its children (the log writer)."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    total = 0.0
    for one in pids:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _tcp(args: argparse.Namespace, servers: list[tuple[int, Counter, int]], rounds: int) -> None:
    durable: list[float] = []
    discard: list[float] = []
    cpu: dict[int, list[float]] = {0: [], 1: []}
    for n in range(rounds):
        order = [(0, discard), (1, durable)]
        for which, rates in order if n % 2 == 0 else order[::-1]:
            port, counter, pid = servers[which]
            before = cpu_seconds(pid)
            rates.append(tcp_round(port, counter, "benchtcp", args.messages, args.connections))
            cpu[which].append((cpu_seconds(pid) - before) / args.messages * 1e6)
    _pairs(
        f"TCP (octet counting), {args.connections} connections, {args.messages} messages a round, "
        f"{rounds} pairs:",
        durable,
        discard,
        0.7,
    )
    # The rates swing with what else the machine runs; the CPU each server spent per
    # record swings much less, and says where the durable one's time goes.
    print(
        f"  CPU per record (process and children): parse-and-discard "
        f"{statistics.median(cpu[0]):.0f} us, durable {statistics.median(cpu[1]):.0f} us"
    )


def _relp(args: argparse.Namespace, peer: int, daemon: int, rounds: int) -> None:
    durable: list[float] = []
    discard: list[float] = []
    for n in range(rounds):
        order = [(peer, discard), (daemon, durable)]
        for port, rates in order if n % 2 == 0 else order[::-1]:
            rates.append(relp_round(port, args.relp_messages, "benchrelp"))
    _pairs(
        f"RELP, one session, window {WINDOW}, {args.relp_messages} acknowledged a round:",
        durable,
        discard,
        None,
    )


def dropped(http_port: int) -> int | None:
    """homeport's own count of dropped datagrams, when /metrics has it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        match = re.search(rb"^homeport_syslog_dropped ([\d.e+]+)", r.read(), re.M)
    return int(float(match.group(1))) if match else None


def _udp(args: argparse.Namespace, port: int, counter: Counter, http_port: int) -> None:
    sent = udp_flood(port, args.udp_rate, args.udp_seconds, "benchudp")
    time.sleep(2.0)
    stored = counter.count("benchudp")
    ours = dropped(http_port)
    print(f"UDP at {args.udp_rate}/s for {args.udp_seconds:g}s (durable):")
    print(f"  {sent} sent, {stored} stored ({stored / sent:.0%}), {sent - stored} lost")
    if ours is not None:
        kernel = sent - stored - ours
        print(f"  dropped by homeport (counted on /metrics): {ours}; by the kernel: {kernel}")


def main() -> None:
    args = _arguments()
    if args.serve_discard:
        serve_discard()
        return
    workdir = Path(tempfile.mkdtemp(prefix="homeport-bench-syslog-"))
    data_dir = workdir / "data"
    command = [sys.executable, "-m", "twisted", "--log-format=text", "homeport"]
    command += ["--http", f"tcp:0:{LOOPBACK}", "--dns", "none", "--data-dir", str(data_dir)]
    command += ["--syslog", f"tcp:0:{LOOPBACK}", "--syslog", f"udp:0:{LOOPBACK}"]
    command += ["--relp", f"tcp:0:{LOOPBACK}", "--log-retention", "none"]
    daemon, text = start(command, workdir / "daemon.log", "homeport-ports-done")
    ports = daemon_ports(text)
    peer_log = workdir / "discard.log"
    peer, peer_text = start([sys.executable, __file__, "--serve-discard"], peer_log, "bench-count")
    peer_ports = {k: int(v) for k, v in re.findall(r"bench-port (\w+) (\d+)", peer_text)}
    try:
        servers = [
            (peer_ports["tcp"], Counter(log=peer_log), peer.pid),
            (ports["tcp"], Counter(data_dir=data_dir), daemon.pid),
        ]
        for port, counter, _ in servers:  # warm up both
            tcp_round(port, counter, "benchtcp", args.messages // 4, args.connections)
        _tcp(args, servers, args.rounds)
        _relp(args, peer_ports["relp"], ports["relp"], args.rounds)
        _udp(args, ports["udp"], Counter(data_dir=data_dir), ports["http"])
    finally:
        for process in (daemon, peer):
            process.terminate()
            process.wait(20)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
