"""TLS in the real daemon: certificates from Debian's real pebble, checked with curl.

pebble ships no certificates of its own, so each test makes a CA and a certificate for
pebble's HTTPS with ``cryptography`` (passed to the daemon as ``--acme-ca-file``).
``pebble-challtestsrv`` is pebble's DNS and answers 127.0.0.1 for every name, and pebble's
``httpPort``/``tlsPort`` point at the daemon's listeners, so validation is real (no
``PEBBLE_VA_ALWAYS_VALID``).  The served chains are verified by ``curl --cacert`` with
pebble's root from its management interface, ``--resolve`` mapping the names to loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .daemon import Daemon, DaemonFactory
from .test_tls_memory import LocalCA

pytestmark = pytest.mark.skipif(
    shutil.which("pebble") is None or shutil.which("curl") is None,
    reason="needs Debian's pebble and curl (./test installs them)",
)

A = "a.homeport.test"
B = "b.homeport.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Pebble:
    """pebble + pebble-challtestsrv on loopback, validating against the given ports."""

    workdir: Path
    http_port: int
    tls_port: int
    ca: LocalCA = field(default_factory=lambda: LocalCA("pebble's HTTPS test CA"))
    acme_port: int = field(default_factory=free_port)
    management_port: int = field(default_factory=free_port)
    dns_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "pebble-https-ca.pem"

    def start(self) -> Pebble:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.ca_file.exists():
            self.ca_file.write_bytes(self.ca.pem)
            pem = self.ca.pem_file(["localhost"], days=30, ips=["127.0.0.1"])
            key, chain = pem.split(b"-----BEGIN CERTIFICATE-----", 1)
            (self.workdir / "key.pem").write_bytes(key)
            (self.workdir / "cert.pem").write_bytes(b"-----BEGIN CERTIFICATE-----" + chain)
            config = {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{self.acme_port}",
                    "managementListenAddress": f"127.0.0.1:{self.management_port}",
                    "certificate": str(self.workdir / "cert.pem"),
                    "privateKey": str(self.workdir / "key.pem"),
                    "httpPort": self.http_port,
                    "tlsPort": self.tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
            (self.workdir / "pebble.json").write_text(json.dumps(config))
        log = open(
            self.workdir / "pebble.log", "ab"
        )  # outlives this call: the processes write to it
        self.processes.append(
            subprocess.Popen(
                ["pebble-challtestsrv", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                 "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
                 "-tlsalpn01", "", "-management", f"127.0.0.1:{free_port()}"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        env = dict(
            os.environ,
            PEBBLE_VA_NOSLEEP="1",
            PEBBLE_WFE_NONCEREJECT="0",
            PEBBLE_AUTHZREUSE="0",
        )
        self.processes.append(
            subprocess.Popen(
                ["pebble", "-config", str(self.workdir / "pebble.json"),
                 "-dnsserver", f"127.0.0.1:{self.dns_port}"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        )  # fmt: skip
        wait_for(self._ready, 20, "pebble to answer")
        return self

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return bytes(response.read())

    def _ready(self) -> bool:
        try:
            self._get(self.directory)
            return True
        except OSError:
            return False

    def root(self) -> Path:
        """pebble's root CA (new at every start), saved for curl --cacert."""
        path = self.workdir / f"root-{time.monotonic_ns()}.pem"
        path.write_bytes(self._get(f"https://127.0.0.1:{self.management_port}/roots/0"))
        return path

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()


@pytest.fixture
def pebble_factory(tmp_path: Path) -> Iterator[Callable[..., Pebble]]:
    made: list[Pebble] = []

    def make(http_port: int, tls_port: int) -> Pebble:
        pebble = Pebble(tmp_path / "pebble", http_port, tls_port)
        made.append(pebble)
        return pebble

    yield make
    for pebble in made:
        pebble.stop()


def curl(name: str, port: int, cacert: Path, path: str = "/v1/status/leader") -> tuple[int, str]:
    """HTTPS through curl, verifying the chain against *cacert* and the name."""
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(cacert),
         "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}{path}",
         "-o", "-", "-w", "\n%{http_code}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return 0, result.stderr.strip()
    body, _, code = result.stdout.rpartition("\n")
    return int(code), body


