"""The real ``twist homeport`` on loopback: curl, py-consul, restarts, kill -9, signals."""

from __future__ import annotations

import base64
import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import consul.exceptions
import pytest

from .daemon import Daemon, curl, wait_for


def client(daemon: Daemon, token: str | None = None) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=daemon.http_port, token=token)


# -- the README's curl examples ---------------------------------------------------------


def test_the_readme_curl_examples_work_as_written(daemon: Daemon) -> None:
    url = daemon.url
    out = curl(
        "-X",
        "PUT",
        "--data",
        '{"Name": "web", "Tags": ["rails"], "Port": 80}',
        f"{url}/v1/agent/service/register",
    )
    assert out == ""
    assert json.loads(curl(f"{url}/v1/catalog/services")) == {"consul": [], "web": ["rails"]}
    [entry] = json.loads(curl(f"{url}/v1/catalog/service/web"))
    assert entry["ServicePort"] == 80
    assert json.loads(curl(f"{url}/v1/health/service/web?passing"))[0]["Service"]["ID"] == "web"
    filtered = curl(
        "-G",
        f"{url}/v1/catalog/service/web",
        "--data-urlencode",
        'filter=ServiceTags contains "rails"',
    )
    assert [s["ServiceID"] for s in json.loads(filtered)] == ["web"]
    unmatched = curl(
        "-G",
        f"{url}/v1/catalog/service/web",
        "--data-urlencode",
        'filter=ServiceTags contains "go"',
    )
    assert json.loads(unmatched) == []
    lb = curl("-i", f"{url}/v1/agent/health/service/name/web?format=text")
    assert lb.startswith("HTTP/1.1 200") and lb.endswith("\n\npassing")
    assert curl("-X", "PUT", "--data", "hello", f"{url}/v1/kv/greeting") == "true"
    assert curl(f"{url}/v1/kv/greeting?raw") == "hello"
    headers = curl("-i", f"{url}/v1/catalog/services")
    assert "X-Consul-Index:" in headers
    # / redirects to the dashboard, which answers.
    assert "homeport" in curl("-L", f"{url}/")
    assert "homeport_http_requests_total" in curl(f"{url}/metrics")


