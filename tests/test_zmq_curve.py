"""ZeroMQ CURVE: only publishers whose key is listed reach the event streams (issue #21)."""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth

from homeport.options import Options

from .daemon import Daemon, DaemonFactory
from .test_push_sse import SSEClient
from .test_push_zmq import free_port

Keys = dict[str, tuple[bytes, bytes]]


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """server, allowed and stranger certificates; only allowed's public one in clients/."""
    where = tmp_path / "certs"
    where.mkdir()
    for name in ("server", "allowed", "stranger"):
        zmq.auth.create_certificates(where, name)
    (tmp_path / "clients").mkdir()
    shutil.copy(where / "allowed.key", tmp_path / "clients" / "allowed.key")
    return where


def key_pair(certs: Path, name: str) -> tuple[bytes, bytes]:
    public, secret = zmq.auth.load_certificate(certs / f"{name}.key_secret")
    assert secret is not None
    return public, secret


def curve_options(certs: Path) -> list[str]:
    clients = certs.parent / "clients"
    return [
        "--zmq-curve-server-key",
        str(certs / "server.key_secret"),
        "--zmq-curve-clients",
        str(clients),
    ]


def publisher(
    context: zmq.Context[zmq.Socket[bytes]], port: int, certs: Path, name: str | None
) -> zmq.Socket[bytes]:
    """A PUB connecting to the daemon: a CURVE client with *name*'s keys, or plain."""
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    if name is not None:
        server_public, _ = zmq.auth.load_certificate(certs / "server.key")
        public, secret = key_pair(certs, name)
        pub.curve_serverkey = server_public
        pub.curve_publickey = public
        pub.curve_secretkey = secret
    pub.connect(f"tcp://127.0.0.1:{port}")
    return pub


class Stream:
    """The daemon's zmq/ events, their names read by a thread into a queue."""

    def __init__(self, daemon: Daemon) -> None:
        self.client = SSEClient(daemon, "topic=zmq/*", timeout=120)
        self.names: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                event = self.client.next()
                if event.event:
                    self.names.put(event.event)
        except (OSError, EOFError, ValueError):
            return

    def next(self, timeout: float) -> str | None:
        try:
            return self.names.get(timeout=timeout)
        except queue.Empty:
            return None

    def until(self, last: str) -> list[str]:
        """Event names up to and including *last*."""
        names: list[str] = []
        while (name := self.next(30)) is not None:
            names.append(name)
            if name == last:
                return names
        raise AssertionError(f"{last} never arrived; saw {names}")


def send_rounds(
    senders: dict[str, zmq.Socket[bytes]], stream: Stream, rounds: int = 200
) -> list[str]:
    """Every sender publishes ``<name>/<n>`` each round until the allowed one's message
    arrives (PUB drops until its peer is there); then every sender publishes once more,
    the allowed one last, and the stream is read up to that last message."""
    seen: list[str] = []
    for n in range(rounds):
        for sender, pub in senders.items():
            pub.send_multipart([f"{sender}/{n}".encode(), b"x"])
        name = stream.next(0.2)
        if name is not None:
            seen.append(name)
            if name.startswith("zmq/allowed/"):
                break
    else:
        raise AssertionError(f"the allowed publisher's message never arrived; saw {seen[:5]}")
    for name, pub in senders.items():
        if name != "allowed":
            pub.send_multipart([f"{name}/final".encode(), b"x"])
    senders["allowed"].send_multipart([b"allowed/final", b"x"])
    return seen + stream.until("zmq/allowed/final")


def test_only_listed_curve_clients_reach_the_stream(
    daemon_factory: DaemonFactory, context: zmq.Context[zmq.Socket[bytes]], certs: Path
) -> None:
    port = free_port()
    daemon = daemon_factory(
        ["--token", "s3cret", "--zmq-bind", f"tcp://127.0.0.1:{port}", *curve_options(certs)]
    ).start()
    stream = Stream(daemon)
    senders = {
        "plain": publisher(context, port, certs, None),
        "stranger": publisher(context, port, certs, "stranger"),
        "allowed": publisher(context, port, certs, "allowed"),
    }
    names = send_rounds(senders, stream)
    assert names[-1] == "zmq/allowed/final"
    assert all(name.startswith("zmq/allowed/") for name in names), names
    assert "CURVE" in daemon.output()


def test_without_curve_a_plain_publisher_gets_through(
    daemon_factory: DaemonFactory, context: zmq.Context[zmq.Socket[bytes]], certs: Path
) -> None:
    """The counterpart: the same senders without CURVE all get through (so the test
    above would see them if the daemon let them in)."""
    port = free_port()
    daemon = daemon_factory(["--token", "s3cret", "--zmq-bind", f"tcp://127.0.0.1:{port}"])
    daemon.start()
    stream = Stream(daemon)
    senders = {
        "plain": publisher(context, port, certs, None),
        "allowed": publisher(context, port, certs, None),
    }
    names = send_rounds(senders, stream)
    assert "zmq/plain/final" in names


