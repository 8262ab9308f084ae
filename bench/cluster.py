#!/usr/bin/env python3
"""Several agents, one catalog in etcd (issue #16): how fast, against SQLite, in one run.

Starts three real etcd members and three agents on them (``--catalog etcd://…``, as
tests/test_cluster.py does), plus one agent on the default SQLite store, all on loopback,
then measures:

1. **write -> DNS**: re-register one service with a new address on agent A, and poll
   agent C's DNS (raw UDP queries) until the new address is answered, timed from the
   moment the HTTP write was sent; the same on the SQLite agent (write and DNS on one
   process), and a bare etcd put through its JSON gateway (the floor under every
   homeport write), for scale.  p50/p99 over ``--writes`` writes.  Target: p99 < 50 ms.
2. **catalog GET**: ``wrk`` on ``GET /v1/catalog/service/web`` (100 instances, as
   bench/catalog.py) on an etcd agent vs the SQLite agent holding the same instances.
   Target: etcd >= 0.9 x SQLite.
3. **registrations/s**: ``wrk`` with a Lua PUT script registering services (distinct
   per agent, each write a real change) through agent A alone, then through A, B and C
   at once, the same connections per agent; and agent A's CPU per registration (from
   /proc), which tells waiting on etcd from computing.

Each part alternates its peers ``--rounds`` times and prints every round, then the
range over the rounds (not the best one).  ``--profile DIR`` runs py-spy on the agents
that parts 1 and 3 write through.

    python3 bench/cluster.py [--writes 1000] [--seconds 8] [--connections 50] [--profile DIR]
                             [--write-connections 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dnslib import QTYPE, DNSRecord

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.daemon import Daemon, wait_for
from tests.etcd_cluster import Cluster

PROBE = "probe"
SAMPLE = 100  # instances of ``web`` the catalog GET returns, as bench/catalog.py
WRITE_TIMEOUT = 10.0  # a write not visible by then is a failure, not a slow sample


# -- the processes ----------------------------------------------------------------------


@dataclass
class Agents:
    """The cluster's three agents and the SQLite agent beside them."""

    a: Daemon
    b: Daemon
    c: Daemon
    sqlite: Daemon
    etcd_port: int  # one etcd member's client port

    @property
    def all(self) -> list[Daemon]:
        return [self.a, self.b, self.c, self.sqlite]


def node_listed(agent: Daemon, name: str) -> bool:
    status, _, body = agent.request("GET", "/v1/catalog/nodes")
    return status == 200 and name in {n["Node"] for n in json.loads(body)}


def start_agent(work: Path, name: str, extra: list[str]) -> Daemon:
    (work / name).mkdir()
    agent = Daemon(workdir=work / name, node=name)
    agent.start(["--dns", "127.0.0.1:0", *extra])
    wait_for(lambda: node_listed(agent, name), 20, f"{name} in its own catalog")
    return agent


@contextmanager
def running(work: Path) -> Iterator[Agents]:
    """Three etcd members, three agents on them and one SQLite agent, stopped at the end."""
    cluster = Cluster(work / "etcd")
    (work / "etcd").mkdir()
    started: list[Daemon] = []
    try:
        cluster.start()
        hosts = ",".join(e.split("://", 1)[1] for e in cluster.endpoints)
        for name in ("ag-a", "ag-b", "ag-c"):
            started.append(start_agent(work, name, ["--catalog", f"etcd://{hosts}"]))
        started.append(start_agent(work, "solo", []))
        a, b, c, solo = started
        wait_for(lambda: node_listed(c, "ag-a") and node_listed(c, "ag-b"), 20, "all on ag-c")
        yield Agents(a, b, c, solo, cluster.members[0].client_port)
    finally:
        for agent in started:
            try:
                agent.stop()
            except subprocess.TimeoutExpired:
                pass
        cluster.stop()


@contextmanager
def profiled(profile: Path | None, phase: str, agents: list[Daemon]) -> Iterator[None]:
    """py-spy on each of *agents* while the block runs: ``profile/PHASE-NODE.txt``."""
    spies: list[subprocess.Popen[bytes]] = []
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        for agent in agents:
            assert agent.process is not None
            out = profile / f"{phase}-{agent.node}.txt"
            command = ["py-spy", "record", "--pid", str(agent.process.pid), "--rate", "250"]
            command += ["--format", "raw", "--output", str(out)]
            spies.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        time.sleep(1.0)
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(60)


# -- 1. write on one agent -> visible in another agent's DNS ------------------------------


