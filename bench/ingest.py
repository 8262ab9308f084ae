"""Log ingest throughput: durable ``POST /log`` against parse-and-discard, same run.

    python3 bench/ingest.py [--seconds 5] [--rounds 5] [--connections 64,256] [--senders 8]

1. Starts the real daemon (``twist homeport``, durable: WAL, synchronous=FULL, group
   commit, a console line per record) and, as the peer, the same site and ingest
   resource with a sink that parses and discards (``--serve-discard``).
2. Drives both with ``wrk`` (many concurrent keep-alive clients) posting the body a real
   ``logging.handlers.HTTPHandler`` sends, and prints records/s and the ratio
   (target: durable >= 0.7 of parse-and-discard), for each number of connections.
   The two are measured in back-to-back pairs, the order swapped every round, and the
   ratio is the median of the pairs' ratios: on a shared 2-core VM the same server's
   rate swings by 20% from one run to the next, and a pair sees the same weather.
3. Runs *senders* processes logging through stock ``HTTPHandler`` (a connection per
   record, blocking) at the daemon, and prints the records/s they reach end to end and
   that all of them were stored.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent


def handler_body() -> bytes:
    handler = logging.handlers.HTTPHandler("localhost", "/log", method="POST")
    record = logging.LogRecord(
        "bench.worker",
        logging.WARNING,
        "/srv/app/worker.py",
        42,
        "job %s took %d ms",
        ("a1", 37),
        None,
    )
    record.user = "bench"
    return urlencode(handler.mapLogRecord(record)).encode()


def serve_discard() -> None:
    """The peer: the daemon's own site and ingest resource, records parsed then dropped."""
    from twisted.internet import reactor as global_reactor
    from twisted.internet.address import IPv4Address
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.interfaces import IListeningPort
    from twisted.python.failure import Failure
    from twisted.web.resource import Resource

    from homeport.http.site import HomeportSite
    from homeport.logs.http import LogIngestResource
    from homeport.part import IHomeportReactor

    reactor = cast(IHomeportReactor, global_reactor)

    def discard(records: Any, done: Any) -> None:
        done([0] * len(records))

    root = Resource()
    root.putChild(b"log", LogIngestResource(discard, reactor.seconds))
    site = HomeportSite(root, parsePOSTFormSubmission=False)

    def listening(port: IListeningPort) -> None:
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        print(f"homeport-port http {address.port}", flush=True)

    def failed(failure: Failure) -> None:
        failure.printTraceback()
        reactor.stop()

    endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
    endpoint.listen(site).addCallbacks(listening, failed)
    reactor.run()


def start(command: list[str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    out = open(log, "wb")
    env = dict(os.environ, HOMEPORT_PRINT_PORTS="1", PYTHONPATH=str(ROOT / "src"))
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(r"homeport-port http (\d+)", log.read_text(errors="replace"))
        if match:
            return process, int(match.group(1))
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"server did not start:\n{log.read_text(errors='replace')}")


def wrk(port: int, body: bytes, seconds: int, connections: int, workdir: Path) -> float:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = "{body.decode()}"\n'  # urlencoded: no quotes or backslashes in it
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
    )
    result = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/log",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    if "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        print(result.stdout)
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    assert match, result.stdout
    return float(match.group(1))


def sender(port: int, seconds: float, name: str) -> None:
    log = logging.getLogger(name)
    log.propagate = False
    log.addHandler(logging.handlers.HTTPHandler(f"127.0.0.1:{port}", "/log", method="POST"))
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        log.warning("job %s took %d ms", "s", sent)
        sent += 1
    print(sent)


def count(data_dir: Path, prefix: str) -> int:
    from homeport.logs.database import open_reader

    db = open_reader(data_dir / "logs.sqlite3")
    try:
        (number,) = db.execute(
            "SELECT count(*) FROM logs WHERE logger LIKE ?", (prefix + "%",)
        ).fetchone()
        return int(number)
    finally:
        db.close()


