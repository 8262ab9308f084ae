"""Consul's coordinate and operator routes, with the true values of one server that
elected itself.

Coordinates (``/v1/coordinate/*``) are Serf's network coordinates: this agent has no
peer to measure, so its own is the origin Serf starts from (8 dimensions, error 1.5,
height 1e-5); ``PUT /v1/coordinate/update`` keeps a node's coordinate in memory, as
Consul keeps it in its state store, for nodes the catalog knows.  The operator routes
answer what Raft and autopilot say of a single voter that is the leader.

The autopilot configuration is the one thing an operator sets: ``PUT
/v1/operator/autopilot/configuration`` replaces it whole, as Consul's (a field the body
leaves out is its zero value, not the old one; ``?cas=`` writes only while the kept
``ModifyIndex`` is that one), and it is kept in ``<data-dir>/autopilot.json``, replaced
atomically, so a restart answers what was set.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import error
from ..files import open_private
from ..http.api import TEXT, ApiResource, Call, Reply, json_reply
from ..http.errors import ErrorTable
from ..units import format_duration
from . import consul
from .errors import BadRequest, CatalogError, NoPathToDatacenter
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

#: The body of ``PUT /v1/operator/autopilot/configuration``: Consul's
#: ``api.AutopilotConfiguration`` (its indexes are read and ignored, as Consul's).
AUTOPILOT_BODY = consul.Schema(
    "api.AutopilotConfiguration",
    {
        "CleanupDeadServers": "bool",
        "LastContactThreshold": "duration",
        "MaxTrailingLogs": "int",
        "MinQuorum": "int",
        "ServerStabilizationTime": "duration",
        "RedundancyZoneTag": "str",
        "DisableUpgradeMigration": "bool",
        "UpgradeVersionTag": "str",
        "CreateIndex": "int",
        "ModifyIndex": "int",
    },
)
#: The unsigned fields and their Go types (a negative number is Go's decode error).
UNSIGNED = {"MaxTrailingLogs": "uint64", "MinQuorum": "uint", "CreateIndex": "uint64"}
UNSIGNED["ModifyIndex"] = "uint64"


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


def routes(
    api: ApiResource, catalog: Catalog, server: Server, autopilot: Path | None = None
) -> OperatorRoutes:
    """Add the routes to *api*; the autopilot configuration is kept in *autopilot* (in
    memory only when None)."""
    face = OperatorRoutes(catalog, server, api.invalidate, AutopilotConfig(autopilot))
    api.errors.rows.update(ERRORS.rows)
    r = api.route
    r("GET", "/v1/coordinate/datacenters", face.coordinate_datacenters)
    r("GET", "/v1/coordinate/nodes", face.coordinate_nodes)
    r("GET", "/v1/coordinate/node/*node", face.coordinate_node)
    r("PUT", "/v1/coordinate/update", face.coordinate_update)
    r("GET", "/v1/operator/raft/configuration", face.raft_configuration)
    r("GET", "/v1/operator/autopilot/configuration", face.autopilot_configuration)
    r("PUT", "/v1/operator/autopilot/configuration", face.autopilot_set)
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


def autopilot_body(body: bytes) -> dict[str, Any]:
    """A ``PUT`` body as Consul decodes it into ``api.AutopilotConfiguration``: every
    field (the zero value when left out), durations as Go's ``ReadableDuration`` reads
    them (``"10s"`` or a number of nanoseconds), in nanoseconds; a bad one is Consul's
    400 ``Error parsing autopilot config: ...``."""
    try:
        fields = AUTOPILOT_BODY.decode_body(consul.parse_body(body))
    except BadRequest as e:
        # Go names a field by its struct's bare name, and these two are unsigned.
        reason = e.text.removeprefix("Request decode failed: ").replace(
            "field api.AutopilotConfiguration.", "field AutopilotConfiguration."
        )
        for name, go_type in UNSIGNED.items():
            reason = reason.replace(f".{name} of type int", f".{name} of type {go_type}")
        raise BadRequest(f"Error parsing autopilot config: {reason}") from None
    for name, go_type in UNSIGNED.items():
        value = fields.get(name)
        if value is not None and value < 0:
            raise BadRequest(
                f"Error parsing autopilot config: json: cannot unmarshal number {value} into "
                f"Go struct field AutopilotConfiguration.{name} of type {go_type}"
            )
    for name in ("LastContactThreshold", "ServerStabilizationTime"):
        if fields.get(name) is not None:
            fields[name] = round(fields[name] * 1e9)  # parse_duration's seconds
    zero: dict[str, Any] = {"bool": False, "duration": 0, "int": 0, "str": ""}
    return {
        name: fields[name] if fields.get(name) is not None else zero[AUTOPILOT_BODY.fields[name]]
        for name in AUTOPILOT
    }


class AutopilotConfig:
    """The autopilot configuration, kept in a JSON file (Consul's defaults until one is
    set); durations in nanoseconds, as Consul's state store keeps them."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.value: dict[str, Any] = {
            **AUTOPILOT,
            "LastContactThreshold": 200_000_000,
            "ServerStabilizationTime": 10_000_000_000,
            "CreateIndex": 1,
            "ModifyIndex": 1,
        }
        if path is not None and path.exists():
            try:
                kept = json.loads(path.read_text("utf-8"))
                self.value = {name: kept[name] for name in self.value}
            except (ValueError, KeyError, TypeError) as e:
                # A ValueError is what the wiring turns into one line about the data dir.
                raise ValueError(f"{path.name} is not an autopilot configuration ({e})") from None

    def as_json(self) -> dict[str, Any]:
        """As Consul answers it: the durations as Go writes them."""
        out = dict(self.value)
        for name in ("LastContactThreshold", "ServerStabilizationTime"):
            out[name] = format_duration(out[name] / 1e9)
        return out

    def set(self, config: dict[str, Any], index: int, cas: int | None) -> bool:
        """Replace it with *config* at raft *index* (at least one past the kept one);
        with *cas*, only while the kept ``ModifyIndex`` is *cas*."""
        if cas is not None and cas != self.value["ModifyIndex"]:
            return False
        index = max(index, self.value["ModifyIndex"] + 1)
        value = {**config, "CreateIndex": self.value["CreateIndex"], "ModifyIndex": index}
        if self.path is not None:
            temporary = self.path.with_name(self.path.name + ".new")
            with open_private(temporary) as out:
                json.dump(value, out)
                out.flush()
                os.fsync(out.fileno())
            temporary.replace(self.path)
        self.value = value
        return True