class Resolver:
    """Raw UDP A queries for one name to one agent's DNS port."""

    def __init__(self, port: int, name: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(2)
        self.name = name
        self.ident = 0

    def addresses(self) -> set[str]:
        self.ident = (self.ident + 1) % 65536
        query = DNSRecord.question(self.name, "A")
        query.header.id = self.ident
        self.sock.send(query.pack())
        while True:
            reply = DNSRecord.parse(self.sock.recv(4096))
            if reply.header.id == self.ident:
                return {str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A}

    def close(self) -> None:
        self.sock.close()


def address(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def readable(conn: http.client.HTTPConnection) -> bool:
    return conn.sock is not None and bool(select.select([conn.sock], [], [], 0)[0])


def answer(conn: http.client.HTTPConnection, sent: float) -> float:
    reply = conn.getresponse()
    body = reply.read()
    if reply.status != 200:
        raise SystemExit(f"register answered {reply.status}: {body[:200]!r}")
    return time.perf_counter() - sent


def one_write(
    conn: http.client.HTTPConnection, dns: Resolver, n: int, poll: float
) -> tuple[float, float]:
    """Register PROBE at a new address; (seconds until *dns* answers it, until the
    write's HTTP answer came), both from the moment the request was sent."""
    new = address(n)
    body = json.dumps({"Name": PROBE, "ID": PROBE, "Address": new, "Port": 80})
    sent = time.perf_counter()
    conn.request("PUT", "/v1/agent/service/register", body)
    acked: float | None = None
    while True:
        if acked is None and readable(conn):
            acked = answer(conn, sent)
        if new in dns.addresses():
            visible = time.perf_counter() - sent
            break
        if time.perf_counter() - sent > WRITE_TIMEOUT:
            raise SystemExit(f"{new} not in DNS {WRITE_TIMEOUT}s after the write")
        time.sleep(poll)
    return visible, acked if acked is not None else answer(conn, sent)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5) * 1e3:6.1f} ms  p99 {percentile(values, 0.99) * 1e3:6.1f} ms"
    )


#: The etcd floor's key: inside the agents' prefix (so their watch carries it, as it
#: carries every homeport write) under a kind they ignore.  Outside the prefix it would
#: stall the agents' next write: their barrier waits for etcd's revision, which a put
#: elsewhere moves past anything their watch brings (reported with issue #16).
FLOOR_KEY = "/homeport/bench-floor/probe"


def etcd_put(conn: http.client.HTTPConnection, n: int) -> float:
    """One put through etcd's JSON gateway: seconds until etcd answers (committed by a
    quorum), the floor under every homeport write."""
    key, value = (base64.b64encode(x.encode()).decode() for x in (FLOOR_KEY, str(n)))
    sent = time.perf_counter()
    conn.request("POST", "/v3/kv/put", json.dumps({"key": key, "value": value}))
    reply = conn.getresponse()
    body = reply.read()
    if reply.status != 200:
        raise SystemExit(f"etcd put answered {reply.status}: {body[:200]!r}")
    return time.perf_counter() - sent


@dataclass
class WritePath:
    """Writes through one agent, read back from one agent's DNS; or (no *dns_port*) puts
    straight to etcd."""

    label: str
    http_port: int
    dns_port: int | None
    seen: list[float] = field(default_factory=list)
    acked: list[float] = field(default_factory=list)
    counter: int = 0

    def run(self, writes: int, poll: float) -> tuple[list[float], list[float]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=30)
        dns = Resolver(self.dns_port, f"{PROBE}.service.consul") if self.dns_port else None
        seen, acked = [], []
        try:
            for _ in range(writes):
                self.counter += 1
                if dns is None:
                    visible = ack = etcd_put(conn, self.counter)
                else:
                    visible, ack = one_write(conn, dns, self.counter, poll)
                seen.append(visible)
                acked.append(ack)
        finally:
            conn.close()
            if dns is not None:
                dns.close()
        self.seen += seen
        self.acked += acked
        return seen, acked


def write_paths(agents: Agents, etcd_port: int) -> list[WritePath]:
    return [
        WritePath("etcd: write on ag-a, DNS on ag-c", agents.a.http_port, agents.c.dns_port),
        WritePath("sqlite: write and DNS on solo", agents.sqlite.http_port, agents.sqlite.dns_port),
        WritePath("etcd alone: PUT /v3/kv/put", etcd_port, None),
    ]


