"""Service and check IDs with ``/`` in them, against the real daemon: Consul takes the
rest of the path as the ID, so py-consul (which puts the ID in the path as it is) and
curl reach ``team/web-1`` without writing ``%2F``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import consul
import pytest

from .daemon import Daemon

SERVICE = "team/web-1"
CHECK = f"service:{SERVICE}"


@pytest.fixture
def client(agent: Daemon) -> Iterator[consul.Consul]:
    c = consul.Consul(host="127.0.0.1", port=agent.http_port)
    assert c.agent.service.register("web", service_id=SERVICE, check=consul.Check.ttl("30s"))
    yield c
    c.agent.service.deregister(SERVICE)


def health(agent: Daemon, service_id: str) -> int:
    status, _, _ = agent.request("GET", f"/v1/agent/health/service/id/{service_id}")
    return status


def test_py_consul_reaches_an_id_with_slashes(agent: Daemon, client: consul.Consul) -> None:
    assert client.agent.service_definition(SERVICE)["ID"] == SERVICE
    assert health(agent, SERVICE) == 503  # a new check is critical
    assert client.agent.check.ttl_pass(CHECK, "fine")
    assert health(agent, SERVICE) == 200
    assert client.agent.checks()[CHECK]["Output"] == "fine"
    assert client.agent.check.ttl_warn(CHECK)
    assert health(agent, SERVICE) == 429
    assert client.agent.check.ttl_fail(CHECK)
    assert health(agent, SERVICE) == 503
    assert client.agent.check.ttl_pass(CHECK)
    assert client.agent.service.maintenance(SERVICE, True, "deploy")
    assert health(agent, SERVICE) == 503
    assert client.agent.service.maintenance(SERVICE, False)
    assert health(agent, SERVICE) == 200
    assert client.agent.check.deregister(CHECK)
    assert CHECK not in client.agent.checks()
    assert client.agent.service.deregister(SERVICE)
    assert SERVICE not in client.agent.services()
    assert health(agent, SERVICE) == 404


def test_the_escaped_form_still_works(agent: Daemon, client: consul.Consul) -> None:
    status, _, _ = agent.request("PUT", "/v1/agent/check/pass/service:team%2Fweb-1")
    assert status == 200
    assert agent.get_json("/v1/agent/service/team%2Fweb-1")["ID"] == SERVICE


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_reaches_an_id_with_slashes(agent: Daemon, client: consul.Consul) -> None:
    def curl(method: str, path: str) -> bytes:
        return subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, agent.url + path],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout

    assert curl("GET", f"/v1/agent/service/{SERVICE}") == b"200"
    assert curl("PUT", f"/v1/agent/check/pass/{CHECK}") == b"200"
    assert curl("GET", f"/v1/agent/health/service/id/{SERVICE}") == b"200"
    assert curl("PUT", f"/v1/agent/service/maintenance/{SERVICE}?enable=true") == b"200"
    assert curl("PUT", f"/v1/agent/service/maintenance/{SERVICE}?enable=false") == b"200"
    assert curl("PUT", f"/v1/agent/service/deregister/{SERVICE}") == b"200"
    assert curl("GET", f"/v1/agent/service/{SERVICE}") == b"404"
