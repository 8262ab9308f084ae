"""Coordinates and the operator routes of one self-elected server (issue #14, item 11),
with py-consul and plain HTTP against the real daemon, and the pure coordinate rules."""

from __future__ import annotations

import consul
import pytest

from homeport.catalog.operator_api import (
    ORIGIN,
    IncompatibleCoordinate,
    InvalidCoordinate,
    valid_coordinate,
)

from .daemon import Daemon


def client(daemon: Daemon) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=daemon.http_port)


COORD = {"Vec": [0.1, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3], "Error": 0.5, "Adjustment": 0.01}
COORD_OUT = {**COORD, "Height": 0.0}

# -- coordinates -----------------------------------------------------------------------


def test_valid_coordinates() -> None:
    assert valid_coordinate({"vec": [1] * 8, "error": 1, "height": 2}) == {
        "Vec": [1.0] * 8,
        "Error": 1.0,
        "Adjustment": 0.0,
        "Height": 2.0,
    }
    for bad in (None, "x", {"Vec": "x"}, {"Vec": [1] * 8, "Error": "1"}, {"Vec": [True] * 8}):
        with pytest.raises(InvalidCoordinate):
            valid_coordinate(bad)
    with pytest.raises(IncompatibleCoordinate):
        valid_coordinate({"Vec": [0.0] * 3})


def test_the_agent_sits_at_serfs_origin(agent: Daemon) -> None:
    c = client(agent)
    (dc,) = c.coordinate.datacenters()
    assert dc == {
        "Datacenter": "dc1",
        "AreaID": "wan",
        "Coordinates": [{"Node": "testnode.dc1", "Segment": "", "Coord": ORIGIN}],
    }
    index, nodes = c.coordinate.nodes()
    assert {"Node": "testnode", "Segment": "", "Coord": ORIGIN} in nodes
    assert int(index) >= 1
    assert c.coordinate.node("testnode")[1] == [
        {"Node": "testnode", "Segment": "", "Coord": ORIGIN}
    ]


def test_update_keeps_a_known_nodes_coordinate(agent: Daemon) -> None:
    c = client(agent)
    c.catalog.register("coord-node", "10.0.0.9")
    assert c.coordinate.update("coord-node", COORD) is True
    assert c.coordinate.node("coord-node")[1] == [
        {"Node": "coord-node", "Segment": "", "Coord": COORD_OUT}
    ]
    assert {"Node": "coord-node", "Segment": "", "Coord": COORD_OUT} in c.coordinate.nodes()[1]
    # ?segment= keeps one segment's
    status, _, body = agent.request("GET", "/v1/coordinate/nodes?segment=alpha")
    assert (status, body) == (200, b"[]")


def test_update_of_an_unknown_node_is_accepted_and_dropped(agent: Daemon) -> None:
    """Consul's state store does not create a node for a coordinate."""
    c = client(agent)
    assert c.coordinate.update("ghost-node", COORD) is True
    status, _, body = agent.request("GET", "/v1/coordinate/node/ghost-node")
    assert (status, body) == (404, b"")


def test_update_refusals_are_consuls(agent: Daemon) -> None:
    for body, status, text in [
        ({"Node": "testnode", "Coord": {"Vec": [0.0] * 3}}, 500, b"incompatible coordinate"),
        ({"Node": "testnode"}, 500, b"invalid coordinate"),
        ({"Node": "testnode", "Coord": COORD, "Datacenter": "dc9"}, 500, b"No path to datacenter"),
        ({"Node": "testnode", "Oops": 1}, 400, b"Request decode failed: json: unknown field"),
        ("", 400, b"Request decode failed: EOF"),
    ]:
        got, _, answer = agent.request("PUT", "/v1/coordinate/update", body)
        assert got == status and answer.startswith(text), (body, got, answer)
    assert client(agent).coordinate.node("testnode")[1][0]["Coord"] == ORIGIN


# -- operator --------------------------------------------------------------------------


def test_raft_configuration_is_one_voter_that_leads(agent: Daemon) -> None:
    c = client(agent)
    config = c.operator.raft_config()
    self_ = c.agent.self()
    (server,) = config["Servers"]
    assert server["ID"] == self_["Config"]["NodeID"]
    assert server["Node"] == "testnode"
    assert server["Address"] == c.status.leader()
    assert [server["Address"]] == c.status.peers()
    assert (server["Leader"], server["Voter"], server["ProtocolVersion"]) == (True, True, "3")
    assert config["Index"] == 1
    assert server["LastIndex"] >= 1


def test_autopilot(agent: Daemon) -> None:
    c = client(agent)
    config = c.operator.autopilot_configuration()
    assert config["CleanupDeadServers"] is True
    assert config["LastContactThreshold"] == "200ms"
    assert config["ServerStabilizationTime"] == "10s"
    assert config["MaxTrailingLogs"] == 250
    node_id = c.agent.self()["Config"]["NodeID"]
    health = agent.get_json("/v1/operator/autopilot/health")
    assert (health["Healthy"], health["FailureTolerance"]) == (True, 0)
    (server,) = health["Servers"]
    assert server["ID"] == node_id and server["Leader"] and server["Voter"]
    assert server["SerfStatus"] == "alive" and server["LastContact"] == "0s"
    state = agent.get_json("/v1/operator/autopilot/state")
    assert state["Leader"] == node_id and state["Voters"] == [node_id]
    assert state["Servers"][node_id]["Status"] == "leader"
    assert state["Servers"][node_id]["NodeType"] == "voter"
    assert "ReadReplica" not in state["Servers"][node_id]  # false: omitempty
    assert state["Servers"][node_id]["Meta"] == c.catalog.node("testnode")[1]["Node"]["Meta"]
    assert state["Servers"][node_id]["StableSince"].startswith(server["StableSince"][:19])


def test_go_times() -> None:
    from homeport.catalog.operator_api import _rfc3339_nano

    assert _rfc3339_nano(0) == "1970-01-01T00:00:00Z"
    assert _rfc3339_nano(1.5) == "1970-01-01T00:00:01.5Z"


def test_usage_counts_this_datacenter(agent: Daemon) -> None:
    c = client(agent)
    c.agent.service.register("usage-web", service_id="usage-web-1")
    c.agent.service.register("usage-web", service_id="usage-web-2")
    usage = c.operator.usage()
    dc1 = usage["Usage"]["dc1"]
    services = agent.get_json("/v1/catalog/services")
    nodes = agent.get_json("/v1/catalog/nodes")
    assert dc1["Services"] == len(services)
    assert dc1["Nodes"] == len(nodes)
    instances = sum(len(agent.get_json(f"/v1/catalog/service/{s}")) for s in services)
    assert dc1["ServiceInstances"] == instances
    consul_instances = len(agent.get_json("/v1/catalog/service/consul"))
    assert dc1["BillableServiceInstances"] == instances - consul_instances
    assert dc1["ConnectServiceInstances"]["connect-proxy"] == 0
    assert usage["Index"] >= 1