def write_to_dns(agents: Agents, etcd_port: int, writes: int, rounds: int, poll: float) -> None:
    per_round = max(1, -(-writes // rounds))
    paths = write_paths(agents, etcd_port)
    print(
        f"\n1. write -> DNS: {per_round} writes x {rounds} rounds, polling every {poll * 1e3:g} ms"
    )
    for path in paths:
        path.run(20, poll)  # warm up
        path.seen.clear()
        path.acked.clear()
    p99s: dict[str, list[float]] = {p.label: [] for p in paths}
    for round_number in range(1, rounds + 1):
        for path in paths:
            seen, acked = path.run(per_round, poll)
            p99s[path.label].append(percentile(seen, 0.99))
            if path.dns_port:
                shown = f"in DNS {ms(seen)}   HTTP answer {ms(acked)}"
            else:
                shown = f"answered {ms(seen)}"
            print(f"  round {round_number}  {path.label:34s} {shown}")
    for path in paths:
        low, high = min(p99s[path.label]) * 1e3, max(p99s[path.label]) * 1e3
        print(
            f"{path.label:34s} all {len(path.seen)}: {ms(path.seen)}, "
            f"p99 over rounds {low:.1f} .. {high:.1f} ms"
        )
    homeport, sqlite, floor = (percentile(p.seen, 0.99) * 1e3 for p in paths)
    verdict = "met" if homeport < 50 else f"MISSED by {homeport - 50:.1f} ms"
    print(
        f"etcd write -> DNS p99 {homeport:.1f} ms: target < 50 ms {verdict}; p99 ratios: "
        f"/ sqlite {homeport / sqlite:.2f}, / etcd alone {homeport / floor:.2f}"
    )


# -- wrk ----------------------------------------------------------------------------------


@dataclass
class Load:
    """What one wrk run reports."""

    requests: int
    seconds: float
    failed: int  # non-2xx answers
    socket_errors: int
    latency: str

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return (self.requests - self.failed) / self.seconds


def start_wrk(
    url: str, seconds: int, connections: int, script: Path | None = None
) -> subprocess.Popen[str]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    return subprocess.Popen(
        [*command, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish_wrk(proc: subprocess.Popen[str]) -> Load:
    out, _ = proc.communicate()
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m),", out)
    if proc.returncode != 0 or done is None:
        raise SystemExit(f"wrk failed:\n{out}")
    scale = {"ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    latency = re.search(r"Latency\s+(\S+)", out)
    return Load(
        requests=int(done.group(1)),
        seconds=float(done.group(2)) * scale,
        failed=int(failed.group(1)) if failed else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        latency=latency.group(1) if latency else "?",
    )


def wrk(url: str, seconds: int, connections: int, script: Path | None = None) -> Load:
    return finish_wrk(start_wrk(url, seconds, connections, script))


def problems(load: Load) -> str:
    if not load.failed and not load.socket_errors:
        return ""
    return f"   ({load.failed} non-2xx, {load.socket_errors} socket errors)"


def span(label: str, seen: list[float]) -> None:
    print(f"{label} = {min(seen):.2f} .. {max(seen):.2f}")


# -- 2. catalog GET: etcd agent vs SQLite agent --------------------------------------------


def register_sample(agent: Daemon) -> None:
    """SAMPLE instances of ``web`` on as many nodes (bench/catalog.py's catalog)."""
    for n in range(SAMPLE):
        body = {
            "Node": f"node{n:03d}",
            "Address": f"10.0.{n // 250}.{n % 250 + 1}",
            "Service": {
                "ID": f"web-{n}",
                "Service": "web",
                "Port": 8000 + n,
                "Tags": ["rails", f"shard{n % 4}"],
                "Meta": {"version": "1.2.3"},
            },
        }
        status, _, reply = agent.request("PUT", "/v1/catalog/register", body)
        if status != 200:
            raise SystemExit(f"catalog register answered {status}: {reply[:200]!r}")


def instances(agent: Daemon) -> int:
    return len(agent.get_json("/v1/catalog/service/web"))


def catalog_get(agents: Agents, seconds: int, connections: int, rounds: int) -> None:
    register_sample(agents.a)
    register_sample(agents.sqlite)
    wait_for(lambda: instances(agents.b) == SAMPLE, 20, "the sample on ag-b")
    path = "/v1/catalog/service/web"
    targets = [("etcd agent ag-b", agents.b), ("sqlite agent solo", agents.sqlite)]
    sizes = ", ".join(f"{name} {len(t.request('GET', path)[2])} bytes" for name, t in targets)
    print(
        f"\n2. GET {path} ({SAMPLE} instances; {sizes}): wrk -t1 -c{connections} "
        f"-d{seconds}s x {rounds} alternating rounds"
    )
    for _, agent in targets:
        wrk(agent.url + path, 2, connections)  # warm up
    ratios: list[float] = []
    for round_number in range(1, rounds + 1):
        loads = [wrk(agent.url + path, seconds, connections) for _, agent in targets]
        for (name, _), load in zip(targets, loads, strict=True):
            print(
                f"  round {round_number}  {name:20s} {load.rate:9.0f} req/s   "
                f"avg {load.latency}{problems(load)}"
            )
        ratios.append(loads[0].rate / loads[1].rate)
    span("etcd / sqlite GET req/s (target >= 0.9)", ratios)


# -- 3. registrations/s through one agent and through three at once --------------------------

REGISTER_LUA = """
counter = 0
request = function()
  counter = counter + 1
  local body = string.format(
    '{"Name": "reg-%s", "ID": "reg-%s-%%d", "Port": %%d}', counter %% %d, 1 + counter %% 60000)
  return wrk.format("PUT", "/v1/agent/service/register", nil, body)
end
"""


def register_script(work: Path, agent: Daemon, ids: int) -> Path:
    """A wrk script that re-registers *ids* services of *agent*'s own, each time on a new
    port (so every write changes something)."""
    name = agent.node or "agent"
    script = work / f"register-{name}.lua"
    script.write_text(REGISTER_LUA % (name, name, ids))
    return script


def cpu_seconds(agent: Daemon) -> float:
    """The CPU time (user + system) *agent*'s process has used so far."""
    assert agent.process is not None
    fields = Path(f"/proc/{agent.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def registrations(agents: Agents, work: Path, seconds: int, connections: int, rounds: int) -> None:
    cluster = [agents.a, agents.b, agents.c]
    scripts = {agent.url: register_script(work, agent, 100) for agent in cluster}
    print(
        f"\n3. PUT /v1/agent/service/register: wrk -t1 -c{connections} -d{seconds}s per "
        f"agent, ag-a alone then ag-a+ag-b+ag-c at once, x {rounds} rounds"
    )
    for agent in cluster:
        wrk(agent.url, 2, connections, scripts[agent.url])  # warm up, and every service there
    ratios: list[float] = []
    for round_number in range(1, rounds + 1):
        spent = cpu_seconds(agents.a)
        alone = wrk(agents.a.url, seconds, connections, scripts[agents.a.url])
        spent = cpu_seconds(agents.a) - spent
        procs = [start_wrk(a.url, seconds, connections, scripts[a.url]) for a in cluster]
        together = [finish_wrk(proc) for proc in procs]
        total = sum(load.rate for load in together)
        each = " + ".join(f"{load.rate:.0f}" for load in together)
        print(
            f"  round {round_number}  one agent {alone.rate:7.0f} /s (avg {alone.latency})"
            f"{problems(alone)}, ag-a CPU {spent * 1e3 / max(1, alone.requests):.1f} ms each, "
            f"{spent / alone.seconds:.0%} busy   three agents {total:7.0f} /s ({each})"
            + "".join(problems(load) for load in together)
        )
        ratios.append(total / alone.rate)
    span("three agents / one agent registrations/s", ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=1000, help="part 1, over all rounds")
    parser.add_argument("--poll", type=float, default=0.001, help="part 1's DNS poll interval (s)")
    parser.add_argument("--seconds", type=int, default=8, help="each wrk run of parts 2 and 3")
    parser.add_argument("--connections", type=int, default=50, help="part 2's wrk connections")
    parser.add_argument(
        "--write-connections", type=int, default=8, help="part 3's wrk connections per agent"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternate the peers this many times; every round is printed and the ratios "
        "summed up as a range (the box's load swings from run to run)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy ag-a and ag-c during part 1, ag-a and ag-b during part 3, into this "
        "directory (py-spy's raw collapsed stacks)",
    )
    args = parser.parse_args()
    for tool in ("wrk", "etcd", *(["py-spy"] if args.profile else [])):
        if not shutil.which(tool) and not Path(f"/usr/bin/{tool}").exists():
            raise SystemExit(f"{tool} is missing: apt-get install wrk etcd-server")

    work = Path(tempfile.mkdtemp(prefix="homeport-bench-cluster-"))
    try:
        with running(work) as agents:
            print(f"3 etcd members, 3 agents on them, 1 SQLite agent; {os.cpu_count()} cores")
            with profiled(args.profile, "write", [agents.a, agents.c]):
                write_to_dns(agents, agents.etcd_port, args.writes, args.rounds, args.poll)
            catalog_get(agents, args.seconds, args.connections, args.rounds)
            with profiled(args.profile, "register", [agents.a, agents.b]):
                registrations(agents, work, args.seconds, args.write_connections, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
