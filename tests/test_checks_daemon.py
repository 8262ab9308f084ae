"""Health checks run by the real daemon, driven with py-consul and plain HTTP: script
checks (off unless asked for, as in Consul) and HTTP checks through redirects; and the
agent's view of itself as the Consul server that runs them."""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import consul.exceptions
import pytest

from .daemon import Daemon, DaemonFactory, wait_for

REMOTE = (
    "Scripts are disabled on this agent from remote calls; to enable, configure "
    "'enable_script_checks' to true"
)
LOCAL = (
    "Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or "
    "'enable_local_script_checks' to true"
)


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


# -- HTTP checks follow redirects ------------------------------------------------------------


class Redirects(http.server.BaseHTTPRequestHandler):
    """``/hop/N``: N redirects to ``/hop/0``, which answers 200; ``/to/<code>/<where>``
    answers <code> with ``Location: <where>`` (``/to/302/`` none at all); ``/echo``
    answers what it was asked, as JSON."""

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.answer()

    def answer(self) -> None:
        parts = self.path.split("/", 3)
        if parts[1] == "hop" and parts[2] != "0":
            self.reply(302, {"Location": f"/hop/{int(parts[2]) - 1}"})
        elif parts[1] == "to":
            where = parts[3] if len(parts) > 3 else ""
            self.reply(int(parts[2]), {"Location": where} if where else {})
        elif parts[1] == "echo":
            size = int(self.headers.get("Content-Length") or 0)
            asked = {
                "method": self.command,
                "body": self.rfile.read(size).decode(),
                "authorization": self.headers.get("Authorization"),
                "referer": self.headers.get("Referer"),
            }
            self.reply(200, {}, json.dumps(asked).encode())
        else:
            self.reply(200, {}, b"done")

    def reply(self, code: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def redirects() -> Iterator[int]:
    """The port of a :class:`Redirects` server on 127.0.0.1 (also reachable as localhost)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirects)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def http_check(daemon: Daemon, name: str, url: str, **more: Any) -> dict[str, Any]:
    """Register an HTTP check and wait for its first result."""
    status, _, body = daemon.request(
        "PUT", "/v1/agent/check/register", {"Name": name, "HTTP": url, "Interval": "10s", **more}
    )
    assert status == 200, body
    return dict(wait_for(lambda: check(daemon, name).get("Output") and check(daemon, name)))


def test_a_check_on_the_agents_own_redirecting_root_passes(daemon: Daemon) -> None:
    c = client(daemon)
    c.agent.service.register(
        "dashboard", service_id="ui", check=consul.Check.http(f"{daemon.url}/", "10s")
    )
    wait_for(lambda: status_is(daemon, "service:ui", "passing"), what="passing")
    output = check(daemon, "service:ui")["Output"]
    assert output.startswith(f"HTTP GET {daemon.url}/: 200 OK Output: <!doctype html>")


def test_nine_redirects_are_followed_and_the_tenth_refused(daemon: Daemon, redirects: int) -> None:
    base = f"http://127.0.0.1:{redirects}"
    nine = http_check(daemon, "nine", f"{base}/hop/9")
    assert (nine["Status"], nine["Output"]) == (
        "passing",
        f"HTTP GET {base}/hop/9: 200 OK Output: done",
    )
    ten = http_check(daemon, "ten", f"{base}/hop/10")
    assert (ten["Status"], ten["Output"]) == (
        "critical",
        'Get "/hop/0": stopped after 10 redirects',
    )


def test_redirects_keep_or_change_the_method_as_go_does(daemon: Daemon, redirects: int) -> None:
    base = f"http://127.0.0.1:{redirects}"
    asked = {}
    for code in (301, 302, 303, 307, 308):
        result = http_check(
            daemon, f"post{code}", f"{base}/to/{code}//echo", Method="POST", Body="payload"
        )
        assert result["Status"] == "passing", result
        prefix = f"HTTP POST {base}/to/{code}//echo: 200 OK Output: "
        assert result["Output"].startswith(prefix)
        asked[code] = json.loads(result["Output"].removeprefix(prefix))
    assert [(asked[c]["method"], asked[c]["body"]) for c in (301, 302, 303)] == [("GET", "")] * 3
    assert [(asked[c]["method"], asked[c]["body"]) for c in (307, 308)] == [("POST", "payload")] * 2
    assert asked[302]["referer"] == f"{base}/to/302//echo"


def test_credentials_follow_a_redirect_to_the_same_host_only(
    daemon: Daemon, redirects: int
) -> None:
    base = f"http://127.0.0.1:{redirects}"
    header = {"Authorization": ["Bearer secret"]}
    prefix = "200 OK Output: "
    same = http_check(daemon, "same", f"{base}/to/302/{base}/echo", Header=header)
    assert json.loads(same["Output"].split(prefix, 1)[1])["authorization"] == "Bearer secret"
    away = http_check(
        daemon, "away", f"{base}/to/302/http://localhost:{redirects}/echo", Header=header
    )
    assert json.loads(away["Output"].split(prefix, 1)[1])["authorization"] is None


def test_a_redirect_without_a_location_is_the_answer(daemon: Daemon, redirects: int) -> None:
    base = f"http://127.0.0.1:{redirects}"
    result = http_check(daemon, "nowhere", f"{base}/to/302/")
    assert (result["Status"], result["Output"]) == (
        "critical",
        f"HTTP GET {base}/to/302/: 302 Found Output: ",
    )


# -- the agent as a Consul server --------------------------------------------------------------


def test_agent_self_is_a_consul_server_as_status_says(daemon_factory: DaemonFactory) -> None:
    """py-consul reads ``Stats.consul`` and ``/v1/status/*``: one server, its own leader."""
    daemon = daemon_factory().start(["--advertise", "10.1.2.3"])
    c = client(daemon)
    me = c.agent.self()
    assert c.status.leader() == "10.1.2.3:8300"
    assert c.status.peers() == ["10.1.2.3:8300"]
    assert me["Stats"]["consul"] == {
        "server": "true",
        "leader": "true",
        "leader_addr": "10.1.2.3:8300",
        "bootstrap": "true",
        "known_datacenters": "1",
        "acl": "disabled",
    }
    assert me["Stats"]["raft"]["state"] == "Leader"
    assert me["Stats"]["raft"]["num_peers"] == str(len(c.status.peers()) - 1)
    assert me["Config"]["Server"] is True
    assert me["Member"]["Addr"] == "10.1.2.3"
