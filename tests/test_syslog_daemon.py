"""Syslog into the real daemon from real senders: util-linux ``logger``, Python's
``SysLogHandler``, rsyslog (``omfwd``, ``omrelp``) and syslog-ng (``network()`` with the
JSON template), each a real process; the records are read back with ``GET /v1/logs``.

``./test`` installs rsyslog and unpacks syslog-ng (the two cannot be installed side by
side: both are the system logger) under ``.build/syslog-ng``.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .daemon import Daemon, DaemonFactory

ROOT = Path(__file__).resolve().parent.parent
SYSLOG_NG_ROOT = ROOT / ".build" / "syslog-ng"
LOOPBACK = "interface=127.0.0.1"
LISTENERS = [
    "--syslog",
    f"udp:0:{LOOPBACK}",
    "--syslog",
    f"tcp:0:{LOOPBACK}",
    "--relp",
    f"tcp:0:{LOOPBACK}",
    "--json-lines",
    f"tcp:0:{LOOPBACK}",
]


def token() -> str:
    return "t" + uuid.uuid4().hex[:16]


def bound_port(daemon: Daemon, option: str, kind: str) -> int:
    """The port a ``--<option> ...:0`` listener got, from the daemon's log."""
    pattern = rf"--{option} '{kind}:0[^']*': .* listening on .* port (\d+)"
    match = re.search(pattern, daemon.output())
    assert match is not None, daemon.output()
    return int(match.group(1))


def bsd_now() -> str:
    """Now as an RFC 3164 date (a fixed one would be pruned by the 7-day retention)."""
    moment = time.localtime()
    return (
        time.strftime("%b ", moment) + f"{moment.tm_mday:2d}" + time.strftime(" %H:%M:%S", moment)
    )