def served_names(name: str, port: int, cacert: Path) -> list[str]:
    """The DNS names of the certificate served for SNI *name* (chain verified)."""
    context = ssl.create_default_context(cafile=str(cacert))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            peer = tls.getpeercert()
    assert peer is not None
    names = peer.get("subjectAltName", ())
    return [entry[1] for entry in names if isinstance(entry, tuple) and entry[0] == "DNS"]


def issued(certs: Path, *names: str) -> Callable[[], bool]:
    def check() -> bool:
        return all(
            (certs / f"{n}.pem").exists() and (certs / f"{n}.pem").stat().st_size > 0 for n in names
        )

    return check


def start_daemon(
    daemon_factory: DaemonFactory, certs: Path, pebble: Pebble | None, *args: str
) -> Daemon:
    acme = []
    if pebble is not None:
        acme = ["--acme-directory", pebble.directory, "--acme-ca-file", str(pebble.ca_file)]
    return daemon_factory(list(args) + acme).start()


def test_http_01_gets_certificates_for_two_names_served_by_sni_and_verified_by_curl(
    tmp_path: Path, daemon_factory: DaemonFactory, pebble_factory: Callable[..., Pebble]
) -> None:
    """Two empty files, a plain listener reachable from outside: http-01 for both."""
    plain, tls = free_port(), free_port()
    pebble = pebble_factory(http_port=plain, tls_port=free_port()).start()
    certs = tmp_path / "certs"
    daemon = start_daemon(
        daemon_factory, certs, pebble,
        "--http", f"tcp:{plain}", "--http", f"le:{certs}:tcp:{tls}:interface=127.0.0.1",
        "--empty-file", str(certs / f"{A}.pem"), "--empty-file", str(certs / f"{B}.pem"),
        "--token", "secret",
    )  # fmt: skip
    wait_for(issued(certs, A, B), 60, "both certificates")
    root = pebble.root()
    for name in (A, B):
        code, body = curl(name, tls, root)
        assert (code, body) == (200, '"127.0.0.1:8300"'), (code, body, daemon.output())
        assert served_names(name, tls, root) == [name]
        assert stat.S_IMODE((certs / f"{name}.pem").stat().st_mode) == 0o600
    output = daemon.output()
    assert output.count("(http-01)") == 2, output
    for name in (A, B):  # one readable line each, in the daemon's own log
        said = f"Issued a certificate for {name} by {pebble.directory} (http-01), valid until "
        found = [line for line in output.splitlines() if said in line]
        assert len(found) == 1 and " INFO " in found[0] and " tls " in found[0], output
    assert "Could not get" not in output
    # Plain HTTP from outside is sent to HTTPS; the daemon's own loopback listener is not.
    result = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
         "--resolve", f"{A}:{plain}:127.0.0.1", f"http://{A}:{plain}/v1/kv/x?raw"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert result.stdout == f"301 https://{A}:{tls}/v1/kv/x?raw"


def tls_only_daemon(
    tmp_path: Path, daemon_factory: DaemonFactory, pebble_factory: Callable[..., Pebble]
) -> tuple[Daemon, Pebble, Path, int]:
    """A 443-only deployment: pebble, and a daemon whose one listener is le: (so
    tls-alpn-01), asked for A's certificate; returns once A's is issued."""
    tls = free_port()
    pebble = pebble_factory(http_port=free_port(), tls_port=tls).start()
    certs = tmp_path / "certs"
    daemon = start_daemon(
        daemon_factory, certs, pebble,
        "--http", f"le:{certs}:tcp:{tls}:interface=127.0.0.1",
        "--empty-file", str(certs / f"{A}.pem"),
    )  # fmt: skip
    wait_for(issued(certs, A), 60, "the certificate")
    return daemon, pebble, certs, tls


def test_tls_alpn_01_gets_a_certificate_with_only_the_tls_listener_reachable(
    tmp_path: Path, daemon_factory: DaemonFactory, pebble_factory: Callable[..., Pebble]
) -> None:
    """No plain listener outside loopback (a 443-only deployment): tls-alpn-01 on le:."""
    daemon, pebble, _, tls = tls_only_daemon(tmp_path, daemon_factory, pebble_factory)
    root = pebble.root()
    assert curl(A, tls, root)[0] == 200
    output = daemon.output()
    assert "(tls-alpn-01)" in output and "Could not get" not in output, output