def test_a_client_key_added_later_is_let_in(
    daemon_factory: DaemonFactory, context: zmq.Context[zmq.Socket[bytes]], certs: Path
) -> None:
    """The clients directory is read again when it changes."""
    port = free_port()
    daemon = daemon_factory(["--zmq-bind", f"tcp://127.0.0.1:{port}", *curve_options(certs)])
    daemon.start()
    stream = Stream(daemon)
    shutil.copy(certs / "stranger.key", certs.parent / "clients" / "stranger.key")
    deadline = time.monotonic() + 30
    while "clients reloaded" not in daemon.output():
        assert time.monotonic() < deadline, daemon.output()
        time.sleep(0.1)
    pub = publisher(context, port, certs, "stranger")
    for n in range(200):
        pub.send_multipart([f"allowed/{n}".encode(), b"x"])
        name = stream.next(0.2)
        if name is not None and name.startswith("zmq/allowed/"):
            return
    raise AssertionError("the newly listed key was not let in")


def test_a_bind_beyond_loopback_without_curve_warns(
    daemon_factory: DaemonFactory, certs: Path
) -> None:
    warning = "listens beyond loopback without CURVE"
    bare = daemon_factory(["--token", "s3cret", "--zmq-bind", f"tcp://0.0.0.0:{free_port()}"])
    assert warning in bare.start().output()
    bare.stop()
    local = daemon_factory(["--token", "s3cret", "--zmq-bind", f"tcp://127.0.0.1:{free_port()}"])
    assert warning not in local.start().output()
    local.stop()
    secured = daemon_factory(
        ["--token", "s3cret", "--zmq-bind", f"tcp://0.0.0.0:{free_port()}", *curve_options(certs)]
    )
    assert warning not in secured.start().output()


def parse(argv: list[str]) -> None:
    options = Options()
    options.environ = {}
    options.parseOptions(argv)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing key", "--zmq-curve-server-key .*: no such file"),
        ("public key only", "--zmq-curve-server-key .*: holds no secret key"),
        ("not a certificate", "--zmq-curve-server-key .*: not a zmq.auth certificate"),
        ("missing dir", "--zmq-curve-clients .*: not a directory"),
        ("key without dir", "--zmq-curve-server-key and --zmq-curve-clients: give both"),
    ],
)
def test_bad_curve_options_are_usage_errors(
    certs: Path, case: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key, clients = certs / "server.key_secret", certs.parent / "clients"
    if case == "missing key":
        key = certs / "nope.key_secret"
    elif case == "public key only":
        key = certs / "server.key"
    elif case == "not a certificate":
        key = certs.parent / "junk"
        key.write_text("hello\n")
    elif case == "missing dir":
        clients = certs.parent / "nope"
    argv = ["--zmq-bind", "tcp://127.0.0.1:5556", "--zmq-curve-server-key", str(key)]
    if case != "key without dir":
        argv += ["--zmq-curve-clients", str(clients)]
    with pytest.raises(SystemExit):
        parse(argv)
    assert re.search("homeport: error: " + message, capsys.readouterr().err)


def test_a_bad_key_stops_the_daemon_with_one_line(
    daemon_factory: DaemonFactory, certs: Path
) -> None:
    daemon: Daemon = daemon_factory(
        [
            "--zmq-bind",
            f"tcp://127.0.0.1:{free_port()}",
            "--zmq-curve-server-key",
            str(certs / "server.key"),
            "--zmq-curve-clients",
            str(certs.parent / "clients"),
        ]
    )
    with pytest.raises(RuntimeError, match="holds no secret key"):
        daemon.start(timeout=10)
    assert "Traceback" not in daemon.output()


def test_the_readme_curve_example_runs_as_written(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """The README's certificates, daemon command and CURVE publisher (ports moved to
    free ones) deliver the publisher's event to a subscriber."""
    from .test_readme_examples import daemon_options, example, ports

    port = free_port()
    subprocess.run(["sh", "-ec", example("zmq-curve-certificates")], cwd=tmp_path, check=True)
    command = ports(example("zmq-curve-daemon"), 8500, zmq=port)
    daemon = daemon_factory().start(daemon_options(command))
    stream = Stream(daemon)
    script = ports(example("zmq-curve-publisher"), daemon.http_port, zmq=port)
    for _ in range(20):
        subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=30)
        if stream.next(2) == "zmq/builds":
            return
    raise AssertionError("the README's CURVE publisher's event never arrived")