def tls_port(daemon: Daemon) -> int:
    match = re.search(r"--syslog-tls 'le:[^']*': .* listening on .* port (\d+)", daemon.output())
    assert match is not None, daemon.output()
    return int(match.group(1))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def records(daemon: Daemon, query: str, count: int = 1, timeout: float = 20.0) -> list[Any]:
    """The records *query* finds, once there are *count* of them (oldest first)."""
    deadline = time.monotonic() + timeout
    found: list[Any] = []
    while time.monotonic() < deadline:
        found = daemon.get_json(f"/v1/logs?order=asc&limit=10000&{query}")["records"]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{query}: {len(found)} of {count} records after {timeout}s: {found}")


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon with every kind of syslog listener, on loopback ports it picked (TLS
    with the certificate directory's stand-in certificate: it has none yet)."""
    workdir = tmp_path_factory.mktemp("syslog")
    tls = ["--syslog-tls", f"le:{workdir / 'certs'}:tcp:0:{LOOPBACK}"]
    started = Daemon(workdir=workdir, args=[*LISTENERS, *tls]).start()
    yield started
    started.stop()


# -- util-linux logger --------------------------------------------------------------


@pytest.mark.skipif(shutil.which("logger") is None, reason="logger (util-linux) is missing")
@pytest.mark.parametrize(
    ("flags", "syslog_format"),
    [
        (["--udp", "--rfc5424"], "rfc5424"),
        (["--udp", "--rfc3164"], "rfc3164"),
        (["--tcp", "--rfc5424"], "rfc5424"),
        (["--tcp", "--rfc3164"], "rfc3164"),
        (["--tcp", "--rfc5424", "--octet-count"], "rfc5424"),
    ],
)
def test_logger(daemon: Daemon, flags: list[str], syslog_format: str) -> None:
    word = token()
    port = bound_port(daemon, "syslog", "udp" if "--udp" in flags else "tcp")
    command = ["logger", "--server", "127.0.0.1", "--port", str(port), *flags]
    subprocess.run(
        [*command, "-t", "nightly", "-p", "daemon.warning", f"{word} backup late"], check=True
    )
    (record,) = records(daemon, f"q={word}")
    assert record["message"] == f"{word} backup late"
    assert (record["name"], record["levelname"]) == ("nightly", "WARNING")
    assert record["extra"]["facility"] == "daemon"
    assert record["extra"]["severity"] == "warning"
    assert record["extra"]["syslog_format"] == syslog_format
    assert record["extra"]["hostname"]
    assert abs(record["created"] - time.time()) < 60
    assert records(daemon, f"q={word}&level=WARNING&field.appname=nightly") == [record]
    assert records(daemon, f"q={word}&level=ERROR", count=0) == []


@pytest.mark.skipif(shutil.which("logger") is None, reason="logger (util-linux) is missing")
def test_logger_structured_data_is_searchable(daemon: Daemon) -> None:
    word = token()
    port = bound_port(daemon, "syslog", "tcp")
    command = ["logger", "--server", "127.0.0.1", "--port", str(port), "--tcp", "--rfc5424"]
    data = ["--sd-id", "zoo@32473", "--sd-param", 'tiger="hungry"']
    subprocess.run([*command, *data, "-t", "zoo", word], check=True)
    (record,) = records(daemon, "field.zoo@32473.tiger=hungry&field.appname=zoo")
    assert record["message"] == word


# -- RFC 5425: TLS ------------------------------------------------------------------


def test_syslog_over_tls_octet_counted(daemon: Daemon) -> None:
    word = token()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the certificate directory's stand-in
    frames = b""
    for n in range(3):
        data = f"<134>1 - tlshost billing 42 - - {word} n={n}".encode()
        frames += b"%d %s" % (len(data), data)
    with socket.create_connection(("127.0.0.1", tls_port(daemon))) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(frames)
    got = records(daemon, f"q={word}", count=3)
    assert [r["message"] for r in got] == [f"{word} n={n}" for n in range(3)]
    assert {(r["name"], r["levelname"], r["extra"]["hostname"]) for r in got} == {
        ("billing", "INFO", "tlshost")
    }


# -- Python's SysLogHandler ---------------------------------------------------------


@pytest.mark.parametrize("socktype", [socket.SOCK_DGRAM, socket.SOCK_STREAM], ids=["udp", "tcp"])
def test_python_syslog_handler(daemon: Daemon, socktype: socket.SocketKind) -> None:
    word = token()
    kind = "udp" if socktype == socket.SOCK_DGRAM else "tcp"
    handler = logging.handlers.SysLogHandler(
        ("127.0.0.1", bound_port(daemon, "syslog", kind)),
        facility=logging.handlers.SysLogHandler.LOG_LOCAL0,
        socktype=socktype,
    )
    handler.setFormatter(logging.Formatter("%(name)s[%(process)d]: %(message)s"))
    log = logging.getLogger(f"billing.{word}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        log.debug("%s checking", word)
        log.warning("%s card declined", word)
        log.error("%s failed:\n  Traceback line 1\n  line 2", word)
    finally:
        log.removeHandler(handler)
        handler.close()
    got = records(daemon, f"q={word}", count=3)
    assert [(r["levelname"], r["name"]) for r in got] == [
        ("DEBUG", f"billing.{word}"),
        ("WARNING", f"billing.{word}"),
        ("ERROR", f"billing.{word}"),
    ]
    assert got[0]["process"] == os.getpid()
    assert got[2]["message"] == f"{word} failed:\n  Traceback line 1\n  line 2"
    assert {r["extra"]["facility"] for r in got} == {"local0"}


# -- rsyslog ------------------------------------------------------------------------

needs_rsyslog = pytest.mark.skipif(
    shutil.which("rsyslogd") is None, reason="rsyslog is missing (./test installs it)"
)


class Rsyslog:
    """``rsyslogd -n`` with its own config, pid file and work dir; its input is TCP on
    :attr:`port` (``logger --tcp`` sends to it), its actions forward to homeport."""

    def __init__(self, workdir: Path, actions: str, top_level: bool = False) -> None:
        """*actions* go in a ruleset of the input's own; with *top_level*, they are the
        rest of the configuration file as given (as ``/etc/rsyslog.d/*.conf`` is)."""
        self.workdir = workdir
        self.port = free_port()
        (workdir / "work").mkdir(parents=True, exist_ok=True)
        self.config = workdir / "rsyslog.conf"
        head = f'global(workDirectory="{workdir / "work"}")\nmodule(load="imtcp")\n'
        if top_level:
            text = f'{head}input(type="imtcp" port="{self.port}" address="127.0.0.1")\n{actions}'
        else:
            text = (
                f'{head}module(load="omrelp")\n'
                f'input(type="imtcp" port="{self.port}" address="127.0.0.1" ruleset="out")\n'
                f'ruleset(name="out") {{\n{actions}\n}}\n'
            )
        self.config.write_text(text)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Rsyslog:
        pid = self.workdir / "rsyslogd.pid"
        with open(self.workdir / "rsyslogd.out", "wb") as out:
            self.process = subprocess.Popen(
                ["rsyslogd", "-n", "-f", str(self.config), "-i", str(pid)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_listening(self.port)
        return self

    def send(self, *lines: str) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.sendall("".join(f"{line}\n" for line in lines).encode())

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@needs_rsyslog
def test_rsyslog_omfwd_tcp_udp_and_omrelp(daemon: Daemon, tmp_path: Path) -> None:
    word = token()
    tcp, udp = bound_port(daemon, "syslog", "tcp"), bound_port(daemon, "syslog", "udp")
    relp = bound_port(daemon, "relp", "tcp")
    actions = (
        f'action(type="omfwd" target="127.0.0.1" port="{tcp}" protocol="tcp" '
        'template="RSYSLOG_SyslogProtocol23Format" TCP_Framing="octet-counted")\n'
        f'action(type="omfwd" target="127.0.0.1" port="{udp}" protocol="udp")\n'
        f'action(type="omrelp" target="127.0.0.1" port="{relp}")'
    )
    with Rsyslog(tmp_path, actions) as rsyslog:
        rsyslog.send(f"<27>{bsd_now()} web1 nginx[77]: {word} upstream timed out")
        got = records(daemon, f"q={word}", count=3)
    assert len(got) == 3
    assert {r["extra"]["syslog_format"] for r in got} == {"rfc5424", "rfc3164"}
    for record in got:
        assert record["message"] == f"{word} upstream timed out", record
        assert (record["name"], record["levelname"]) == ("nginx", "ERROR")
        assert record["extra"]["hostname"] == "web1"
        assert record["extra"]["procid"] == "77"


@needs_rsyslog
def test_relp_kill_9_loses_no_acknowledged_record(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """rsyslog streams to ``--relp``; homeport is killed -9 mid-stream and restarted:
    every record is there in the end (those acknowledged before the kill included),
    as rsyslog sends again what was never acknowledged."""
    relp = free_port()
    target = daemon_factory(["--relp", f"tcp:{relp}:{LOOPBACK}"]).start()
    word = token()
    total = 3000
    actions = (
        f'action(type="omrelp" target="127.0.0.1" port="{relp}" queue.type="LinkedList" '
        'queue.size="100000" action.resumeRetryCount="-1" action.resumeInterval="1")'
    )
    with Rsyslog(tmp_path / "rsyslog", actions) as rsyslog:
        lines = [f"<13>{bsd_now()} h relpkill: {word} n={n:05d}" for n in range(total)]
        for start in range(0, total, 100):
            rsyslog.send(*lines[start : start + 100])
            if start == 1000:
                before = len(records(target, f"q={word}", count=1))
                target.stop(signal.SIGKILL)
                target.start()
            time.sleep(0.02)
        got = records(target, f"q={word}", count=total, timeout=90)
    numbers = {int(r["message"].rsplit("=", 1)[1]) for r in got}
    assert numbers == set(range(total)), sorted(set(range(total)) - numbers)[:20]
    assert before >= 1


# -- syslog-ng ----------------------------------------------------------------------


def syslog_ng() -> tuple[list[str], dict[str, str]] | None:
    """The syslog-ng command (installed, or unpacked by ./test) and its environment."""
    unpacked = SYSLOG_NG_ROOT / "usr" / "sbin" / "syslog-ng"
    if unpacked.exists():
        modules = next((SYSLOG_NG_ROOT / "usr" / "lib" / "syslog-ng").glob("3.*"))
        env = dict(os.environ, LD_LIBRARY_PATH=str(SYSLOG_NG_ROOT / "usr" / "lib" / "syslog-ng"))
        return [str(unpacked), f"--module-path={modules}"], env
    installed = shutil.which("syslog-ng")
    return ([installed], dict(os.environ)) if installed else None


@pytest.mark.skipif(syslog_ng() is None, reason="syslog-ng is missing (./test unpacks it)")
def test_syslog_ng_network_json_template_and_syslog_destinations_tcp_and_tls(
    daemon: Daemon, tmp_path: Path
) -> None:
    found = syslog_ng()
    assert found is not None
    command, env = found
    word = token()
    source = free_port()
    json_port = bound_port(daemon, "json-lines", "tcp")
    tcp = bound_port(daemon, "syslog", "tcp")
    tls = tls_port(daemon)
    config = tmp_path / "syslog-ng.conf"
    config.write_text(
        "@version: 3.38\n"
        "options { stats_freq(0); time_reopen(1); keep_hostname(yes); };\n"
        f'source s_in {{ network(ip("127.0.0.1") port({source}) transport("tcp")); }};\n'
        f'destination d_json {{ network("127.0.0.1" port({json_port}) transport("tcp") '
        'template("$(format-json --scope selected_macros --scope nv_pairs)\\n")); };\n'
        f'destination d_5424 {{ syslog("127.0.0.1" port({tcp}) transport("tcp")); }};\n'
        f'destination d_tls {{ syslog("127.0.0.1" port({tls}) transport("tls") '
        "tls(peer-verify(optional-untrusted))); };\n"
        "log { source(s_in); destination(d_json); destination(d_5424); destination(d_tls); };\n"
    )
    files = [f"--persist-file={tmp_path / 'persist'}", f"--pidfile={tmp_path / 'pid'}"]
    files.append(f"--control={tmp_path / 'ctl'}")
    with open(tmp_path / "syslog-ng.out", "wb") as out:
        process = subprocess.Popen(
            [*command, "-F", "-f", str(config), *files, "--no-caps"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_listening(source)
        with socket.create_connection(("127.0.0.1", source)) as sock:
            sock.sendall(f"<155>{bsd_now()} db1 pgbouncer[9]: {word} pool full\n".encode())
        got = records(daemon, f"q={word}", count=3)
    finally:
        process.terminate()
        process.wait(10)
    assert sorted(r["extra"]["syslog_format"] for r in got) == ["json", "rfc5424", "rfc5424"]
    by_format = {r["extra"]["syslog_format"]: r for r in got}
    for record in got:
        assert record["message"] == f"{word} pool full"
        assert (record["name"], record["levelname"]) == ("pgbouncer", "ERROR")
        assert record["extra"]["facility"] == "local3"
        assert record["extra"]["hostname"] == "db1"
    assert by_format["json"]["extra"]["SOURCEIP"] == "127.0.0.1"


# -- the daemon's side --------------------------------------------------------------


def test_a_busy_port_stops_start_up_with_one_line(
    daemon: Daemon, daemon_factory: DaemonFactory
) -> None:
    taken = bound_port(daemon, "syslog", "udp")
    other = daemon_factory(["--syslog", f"udp:{taken}:{LOOPBACK}"])
    with pytest.raises(RuntimeError, match="exited with 1") as failed:
        other.start()
    line = (
        f"homeport: error: --syslog 'udp:{taken}:{LOOPBACK}': cannot listen: Address already in use"
    )
    assert line in str(failed.value)


def test_counts_on_metrics(daemon: Daemon) -> None:
    status, _, body = daemon.request("GET", "/metrics")
    assert status == 200
    assert re.search(rb"^homeport_syslog_received_total \d", body, re.M)
    assert re.search(rb"^homeport_syslog_dropped_total \d", body, re.M)
    assert re.search(rb"^homeport_syslog_pending \d", body, re.M)


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the daemon closes (or resets) *sock* within 10 s, sending nothing."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_the_listener_limits_are_options_and_homeport_env(tmp_path: Path) -> None:
    """``HOMEPORT_SYSLOG_MAX_MESSAGE=1KiB`` cuts a longer message (marked ``truncated``),
    ``--syslog-max-connections 1`` refuses a second connection while one is open, and
    ``--syslog-idle-timeout`` closes a silent one."""
    limited = Daemon(
        workdir=tmp_path,
        args=[
            "--syslog",
            f"tcp:0:{LOOPBACK}",
            "--syslog-max-connections",
            "1",
            "--syslog-idle-timeout",
            "1s",
        ],
        env={"HOMEPORT_SYSLOG_MAX_MESSAGE": "1KiB"},
    ).start()
    try:
        port = bound_port(limited, "syslog", "tcp")
        word = token()
        data = f"<134>1 - host app - - - {word} {'x' * 3000}".encode()
        with socket.create_connection(("127.0.0.1", port)) as first:
            first.sendall(b"%d %s" % (len(data), data))
            (record,) = records(limited, f"q={word}")
            assert len(record["message"].encode()) < 1024
            assert record["extra"]["truncated"] is True
            with socket.create_connection(("127.0.0.1", port)) as second:
                assert closed_by_peer(second)  # refused: closed at once
            assert closed_by_peer(first)  # idle for a second: closed
    finally:
        limited.stop()