def test_sighup_asks_at_once_for_a_name_whose_empty_file_appeared(
    tmp_path: Path, daemon_factory: DaemonFactory, pebble_factory: Callable[..., Pebble]
) -> None:
    """An empty B.pem dropped into the directory of a running daemon gets its
    certificate after `kill -HUP`, not at the next daily check; A is left alone."""
    daemon, pebble, certs, tls = tls_only_daemon(tmp_path, daemon_factory, pebble_factory)
    first = (certs / f"{A}.pem").read_bytes()
    (certs / f"{B}.pem").touch()
    assert daemon.process is not None
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(issued(certs, B), 60, "the certificate asked for after SIGHUP")
    assert served_names(B, tls, pebble.root()) == [B]
    assert (certs / f"{A}.pem").read_bytes() == first
    assert daemon.process.poll() is None
    assert f"for {B} (requested)" in daemon.output()


def test_with_pebble_down_the_daemon_serves_what_it_has_and_recovers_when_it_is_back(
    tmp_path: Path, daemon_factory: DaemonFactory, pebble_factory: Callable[..., Pebble]
) -> None:
    """One certificate issued; pebble stops; a restart asks for a second name: the first
    is still served, each failed try is one log line, and the second arrives once pebble
    is back."""
    plain, tls = free_port(), free_port()
    pebble = pebble_factory(http_port=plain, tls_port=free_port()).start()
    certs = tmp_path / "certs"
    args = ["--http", f"tcp:{plain}", "--http", f"le:{certs}:tcp:{tls}:interface=127.0.0.1"]
    daemon = start_daemon(
        daemon_factory, certs, pebble, *args, "--empty-file", str(certs / f"{A}.pem")
    )
    wait_for(issued(certs, A), 60, "the first certificate")
    first_root = pebble.root()
    pebble.stop()
    daemon.stop()

    daemon = start_daemon(
        daemon_factory, certs, pebble, *args, "--empty-file", str(certs / f"{B}.pem")
    )
    wait_for(lambda: "Could not get a certificate for" in daemon.output(), 30, "a failure")
    assert curl(A, tls, first_root)[0] == 200
    failure = next(line for line in daemon.output().splitlines() if "Could not get" in line)
    assert f"for {B} from {pebble.directory}: cannot reach the ACME server" in failure
    assert "next in 10s" in failure

    pebble.start()  # a new pebble: new root, account unknown to it
    wait_for(issued(certs, B), 90, "the second certificate")
    wait_for(lambda: f"Serving the certificate for {B}" in daemon.output(), 10, "reload")
    assert curl(B, tls, pebble.root())[0] == 200
    assert curl(A, tls, first_root)[0] == 200
    output = daemon.output()
    assert "Traceback" not in output, output
    assert daemon.process is not None and daemon.process.poll() is None


def test_a_corrupt_pem_file_is_reported_and_the_other_certificates_are_served(
    tmp_path: Path, daemon_factory: DaemonFactory
) -> None:
    ca = LocalCA()
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / f"{A}.pem").write_bytes(ca.pem_file([A]))
    (certs / f"{B}.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\ntruncated")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    tls = free_port()
    daemon = start_daemon(
        daemon_factory, certs, None,
        "--http", f"le:{certs}:tcp:{tls}:interface=127.0.0.1",
        "--acme-directory", f"https://127.0.0.1:{free_port()}/dir",
    )  # fmt: skip
    assert curl(A, tls, tmp_path / "ca.pem")[0] == 200
    output = daemon.output()
    assert f"Certificate file {certs / B}.pem is not served" in output, output
    assert "Traceback" not in output


def test_ssl_endpoints_with_a_user_certificate_keep_working(
    tmp_path: Path, daemon_factory: DaemonFactory
) -> None:
    ca = LocalCA()
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    pem = ca.pem_file(["localhost"])
    (tmp_path / "server.pem").write_bytes(pem)
    port = free_port()
    daemon_factory(
        ["--http", f"ssl:{port}:privateKey={tmp_path / 'server.pem'}:interface=127.0.0.1"]
    ).start()
    assert curl("localhost", port, tmp_path / "ca.pem")[0] == 200


@pytest.mark.parametrize(
    ("option", "value"),
    [("--acme-directory", "not a url"), ("--acme-ca-file", "/nonexistent/ca.pem"),
     ("--acme-email", "nobody")],
)  # fmt: skip
def test_a_bad_acme_option_stops_start_up_with_one_line(
    tmp_path: Path, option: str, value: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "homeport", "--data-dir", str(tmp_path), option, value],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert option in result.stderr and "Traceback" not in result.stderr, result.stderr
