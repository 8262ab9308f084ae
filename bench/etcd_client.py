"""Talking to etcd from Twisted: homeport.etcd (Twisted's Agent on the reactor) vs
etcd3gw (the maintained requests-based client) run in the reactor's thread pool.

Both talk to the same etcd member through its v3 JSON gateway, from one Twisted process,
as the daemon would: put and range latency (p50, p99, one call at a time) and throughput
(calls/s with --concurrency in flight), the two clients alternating round by round.
Prints each figure and the ratio etcd3gw / homeport.etcd.

    python3 bench/etcd_client.py [--calls 1000] [--concurrency 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

from benchlib import free_port, wait_http
from etcd3gw.client import Etcd3Client
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.threads import deferToThread

from homeport.etcd import EtcdClient
from homeport.part import IHomeportReactor

reactor = cast(IHomeportReactor, global_reactor)
Call = Callable[[bytes, bytes], Awaitable[object]]


def start_etcd(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    command = [etcd, "--name", "bench", "--data-dir", str(work / "etcd")]
    command += ["--listen-client-urls", url, "--advertise-client-urls", url]
    command += ["--listen-peer-urls", f"http://127.0.0.1:{peer}"]
    command += ["--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}"]
    command += ["--initial-cluster", f"bench=http://127.0.0.1:{peer}"]
    with open(work / "etcd.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wait_http(url + "/health")
    return process, url


def clients(url: str) -> dict[str, tuple[Call, Call]]:
    """Each client's (put, range), as awaitables on the reactor."""
    ours = EtcdClient(reactor, [url])
    port = int(url.rsplit(":", 1)[1])
    theirs = Etcd3Client(host="127.0.0.1", port=port, api_path="/v3/")

    async def our_put(key: bytes, value: bytes) -> object:
        return await ours.put(key, value)

    async def our_range(key: bytes, _: bytes) -> object:
        return await ours.range(key)

    def their_put_sync(key: bytes, value: bytes) -> object:
        return theirs.put(key, value)

    async def their_put(key: bytes, value: bytes) -> object:
        return await deferToThread(their_put_sync, key, value)

    async def their_range(key: bytes, _: bytes) -> object:
        return await deferToThread(theirs.get, key)

    return {"homeport.etcd": (our_put, our_range), "etcd3gw+threads": (their_put, their_range)}


async def latency(call: Call, calls: int, tag: str) -> tuple[float, float]:
    """p50 and p99 in ms of *calls* sequential calls."""
    times = []
    for i in range(calls):
        started = time.perf_counter()
        await call(b"bench/%s/%d" % (tag.encode(), i % 100), b"x" * 64)
        times.append((time.perf_counter() - started) * 1000)
    quantiles = statistics.quantiles(times, n=100)
    return quantiles[49], quantiles[98]


async def throughput(call: Call, calls: int, concurrency: int, tag: str) -> float:
    """Calls per second with *concurrency* calls in flight."""
    left = iter(range(calls))

    async def worker() -> None:
        for i in left:
            await call(b"bench/%s/%d" % (tag.encode(), i % 100), b"y" * 64)

    started = time.perf_counter()
    workers = [Deferred.fromCoroutine(worker()) for _ in range(concurrency)]
    await DeferredList(workers, fireOnOneErrback=True, consumeErrors=True)
    return calls / (time.perf_counter() - started)


async def measure(url: str, args: argparse.Namespace) -> None:
    reactor.suggestThreadPoolSize(args.concurrency)
    results: dict[tuple[str, str], list[float]] = {}
    made = clients(url)
    for round_ in range(args.rounds + 1):  # round 0 warms both up and is not counted
        for name, (put, range_) in made.items():
            for op, call in (("put", put), ("range", range_)):
                p50, p99 = await latency(call, args.calls, name)
                rate = await throughput(call, args.calls, args.concurrency, name)
                if round_:
                    for figure, value in (("p50 ms", p50), ("p99 ms", p99), ("calls/s", rate)):
                        results.setdefault((f"{op} {figure}", name), []).append(value)
    report(results, list(made))


def report(results: dict[tuple[str, str], list[float]], names: list[str]) -> None:
    ours, theirs = names
    print(f"{'':16}{ours:>16}{theirs:>18}{'ratio':>8}   (median of rounds)")
    for figure in dict.fromkeys(f for f, _ in results):
        a = statistics.median(results[figure, ours])
        b = statistics.median(results[figure, theirs])
        print(f"{figure:16}{a:16.2f}{b:18.2f}{b / a:8.2f}")
    print("ratio = etcd3gw+threads / homeport.etcd (latency: above 1 is slower; calls/s: below")
    print("1 is fewer)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        process, url = start_etcd(Path(work))
        try:
            d = Deferred.fromCoroutine(measure(url, args))
            d.addErrback(lambda f: print(f.getTraceback()))
            d.addBoth(lambda _: global_reactor.stop())
            global_reactor.run()
        finally:
            process.kill()
            process.wait()


if __name__ == "__main__":
    main()
