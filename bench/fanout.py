#!/usr/bin/env python3
"""SSE fan-out: homeport fed by ZeroMQ vs nginx + nchan fed by HTTP, in one run.

For each N (default 1000 and 4000) and each server:

1. start the server fresh (homeport with ``--zmq-bind``; nginx with the nchan module, a
   publisher location and an ``nchan_subscriber eventsource`` location, one worker, not
   daemonized, a temp config);
2. connect N Server-Sent Events clients, spread over a few client processes that each
   run one ``epoll`` loop over raw non-blocking sockets (no thread per client);
3. read the server's RSS before and after connecting: memory per connection;
4. publish events — homeport: a real pyzmq PUB socket connected to ``--zmq-bind``;
   nchan: ``POST`` to its publisher location on a kept-alive connection — each carrying
   ``time.monotonic_ns()`` taken just before sending (CLOCK_MONOTONIC is one clock for
   all processes of the machine), and every client notes when the event reached it;
5. print p50/p99 of publish-to-receipt over all (client, event) pairs.

Then the ratios homeport / nchan.  Target: homeport's p99 no worse than nchan's at each
N, and under 10 KB per connection.

    python3 bench/fanout.py [--clients 1000,4000] [--events 40] [--interval 0.25]
                            [--procs 2] [--rounds 2] [--servers homeport,nchan]
                            [--profile DIR] [--baseline CHECKOUT]

The servers alternate ``--rounds`` times per N and each keeps its lowest-p99 round.  The
clients are Python: at these rates their own read loop is part of every figure, the
same for both servers.

``--baseline CHECKOUT`` adds a third server, ``baseline``: homeport run from another
checkout's ``src`` (e.g. ``git worktree add /tmp/old COMMIT``), alternated with this one
in the same run, so a change is measured against its parent under the same load.

``--profile DIR`` runs py-spy on homeport during the publishing phase and writes its
collapsed stacks (``homeport-N.txt``, py-spy's raw format) to DIR.
"""

from __future__ import annotations

import argparse
import errno
import http.client
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import free_port, wait_http

TOPIC = "bench"
EVENT = re.compile(rb"t=(\d+) s=(\d+)")
MAX_CONNECTING = 64  # handshakes in flight per client process (listen backlogs are small)

NCHAN_CONF = """
load_module {module};
worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp; uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /pub {{ nchan_publisher; nchan_channel_id {topic}; }}
        location = /sub {{ nchan_subscriber eventsource; nchan_channel_id {topic}; }}
    }}
}}
"""

NCHAN_MODULE = "/usr/lib/nginx/modules/ngx_nchan_module.so"


# ---------------------------------------------------------------------------------------
# The client process: N/P event streams on one epoll loop, driven over stdin/stdout.


@dataclass
class Stream:
    sock: socket.socket
    state: str  # "connecting", "headers", "open", "closed"
    buf: bytes = b""
    last_seq: int = -1