def _rounds(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.0f}" for v in values) + ")"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument(
        "--connections",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[64, 256],
        help="comma-separated numbers of concurrent clients",
    )
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve-discard", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--send", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args()


def _start_daemon(workdir: Path, data_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    return start(
        [
            sys.executable,
            "-m",
            "twisted",
            "--log-format=text",
            "homeport",
            "--http",
            "tcp:0:interface=127.0.0.1",
            "--dns",
            "none",
            "--data-dir",
            str(data_dir),
        ],
        workdir / "daemon.log",
    )


def _compare(
    args: argparse.Namespace, body: bytes, workdir: Path, peer_port: int, daemon_port: int
) -> None:
    """Step 2: wrk against parse-and-discard and the durable daemon, in pairs."""
    for connections in args.connections:
        discards: list[float] = []
        durables: list[float] = []
        for n in range(args.rounds):
            order = [(peer_port, discards), (daemon_port, durables)]
            for port, rates in order if n % 2 == 0 else order[::-1]:
                rates.append(wrk(port, body, args.seconds, connections, workdir))
        ratios = [d / p for d, p in zip(durables, discards, strict=True)]
        print(
            f"wrk: {connections} keep-alive connections, "
            f"{args.rounds} pairs of {args.seconds}s runs (medians)"
        )
        print(
            f"  parse-and-discard : {statistics.median(discards):9.0f} records/s  "
            f"{_rounds(discards)}"
        )
        print(
            f"  durable (homeport): {statistics.median(durables):9.0f} records/s  "
            f"{_rounds(durables)}"
        )
        print(
            f"  ratio durable/discard: {statistics.median(ratios):.2f}  (target >= 0.70; "
            f"pairs {', '.join(f'{r:.2f}' for r in ratios)})"
        )


def _send(args: argparse.Namespace, daemon_port: int, data_dir: Path) -> None:
    """Step 3: stock HTTPHandler senders, end to end."""
    seconds = max(5, args.seconds)
    senders = [
        subprocess.Popen(
            [sys.executable, __file__, "--send", str(daemon_port), str(seconds), f"s{n}.bench"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(args.senders)
    ]
    sent = sum(int((p.communicate()[0] or "0").strip() or 0) for p in senders)
    landed = count(data_dir, "s")
    print(f"stock HTTPHandler, {args.senders} processes, {seconds}s:")
    print(
        f"  {sent / seconds:9.0f} records/s end to end "
        f"({sent} sent, {landed} stored, {sent / seconds / args.senders:.0f}/s per process)"
    )


def main() -> None:
    args = _arguments()
    if args.serve_discard:
        serve_discard()
        return
    if args.send:
        sender(int(args.send[0]), float(args.send[1]), args.send[2])
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    body = handler_body()
    workdir = Path(tempfile.mkdtemp(prefix="homeport-bench-"))
    data_dir = workdir / "data"
    daemon, daemon_port = _start_daemon(workdir, data_dir)
    peer, peer_port = start([sys.executable, __file__, "--serve-discard"], workdir / "discard.log")
    try:
        wrk(peer_port, body, 2, 64, workdir)  # warm up both
        wrk(daemon_port, body, 2, 64, workdir)
        before = count(data_dir, "bench.worker")
        _compare(args, body, workdir, peer_port, daemon_port)
        stored = count(data_dir, "bench.worker") - before
        print(f"({stored} records stored durably)")
        if os.environ.get("HOMEPORT_BENCH_SHOW_LOG"):
            print(
                re.sub(r"(?m)^\d{4}-\d\d-\d\d \d\d:.*\n", "", (workdir / "daemon.log").read_text())
            )
        if args.senders:
            _send(args, daemon_port, data_dir)
    finally:
        for process in (daemon, peer):
            process.terminate()
            process.wait(20)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
