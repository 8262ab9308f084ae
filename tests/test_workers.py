"""``--workers``: processes sharing the HTTP and DNS ports, against the real daemon.

A worker's answers cannot be told from the primary's, so the tests tell them apart by
stopping the primary (SIGSTOP): what is still answered then was answered by a worker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from .daemon import Daemon, DaemonFactory, wait_for
from .etcd_cluster import free_port

WORKERS = 3  # the primary and two workers
#: The indexes the reads of test_workers_answer_reads_byte_for_byte_as_the_primary may
#: carry: its registrations are indexes 2-6 (1 is the agent's own node), its KV write 7.
FIRST_INDEX, LAST_INDEX = 2, 8


def children(daemon: Daemon) -> list[int]:
    """The worker processes the primary runs now."""
    assert daemon.process is not None
    pid = daemon.process.pid
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text if "homeport.worker" in _cmdline(int(p))]
    return sorted(found)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def raw_get(port: int, path: str, timeout: float = 2.0, host: str = "127.0.0.1") -> bytes | None:
    """One GET on a fresh connection, the whole answer's bytes; None if none came."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(
                next(
                    h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")
                ).split(b":")[1]
            )
            while len(body) < length:
                body += sock.recv(65536)
            return head + b"\r\n\r\n" + body
    except OSError:
        return None


def without_date(answer: bytes) -> bytes:
    """*answer* without its ``Date``, and its ``X-Consul-Index`` checked and taken out:
    each process gives an unchanged answer the index at which it first saw it (at or
    after the answer's last change, at most the current index), so processes that
    first computed it at different times may say different ones."""
    lines = answer.split(b"\r\n")
    for line in lines:
        if line.startswith(b"X-Consul-Index: "):
            assert FIRST_INDEX <= int(line.split(b": ")[1]) <= LAST_INDEX, line
    return b"\r\n".join(
        h for h in lines if not h.lower().startswith((b"date:", b"x-consul-index:"))
    )


