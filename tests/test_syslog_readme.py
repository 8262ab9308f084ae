"""The README's syslog configuration, extracted from README.md and run as written.

Each example is the fenced block right after an ``<!-- example: NAME -->`` line in the
"Syslog in" section: rsyslog's ``omrelp`` and ``omfwd`` lines and syslog-ng's JSON
destination go into the configuration of a real ``rsyslogd`` / ``syslog-ng`` (around
them only what the README says they go with: an input, or syslog-ng's ``s_src``), the
``logger`` one-liner is run by a shell.  The only changes made to them are the host and
the ports (:func:`substitute`), so that a test never sends to a homeport someone else
runs on the README's ports.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .daemon import Daemon
from .test_readme_examples import example
from .test_syslog_daemon import (
    LISTENERS,
    Rsyslog,
    bound_port,
    bsd_now,
    free_port,
    needs_rsyslog,
    records,
    syslog_ng,
    token,
    wait_listening,
)


def substitute(text: str, daemon: Daemon) -> str:
    """*text* with the README's host and ports replaced by this daemon's: the only edit."""
    relp = bound_port(daemon, "relp", "tcp")
    tcp = bound_port(daemon, "syslog", "tcp")
    json_lines = bound_port(daemon, "json-lines", "tcp")
    substitutions = {
        "homeport.example": "127.0.0.1",
        'port="2514"': f'port="{relp}"',
        'port="5514"': f'port="{tcp}"',
        "port(5515)": f"port({json_lines})",
        "--port 5514": f"--port {tcp}",
        "127.0.0.1:8500": f"127.0.0.1:{daemon.http_port}",
    }
    for old, new in substitutions.items():
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with the README's listeners, on loopback ports it picked."""
    started = Daemon(workdir=tmp_path_factory.mktemp("syslog-readme"), args=LISTENERS).start()
    yield started
    started.stop()


@pytest.mark.skipif(shutil.which("logger") is None, reason="logger (util-linux) is missing")
def test_the_readme_logger_one_liner_stores_a_warning_the_curl_line_finds(
    daemon: Daemon,
) -> None:
    logger_line, curl_line = example("syslog-logger").strip().splitlines()
    word = token()
    assert logger_line.endswith('"backup late"')
    command = substitute(logger_line, daemon).replace('"backup late"', f'"backup late {word}"')
    subprocess.run(command, shell=True, check=True, timeout=30)
    (record,) = records(daemon, f"q={word}")
    assert (record["name"], record["levelname"]) == ("backup", "WARNING")
    assert record["extra"]["facility"] == "daemon"
    found = subprocess.run(
        substitute(curl_line, daemon), shell=True, check=True, capture_output=True, timeout=30
    ).stdout
    assert f"backup late {word}".encode() in found


@needs_rsyslog
@pytest.mark.parametrize(
    ("name", "syslog_format"), [("rsyslog-relp", "rfc3164"), ("rsyslog-tcp", "rfc5424")]
)
def test_the_readme_rsyslog_configuration_forwards_to_homeport(
    daemon: Daemon, tmp_path: Path, name: str, syslog_format: str
) -> None:
    """The README's ``/etc/rsyslog.d/homeport.conf`` lines, after an ``imtcp`` input:
    what rsyslog receives is stored, with its program, level and host."""
    word = token()
    with Rsyslog(tmp_path, substitute(example(name), daemon), top_level=True) as rsyslog:
        rsyslog.send(f"<27>{bsd_now()} web1 nginx[77]: {word} upstream timed out")
        (record,) = records(daemon, f"q={word}")
    assert record["message"] == f"{word} upstream timed out"
    assert (record["name"], record["levelname"]) == ("nginx", "ERROR")
    assert record["extra"]["hostname"] == "web1"
    assert record["extra"]["syslog_format"] == syslog_format


@pytest.mark.skipif(syslog_ng() is None, reason="syslog-ng is missing (./test unpacks it)")
def test_the_readme_syslog_ng_configuration_forwards_json_to_homeport(
    daemon: Daemon, tmp_path: Path
) -> None:
    """The README's syslog-ng lines, with ``s_src`` (the source a distribution's
    syslog-ng.conf defines) as a TCP source here: records arrive as JSON lines."""
    found = syslog_ng()
    assert found is not None
    command, env = found
    word = token()
    source = free_port()
    config = tmp_path / "syslog-ng.conf"
    config.write_text(
        "@version: 3.38\n"
        f'source s_src {{ network(ip("127.0.0.1") port({source}) transport("tcp")); }};\n'
        + substitute(example("syslog-ng"), daemon)
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
        (record,) = records(daemon, f"q={word}")
    finally:
        process.terminate()
        process.wait(10)
    assert record["message"] == f"{word} pool full"
    assert (record["name"], record["levelname"]) == ("pgbouncer", "ERROR")
    assert record["extra"]["syslog_format"] == "json"
    assert record["extra"]["hostname"] == "db1"
    assert record["extra"]["facility"] == "local3"
