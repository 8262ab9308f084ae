"""Another datacenter is refused everywhere, against the real daemon: ``?dc=`` or a body
``Datacenter`` naming one answers Consul's ``500 No path to datacenter`` and changes
nothing (Consul forwards such a request and has no route to that datacenter).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from typing import Any

import consul
import pytest

from .daemon import Daemon, curl

NO_PATH = "500 No path to datacenter"


@pytest.fixture(scope="module")
def session(agent: Daemon) -> str:
    """Some state to leave alone: a service with a check, a key, a session."""
    client = consul.Consul(host="127.0.0.1", port=agent.http_port)
    client.agent.service.register("web", service_id="web-1", check=consul.Check.ttl("9s"))
    client.kv.put("app/config", "v1")
    return str(client.session.create(name="leader", ttl=30))


def state(agent: Daemon) -> dict[str, Any]:
    """Everything a refused request could have changed, and the catalog's index."""
    reads = [
        "/v1/catalog/nodes",
        "/v1/catalog/services",
        "/v1/agent/services",
        "/v1/agent/checks",
        "/v1/kv/?recurse",
        "/v1/session/list",
    ]
    found: dict[str, Any] = {path: agent.get_json(path) for path in reads}
    _, headers, _ = agent.request("GET", "/v1/catalog/nodes")
    found["index"] = headers["X-Consul-Index"]
    return found


@pytest.fixture
def foreign(agent: Daemon, session: str) -> consul.Consul:
    """py-consul told to use dc2: it sends ?dc=dc2, and datacenter=dc2 in bodies."""
    return consul.Consul(host="127.0.0.1", port=agent.http_port, dc="dc2")


def py_consul_calls(session: str) -> dict[str, Callable[[consul.Consul], Any]]:
    return {
        "catalog.deregister (body datacenter)": lambda c: c.catalog.deregister("testnode"),
        "catalog.register (?dc)": lambda c: c.catalog.register("ext", "10.0.0.1"),
        "kv.put": lambda c: c.kv.put("app/config", "v2"),
        "kv.put cas": lambda c: c.kv.put("app/new", "x", cas=0),
        "kv.delete": lambda c: c.kv.delete("app/config"),
        "kv.delete recurse": lambda c: c.kv.delete("app/", recurse=True),
        "kv.get": lambda c: c.kv.get("app/config"),
        "kv.get recurse": lambda c: c.kv.get("app/", recurse=True),
        "session.create": lambda c: c.session.create(),
        "session.destroy": lambda c: c.session.destroy(session),
        "session.renew": lambda c: c.session.renew(session),
        "session.info": lambda c: c.session.info(session),
        "session.list": lambda c: c.session.list(),
        "catalog.nodes": lambda c: c.catalog.nodes(),
        "catalog.services": lambda c: c.catalog.services(),
        "catalog.service": lambda c: c.catalog.service("web"),
        "health.service": lambda c: c.health.service("web"),
        "health.state": lambda c: c.health.state("any"),
    }


@pytest.mark.parametrize("name", sorted(py_consul_calls("")))
def test_py_consul_on_another_datacenter_gets_no_path_and_changes_nothing(
    agent: Daemon, session: str, foreign: consul.Consul, name: str
) -> None:
    before = state(agent)
    with pytest.raises(consul.ConsulException) as error:
        py_consul_calls(session)[name](foreign)
    assert str(error.value) == NO_PATH
    assert state(agent) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/catalog/deregister", {"node": "testnode", "datacenter": "dc2"}),
        ("PUT", "/v1/catalog/deregister", {"Node": "testnode", "DATACENTER": "dc2"}),
        (
            "PUT",
            "/v1/catalog/deregister",
            {"Node": "testnode", "ServiceID": "web-1", "Datacenter": "dc2"},
        ),
        ("PUT", "/v1/catalog/register", {"node": "x", "address": "10.0.0.1", "datacenter": "dc2"}),
        ("PUT", "/v1/catalog/deregister?dc=dc2", {"Node": "testnode"}),
        ("PUT", "/v1/txn?dc=dc2", [{"KV": {"Verb": "set", "Key": "app/config", "Value": "eA=="}}]),
        ("PUT", "/v1/agent/service/deregister/web-1?dc=dc2", None),
        ("PUT", "/v1/agent/check/pass/service:web-1?dc=dc2", None),
        ("PUT", "/v1/agent/service/register?dc=dc2", {"Name": "db"}),
        ("DELETE", "/v1/kv/app/config?dc=dc2", None),
        ("GET", "/v1/agent/services?dc=dc2", None),
        ("GET", "/v1/health/node/testnode?dc=dc2", None),
        ("GET", "/v1/kv/app/config?dc=dc2&index=1&wait=1s", None),
    ],
)
def test_any_request_for_another_datacenter_is_refused(
    agent: Daemon, session: str, method: str, path: str, body: Any
) -> None:
    before = state(agent)
    status, _, text = agent.request(method, path, body)
    assert (status, text) == (500, b"No path to datacenter")
    assert state(agent) == before


def test_our_own_datacenter_by_name_is_fine(agent: Daemon, session: str) -> None:
    status, _, _ = agent.request(
        "PUT",
        "/v1/catalog/register?dc=dc1",
        {"Node": "ext", "Address": "10.0.0.7", "datacenter": "dc1"},
    )
    assert status == 200
    status, _, text = agent.request(
        "PUT", "/v1/catalog/deregister", {"node": "ext", "datacenter": "dc1"}
    )
    assert (status, text) == (200, b"true")
    assert "ext" not in [n["Node"] for n in agent.get_json("/v1/catalog/nodes")]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_deregister_in_another_datacenter(agent: Daemon, session: str) -> None:
    before = state(agent)
    body = json.dumps({"node": "testnode", "datacenter": "dc2"})
    out = curl(
        "-w", " %{http_code}", "-X", "PUT", "--data", body, f"{agent.url}/v1/catalog/deregister"
    )
    assert out == "No path to datacenter 500"
    assert state(agent) == before