@contextmanager
def primary_stopped(daemon: Daemon) -> Iterator[None]:
    assert daemon.process is not None
    os.kill(daemon.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(daemon.process.pid, signal.SIGCONT)


@pytest.fixture
def pool(daemon_factory: DaemonFactory) -> Daemon:
    dns_port = free_port()
    daemon = daemon_factory().start(
        ["--workers", str(WORKERS), "--dns", f"127.0.0.1:{dns_port}"], timeout=30
    )
    wait_for(lambda: len(children(daemon)) == WORKERS - 1, 30, "the workers")
    wait_for(
        lambda: (
            "serving reads" in daemon.output()
            and daemon.output().count("serving reads") >= WORKERS - 1
        ),
        30,
        "the workers to listen",
    )
    return daemon


def answered_while_stopped(daemon: Daemon, path: str, tries: int = 30) -> list[bytes]:
    with primary_stopped(daemon):
        answers = [raw_get(daemon.http_port, path, timeout=1.0) for _ in range(tries)]
    return [a for a in answers if a is not None]


def test_workers_answer_reads_byte_for_byte_as_the_primary(pool: Daemon) -> None:
    for n in range(5):
        body = {
            "Node": f"n{n}",
            "Address": f"10.0.0.{n + 1}",
            "Service": {"Service": "web", "Port": 80 + n},
        }
        assert pool.request("PUT", "/v1/catalog/register", body)[0] == 200
    assert pool.request("PUT", "/v1/kv/app/config", "v1")[0] == 200
    for path in ("/v1/catalog/service/web", "/v1/health/service/web?passing", "/v1/kv/app/config"):
        wait_for(partial(answered_while_stopped, pool, path, 6), 15, "a worker's answer")
        from_workers = {without_date(a) for a in answered_while_stopped(pool, path)}
        assert from_workers, path
        from_anyone = {
            without_date(a) for a in (raw_get(pool.http_port, path) for _ in range(20)) if a
        }
        assert from_workers == from_anyone, path
        assert len(from_workers) == 1, (path, sorted(from_workers))


def test_a_write_on_any_connection_is_the_primary_s_and_reaches_every_worker(
    pool: Daemon,
) -> None:
    """Writes arriving at workers are applied by the primary before the answer: each
    acknowledged one is there after kill -9 and restart, and in every worker's copy."""
    for n in range(20):
        status, _, body = pool.request("PUT", f"/v1/kv/k{n}", str(n))
        assert (status, body) == (200, b"true")
    wanted = sorted(f"k{n}" for n in range(20))
    wait_for(lambda: workers_hold(pool, wanted), 15, "the workers' copies")
    pool.kill9()
    pool.start()
    keys = pool.get_json("/v1/kv/?keys")
    assert sorted(keys) == sorted(f"k{n}" for n in range(20))


def workers_hold(pool: Daemon, keys: list[str]) -> bool:
    """Do the answers workers give (some, with the primary stopped) list *keys*?"""
    answers = answered_while_stopped(pool, "/v1/kv/?keys", 10)
    return bool(answers) and all(
        sorted(json.loads(a.partition(b"\r\n\r\n")[2])) == keys for a in answers
    )


def test_a_blocking_query_parked_on_a_worker_wakes_when_the_change_reaches_it(
    pool: Daemon,
) -> None:
    assert pool.request("PUT", "/v1/kv/watched", "before")[0] == 200
    _, headers, _ = pool.request("GET", "/v1/kv/watched")
    index = headers["X-Consul-Index"]
    answers: list[tuple[int, bytes]] = []

    def park() -> None:
        status, _, body = pool.request(
            "GET", f"/v1/kv/watched?index={index}&wait=60s&raw", timeout=90
        )
        answers.append((status, body))

    threads = [threading.Thread(target=park) for _ in range(12)]
    for thread in threads:
        thread.start()
    workers = children(pool)
    wait_for(lambda: parked_on(pool.http_port, workers), 15, "a query parked on a worker")
    time.sleep(0.5)
    assert answers == []  # parked, not answered
    assert pool.request("PUT", "/v1/kv/watched", "after")[0] == 200
    for thread in threads:
        thread.join(20)
    assert answers == [(200, b"after")] * 12


def parked_on(port: int, pids: list[int]) -> bool:
    """Does one of *pids* hold an established connection on *port*?"""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return any(f"pid={pid}," in out for pid in pids)


def test_a_worker_killed_with_9_is_started_again(pool: Daemon) -> None:
    assert pool.request("PUT", "/v1/kv/x", "1")[0] == 200
    first = children(pool)
    os.kill(first[0], signal.SIGKILL)
    wait_for(
        lambda: len(children(pool)) == WORKERS - 1 and first[0] not in children(pool),
        20,
        "a new worker",
    )
    # the primary logs the end once it has reaped the worker: wait for the line too
    wait_for(
        lambda: "worker 1 ended" in pool.output() or "worker 2 ended" in pool.output(),
        20,
        "the primary's log line",
    )
    wait_for(lambda: len(answered_while_stopped(pool, "/v1/kv/x?raw", 12)) >= 1, 20, "answers")
    for answer in answered_while_stopped(pool, "/v1/kv/x?raw"):
        assert answer.endswith(b"\r\n\r\n1")


def test_dns_is_answered_by_the_workers_too(pool: Daemon) -> None:
    dns_port = int(pool.args[pool.args.index("--dns") + 1].rsplit(":", 1)[1])
    with primary_stopped(pool):
        answers = [
            subprocess.run(
                [
                    "dig",
                    "+short",
                    "+tries=1",
                    "+time=1",
                    "@127.0.0.1",
                    "-p",
                    str(dns_port),
                    "consul.service.consul",
                ],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            for _ in range(12)
        ]
    assert "127.0.0.1" in answers


def test_streams_and_writes_on_a_worker_s_connection_reach_the_primary(pool: Daemon) -> None:
    """SSE through a worker: the connection is handed over whole and stays live."""
    streams = [
        subprocess.Popen(
            ["curl", "-sN", "--max-time", "20", f"{pool.url}/v1/events?topic=ci"],
            stdout=subprocess.PIPE,
        )
        for _ in range(6)
    ]
    time.sleep(2)
    assert pool.request("POST", "/v1/events/ci", {"build": 7})[0] in (200, 202)
    for stream in streams:
        assert stream.stdout is not None
        line = b""
        deadline = time.monotonic() + 15
        while (
            b'"build": 7' not in line and b'"build":7' not in line and time.monotonic() < deadline
        ):
            line += stream.stdout.readline()
        stream.kill()
        assert b"build" in line


def test_the_workers_end_with_the_primary(pool: Daemon) -> None:
    workers = children(pool)
    assert pool.stop() == 0
    wait_for(lambda: not any(_cmdline(p) for p in workers), 15, "the workers to end")


@pytest.mark.parametrize("value", ["0", "65", "many"])
def test_a_bad_workers_count_is_a_usage_error(daemon_factory: DaemonFactory, value: str) -> None:
    with pytest.raises(RuntimeError, match="--workers"):
        daemon_factory().start(["--workers", value])


def test_the_readme_command_starts_one_process_per_core(daemon_factory: DaemonFactory) -> None:
    from .test_readme_examples import daemon_options, example

    daemon = daemon_factory().start(daemon_options(example("workers")), timeout=30)
    cores = os.cpu_count() or 1
    wait_for(lambda: len(children(daemon)) == cores - 1, 30, "a worker per core but one")
    assert daemon.request("PUT", "/v1/kv/k", "v")[0] == 200
    wait_for(lambda: daemon.request("GET", "/v1/kv/k?raw")[2] == b"v", 10, "the value")


def test_a_worker_refuses_a_rebinding_host_name_as_the_primary_does(pool: Daemon) -> None:
    assert pool.request("PUT", "/v1/kv/secret", "s")[0] == 200
    wait_for(partial(answered_while_stopped, pool, "/v1/kv/secret?raw", 6), 15, "a worker")
    with primary_stopped(pool):
        answers = [
            raw_get(pool.http_port, "/v1/kv/secret?raw", 1.0, host="evil.example.com")
            for _ in range(20)
        ]
    refused = [a for a in answers if a is not None]
    assert refused
    assert all(a.startswith(b"HTTP/1.1 403 ") for a in refused), refused[0][:200]
