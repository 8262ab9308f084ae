"""Tagged addresses on services in Consul's shape, against the real daemon:
``{"lan": {"Address": ..., "Port": ...}}`` whatever case the client wrote, plus the
``lan_ipv4``/``wan_ipv4`` pair Consul's agent adds for the service's own IP address.
"""

from __future__ import annotations

import json
import shutil

import consul
import pytest

from .daemon import Daemon, curl

LAN = {"Address": "10.0.0.1", "Port": 8080}
WAN = {"Address": "203.0.113.1", "Port": 80}
OWN = {"Address": "10.0.0.5", "Port": 80}
SHAPED = {"lan": LAN, "wan": WAN, "lan_ipv4": OWN, "wan_ipv4": OWN}


@pytest.fixture
def client(agent: Daemon) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=agent.http_port)


def everywhere(client: consul.Consul, service_id: str) -> list[object]:
    """The service's tagged addresses from the agent, the catalog and health."""
    name = client.agent.services()[service_id]["Service"]
    [in_catalog] = [s for s in client.catalog.service(name)[1] if s["ServiceID"] == service_id]
    [healthy] = [h for h in client.health.service(name)[1] if h["Service"]["ID"] == service_id]
    return [
        client.agent.services()[service_id]["TaggedAddresses"],
        client.agent.service_definition(service_id)["TaggedAddresses"],
        in_catalog["ServiceTaggedAddresses"],
        healthy["Service"]["TaggedAddresses"],
    ]


def test_py_consuls_tagged_addresses_in_any_case(client: consul.Consul) -> None:
    """py-consul sends ``tagged_addresses`` (Consul's alias) as the caller wrote it."""
    tagged = {
        "lan": {"address": "10.0.0.1", "port": 8080},
        "wan": {"ADDRESS": "203.0.113.1", "Port": 80},
    }
    assert client.agent.service.register(
        "web", service_id="web-1", address="10.0.0.5", port=80, tagged_addresses=tagged
    )
    assert everywhere(client, "web-1") == [SHAPED] * 4


def test_tagged_addresses_survive_a_restart(agent: Daemon, client: consul.Consul) -> None:
    tagged = {"lan": {"address": "10.0.0.1", "port": 8080}}
    assert client.agent.service.register("api", service_id="api-1", tagged_addresses=tagged)
    agent.stop()
    agent.start()
    again = consul.Consul(host="127.0.0.1", port=agent.http_port)
    assert again.agent.services()["api-1"]["TaggedAddresses"] == {"lan": LAN}


def test_an_address_alone_is_consuls_400(client: consul.Consul) -> None:
    """py-consul's docstring shows ``{"lan": "<address>"}``; Consul refuses it."""
    with pytest.raises(consul.ConsulException) as error:
        client.agent.service.register("bad", tagged_addresses={"lan": "10.0.0.1"})
    assert "cannot unmarshal string into Go struct field" in str(error.value)
    assert "bad" not in client.agent.services()


def test_an_ip_tag_of_the_wrong_version_is_consuls_500(agent: Daemon) -> None:
    body = {"Name": "bad", "TaggedAddresses": {"lan_ipv4": {"Address": "2001:db8::1"}}}
    status, _, text = agent.request("PUT", "/v1/agent/service/register", body)
    assert (status, text) == (
        500,
        b'Service tagged address "lan_ipv4" must be a valid ipv4 address',
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_upper_case_fields(agent: Daemon, client: consul.Consul) -> None:
    body = json.dumps(
        {
            "NAME": "cache",
            "ID": "cache-1",
            "ADDRESS": "10.0.0.5",
            "PORT": 80,
            "TAGGEDADDRESSES": {"lan": {"ADDRESS": "10.0.0.1", "PORT": 8080}},
        }
    )
    out = curl(
        "-w", "%{http_code}", "-X", "PUT", "--data", body, f"{agent.url}/v1/agent/service/register"
    )
    assert out == "200"
    shaped = {"lan": LAN, "lan_ipv4": OWN, "wan_ipv4": OWN}
    assert everywhere(client, "cache-1") == [shaped] * 4
