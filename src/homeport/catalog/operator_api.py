"""Consul's coordinate and operator routes, with the true values of one server that
elected itself.

Coordinates (``/v1/coordinate/*``) are Serf's network coordinates: this agent has no
peer to measure, so its own is the origin Serf starts from (8 dimensions, error 1.5,
height 1e-5); ``PUT /v1/coordinate/update`` keeps a node's coordinate in memory, as
Consul keeps it in its state store, for nodes the catalog knows.  The operator routes
answer what Raft and autopilot say of a single voter that is the leader.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..errors import error
from ..http.api import TEXT, ApiResource, Call, Reply, json_reply
from ..http.errors import ErrorTable
from . import consul
from .errors import CatalogError, NoPathToDatacenter
from .model import Catalog

#: Serf's ``coordinate.DefaultConfig``: where a node with nothing measured sits.
DIMENSIONS = 8
ORIGIN: dict[str, Any] = {
    "Vec": [0.0] * DIMENSIONS,
    "Error": 1.5,
    "Adjustment": 0.0,
    "Height": 1e-05,
}

#: Consul's ``autopilot`` defaults (``agent/config/default.go``).
AUTOPILOT: dict[str, Any] = {
    "CleanupDeadServers": True,
    "LastContactThreshold": "200ms",
    "MaxTrailingLogs": 250,
    "MinQuorum": 0,
    "ServerStabilizationTime": "10s",
    "RedundancyZoneTag": "",
    "DisableUpgradeMigration": False,
    "UpgradeVersionTag": "",
}


#: Consul's ``ConnectServiceInstances`` keys: the service kinds it counts apart.
CONNECT_KINDS = (
    "api-gateway",
    "connect-native",
    "connect-proxy",
    "ingress-gateway",
    "mesh-gateway",
    "terminating-gateway",
)


@error
class InvalidCoordinate(CatalogError):
    """``Coordinate.Update``'s refusal of a coordinate with a non-finite value."""

    def __str__(self) -> str:
        return "invalid coordinate"


@error
class IncompatibleCoordinate(CatalogError):
    """``Coordinate.Update``'s refusal of a coordinate of other dimensions."""

    def __str__(self) -> str:
        return "incompatible coordinate"


ERRORS = ErrorTable({InvalidCoordinate: (500, str), IncompatibleCoordinate: (500, str)})

COORDINATE_UPDATE = consul.Schema(
    "structs.CoordinateUpdateRequest",
    {
        "Datacenter": "str",
        "Node": "str",
        "Segment": "str",
        "Partition": "str",
        "Coord": "any",
        "Token": "str",
    },
)


@dataclass(frozen=True)
class Server:
    """This one server as Raft and autopilot name it."""

    node: str
    node_id: str
    address: str
    datacenter: str
    started: float


def routes(api: ApiResource, catalog: Catalog, server: Server) -> OperatorRoutes:
    face = OperatorRoutes(catalog, server, api.invalidate)
    api.errors.rows.update(ERRORS.rows)
    r = api.route
    r("GET", "/v1/coordinate/datacenters", face.coordinate_datacenters)
    r("GET", "/v1/coordinate/nodes", face.coordinate_nodes)
    r("GET", "/v1/coordinate/node/*node", face.coordinate_node)
    r("PUT", "/v1/coordinate/update", face.coordinate_update)
    r("GET", "/v1/operator/raft/configuration", face.raft_configuration)
    r("GET", "/v1/operator/autopilot/configuration", face.autopilot_configuration)
    r("GET", "/v1/operator/autopilot/health", face.autopilot_health, volatile=True)
    r("GET", "/v1/operator/autopilot/state", face.autopilot_state, volatile=True)
    r("GET", "/v1/operator/usage", face.usage)
    return face


def valid_coordinate(coord: Any) -> dict[str, Any]:
    """*coord* as Consul keeps it, or :class:`InvalidCoordinate` /
    :class:`IncompatibleCoordinate` as ``Coordinate.Update`` refuses it."""
    if not isinstance(coord, dict):
        raise InvalidCoordinate()
    fields = {key.lower(): value for key, value in coord.items()}
    vec = fields.get("vec") or []
    numbers = [fields.get(name, 0.0) for name in ("error", "adjustment", "height")]
    if not isinstance(vec, list) or not all(_number(v) for v in [*vec, *numbers]):
        raise InvalidCoordinate()
    if not all(math.isfinite(v) for v in [*vec, *numbers]):
        raise InvalidCoordinate()
    if len(vec) != DIMENSIONS:
        raise IncompatibleCoordinate()
    error_, adjustment, height = (float(v) for v in numbers)
    return {
        "Vec": [float(v) for v in vec],
        "Error": error_,
        "Adjustment": adjustment,
        "Height": height,
    }


