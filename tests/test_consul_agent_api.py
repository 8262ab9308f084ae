"""The rest of a server agent's API (issue #14, item 11): reload, leave, metrics, monitor,
and how an endpoint homeport does not implement answers, with py-consul and plain HTTP
against the real daemon."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import consul
import pytest

from homeport.catalog.agent_api import log_level, summary
from homeport.http.errors import HTTPError
from homeport.http.metrics import Metrics

from .daemon import Daemon, DaemonFactory, wait_for


def client(daemon: Daemon, token: str | None = None) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=daemon.http_port, token=token)


# -- reload and leave ----------------------------------------------------------------


def test_reload_reads_the_config_dir_again_as_sighup_does(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "web.json").write_text('{"service": {"name": "web", "port": 80}}')
    daemon = daemon_factory(["--config-dir", str(config)]).start()
    c = client(daemon)
    assert "cache" not in c.catalog.services()[1]
    (config / "cache.json").write_text('{"service": {"name": "cache", "port": 6379}}')
    assert c.agent.reload() is True
    # Consul's reload is done when it answers.
    assert "cache" in c.catalog.services()[1]
    assert "SIGHUP: reloading (1 source(s) to read again)" in daemon.output()
    status, headers, body = daemon.request("GET", "/v1/agent/reload")
    assert (status, body) == (405, b"method GET not allowed")
    assert headers["Allow"] == "OPTIONS,PUT"


def test_reload_and_leave_need_the_token(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--token", "s3cret"]).start()
    for path in ("/v1/agent/reload", "/v1/agent/leave"):
        status, _, _ = daemon.request("PUT", path)
        assert status == 403, path
    assert daemon.process is not None and daemon.process.poll() is None
    assert client(daemon, token="s3cret").agent.reload() is True


def test_leave_answers_then_stops_the_daemon(daemon: Daemon) -> None:
    c = client(daemon)
    c.kv.put("kept", "yes")
    assert c.agent.leave() is True
    assert daemon.process is not None
    assert daemon.process.wait(15) == 0
    assert "Main loop terminated" in daemon.output()
    daemon.start()  # a graceful stop: everything is still there
    assert client(daemon).kv.get("kept")[1]["Value"] == b"yes"


# -- unknown endpoints ---------------------------------------------------------------

#: Consul endpoints homeport does not serve (agent/http_register.go), by method.
NOT_IMPLEMENTED = [
    ("GET", "/v1/acl/auth-methods"),
    ("POST", "/v1/acl/login"),
    ("PUT", "/v1/agent/join/10.0.0.2"),
    ("PUT", "/v1/agent/force-leave/other"),
    ("PUT", "/v1/agent/token/default"),
    ("GET", "/v1/agent/connect/ca/roots"),
    ("GET", "/v1/agent/host"),
    ("GET", "/v1/agent/version"),
    ("GET", "/v1/config/proxy-defaults"),
    ("GET", "/v1/connect/ca/roots"),
    ("GET", "/v1/connect/intentions"),
    ("GET", "/v1/discovery-chain/web"),
    ("GET", "/v1/internal/ui/services"),
    ("GET", "/v1/namespaces"),
    ("GET", "/v1/operator/keyring"),
    ("GET", "/v1/peerings"),
    ("GET", "/v1/exported-services"),
    ("GET", "/v1/nope"),
    ("GET", "/v1/"),
]


def test_an_endpoint_homeport_does_not_serve_answers_as_consul_does(agent: Daemon) -> None:
    """Consul's ``Index`` handler: 404 and its line, never a 200 with an empty body."""
    for method, path in NOT_IMPLEMENTED:
        status, headers, body = agent.request(method, path)
        assert (status, body) == (
            404,
            b"Invalid URL path: not a recognized HTTP API endpoint\n",
        ), (method, path)
        assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_a_wrong_method_is_consuls_405(agent: Daemon) -> None:
    """``MethodNotAllowedError``: its text, and ``Allow`` as Consul joins it."""
    for method, path, allow in [
        ("POST", "/v1/agent/services", "OPTIONS,GET"),
        ("DELETE", "/v1/agent/leave", "OPTIONS,PUT"),
        ("GET", "/v1/coordinate/update", "OPTIONS,PUT"),
        ("PUT", "/v1/operator/usage", "OPTIONS,GET"),
        ("PATCH", "/v1/kv/x", "OPTIONS,GET,PUT,DELETE"),
    ]:
        status, headers, body = agent.request(method, path)
        assert (status, body) == (405, f"method {method} not allowed".encode()), path
        assert headers["Allow"] == allow, path


# -- metrics -------------------------------------------------------------------------


def test_metrics_in_consuls_json_shape(agent: Daemon) -> None:
    c = client(agent)
    c.kv.put("metrics/one", "1")
    found = c.agent.metrics()
    assert set(found) == {"Timestamp", "Gauges", "Points", "Counters", "Samples"}
    assert found["Timestamp"].endswith(" +0000 UTC")
    gauges = {g["Name"]: g for g in found["Gauges"]}
    assert gauges["homeport.kv.entries"]["Value"] >= 1
    assert gauges["homeport.catalog.nodes"] == {
        "Name": "homeport.catalog.nodes",
        "Value": 1,
        "Labels": {},
    }
    counters = [x for x in found["Counters"] if x["Name"] == "homeport.http.requests"]
    put = [x for x in counters if x["Labels"] == {"route": "/v1/kv/*key", "code": "200"}]
    assert put and put[0]["Count"] >= 1
    samples = [x for x in found["Samples"] if x["Labels"] == {"route": "/v1/kv/*key"}]
    assert samples[0]["Name"] == "homeport.http.request.duration.seconds"
    assert samples[0]["Count"] >= 1 and samples[0]["Sum"] > 0


