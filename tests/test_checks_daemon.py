"""Health checks run by the real daemon, driven with py-consul and plain HTTP: script
checks, off unless asked for, as in Consul."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import consul
import consul.exceptions
import pytest

from .daemon import Daemon, DaemonFactory

REMOTE = (
    "Scripts are disabled on this agent from remote calls; to enable, configure "
    "'enable_script_checks' to true"
)
LOCAL = (
    "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or "
    "'enable_local_script_checks' to true"
)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def client(daemon: Daemon) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=daemon.http_port)


def check(daemon: Daemon, check_id: str) -> dict[str, Any]:
    return dict(daemon.get_json("/v1/agent/checks").get(check_id) or {})


def status_is(daemon: Daemon, check_id: str, status: str) -> bool:
    return check(daemon, check_id).get("Status") == status


# -- script checks -------------------------------------------------------------------------


def test_script_checks_are_refused_unless_enabled(daemon: Daemon) -> None:
    c = client(daemon)
    with pytest.raises(consul.exceptions.ConsulException) as refused:
        c.agent.check.register("disk", consul.Check.script(["/bin/true"], "10s"))
    assert str(refused.value) == f"500 {REMOTE}"
    with pytest.raises(consul.exceptions.ConsulException) as refused:
        c.agent.service.register("web", check=consul.Check.script(["/bin/true"], "10s"))
    assert str(refused.value) == f"500 {REMOTE}"
    assert c.agent.checks() == {}
    assert c.agent.services() == {}


def test_enabled_script_checks_run_and_their_exit_code_is_the_status(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory().start(["--enable-script-checks"])
    assert "--enable-script-checks: whoever may register a check" in daemon.output()
    c = client(daemon)
    state = daemon.workdir / "state"
    state.write_text("0")
    shell = f'echo "exit $(cat {state})"; exit $(cat {state})'
    c.agent.service.register(
        "web", service_id="web1", check=consul.Check.script(["sh", "-c", shell], "1s")
    )
    wait_for(lambda: status_is(daemon, "service:web1", "passing"), what="passing")
    assert check(daemon, "service:web1")["Output"] == "exit 0\n"
    assert [e["Service"]["ID"] for e in c.health.service("web", passing=True)[1]] == ["web1"]
    state.write_text("1")
    wait_for(lambda: status_is(daemon, "service:web1", "warning"), what="warning")
    state.write_text("2")
    wait_for(lambda: status_is(daemon, "service:web1", "critical"), what="critical")
    assert check(daemon, "service:web1")["Output"] == "exit 2\n"
    assert c.health.service("web", passing=True)[1] == []


def test_a_slow_script_is_killed_at_its_timeout(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory().start(["--enable-script-checks"])
    status, _, body = daemon.request(
        "PUT",
        "/v1/agent/check/register",
        {
            "Name": "slow",
            "Args": ["sh", "-c", "echo begun; sleep 60"],
            "Interval": "10s",
            "Timeout": "1s",
        },
    )
    assert status == 200, body
    found = wait_for(lambda: check(daemon, "slow").get("Output"), what="a result")
    assert found == "Timed out (1s) running check\n\nbegun\n"
    assert status_is(daemon, "slow", "critical")


def test_the_daemon_stops_at_once_with_a_script_running(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory().start(["--enable-script-checks"])
    pidfile = daemon.workdir / "script.pid"
    daemon.request(
        "PUT",
        "/v1/agent/check/register",
        {"Name": "long", "Args": ["sh", "-c", f"echo $$ > {pidfile}; sleep 60"], "Interval": "10s"},
    )
    wait_for(pidfile.exists, what="the script to start")
    began = time.monotonic()
    assert daemon.stop() in (0, -signal.SIGTERM)
    assert time.monotonic() - began < 10
    pid = int(pidfile.read_text())
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists() or zombie(pid), what="killed")


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def definition_dir(workdir: Path) -> Path:
    directory = workdir / "consul.d"
    directory.mkdir(exist_ok=True)
    (directory / "web.json").write_text(
        json.dumps(
            {
                "service": {
                    "name": "web",
                    "port": 80,
                    "check": {"args": ["sh", "-c", "echo local"], "interval": "1s"},
                }
            }
        )
    )
    return directory


def test_local_script_checks_run_from_the_config_dir_only(daemon_factory: DaemonFactory) -> None:
    factory = daemon_factory()
    directory = definition_dir(factory.workdir)
    daemon = factory.start(["--enable-local-script-checks", "--config-dir", str(directory)])
    wait_for(lambda: status_is(daemon, "service:web", "passing"), what="the file's check")
    assert check(daemon, "service:web")["Output"] == "local\n"
    assert "--enable-script-checks: whoever" not in daemon.output()
    status, _, body = daemon.request(
        "PUT", "/v1/agent/check/register", {"Name": "api", "Args": ["true"], "Interval": "1s"}
    )
    assert (status, body.decode()) == (500, REMOTE)


def test_a_definition_with_a_script_check_is_refused_by_default(
    daemon_factory: DaemonFactory,
) -> None:
    factory = daemon_factory()
    directory = definition_dir(factory.workdir)
    daemon = factory.start(["--config-dir", str(directory)])
    assert f"Bad service definition {directory / 'web.json'}: {LOCAL}" in daemon.output()
    assert client(daemon).agent.services() == {}


def test_stored_script_checks_are_dropped_when_scripts_are_turned_off(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory().start(["--enable-script-checks"])
    c = client(daemon)
    c.agent.service.register("web", check=consul.Check.script(["true"], "1s"))
    c.agent.check.register("ttl", consul.Check.ttl("1h"))
    wait_for(lambda: status_is(daemon, "service:web", "passing"), what="passing")
    daemon.stop()
    daemon.start([])
    assert f"Failed to restore check service:web: {REMOTE}" in daemon.output()
    assert set(client(daemon).agent.checks()) == {"ttl"}
    assert set(client(daemon).agent.services()) == {"web"}