def _rfc3339_nano(when: float) -> str:
    """Go's ``time.Time`` in JSON (RFC 3339, nanoseconds without trailing zeros)."""
    whole = int(when)
    fraction = f"{when - whole:.9f}"[2:].rstrip("0")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class OperatorRoutes:
    def __init__(self, catalog: Catalog, server: Server, changed: Callable[[], None]) -> None:
        self.catalog = catalog
        self.server = server
        self.changed = changed
        #: (node, segment) -> coordinate, as ``PUT /v1/coordinate/update`` left it.
        self.coordinates: dict[tuple[str, str], dict[str, Any]] = {}

    # -- coordinates -------------------------------------------------------------------

    def _coordinates(self, call: Call, node: str | None = None) -> list[dict[str, Any]]:
        """Each known node's coordinates (the agent's own: the origin until updated),
        by node name; ``?segment=`` keeps one segment's (Consul's ``filterCoordinates``)."""
        kept = dict(self.coordinates)
        kept.setdefault((self.server.node, ""), ORIGIN)
        segment = call.args.get("segment")
        result = []
        for (name, seg), coord in sorted(kept.items()):
            if name not in self.catalog.nodes or (node is not None and name != node):
                continue
            if segment is not None and seg != segment[0]:
                continue
            result.append({"Node": name, "Segment": seg, "Coord": coord})
        return result

    def coordinate_datacenters(self, call: Call) -> Reply:
        """The WAN pool: this server alone, named ``<node>.<dc>``."""
        own = self.coordinates.get((self.server.node, ""), ORIGIN)
        name = f"{self.server.node}.{self.server.datacenter}"
        area = {
            "Datacenter": self.server.datacenter,
            "AreaID": "wan",
            "Coordinates": [{"Node": name, "Segment": "", "Coord": own}],
        }
        return json_reply([area], pretty=call.pretty)

    def coordinate_nodes(self, call: Call) -> Reply:
        return json_reply(self._coordinates(call), pretty=call.pretty)

    def coordinate_node(self, call: Call) -> Reply:
        found = self._coordinates(call, call.params["node"])
        if not found:
            return Reply(b"", status=404, content_type=TEXT)
        return json_reply(found, pretty=call.pretty)

    def coordinate_update(self, call: Call) -> Reply:
        fields = COORDINATE_UPDATE.decode_body(consul.parse_body(call.body))
        dc = fields.get("Datacenter")
        if dc and dc != self.server.datacenter:
            raise NoPathToDatacenter(dc)
        coord = valid_coordinate(fields.get("Coord"))
        node = fields.get("Node") or ""
        if node in self.catalog.nodes:  # Consul's state store skips unknown nodes
            self.coordinates[(node, fields.get("Segment") or "")] = coord
            self.changed()
        return Reply(b"", content_type=TEXT)

    # -- operator ----------------------------------------------------------------------

    def _raft_address(self) -> str:
        return f"{self.server.address}:8300"

    def raft_configuration(self, call: Call) -> Reply:
        """One voter, the leader; the configuration Raft bootstrapped at index 1."""
        server = {
            "ID": self.server.node_id,
            "Node": self.server.node,
            "Address": self._raft_address(),
            "Leader": True,
            "ProtocolVersion": "3",
            "Voter": True,
            "LastIndex": self.catalog.index,
        }
        return json_reply({"Servers": [server], "Index": 1}, pretty=call.pretty)

    def autopilot_configuration(self, call: Call) -> Reply:
        return json_reply({**AUTOPILOT, "CreateIndex": 1, "ModifyIndex": 1}, pretty=call.pretty)

    def _since(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.server.started))

    def _health(self) -> dict[str, Any]:
        return {
            "ID": self.server.node_id,
            "Name": self.server.node,
            "Address": self._raft_address(),
            "SerfStatus": "alive",
            "Version": __version__,
            "Leader": True,
            "LastContact": "0s",
            "LastTerm": 1,
            "LastIndex": self.catalog.index,
            "Healthy": True,
            "Voter": True,
            "StableSince": self._since(),
        }

    def autopilot_health(self, call: Call) -> Reply:
        """A quorum of one: healthy, and it tolerates no failure."""
        value = {"Healthy": True, "FailureTolerance": 0, "Servers": [self._health()]}
        return json_reply(value, pretty=call.pretty)

    def autopilot_state(self, call: Call) -> Reply:
        """``autopilot.State`` as Consul answers it (``ReadReplica`` false is left out,
        ``StableSince`` unrounded, ``Meta`` the server node's)."""
        health = self._health()
        node = self.catalog.nodes.get(self.server.node)
        server = {
            "ID": health["ID"],
            "Name": health["Name"],
            "Address": health["Address"],
            "NodeStatus": "alive",
            "Version": health["Version"],
            "LastContact": "0s",
            "LastTerm": 1,
            "LastIndex": health["LastIndex"],
            "Healthy": True,
            "StableSince": _rfc3339_nano(self.server.started),
            "Status": "leader",
            "Meta": dict(node.meta) if node is not None else {},
            "NodeType": "voter",
        }
        value = {
            "Healthy": True,
            "FailureTolerance": 0,
            "OptimisticFailureTolerance": 0,
            "Servers": {self.server.node_id: server},
            "Leader": self.server.node_id,
            "Voters": [self.server.node_id],
        }
        return json_reply(value, pretty=call.pretty)

    def usage(self, call: Call) -> Reply:
        """Consul's ``Operator.Usage``: service names, instances (the ``consul`` service
        and Connect proxies are not billable) and nodes, for our one datacenter."""
        services = list(self.catalog.services.values())
        kinds = CONNECT_KINDS
        connect = {kind: sum(1 for s in services if s.kind == kind) for kind in kinds}
        billable = sum(
            1 for s in services if s.name != "consul" and s.kind not in ("connect-proxy",)
        )
        usage = {
            "Services": len({s.name for s in services}),
            "ServiceInstances": len(services),
            "ConnectServiceInstances": connect,
            "BillableServiceInstances": billable,
            "Nodes": len(self.catalog.nodes),
        }
        value = {"Usage": {self.server.datacenter: usage}, "Index": self.catalog.index}
        return json_reply(value, pretty=call.pretty)