def _prometheus(agent: Daemon) -> str:
    text = client(agent).agent.metrics(format_prometheus=True)
    return text.decode() if isinstance(text, bytes) else str(text)


def test_metrics_as_prometheus_text_are_slash_metrics(agent: Daemon) -> None:
    text = _prometheus(agent)
    assert "# TYPE homeport_catalog_nodes gauge" in text
    status, headers, body = agent.request("GET", "/v1/agent/metrics?format=prometheus")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"homeport_http_requests_total" in body
    # Each agent request counted once, under its own route.
    assert b'route="/v1/agent"' not in body
    assert b'route="/v1/agent/metrics"' in body


def test_summary_of_a_fresh_registry() -> None:
    metrics = Metrics()
    metrics.gauge("homeport_things", "Things", lambda: 3)
    metrics.counter("homeport_seen_total", "Seen", lambda: 5)
    metrics.observe("/v1/x", 200, 0.002)
    metrics.observe("/v1/x", 200, 0.004)
    out = summary(metrics.registry.collect(), now=0, elapsed=2.0)
    assert out["Timestamp"] == "1970-01-01 00:00:00 +0000 UTC"
    assert out["Gauges"] == [{"Name": "homeport.things", "Value": 3, "Labels": {}}]
    seen = next(x for x in out["Counters"] if x["Name"] == "homeport.seen")
    assert (seen["Count"], seen["Sum"], seen["Rate"]) == (5, 5, 2.5)
    (sample,) = out["Samples"]
    assert sample["Count"] == 2
    assert sample["Sum"] == pytest.approx(6.0)  # milliseconds
    assert sample["Mean"] == pytest.approx(3.0)


# -- monitor -------------------------------------------------------------------------


def test_log_levels_are_consuls() -> None:
    for name in ("trace", "DEBUG", "info", "Warn", "ERR", "error", "", None):
        log_level(name)
    with pytest.raises(HTTPError) as raised:
        log_level("loud")
    assert (raised.value.status, str(raised.value.text)) == (400, "Unknown log level: loud")


def test_monitor_refuses_an_unknown_level(agent: Daemon) -> None:
    status, _, body = agent.request("GET", "/v1/agent/monitor?loglevel=loud")
    assert (status, body) == (400, b"Unknown log level: loud")


def test_monitor_streams_the_agents_own_log(agent: Daemon) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)
    conn.request("GET", "/v1/agent/monitor?loglevel=info")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/plain; charset=utf-8"
    time.sleep(0.2)
    # A reload logs a line at INFO.
    client(agent).agent.reload()
    seen = b""
    deadline = time.monotonic() + 10
    while b"SIGHUP: reloading" not in seen and time.monotonic() < deadline:
        seen += response.read1(4096)
    line = seen.decode().splitlines()[0]
    assert " INFO  homeport  SIGHUP: reloading" in line, seen
    conn.close()
    # The stream's observer is gone with the client, and the stream counted once.
    wait_for(
        lambda: 'route="/v1/agent/monitor"' in _prometheus(agent),
        what="the monitor's metric",
    )


def test_monitor_at_error_leaves_out_info(agent: Daemon) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=2)
    conn.request("GET", "/v1/agent/monitor?loglevel=err")
    response = conn.getresponse()
    assert response.status == 200
    client(agent).agent.reload()
    assert conn.sock is not None
    conn.sock.settimeout(1.0)
    got = b""
    try:
        got = response.read1(4096)
    except TimeoutError:
        pass
    assert b"SIGHUP" not in got
    conn.close()


def test_monitor_with_dc_elsewhere_is_no_path(agent: Daemon) -> None:
    status, _, body = agent.request("GET", "/v1/agent/monitor?dc=dc9")
    assert (status, body) == (500, b"No path to datacenter")
    assert json.loads(agent.request("GET", "/v1/agent/self")[2])["Config"]


def test_monitors_end_when_the_daemon_stops_and_leave_no_trace(daemon: Daemon) -> None:
    gone = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=10)
    gone.request("GET", "/v1/agent/monitor?loglevel=debug")
    assert gone.getresponse().status == 200
    gone.close()  # a client that hangs up: its observer goes with it
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=10)
    conn.request("GET", "/v1/agent/monitor?loglevel=debug&loglevel=loud")  # Go: the first
    response = conn.getresponse()
    assert response.status == 200
    for _ in range(3):
        client(daemon).agent.reload()
    daemon.stop()  # SIGTERM: twist ends with the signal's status, as ever
    assert "Main loop terminated" in daemon.output()
    rest = response.read()  # the stream ends with the daemon
    assert b"SIGHUP: reloading" in rest
    output = daemon.output()
    assert "Traceback" not in output and "disabling observer" not in output, output


def test_monitor_with_logjson_streams_json_lines(agent: Daemon) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)
    conn.request("GET", "/v1/agent/monitor?logjson")
    response = conn.getresponse()
    assert response.status == 200
    time.sleep(0.2)
    client(agent).agent.reload()
    seen = b""
    deadline = time.monotonic() + 10
    while b"SIGHUP: reloading" not in seen and time.monotonic() < deadline:
        seen += response.read1(4096)
    line = json.loads(seen.decode().splitlines()[0])
    assert (line["level"], line["part"]) == ("info", "homeport")
    assert line["message"].startswith("SIGHUP: reloading")
    conn.close()


def test_py_consul_monitor_with_a_bad_level_raises(agent: Daemon) -> None:
    with pytest.raises(consul.ConsulException):
        client(agent).agent.monitor(loglevel="loud")