def test_the_readme_lock_example_runs_as_written(daemon: Daemon) -> None:
    """The README's session + ?acquire lines, run by bash with only the port changed."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("# a lock (Consul's leader election)")
    block = readme[start : min(readme.index("\n\n", start), readme.index("\n```", start))]
    script = block.replace("127.0.0.1:8500", f"127.0.0.1:{daemon.http_port}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.replace("curl ", "curl -sS ")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("true"), result.stdout
    [session] = json.loads(result.stdout[len("true") :])
    assert (session["Name"], session["TTL"]) == ("web-leader", "30s")
    [entry] = daemon.get_json("/v1/kv/service/web/leader")
    assert entry["Session"] == session["ID"]


# -- the real Consul client --------------------------------------------------------------


def test_py_consul_register_health_deregister(daemon: Daemon) -> None:
    c = client(daemon)
    assert c.agent.service.register("web", service_id="web1", port=8080, tags=["rails"])
    assert c.agent.service.register(
        "web", service_id="web2", port=8081, check=consul.Check.ttl("30s")
    )
    _, nodes = c.health.service("web")
    assert sorted(n["Service"]["ID"] for n in nodes) == ["web1", "web2"]
    _, nodes = c.health.service("web", passing=True)
    assert [n["Service"]["ID"] for n in nodes] == ["web1"]  # web2's TTL check starts critical
    c.agent.check.ttl_pass("service:web2", "all good")
    _, nodes = c.health.service("web", passing=True)
    assert len(nodes) == 2
    _, services = c.catalog.services()
    assert services == {"consul": [], "web": ["rails"]}
    assert set(c.agent.services()) == {"web1", "web2"}
    assert c.agent.service.deregister("web1")
    _, nodes = c.catalog.service("web")
    assert [n["ServiceID"] for n in nodes] == ["web2"]
    assert c.agent.self()["Config"]["NodeName"] == "testnode"
    assert c.status.leader() == "127.0.0.1:8300"


def test_py_consul_catalog_register_for_an_external_node(daemon: Daemon) -> None:
    c = client(daemon)
    assert c.catalog.register(
        "db-host",
        "10.0.0.5",
        service={"Service": "postgres", "Port": 5432},
        check={"Name": "pg", "Status": "passing", "ServiceID": "postgres"},
    )
    _, nodes = c.catalog.nodes()
    assert sorted(n["Node"] for n in nodes) == ["db-host", "testnode"]
    _, entries = c.health.service("postgres", passing=True)
    assert entries[0]["Node"]["Address"] == "10.0.0.5"
    assert c.catalog.deregister("db-host")
    _, nodes = c.catalog.nodes()
    assert [n["Node"] for n in nodes] == ["testnode"]


def test_py_consul_kv_and_a_blocking_query(daemon: Daemon) -> None:
    c = client(daemon)
    assert c.kv.put("config/db", "postgres://a")
    assert c.kv.put("config/cache", "redis", flags=7)
    index, entry = c.kv.get("config/db")
    assert entry["Value"] == b"postgres://a"
    _, entries = c.kv.get("config/", recurse=True)
    assert [e["Key"] for e in entries] == ["config/cache", "config/db"]
    _, keys = c.kv.get("", keys=True, separator="/")
    assert keys == ["config/"]
    assert c.kv.put("config/db", "x", cas=0) is False

    result: dict[str, Any] = {}

    def watch() -> None:
        started = time.monotonic()
        result["index"], result["entry"] = c.kv.get("config/db", index=index, wait="30s")
        result["seconds"] = time.monotonic() - started

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.5)
    assert c.kv.put("config/other", "unrelated")  # must not wake the watcher
    time.sleep(0.5)
    assert watcher.is_alive()
    assert c.kv.put("config/db", "postgres://b")
    watcher.join(10)
    assert not watcher.is_alive()
    assert result["entry"]["Value"] == b"postgres://b"
    assert result["index"] > index
    assert c.kv.delete("config/", recurse=True)
    assert c.kv.get("config/db")[1] is None


def test_py_consul_sees_403_without_the_token(daemon_factory: Any) -> None:
    daemon = daemon_factory(["--token", "s3cret"]).start()
    with pytest.raises(consul.ACLPermissionDenied):
        client(daemon).kv.put("a", "1")
    assert client(daemon, token="s3cret").kv.put("a", "1")
    assert client(daemon).kv.get("a")[1]["Value"] == b"1"


# -- health checks that run for real ---------------------------------------------------------


@pytest.fixture
def http_target() -> Iterator[tuple[str, dict[str, int]]]:
    """A tiny HTTP server whose status code the test sets."""
    state = {"code": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state["code"])
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"hi")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health", state
    server.shutdown()
    server.server_close()


def check_status(daemon: Daemon, check_id: str) -> str:
    checks = daemon.get_json("/v1/agent/checks")
    return str(checks[check_id]["Status"]) if check_id in checks else ""


def test_http_checks_map_status_codes(
    daemon: Daemon, http_target: tuple[str, dict[str, int]]
) -> None:
    """2xx is passing, 429 warning, anything else critical; results follow the target."""
    url, state = http_target
    status, _, body = daemon.request(
        "PUT", "/v1/agent/check/register", {"Name": "api", "HTTP": url, "Interval": "200ms"}
    )
    assert status == 200, body
    wait_for(lambda: check_status(daemon, "api") == "passing", what="passing")
    output = daemon.get_json("/v1/agent/checks")["api"]["Output"]
    assert output.startswith(f"HTTP GET {url}: 200 OK Output: hi")
    state["code"] = 429
    wait_for(lambda: check_status(daemon, "api") == "warning", what="warning")
    state["code"] = 503
    wait_for(lambda: check_status(daemon, "api") == "critical", what="critical")


def test_tcp_checks_connect(daemon: Daemon) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    daemon.request(
        "PUT",
        "/v1/agent/service/register",
        {
            "Name": "self",
            "Port": daemon.http_port,
            "Check": {"TCP": f"127.0.0.1:{daemon.http_port}", "Interval": "200ms"},
        },
    )
    daemon.request(
        "PUT",
        "/v1/agent/check/register",
        {"Name": "dead", "TCP": f"127.0.0.1:{dead_port}", "Interval": "200ms", "Status": "passing"},
    )
    wait_for(lambda: check_status(daemon, "service:self") == "passing", what="passing")
    wait_for(lambda: check_status(daemon, "dead") == "critical", what="critical")
    # "dead" is a node-level check: critical, it takes every service of the node out of
    # ?passing, as in Consul.
    assert daemon.get_json("/v1/health/service/self?passing") == []
    daemon.request("PUT", "/v1/agent/check/deregister/dead")
    assert daemon.get_json("/v1/health/service/self?passing")[0]["Service"]["ID"] == "self"


# -- durability and process life ---------------------------------------------------------------


def test_registrations_survive_a_restart_and_kill_9(daemon: Daemon) -> None:
    c = client(daemon)
    c.agent.service.register("web", service_id="web1", port=80, check=consul.Check.ttl("1h"))
    c.agent.check.ttl_pass("service:web1")
    c.catalog.register("ext", "10.9.9.9", service={"Service": "db"})
    c.kv.put("k", "v")
    daemon.stop()
    daemon.start()
    c = client(daemon)
    assert set(c.agent.services()) == {"web1"}
    assert c.health.service("web", passing=True)[1][0]["Service"]["ID"] == "web1"
    assert c.kv.get("k")[1]["Value"] == b"v"
    before = int(daemon.request("GET", "/v1/catalog/services")[1]["X-Consul-Index"])
    # Every write that was answered 200 is on disk: kill -9 right after the answers.
    for n in range(20):
        assert c.kv.put(f"burst/{n}", str(n))
    c.agent.service.register("late", port=1)
    daemon.kill9()
    daemon.start()  # the same port, at once: no "Address already in use"
    c = client(daemon)
    _, keys = c.kv.get("burst/", keys=True)
    assert len(keys) == 20
    assert "late" in c.agent.services()
    assert "db" in c.catalog.services()[1]
    after = int(daemon.request("GET", "/v1/catalog/services")[1]["X-Consul-Index"])
    assert after >= before  # the index never goes back


def test_sigterm_stops_cleanly_and_answers_parked_queries(daemon: Daemon) -> None:
    _, headers, _ = daemon.request("GET", "/v1/catalog/services")
    index = headers["X-Consul-Index"]
    answers: list[int] = []

    def park() -> None:
        status, _, _ = daemon.request(
            "GET", f"/v1/catalog/services?index={index}&wait=5m", timeout=30
        )
        answers.append(status)

    thread = threading.Thread(target=park)
    thread.start()
    time.sleep(0.5)
    code = daemon.stop(signal.SIGTERM)
    thread.join(10)
    assert answers == [200]
    assert code in (0, -signal.SIGTERM)
    assert "Traceback" not in daemon.output()
    daemon.start()
    assert daemon.get_json("/v1/catalog/services") == {"consul": []}


def test_sighup_reloads_the_config_dir(daemon_factory: Any, tmp_path: Path) -> None:
    config = tmp_path / "conf.d"
    config.mkdir()
    (config / "web.json").write_text('{"service": {"name": "web", "tags": ["rails"], "port": 80}}')
    (config / "many.json").write_text(
        json.dumps(
            {
                "services": [
                    {"name": "api", "port": 9000, "check": {"ttl": "30s"}},
                    {
                        "name": "worker",
                        "id": "worker-1",
                        "checks": [{"tcp": "127.0.0.1:1", "interval": "10s"}],
                    },
                ]
            }
        )
    )
    (config / "broken.json").write_text('{"service": {"name": "x", "port": "eighty"}}')
    daemon = daemon_factory(["--config-dir", str(config)]).start()
    services = daemon.get_json("/v1/catalog/services")
    assert services == {"api": [], "consul": [], "web": ["rails"], "worker": []}
    assert "broken.json" in daemon.output()
    assert "Port of type int" in daemon.output()
    assert daemon.get_json("/v1/agent/checks")["service:api"]["Status"] == "critical"

    (config / "web.json").write_text(
        '{"service": {"name": "web", "tags": ["rails", "v2"], "port": 81}}'
    )
    (config / "many.json").unlink()
    (config / "new.json").write_text('{"service": {"name": "cache", "port": 6379}}')
    (config / "broken.json").write_text('{"service": {"name": "x", "port": 1}}')
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "cache" in daemon.get_json("/v1/catalog/services"), what="reload")
    services = daemon.get_json("/v1/catalog/services")
    assert services == {"cache": [], "consul": [], "web": ["rails", "v2"], "x": []}
    assert daemon.get_json("/v1/catalog/service/web")[0]["ServicePort"] == 81
    assert "service:api" not in daemon.get_json("/v1/agent/checks")
    # Config services are the files' to change, not the API's.
    status, _, body = daemon.request("PUT", "/v1/agent/service/deregister/web")
    assert status == 400 and b"--config-dir" in body


def test_sighup_without_anything_to_reload_is_not_an_exit(daemon: Daemon) -> None:
    """SIGHUP's default is to end the process; homeport takes it as "reload", always."""
    daemon.request("PUT", "/v1/kv/still", "here")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: reloading" in daemon.output(), what="the reload line")
    assert daemon.process is not None and daemon.process.poll() is None, daemon.output()
    status, _, body = daemon.request("GET", "/v1/kv/still?raw")
    assert (status, body) == (200, b"here")
    assert "Traceback" not in daemon.output()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dns", "nowhere"], "--dns 'nowhere'"),
        (["--dns-ttl", "soon"], "--dns-ttl 'soon'"),
        (["--dns-soa-min-ttl", "-5"], "--dns-soa-min-ttl '-5'"),
        (["--http", "bogus:1"], "--http 'bogus:1'"),
        (["--advertise", "not-an-ip"], "--advertise 'not-an-ip'"),
        (["--max-body-size", "huge"], "--max-body-size 'huge'"),
        (["--config-dir", "/does/not/exist"], "--config-dir '/does/not/exist'"),
        (["--token-file", "/does/not/exist"], "--token-file '/does/not/exist'"),
        (["--bogus"], "bogus"),
    ],
)
def test_bad_options_give_one_line_and_exit_1(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "homeport", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("homeport: error: ") and message in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def busy(kind: int) -> tuple[socket.socket, int]:
    """A loopback socket holding a port (TCP listening, or UDP bound)."""
    taken = socket.socket(socket.AF_INET, kind)
    taken.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        taken.listen()
    return taken, taken.getsockname()[1]


@pytest.mark.parametrize(
    ("listener", "kind"),
    [
        ("http", socket.SOCK_STREAM),
        ("dns-udp", socket.SOCK_DGRAM),
        ("dns-tcp", socket.SOCK_STREAM),
        ("https", socket.SOCK_STREAM),
        ("zmq-bind", socket.SOCK_STREAM),
    ],
)
def test_a_port_in_use_is_one_clear_line_and_exit_1(
    tmp_path: Path, listener: str, kind: int
) -> None:
    """Every listener whose port is taken stops start-up the same way: one line naming
    the option, exit 1, no traceback, and nothing left running (no hang)."""
    taken, port = busy(kind)
    args = ["--http", "tcp:0:interface=127.0.0.1", "--dns", "127.0.0.1:0"]
    if listener == "http":
        args[1] = f"tcp:{port}:interface=127.0.0.1"
        what = f"--http 'tcp:{port}:interface=127.0.0.1'"
    elif listener.startswith("dns"):
        args[3] = f"127.0.0.1:{port}"
        what = f"--dns 127.0.0.1:{port}"
    elif listener == "https":
        endpoint = f"le:{tmp_path / 'certs'}:tcp:{port}:interface=127.0.0.1"
        args += ["--http", endpoint, "--acme-directory", "https://127.0.0.1:1/dir"]
        what = f"--http {endpoint!r}"
    else:
        args += ["--zmq-bind", f"tcp://127.0.0.1:{port}"]
        what = f"--zmq-bind 'tcp://127.0.0.1:{port}'"
    with taken:
        result = subprocess.run(
            [sys.executable, "-m", "twisted", "homeport", "--data-dir", str(tmp_path / "d"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("homeport: error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"homeport: error: {what}: cannot listen"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_binding_beyond_loopback_without_a_token_warns(daemon_factory: Any) -> None:
    daemon = daemon_factory()
    daemon.start(["--http", "tcp:0:interface=0.0.0.0"])
    assert "WARNING: homeport listens beyond loopback and no --token is set" in daemon.output()


def test_help_lists_every_option_with_its_default() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "homeport", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # as wrapped to the terminal's width
    for option, default in [
        ("--http", "tcp:8500:interface=127.0.0.1"),
        ("--dns", "127.0.0.1:8600"),
        ("--domain", "consul"),
        ("--data-dir", "./homeport-data"),
        ("--datacenter", "dc1"),
        ("--config-dir", "none"),
        ("--node", "the hostname"),
        ("--advertise", "127.0.0.1"),
        ("--token", ""),
        ("--token-file", ""),
        ("--dns-ttl", "0"),
        ("--dns-soa-min-ttl", "0"),
        ("--max-body-size", "1MiB"),
        ("--access-log", ""),
    ]:
        assert option in text, option
        assert default in text, default


def test_access_log_is_opt_in(daemon_factory: Any) -> None:
    quiet = daemon_factory().start()
    quiet.get_json("/v1/catalog/services")
    quiet.stop()
    assert '"GET /v1/catalog/services' not in quiet.output()
    loud = daemon_factory().start(["--access-log"])
    loud.get_json("/v1/catalog/services")
    wait_for(lambda: '"GET /v1/catalog/services HTTP/1.1" 200' in loud.output(), what="access log")


def test_huge_bodies_get_413_and_the_daemon_keeps_serving(daemon: Daemon) -> None:
    # urllib sends the whole body before it reads: the daemon reads and drops the rest
    # (a lingering close), so the client sees the 413 and never a broken pipe.
    for _ in range(5):
        status, _, body = daemon.request("PUT", "/v1/kv/big", b"x" * (32 * 1024 * 1024))
        assert status == 413
        assert b"limit is 1048576 bytes" in body
    assert daemon.get_json("/v1/catalog/services") == {"consul": []}

    def curl_put(*args: str, body: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "PUT",
                *args,
                "--data-binary",
                "@-",
                f"{daemon.url}/v1/kv/big",
            ],
            input=body,
            capture_output=True,
            timeout=30,
        )

    # curl asks "Expect: 100-continue" first: it is told 413 instead of "100 Continue".
    result = curl_put(body=b"y" * (3 * 1024 * 1024))
    assert result.stdout == b"413", result.stderr
    # Without the Expect handshake, the body is read and dropped.
    assert curl_put("-H", "Expect:", body=b"y" * (32 * 1024 * 1024)).stdout == b"413"
    # A chunked body crossing the limit is cut off too.
    result = curl_put("-H", "Transfer-Encoding: chunked", body=b"y" * (3 * 1024 * 1024))
    assert result.stdout == b"413", result.stderr
    assert daemon.request("GET", "/v1/kv/big")[0] == 404


def test_dig_reverse_lookups_and_the_soa_minimum_option(daemon_factory: Any) -> None:
    """``dig -x`` finds nodes and services by address; ``--dns-soa-min-ttl`` sets how
    long resolvers may cache a "no such name" (the SOA's minimum and its TTL)."""
    daemon = daemon_factory().start(["--dns", "127.0.0.1:0", "--dns-soa-min-ttl", "60"])
    curl(
        "-X",
        "PUT",
        "--data",
        '{"Node": "build-7", "Address": "10.20.0.7", '
        '"Service": {"Service": "cache", "Address": "10.20.0.99", "Port": 6379}}',
        f"{daemon.url}/v1/catalog/register",
    )

    def dig(*args: str) -> str:
        command = ["dig", "@127.0.0.1", "-p", str(daemon.dns_port), "+time=3", "+tries=2"]
        return subprocess.run([*command, *args], check=True, capture_output=True, text=True).stdout

    assert dig("+short", "-x", "10.20.0.7").split() == ["build-7.node.dc1.consul."]
    assert dig("+short", "-x", "10.20.0.99").split() == ["cache.service.dc1.consul."]
    assert dig("+short", "-x", "127.0.0.1").split() == ["testnode.node.dc1.consul."]
    assert "status: REFUSED" in dig("-x", "192.0.2.1")
    nxdomain = dig("+noall", "+comments", "+authority", "nothing.service.consul")
    assert "status: NXDOMAIN" in nxdomain
    [soa] = [line.split() for line in nxdomain.splitlines() if "\tSOA\t" in line]
    assert soa[1] == "60" and soa[-1] == "60"  # the record's TTL and the SOA minimum


def test_py_consul_leader_election_with_a_session_lock_survives_kill_9(
    daemon_factory: Any,
) -> None:
    """The Consul leader-election recipe through py-consul: one session gets the lock,
    the other is told no; the lock and the session outlive kill -9; destroying the
    holder's session hands the lock on."""
    daemon = daemon_factory().start()
    c = client(daemon)
    first = c.session.create(name="web-leader", lock_delay=0, ttl=30)
    second = c.session.create(name="web-leader", lock_delay=0)
    assert c.kv.put("service/web/leader", "host-1", acquire=first) is True
    assert c.kv.put("service/web/leader", "host-2", acquire=second) is False
    _, entry = c.kv.get("service/web/leader")
    assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (first, 1, b"host-1")

    daemon.kill9()
    daemon.start()
    c = client(daemon)
    _, entry = c.kv.get("service/web/leader")
    assert entry["Session"] == first
    _, info = c.session.info(first)
    assert (info["Name"], info["TTL"], info["Behavior"]) == ("web-leader", "30s", "release")
    assert c.session.renew(first)["ID"] == first
    assert {s["ID"] for s in c.session.list()[1]} == {first, second}

    assert c.session.destroy(first) is True
    assert c.kv.put("service/web/leader", "host-2", acquire=second) is True
    _, entry = c.kv.get("service/web/leader")
    assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (second, 2, b"host-2")
    assert c.kv.put("service/web/leader", "host-2", release=second) is True
    assert "Session" not in c.kv.get("service/web/leader")[1]


def test_options_from_the_environment_as_docker_run_e_gives_them(daemon_factory: Any) -> None:
    daemon = daemon_factory(env={"HOMEPORT_TOKEN": "from-env", "HOMEPORT_DATACENTER": "env-dc"})
    daemon.start()
    assert daemon.get_json("/v1/agent/self")["Config"]["Datacenter"] == "env-dc"
    assert daemon.request("PUT", "/v1/kv/k", b"v")[0] == 403
    assert daemon.request("PUT", "/v1/kv/k", b"v", {"X-Consul-Token": "from-env"})[0] == 200


def test_py_consul_transactions_are_all_or_nothing(daemon: Daemon) -> None:
    c = client(daemon)

    def op(verb: str, key: str, value: bytes = b"", **extra: Any) -> dict[str, Any]:
        fields = {"Verb": verb, "Key": key, "Value": base64.b64encode(value).decode(), **extra}
        return {"KV": fields}

    answer = c.txn.put([op("set", "cfg/a", b"1"), op("set", "cfg/b", b"2"), op("get", "cfg/a")])
    assert [r["KV"]["Key"] for r in answer["Results"]] == ["cfg/a", "cfg/b", "cfg/a"]
    assert base64.b64decode(answer["Results"][2]["KV"]["Value"]) == b"1"
    with pytest.raises(consul.exceptions.ClientError, match="409"):
        c.txn.put([op("set", "cfg/c", b"3"), op("check-not-exists", "cfg/a")])
    _, keys = c.kv.get("cfg/", keys=True)
    assert keys == ["cfg/a", "cfg/b"]


def test_start_up_says_where_to_open_it(daemon_factory: Any) -> None:
    """The banner gives URLs, not ``IPv4Address(type='TCP', ...)``."""
    daemon = daemon_factory(["--dns", "127.0.0.1:0"]).start()
    url = f"http://127.0.0.1:{daemon.http_port}/"
    assert f"HTTP on {url} (dashboard: {url}ui/)" in daemon.output()
    assert f"on 127.0.0.1:{daemon.dns_port} (UDP and TCP)" in daemon.output()
    assert "IPv4Address(" not in daemon.output()


def test_listener_urls_name_the_scheme_and_bracket_ipv6() -> None:
    from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

    from homeport.http.listen import url_of

    v4 = IPv4Address("TCP", "0.0.0.0", 8500)
    assert url_of("--http 'tcp:8500'", v4) == "http://0.0.0.0:8500/"
    assert url_of("--http 'le:/certs:tcp:443'", v4) == "https://0.0.0.0:8500/"
    assert url_of("--http 'tcp6:80'", IPv6Address("TCP", "::1", 80)) == "http://[::1]:80/"
    assert url_of("--http 'unix:/run/hp.sock'", UNIXAddress(b"/run/hp.sock")) is None


def test_metrics_count_every_listener_s_routes(daemon: Daemon) -> None:
    """Requests and latency for the log sink, the dashboard and the event routes too,
    not only the Consul API; unknown paths share one label."""
    import re

    record = b"name=app&levelname=INFO&levelno=20&msg=hi&created=1700000000"
    assert daemon.request("POST", "/log", record)[0] == 200
    assert daemon.request("GET", "/v1/logs")[0] == 200
    assert daemon.request("GET", "/ui/")[0] in (200, 302)
    assert daemon.request("GET", "/nothing/here")[0] == 404
    assert daemon.request("GET", "/v1/catalog/services")[0] == 200
    wanted = {"/log", "/v1/logs", "/ui", "/other"}

    def routes() -> set[str]:
        # A dashboard page is logged when its WSGI thread hands the end back to the
        # reactor, which may be just after the client has read the whole answer.
        body = daemon.request("GET", "/metrics")[2].decode()
        found = r'^homeport_http_requests_total\{code="\d+",route="([^"]+)"\}'
        return set(re.findall(found, body, re.M))

    wait_for(lambda: wanted <= routes(), what=f"{wanted} on /metrics")
    body = daemon.request("GET", "/metrics")[2].decode()
    assert "/v1/catalog/services" in routes()
    assert 'homeport_http_request_duration_seconds_count{route="/log"}' in body
