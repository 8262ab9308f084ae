"""A real etcd cluster on loopback for tests: N members on free ports in a temp dir.

Each member is Debian's ``etcd`` process; a member can be killed with SIGKILL and started
again on the same ports and data dir.  Fixtures: ``etcd_cluster`` (three members, shared by a
module's tests) and ``etcd_single`` (one member, fresh for each test); tests import them.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Member:
    """One etcd member: its name, ports, data dir and process."""

    name: str
    workdir: Path
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def client_url(self) -> str:
        scheme = "https" if "--cert-file" in self.extra else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / f"{self.name}.etcd"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self, initial_cluster: str, state: str) -> None:
        command = [
            ETCD,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.client_url,
            "--advertise-client-urls",
            self.client_url,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            initial_cluster,
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            f"homeport-test-{self.workdir.name}",
            "--heartbeat-interval",
            "100",
            "--election-timeout",
            "1000",
            *self.extra,
        ]
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        """SIGKILL, as a crash: no clean shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: the member hangs, its connections open but silent."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        """True when the member answers /health with a leader (plain HTTP only)."""
        if self.client_url.startswith("https"):
            return self.running and _tls_healthy(self)
        try:
            with urllib.request.urlopen(self.client_url + "/health", timeout=1) as reply:
                return bool(json.load(reply).get("health") == "true")
        except (OSError, urllib.error.URLError, ValueError):
            return False


def _tls_healthy(member: Member) -> bool:
    args = [a for a in member.extra]
    ca = args[args.index("--trusted-ca-file") + 1]
    command = ["curl", "-sf", "--max-time", "1", "--cacert", ca]
    if "--trusted-ca-file" in args:  # etcd then asks every client for a certificate
        command += ["--cert", args[args.index("--cert-file") + 1]]
        command += ["--key", args[args.index("--key-file") + 1]]
    result = subprocess.run(
        [*command, member.client_url + "/health"], capture_output=True, check=False
    )
    return result.returncode == 0 and b'"health":"true"' in result.stdout


@dataclass
class Cluster:
    """N members started together; members can be killed and restarted."""

    workdir: Path
    size: int = 3
    extra: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.members:
            self.members = [
                Member(f"m{i + 1}", self.workdir, extra=list(self.extra)) for i in range(self.size)
            ]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def start(self, timeout: float = 30.0) -> Cluster:
        for member in self.members:
            member.start(self.initial_cluster, "new")
        self.wait_healthy(self.members, timeout)
        return self

    def restart(self, member: Member, timeout: float = 30.0) -> None:
        """Start a killed member again on its ports and data dir; wait until it is healthy
        (unless *timeout* is 0)."""
        member.start(self.initial_cluster, "existing")
        if timeout:
            self.wait_healthy([member], timeout)

    def wait_healthy(self, members: list[Member], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(m.healthy() for m in members):
            for m in members:
                if m.process is not None and m.process.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited:\n{m.log_path.read_text()}")
            if time.monotonic() > deadline:
                logs = "\n".join(m.log_path.read_text()[-3000:] for m in members)
                raise TimeoutError(f"etcd did not become healthy:\n{logs}")
            time.sleep(0.05)

    def stop(self) -> None:
        for member in self.members:
            member.kill()

    def heal(self, timeout: float = 30.0) -> None:
        """Start every killed member again and wait until all are healthy."""
        for member in self.members:
            if not member.running:
                self.restart(member, timeout=0)
        self.wait_healthy(self.members, timeout)

    def member_at(self, endpoint: str) -> Member:
        """The member whose client URL is *endpoint*."""
        (member,) = [m for m in self.members if m.client_url == endpoint]
        return member


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three etcd members on loopback, shared by a module's tests."""
    cluster = Cluster(tmp_path_factory.mktemp("etcd3")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def etcd_single(tmp_path: Path) -> Iterator[Cluster]:
    """One etcd member of its own for this test."""
    cluster = Cluster(tmp_path, size=1).start()
    try:
        yield cluster
    finally:
        cluster.stop()