def _cas(call: Call) -> int | None:
    """``?cas=`` as Go's ``strconv.ParseUint`` reads its first value; None when absent."""
    values = call.args.get("cas")
    if values is None:
        return None
    text = values[0]
    if not text.isascii() or not text.isdigit() or int(text) >= 2**64:
        reason = "value out of range" if text.isascii() and text.isdigit() else "invalid syntax"
        raise BadRequest(f'Error parsing cas value: strconv.ParseUint: parsing "{text}": {reason}')
    return int(text)


class OperatorRoutes:
    def __init__(
        self,
        catalog: Catalog,
        server: Server,
        changed: Callable[[], None],
        autopilot: AutopilotConfig | None = None,
    ) -> None:
        self.catalog = catalog
        self.server = server
        self.changed = changed
        self.autopilot = autopilot if autopilot is not None else AutopilotConfig(None)
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
        return json_reply(self.autopilot.as_json(), pretty=call.pretty)

    def autopilot_set(self, call: Call) -> Reply:
        """Consul's ``OperatorAutopilotConfiguration`` PUT: the body, then ``?cas=``;
        ``true`` (with ``?cas=``: whether it was written)."""
        config = autopilot_body(call.body)
        cas = _cas(call)
        written = self.autopilot.set(config, self.catalog.index, cas)
        if written:
            self.changed()
        return json_reply(written, pretty=call.pretty)

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
