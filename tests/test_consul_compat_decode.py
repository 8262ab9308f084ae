"""Request bodies decoded the way Consul's Go decoder decodes them, against the real
daemon: py-consul sends lower-case keys (``name``, ``serviceid``, ``datacenter``), other
clients send Consul's snake_case aliases (``enable_tag_override``, ``script_args``...).
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import consul
import pytest

from .daemon import Daemon, curl


@pytest.fixture
def client(agent: Daemon) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=agent.http_port)


def test_py_consuls_lower_case_keys(agent: Daemon, client: consul.Consul) -> None:
    """py-consul: ``name``, ``id``, ``enabletagoverride``, ``checks``, ``serviceid``."""
    assert client.agent.service.register(
        "web", service_id="web-1", port=80, enable_tag_override=True, check=consul.Check.ttl("10s")
    )
    assert client.agent.check.register(
        "disk", consul.Check.ttl("30s"), check_id="disk", service_id="web-1"
    )
    service = client.agent.services()["web-1"]
    assert (service["Service"], service["Port"], service["EnableTagOverride"]) == ("web", 80, True)
    checks = client.agent.checks()
    assert checks["disk"]["ServiceID"] == "web-1"
    assert checks["service:web-1"]["Type"] == "ttl"


def test_consuls_snake_case_aliases_on_agent_endpoints(agent: Daemon) -> None:
    body = {
        "name": "api",
        "enable_tag_override": True,
        "check": {
            "http": f"{agent.url}/v1/status/leader",
            "interval": "10s",
            "deregister_critical_service_after": "1m",
            "tls_skip_verify": True,
        },
    }
    status, _, text = agent.request("PUT", "/v1/agent/service/register", body)
    assert status == 200, text
    assert agent.get_json("/v1/agent/services")["api"]["EnableTagOverride"] is True
    definition = agent.get_json("/v1/agent/checks")["service:api"]["Definition"]
    assert definition["DeregisterCriticalServiceAfter"] == "1m0s"
    assert definition["TLSSkipVerify"] is True
    check = {"name": "api-alive", "ttl": "30s", "service_id": "api"}
    status, _, text = agent.request("PUT", "/v1/agent/check/register", check)
    assert status == 200, text
    assert agent.get_json("/v1/agent/checks")["api-alive"]["ServiceID"] == "api"


@pytest.mark.parametrize("case", [str.lower, str.upper])
def test_catalog_bodies_in_any_case(agent: Daemon, client: consul.Consul, case: Any) -> None:
    node = f"ext-{case.__name__}"
    body = {
        case("Node"): node,
        case("Address"): "10.0.0.9",
        case("Service"): {case("Service"): "db", case("Port"): 5432},
    }
    status, _, text = agent.request("PUT", "/v1/catalog/register", body)
    assert (status, text) == (200, b"true")
    assert [s["ServicePort"] for s in client.catalog.service("db")[1] if s["Node"] == node] == [
        5432
    ]
    # py-consul's deregister sends {"node": ..., "serviceid": ...}
    assert client.catalog.deregister(node, service_id="db")
    assert [s for s in client.catalog.service("db")[1] if s["Node"] == node] == []


@pytest.mark.parametrize(
    ("path", "body", "unknown"),
    [
        (
            "/v1/catalog/register",
            {"Node": "x", "Address": "10.0.0.1", "node_meta": {}},
            "node_meta",
        ),
        ("/v1/agent/service/register", {"Name": "x", "socket_path": "/s"}, "socket_path"),
        ("/v1/agent/service/register", {"Name": "x", "Check": {"ID": "c", "TTL": "5s"}}, "ID"),
    ],
)
def test_spellings_consul_does_not_know_are_its_400(
    agent: Daemon, path: str, body: dict[str, Any], unknown: str
) -> None:
    status, _, text = agent.request("PUT", path, body)
    assert (status, text.decode()) == (
        400,
        f'Request decode failed: json: unknown field "{unknown}"',
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_with_snake_case_and_upper_case(agent: Daemon) -> None:
    body = json.dumps({"NAME": "cache", "PORT": 6379, "enable_tag_override": True})
    out = curl(
        "-w", "%{http_code}", "-X", "PUT", "--data", body, f"{agent.url}/v1/agent/service/register"
    )
    assert out == "200"
    cache = agent.get_json("/v1/agent/service/cache")
    assert (cache["Port"], cache["EnableTagOverride"]) == (6379, True)
