"""Run the real ``twist homeport`` as a subprocess on loopback, for integration tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Daemon:
    """One daemon process: its ports, data dir and output."""

    workdir: Path
    args: list[str] = field(default_factory=list)
    http_port: int = 0
    dns_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: ``--node`` (None: none given, the daemon picks its own name).
    node: str | None = "testnode"
    #: A command the daemon runs under (e.g. ``unshare`` for a hostname of its own).
    prefix: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, extra: list[str] | None = None, timeout: float = 20.0) -> Daemon:
        """Start (or restart) on the same ports as before, or on fresh ones."""
        args = list(extra if extra is not None else self.args)
        self.args = args
        http = f"tcp:{self.http_port}:interface=127.0.0.1"
        command = [
            *self.prefix,
            sys.executable,
            "-m",
            "twisted",
            "--log-format=text",
            "homeport",
            "--http",
            http,
            "--data-dir",
            str(self.data_dir),
            "--advertise",
            "127.0.0.1",
        ]
        if self.node is not None:
            command += ["--node", self.node]
        if not any(a.startswith("--dns") for a in args):
            command += ["--dns", "none"]
        command += args
        self.log_path = self.workdir / f"daemon-{time.monotonic_ns()}.log"
        env = dict(os.environ, HOMEPORT_PRINT_PORTS="1", **self.env)
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            for line in text.splitlines():
                if "homeport-port http " in line:
                    self.http_port = int(line.rsplit(" ", 1)[1])
                if "homeport-port dns " in line:
                    self.dns_port = int(line.rsplit(" ", 1)[1])
            if "homeport-ports-done" in text:
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"homeport exited with {self.process.returncode}:\n{text}")
            time.sleep(0.05)
        raise RuntimeError(f"homeport did not start in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    # -- a tiny HTTP client (urllib: nothing to mock, nothing to install) --------------

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        if body is not None and not isinstance(body, bytes | str):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        req = urllib.request.Request(self.url + path, data=body, method=method)
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get_json(self, path: str) -> Any:
        status, _, body = self.request("GET", path)
        assert status == 200, (status, body)
        return json.loads(body)


#: The ``daemon_factory`` fixture: ``daemon_factory(args, env=...)`` -> a Daemon to start.
DaemonFactory = Callable[..., Daemon]


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll *predicate* until it is true (returning its value), or fail after *timeout*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def curl(*args: str) -> str:
    """What ``curl -sS`` prints for *args* (10 s at most; a failure to connect raises)."""
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args], check=True, capture_output=True, text=True
    ).stdout