class ClientLoop:
    """One client process: its streams on one ``epoll``, and the controller's commands.

    ``connect``: open ``n`` streams to ``host:port`` ``path``; answers once every stream
    has its response headers (or failed).  ``count``: how many streams have seen event
    ``seq`` or a later one.  ``report``: the latencies (µs) of events ``seq >= from``.
    ``close``: close the streams.  Meanwhile, every readable stream is read and the
    events in it are timed.
    """

    def __init__(self) -> None:
        self.poll = select.epoll()
        self.streams: dict[int, Stream] = {}
        self.latencies: list[tuple[int, int]] = []  # (seq, µs)
        self.pending: list[socket.socket] = []
        self.request = b""
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self.answer_when_ready = False
        self.failed = 0
        self.disconnected = 0
        self.in_flight = 0  # streams connecting or waiting for their response headers
        self.stdin = sys.stdin.fileno()
        self.poll.register(self.stdin, select.EPOLLIN)
        self.command_buf = b""

    def run(self) -> None:
        """Until stdin ends: commands from stdin, events from the streams."""
        while True:
            for fd, _mask in self.poll.poll():
                if fd == self.stdin:
                    if not self.read_commands():
                        return
                    continue
                stream = self.streams.get(fd)
                if stream is not None and self.on_stream(fd, stream):
                    self.start_more()  # a stream failed: its slot is free
                    self.maybe_ready()

    def answer(self, obj: Any) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def read_commands(self) -> bool:
        """Run the complete command lines on stdin; False at its end."""
        data = os.read(self.stdin, 65536)
        if not data:
            return False
        self.command_buf += data
        while b"\n" in self.command_buf:
            line, self.command_buf = self.command_buf.split(b"\n", 1)
            self.command(json.loads(line))
        return True

    def start_more(self) -> None:
        while self.pending and self.in_flight < MAX_CONNECTING:
            sock = self.pending.pop()
            sock.setblocking(False)
            err = sock.connect_ex(self.address)
            if err not in (0, errno.EINPROGRESS):
                self.failed += 1
                sock.close()
                continue
            self.streams[sock.fileno()] = Stream(sock, "connecting")
            self.in_flight += 1
            self.poll.register(sock.fileno(), select.EPOLLOUT)

    def maybe_ready(self) -> None:
        if self.answer_when_ready and not self.pending and self.in_flight == 0:
            self.answer_when_ready = False
            opened = sum(1 for s in self.streams.values() if s.state == "open")
            self.answer({"open": opened, "failed": self.failed})

    def drop(self, fd: int, stream: Stream) -> None:
        if stream.state == "open":
            self.disconnected += 1
        else:
            self.failed += 1
            self.in_flight -= 1
        stream.state = "closed"
        self.poll.unregister(fd)
        stream.sock.close()
        del self.streams[fd]

    def command(self, cmd: dict[str, Any]) -> None:
        if cmd["cmd"] == "connect":
            self.connect(cmd["host"], cmd["port"], cmd["path"], cmd["n"])
        elif cmd["cmd"] == "count":
            seen = sum(1 for s in self.streams.values() if s.last_seq >= cmd["seq"])
            self.answer(
                {"seen": seen, "open": len(self.streams), "disconnected": self.disconnected}
            )
        elif cmd["cmd"] == "report":
            self.answer(
                {
                    "latencies": [us for seq, us in self.latencies if seq >= cmd["from"]],
                    "disconnected": self.disconnected,
                }
            )
        elif cmd["cmd"] == "close":
            for fd, stream in list(self.streams.items()):
                self.poll.unregister(fd)
                stream.sock.close()
            self.streams.clear()
            self.latencies.clear()
            self.answer({"closed": True})

    def connect(self, host: str, port: int, path: str, n: int) -> None:
        self.address = (host, port)
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()
        self.pending.extend(socket.socket() for _ in range(n))
        self.answer_when_ready = True
        self.start_more()
        self.maybe_ready()

    def on_stream(self, fd: int, stream: Stream) -> bool:
        """*stream* is writable (connecting) or readable; True when it was dropped in a
        way that frees a slot for the next pending one."""
        if stream.state == "connecting":
            if stream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.drop(fd, stream)
                return True
            stream.sock.send(self.request)  # a few bytes into an empty buffer
            stream.state = "headers"
            self.poll.modify(fd, select.EPOLLIN)
            return False
        try:
            data = stream.sock.recv(65536)
        except OSError:
            data = b""
        now = time.monotonic_ns()
        if not data:
            self.drop(fd, stream)
            return True
        if stream.state == "headers":
            self.on_headers(fd, stream, data)
        else:
            self.on_events(stream, data, now)
        return False

    def on_headers(self, fd: int, stream: Stream, data: bytes) -> None:
        stream.buf += data
        end = stream.buf.find(b"\r\n\r\n")
        if end == -1:
            return
        if not stream.buf.startswith(b"HTTP/1.1 200"):
            self.drop(fd, stream)
            return
        self.in_flight -= 1
        stream.state = "open"
        stream.buf = stream.buf[end + 4 :]
        self.start_more()
        self.maybe_ready()

    def on_events(self, stream: Stream, data: bytes, now: int) -> None:
        """Time every complete event in *data* (received at *now*, ns)."""
        buf = stream.buf + data
        cut = buf.rfind(b"\n\n")
        if cut == -1:
            stream.buf = buf[-4096:]
            return
        stream.buf = buf[cut + 2 :]
        latencies = self.latencies
        for match in EVENT.finditer(buf, 0, cut):
            seq = int(match.group(2))
            latencies.append((seq, (now - int(match.group(1))) // 1000))
            stream.last_seq = seq


def client_main() -> None:
    """A client process: serve the controller's commands (one JSON line each) on stdin,
    answer on stdout (see :class:`ClientLoop`)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ClientLoop().run()


# ---------------------------------------------------------------------------------------
# The controller.


class Clients:
    """The client processes, each holding a share of the streams."""

    def __init__(self, procs: int) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--client"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(procs)
        ]

    def ask_all(self, commands: list[dict[str, Any]]) -> list[Any]:
        for proc, cmd in zip(self.procs, commands, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cmd) + "\n")
            proc.stdin.flush()
        answers = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("a client process died")
            answers.append(json.loads(line))
        return answers

    def ask(self, cmd: dict[str, Any]) -> list[Any]:
        return self.ask_all([cmd] * len(self.procs))

    def connect(self, host: str, port: int, path: str, n: int) -> int:
        share = [n // len(self.procs) + (i < n % len(self.procs)) for i in range(len(self.procs))]
        answers = self.ask_all(
            [{"cmd": "connect", "host": host, "port": port, "path": path, "n": k} for k in share]
        )
        opened = sum(a["open"] for a in answers)
        failed = sum(a["failed"] for a in answers)
        if failed:
            print(f"    {failed} of {n} streams failed to open", flush=True)
        return int(opened)

    def seen(self, seq: int) -> int:
        return int(sum(a["seen"] for a in self.ask({"cmd": "count", "seq": seq})))

    def close(self) -> None:
        self.ask({"cmd": "close"})

    def stop(self) -> None:
        for proc in self.procs:
            try:
                assert proc.stdin is not None
                proc.stdin.close()  # end of input: the client returns
            except OSError:
                pass
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def rss_kib(pid: int) -> int:
    """Resident memory of *pid* and its children (nginx's workers), KiB."""
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    total = 0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


@dataclass
class Result:
    p50_ms: float
    p99_ms: float
    max_ms: float
    kib_per_conn: float
    received: int
    expected: int


class Server:
    name = ""
    pid = 0

    def start(self, work: Path) -> None:
        raise NotImplementedError

    def publisher(self) -> Callable[[bytes], None]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    port = 0
    path = ""


class Homeport(Server):
    name = "homeport"
    path = f"/v1/events?topic=zmq/{TOPIC}"
    #: Another checkout to run homeport from (its ``src`` first on ``PYTHONPATH``).
    source: Path | None = None

    def start(self, work: Path) -> None:
        self.port = free_port()
        self.zmq_port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "twisted",
                "homeport",
                "--http",
                f"tcp:{self.port}:interface=127.0.0.1:backlog=4096",
                "--dns",
                "none",
                "--data-dir",
                str(work / "data"),
                "--node",
                "bench",
                "--advertise",
                "10.0.0.1",
                "--zmq-bind",
                f"tcp://127.0.0.1:{self.zmq_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=work,
            env=self.environment(),
        )
        self.pid = self.proc.pid
        wait_http(f"http://127.0.0.1:{self.port}/v1/status/leader")

    def environment(self) -> dict[str, str] | None:
        if self.source is None:
            return None
        src = str(self.source.resolve() / "src")
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
        }

    def publisher(self) -> Callable[[bytes], None]:
        import zmq

        self.context = zmq.Context()
        self.pub = self.context.socket(zmq.PUB)
        self.pub.connect(f"tcp://127.0.0.1:{self.zmq_port}")
        topic = TOPIC.encode()
        pub = self.pub

        def publish(payload: bytes) -> None:
            pub.send_multipart([topic, payload])

        return publish

    def stop(self) -> None:
        if hasattr(self, "pub"):
            self.pub.close(linger=0)
            self.context.term()
            del self.pub
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Nchan(Server):
    name = "nginx+nchan"
    path = "/sub"

    def start(self, work: Path) -> None:
        self.port = free_port()
        (work / "tmp").mkdir(exist_ok=True)
        conf = NCHAN_CONF.format(
            module=NCHAN_MODULE,
            dir=work,
            port=self.port,
            topic=TOPIC,
            nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[1],
            connections=20000,
        )
        (work / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(
            [nginx, "-c", str(work / "nginx.conf"), "-e", str(work / "error.log")], cwd=work
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        while True:  # GET on the publisher location answers the channel's state
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/pub")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit(f"nginx did not start: {work / 'error.log'}") from None
                time.sleep(0.1)

    def publisher(self) -> Callable[[bytes], None]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Content-Type": "text/plain"}

        def publish(payload: bytes) -> None:
            conn.request("POST", "/pub", body=payload, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status not in (201, 202):
                raise SystemExit(f"nchan publish answered {response.status}")

        return publish

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)  # graceful: closes the subscribers
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def stamp(seq: int) -> bytes:
    """An event's payload: when it was sent (monotonic ns) and its sequence number."""
    return b"t=%d s=%d" % (time.monotonic_ns(), seq)


def warm_up(publish: Callable[[bytes], None], clients: Clients, opened: int, pause: float) -> int:
    """Publish until every stream has seen an event (ZeroMQ's PUB drops what it sends
    before the connection is up: the "slow joiner"), then a few more to warm the paths;
    the last sequence number used."""
    seq = 0
    deadline = time.monotonic() + 30
    while True:
        publish(stamp(seq))
        time.sleep(0.2)
        if clients.seen(seq) >= opened or time.monotonic() > deadline:
            break
        seq += 1
    for _ in range(3):
        seq += 1
        publish(stamp(seq))
        time.sleep(pause)
    return seq


def start_profiler(profile: Path, pid: int, n: int) -> subprocess.Popen[bytes]:
    """py-spy on *pid*, writing its raw collapsed stacks to ``profile/homeport-N.txt``."""
    profile.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--rate",
            "500",
            "--format",
            "raw",
            "--output",
            str(profile / f"homeport-{n}.txt"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    return spy


def collect(
    server: Server, clients: Clients, first: int, opened: int, events: int, kib_per_conn: float
) -> Result:
    """The latencies of events ``first`` on, over every stream; the streams closed."""
    reports = clients.ask({"cmd": "report", "from": first})
    latencies = [us for r in reports for us in r["latencies"]]
    clients.close()
    if not latencies:
        raise SystemExit(f"{server.name}: no event arrived")
    return Result(
        p50_ms=percentile(latencies, 0.50) / 1000,
        p99_ms=percentile(latencies, 0.99) / 1000,
        max_ms=max(latencies) / 1000,
        kib_per_conn=kib_per_conn,
        received=len(latencies),
        expected=opened * events,
    )


def measure(
    server: Server,
    clients: Clients,
    n: int,
    events: int,
    interval: float,
    profile: Path | None,
) -> Result:
    work = Path(tempfile.mkdtemp(prefix="homeport-fanout-"))
    work.chmod(0o755)  # nginx workers may run as another user
    spy: subprocess.Popen[bytes] | None = None
    try:
        server.start(work)
        publish = server.publisher()
        time.sleep(0.5)
        before = rss_kib(server.pid)
        opened = clients.connect("127.0.0.1", server.port, server.path, n)
        if opened != n:
            print(f"    only {opened} of {n} streams open", flush=True)
        time.sleep(1.0)  # let the server settle (allocator, timers)
        after = rss_kib(server.pid)
        seq = warm_up(publish, clients, opened, interval)
        first = seq + 1
        if profile is not None and isinstance(server, Homeport):
            spy = start_profiler(profile, server.pid, n)
        for _ in range(events):
            seq += 1
            publish(stamp(seq))
            time.sleep(interval)
        time.sleep(max(1.0, interval))
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            spy = None
        kib_per_conn = (after - before) / max(opened, 1)
        return collect(server, clients, first, opened, events, kib_per_conn)
    finally:
        if spy is not None:
            spy.kill()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1000,4000", help="comma-separated N values")
    parser.add_argument("--events", type=int, default=40, help="timed events per run")
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between events")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--servers", default="homeport,nchan")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="alternate the servers this many times per N and keep each one's best p99 "
        "(background load only ever adds latency)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy homeport into this directory")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout to run homeport from as the 'baseline' server (add it to --servers)",
    )
    args = parser.parse_args()
    if args.baseline is not None:
        if not (args.baseline / "src" / "homeport").is_dir():
            raise SystemExit(f"--baseline {args.baseline}: no src/homeport there")
        Baseline.source = args.baseline
        Baseline.name = f"base:{args.baseline.name}"
        if "baseline" not in args.servers:
            args.servers = "baseline," + args.servers
    return args


class Baseline(Homeport):
    """Homeport from the ``--baseline`` checkout."""


SERVERS: dict[str, type[Server]] = {"homeport": Homeport, "nchan": Nchan, "baseline": Baseline}
Results = dict[tuple[str, int], Result]


def run_rounds(args: argparse.Namespace, sizes: list[int], chosen: list[str]) -> Results:
    """Every server at every N, ``--rounds`` times; each one's lowest-p99 round."""
    clients = Clients(args.procs)
    results: Results = {}
    try:
        for n in sizes:
            for round_ in range(args.rounds):
                for key in chosen:
                    server = SERVERS[key]()
                    result = measure(server, clients, n, args.events, args.interval, args.profile)
                    best = results.get((key, n))
                    if best is None or result.p99_ms < best.p99_ms:
                        results[(key, n)] = result
                    print(
                        f"  N={n:5d} {server.name:12s} p50 {result.p50_ms:7.1f} ms   "
                        f"p99 {result.p99_ms:7.1f} ms   max {result.max_ms:7.1f} ms   "
                        f"{result.kib_per_conn:5.1f} KiB/conn   "
                        f"received {result.received}/{result.expected}   "
                        f"(round {round_ + 1})",
                        flush=True,
                    )
    finally:
        clients.stop()
    return results


def print_best(rounds: int, sizes: list[int], chosen: list[str], results: Results) -> None:
    print(f"best round (lowest p99) of {rounds} for each:")
    for n in sizes:
        for key in chosen:
            result = results[(key, n)]
            print(
                f"  N={n:5d} {SERVERS[key].name:12s} p50 {result.p50_ms:7.1f} ms   "
                f"p99 {result.p99_ms:7.1f} ms   {result.kib_per_conn:5.1f} KiB/conn"
            )


def print_ratios(sizes: list[int], results: Results) -> None:
    print("homeport / nchan (lower is better for homeport):")
    for n in sizes:
        ours, theirs = results[("homeport", n)], results[("nchan", n)]
        print(
            f"  N={n:5d}  p50 {ours.p50_ms / theirs.p50_ms:5.2f}   "
            f"p99 {ours.p99_ms / theirs.p99_ms:5.2f}   "
            f"memory/conn {ours.kib_per_conn / max(theirs.kib_per_conn, 0.01):5.2f}"
        )


def print_verdicts(sizes: list[int], chosen: list[str], results: Results) -> None:
    for n in sizes:
        ours = results[("homeport", n)]
        verdicts = [f"{ours.kib_per_conn * 1.024:.1f} KB/conn (target < 10)"]
        if "nchan" in chosen:
            ok = ours.p99_ms <= results[("nchan", n)].p99_ms
            verdicts.insert(0, f"p99 {'meets' if ok else 'MISSES'} nchan's")
        print(f"  N={n:5d} homeport: " + "; ".join(verdicts))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main()
        return
    args = parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    sizes = [int(n) for n in args.clients.split(",")]
    if max(sizes) + 100 > hard:
        raise SystemExit(f"the fd limit is {hard}: too low for {max(sizes)} streams")
    if "nchan" in args.servers and not Path(NCHAN_MODULE).exists():
        raise SystemExit("nchan is missing: apt-get install libnginx-mod-nchan")
    chosen = [s for s in args.servers.split(",") if s]
    print(
        f"SSE fan-out, {args.events} events {args.interval}s apart, {args.procs} client "
        f"processes (epoll), {os.cpu_count()} cores; fd limit {hard}",
        flush=True,
    )
    results = run_rounds(args, sizes, chosen)
    if args.rounds > 1:
        print_best(args.rounds, sizes, chosen, results)
    if "homeport" in chosen and "nchan" in chosen:
        print_ratios(sizes, results)
    if "homeport" in chosen:
        print_verdicts(sizes, chosen, results)


if __name__ == "__main__":
    main()
