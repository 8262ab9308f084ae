"""Consul's HTTP API over the catalog: thin handlers that decode, call the model, encode."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .. import __version__
from ..acl import PolicyError
from ..http.api import TEXT, ApiResource, Call, Handler, Reply, json_reply
from ..http.errors import ErrorTable
from . import consul
from .acl_api import AclDisabled, BootstrapDone
from .acl_api import NotFound as AclNotFound
from .checks import ScriptChecksDisabled, ScriptPolicy
from .errors import (
    AgentServiceIDMissing,
    BadRequest,
    BadSessionTTL,
    BodyTooLarge,
    CheckCritical,
    CheckNotManaged,
    ConfigDefinedService,
    InvalidBehavior,
    InvalidCheckStatus,
    InvalidSession,
    MissingAgentID,
    MissingCheckRegistration,
    MissingNodeRegistration,
    MissingSession,
    NodeNotRegistered,
    NoPathToDatacenter,
    NoTTL,
    ServerRefusal,
    ServiceIDMissing,
    SessionTTLOutOfRange,
    TooManyOps,
    TxnValueTooLarge,
    UnknownAgentService,
    UnknownCheck,
    UnknownMaintenanceService,
    UnknownNode,
    UnknownService,
)
from .filter import InvalidFilter, compile_filter
from .model import (
    CRITICAL,
    PASSING,
    SERF_CHECK_ID,
    STATUSES,
    WARNING,
    Catalog,
    Check,
    CheckDefinition,
    KVEntry,
    KVOp,
    Node,
    Service,
    aggregate_status,
)

if TYPE_CHECKING:
    from ..http.metrics import Metrics
    from ..part import IHomeportReactor
    from . import Settings

#: Consul's checkUpdate (agent/agent_endpoint.go), PUT /v1/agent/check/update/:id.
CHECK_UPDATE = consul.Schema("agent.checkUpdate", {"Status": "str", "Output": "str"})
KV_MAX_VALUE = 512 * 1024
MAX_TXN_OPS = 128  # Consul's maxTxnOps
# /v1/agent/health/service/*: the aggregated status as an HTTP code, for load balancers.
HEALTH_CODES = {PASSING: 200, WARNING: 429, CRITICAL: 503}

#: Consul's status for each of the catalog's errors; the body is the error's text.
#: (Consul answers some of its client's mistakes with 500, and so does homeport.)
ERRORS = ErrorTable(
    {
        # requests
        BadRequest: (400, str),
        PolicyError: (400, str),  # a policy's rules, with line and column
        AclDisabled: (401, str),
        BootstrapDone: (403, str),
        AclNotFound: (404, str),
        InvalidFilter: (500, str),  # go-bexpr's error, passed through by Consul
        ServerRefusal: (500, str),
        BodyTooLarge: (413, str),
        TooManyOps: (413, str),
        TxnValueTooLarge: (413, str),
        NoPathToDatacenter: (500, str),
        # nodes, services, checks
        NodeNotRegistered: (500, str),
        UnknownNode: (500, str),
        UnknownService: (404, str),
        UnknownMaintenanceService: (404, str),
        UnknownAgentService: (404, str),
        ConfigDefinedService: (400, str),
        ServiceIDMissing: (500, str),
        AgentServiceIDMissing: (404, str),
        UnknownCheck: (404, str),
        CheckNotManaged: (400, str),
        InvalidCheckStatus: (400, str),
        NoTTL: (500, str),
        MissingAgentID: (500, str),
        # sessions (and ?acquire=)
        MissingSession: (500, str),
        InvalidSession: (500, str),
        InvalidBehavior: (500, str),
        MissingNodeRegistration: (500, str),
        MissingCheckRegistration: (500, str),
        CheckCritical: (500, str),
        BadSessionTTL: (500, str),
        SessionTTLOutOfRange: (500, str),
        # script checks (Consul's agent refuses them with an error, so 500)
        ScriptChecksDisabled: (500, str),
    }
)


@dataclass(frozen=True)
class Agent:
    """Who this daemon is."""

    node: str
    node_id: str
    datacenter: str
    address: str
    started: float


def local_identity(node: str | None, advertise: str | None, datacenter: str, now: float) -> Agent:
    name = node or socket.gethostname() or "homeport"
    return Agent(
        node=name,
        node_id=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.{datacenter}.homeport")),
        datacenter=datacenter,
        address=advertise or default_advertise(),
        started=now,
    )


def default_advertise() -> str:
    """The first non-loopback IPv4 address, else 127.0.0.1 (as ``--advertise``'s help says)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = s.getsockname()[0]
            if not address.startswith("127."):
                return str(address)
    except OSError:
        pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            address = str(info[4][0])
            if not address.startswith("127."):
                return address
    except OSError:
        pass
    return "127.0.0.1"


def bootstrap(catalog: Catalog, agent: Agent) -> None:
    """The agent's own node, its serfHealth check and the ``consul`` service."""
    previous = catalog.nodes.get(agent.node)
    catalog.register(
        Node(
            name=agent.node,
            address=agent.address,
            id=agent.node_id,
            datacenter=agent.datacenter,
            tagged_addresses={
                "lan": agent.address,
                "lan_ipv4": agent.address,
                "wan": agent.address,
                "wan_ipv4": agent.address,
            },
            meta=dict(previous.meta) if previous else {"consul-network-segment": ""},
        ),
        services=[
            Service(
                node=agent.node,
                id="consul",
                name="consul",
                port=8300,
                source="builtin",
            )
        ],
        checks=[
            Check(
                node=agent.node,
                check_id=SERF_CHECK_ID,
                name="Serf Health Status",
                status=PASSING,
                output="Agent alive and reachable",
                source="builtin",
            )
        ],
    )


#: Consul's 400 for a route whose name (the rest of the path) is empty.
NODE, SERVICE, STATE, SESSION = (
    "Missing node name",
    "Missing service name",
    "Missing check state",
    "Missing session",
)


def _named(param: str, missing: str, handler: Handler) -> Handler:
    """*handler* for a route that, as Consul's, takes the rest of the path as its name
    (``strings.TrimPrefix``: a name may hold ``/``); an empty one is Consul's 400."""

    def named(call: Call) -> Reply:
        if not call.params[param]:
            raise BadRequest(missing)
        return handler(call)

    return named


class ClusterView(Protocol):
    """What a shared store (etcd) knows of the cluster, for ``/v1/status`` and members."""

    def leader(self) -> str:
        """The store's leader as ``host:port`` ("" when there is none)."""
        ...

    def peers(self) -> list[str]:
        """Every member of the store as ``host:port``."""
        ...

    def members(self) -> list[tuple[str, str, str]]:
        """The live agents: (node, address, node ID)."""
        ...


class ConsulAPI:
    """Registers Consul's routes on an :class:`ApiResource`."""

    def __init__(
        self, api: ApiResource, catalog: Catalog, agent: Agent, clock: Any, scripts: ScriptPolicy
    ) -> None:
        self.api = api
        self.catalog = catalog
        self.agent = agent
        self.clock = clock
        self.scripts = scripts
        #: The other agents and the store's leader, when the catalog is shared (etcd).
        self.cluster: ClusterView | None = None
        catalog.subscribe(lambda changes: api.invalidate())
        r = api.route
        # catalog
        r("PUT", "/v1/catalog/register", self.catalog_register)
        r("PUT", "/v1/catalog/deregister", self.catalog_deregister)
        r("GET", "/v1/catalog/datacenters", self.datacenters)
        r("GET", "/v1/catalog/nodes", self.catalog_nodes)
        r("GET", "/v1/catalog/services", self.catalog_services)
        r("GET", "/v1/catalog/service/*name", _named("name", SERVICE, self.catalog_service))
        r("GET", "/v1/catalog/node/*node", _named("node", NODE, self.catalog_node))
        r(
            "GET",
            "/v1/catalog/node-services/*node",
            _named("node", NODE, self.catalog_node_services),
        )
        # agent
        r("PUT", "/v1/agent/service/register", self.agent_service_register)
        r("PUT", "/v1/agent/service/deregister/*id", self.agent_service_deregister)
        r("PUT", "/v1/agent/service/maintenance/*id", self.service_maintenance)
        r("PUT", "/v1/agent/maintenance", self.node_maintenance)
        r("GET", "/v1/agent/services", self.agent_services)
        r("GET", "/v1/agent/service/*id", self.agent_service)
        r("GET", "/v1/agent/checks", self.agent_checks)
        r("GET", "/v1/agent/health/service/id/*id", self.agent_health_by_id)
        r("GET", "/v1/agent/health/service/name/*name", self.agent_health_by_name)
        r("GET", "/v1/agent/self", self.agent_self, volatile=True)
        r("GET", "/v1/agent/members", self.agent_members)
        r("PUT", "/v1/agent/check/register", self.check_register)
        r("PUT", "/v1/agent/check/deregister/*id", self.check_deregister)
        r("PUT", "/v1/agent/check/pass/*id", self._ttl(PASSING))
        r("PUT", "/v1/agent/check/warn/*id", self._ttl(WARNING))
        r("PUT", "/v1/agent/check/fail/*id", self._ttl(CRITICAL))
        r("PUT", "/v1/agent/check/update/*id", self.check_update)
        self._health_kv_and_sessions(r)

    def _health_kv_and_sessions(self, r: Callable[..., None]) -> None:
        # health
        r("GET", "/v1/health/service/*name", _named("name", SERVICE, self.health_service))
        r("GET", "/v1/health/checks/*name", _named("name", SERVICE, self.health_checks))
        r("GET", "/v1/health/state/*state", _named("state", STATE, self.health_state))
        r("GET", "/v1/health/node/*node", _named("node", NODE, self.health_node))
        # status
        r("GET", "/v1/internal/ui/nodes", self.ui_nodes)
        r("GET", "/v1/status/leader", self.status_leader)
        r("GET", "/v1/status/peers", self.status_peers)
        # KV
        r("GET", "/v1/kv/*key", self.kv_get)
        r("PUT", "/v1/kv/*key", self.kv_put)
        r("DELETE", "/v1/kv/*key", self.kv_delete)
        r("PUT", "/v1/txn", self.txn)
        # sessions
        r("PUT", "/v1/session/create", self.session_create)
        r("PUT", "/v1/session/destroy/*id", _named("id", SESSION, self.session_destroy))
        r("PUT", "/v1/session/renew/*id", _named("id", SESSION, self.session_renew))
        r("GET", "/v1/session/info/*id", _named("id", SESSION, self.session_info))
        r("GET", "/v1/session/node/*node", _named("node", NODE, self.session_node))
        r("GET", "/v1/session/list", self.session_list)

    # -- helpers --------------------------------------------------------------------

    def _json(self, call: Call, value: Any) -> Reply:
        return json_reply(value, pretty=call.pretty)

    def _filtered(self, call: Call, items: Any) -> Any:
        """``?filter=``: the results (a list, or the values of a map) that match it."""
        expression = call.arg("filter")
        if not expression:
            return items
        values = list(items.values()) if isinstance(items, dict) else items
        fields = {name for value in values for name in value} if values else None
        match = compile_filter(expression, fields)
        if isinstance(items, dict):
            return {key: value for key, value in items.items() if match(value)}
        return [value for value in items if match(value)]

    def _decode(self, call: Call, schema: consul.Schema) -> dict[str, Any]:
        return schema.decode_body(consul.parse_body(call.body))

    def _optional_body(self, call: Call, schema: consul.Schema) -> dict[str, Any]:
        return self._decode(call, schema) if call.body.strip() else {}

    def _passing_filter(self, call: Call) -> bool:
        values = call.args.get("passing")
        if values is None:
            return False
        value = values[-1].lower()
        if value == "":
            return True
        if value in ("1", "t", "true"):
            return True
        if value in ("0", "f", "false"):
            return False
        raise BadRequest("Invalid value for ?passing")

    def _true(self, call: Call) -> Reply:
        return Reply(b"true")

    # -- catalog ----------------------------------------------------------------------

    def _here(self, fields: dict[str, Any]) -> None:
        """A body's ``Datacenter``, when given, must be ours (Consul forwards the request
        there and has no path to another one); ``?dc=`` is checked for every route."""
        dc = fields.get("Datacenter")
        if dc and dc != self.agent.datacenter:
            raise NoPathToDatacenter(dc)

    def catalog_register(self, call: Call) -> Reply:
        fields = self._decode(call, consul.CATALOG_REGISTER)
        self._here(fields)
        node, services, checks, skip = consul.catalog_registration(fields, self.agent.datacenter)
        if skip and node.name not in self.catalog.nodes:
            raise UnknownNode(node.name)
        self.catalog.register(node, services, checks, skip_node_update=skip)
        return self._true(call)

    def catalog_deregister(self, call: Call) -> Reply:
        fields = self._decode(call, consul.CATALOG_DEREGISTER)
        self._here(fields)
        node = fields.get("Node") or ""
        if not node:
            raise BadRequest("Must provide node")
        if fields.get("ServiceID"):
            self.catalog.deregister_service(node, fields["ServiceID"])
        elif fields.get("CheckID"):
            self.catalog.deregister_check(node, fields["CheckID"])
        else:
            self.catalog.deregister_node(node)
        return self._true(call)

    def datacenters(self, call: Call) -> Reply:
        return self._json(call, [self.agent.datacenter])

    def _on_node(self, call: Call) -> Callable[[str], bool] | None:
        """``?node-meta=key:value`` (repeatable, all must match): which node names pass."""
        wanted = [item.partition(":")[::2] for item in call.args.get("node-meta", ())]
        if not wanted:
            return None
        nodes = self.catalog.nodes

        def accepts(name: str) -> bool:
            node = nodes.get(name)
            return node is not None and all(node.meta.get(k) == v for k, v in wanted)

        return accepts

    def _instances(self, call: Call) -> list[Service]:
        services = self.catalog.instances(call.params["name"], call.args.get("tag", ()))
        on_node = self._on_node(call)
        return services if on_node is None else [s for s in services if on_node(s.node)]

    def catalog_nodes(self, call: Call) -> Reply:
        on_node = self._on_node(call)
        nodes = sorted(self.catalog.nodes.values(), key=lambda n: n.name)
        nodes = [n for n in nodes if on_node is None or on_node(n.name)]
        return self._json(call, self._filtered(call, [consul.node_json(n) for n in nodes]))

    def catalog_services(self, call: Call) -> Reply:
        if not call.arg("filter"):
            return self._json(call, self.catalog.service_names(self._on_node(call)))
        # As Consul: the expression is on each instance (ServiceNode), then names -> tags.
        on_node = self._on_node(call)
        nodes, dc = self.catalog.nodes, self.agent.datacenter
        instances = [
            consul.catalog_service_json(nodes.get(s.node), s, dc)
            for s in sorted(self.catalog.services.values(), key=lambda s: (s.name, s.node, s.id))
            if on_node is None or on_node(s.node)
        ]
        names: dict[str, set[str]] = {}
        for instance in self._filtered(call, instances):
            names.setdefault(instance["ServiceName"], set()).update(instance["ServiceTags"])
        return self._json(call, {name: sorted(tags) for name, tags in sorted(names.items())})

    def catalog_service(self, call: Call) -> Reply:
        services = self._instances(call)
        nodes = self.catalog.nodes
        dc = self.agent.datacenter
        found = [consul.catalog_service_json(nodes.get(s.node), s, dc) for s in services]
        return self._json(call, self._filtered(call, found))

    def _node_and_services(self, call: Call, as_map: bool) -> Reply:
        """/v1/catalog/node/:node (services by ID) and node-services/:node (a list)."""
        node = self.catalog.nodes.get(call.params["node"])
        if node is None:
            return self._json(call, None)
        services = self._filtered(  # Consul's filter: on the node's services
            call,
            [
                consul.node_service_json(s)
                for s in sorted(self.catalog.services.values(), key=lambda s: s.id)
                if s.node == node.name
            ],
        )
        return self._json(
            call,
            {
                "Node": consul.node_json(node),
                "Services": {s["ID"]: s for s in services} if as_map else services,
            },
        )

    def catalog_node(self, call: Call) -> Reply:
        return self._node_and_services(call, as_map=True)

    def catalog_node_services(self, call: Call) -> Reply:
        return self._node_and_services(call, as_map=False)

    # -- agent --------------------------------------------------------------------------

    def _local_services(self) -> list[Service]:
        node = self.agent.node
        return sorted(
            (s for s in self.catalog.services.values() if s.node == node and s.source != "builtin"),
            key=lambda s: s.id,
        )

    def agent_service_register(self, call: Call) -> Reply:
        fields = self._decode(call, consul.AGENT_SERVICE)
        service, checks = consul.agent_service(fields, self.agent.node)
        existing = self.catalog.services.get((self.agent.node, service.id))
        if existing is not None and existing.source != "api":
            raise ConfigDefinedService(service.id, "change")
        self.scripts.vet(checks)
        self.catalog.register_service(
            service, checks, replace_checks=call.flag("replace-existing-checks")
        )
        return Reply(b"", content_type=TEXT)

    def agent_service_deregister(self, call: Call) -> Reply:
        service_id = call.params["id"]  # the rest of the path: an ID may hold "/"
        if not service_id:
            raise MissingAgentID("ServiceID")
        existing = self.catalog.services.get((self.agent.node, service_id))
        if existing is None or existing.source == "builtin":
            raise UnknownService(service_id)
        if existing.source != "api":
            raise ConfigDefinedService(service_id, "remove")
        self.catalog.deregister_service(self.agent.node, service_id, missing_ok=False)
        return Reply(b"", content_type=TEXT)

    def _maintenance(self, call: Call, check_id: str, service_id: str, name: str) -> Reply:
        enable = call.arg("enable")
        if enable is None or enable == "":
            raise BadRequest("Missing value for enable")
        if enable.lower() not in ("true", "false", "1", "0", "t", "f"):
            raise BadRequest(f"Invalid value for enable: {enable!r}")
        if enable.lower() in ("true", "1", "t"):
            reason = call.arg("reason") or (
                "Maintenance mode is enabled for this service, but no reason was provided. "
                "This is a default message."
                if service_id
                else "Maintenance mode is enabled for this node, but no reason was provided. "
                "This is a default message."
            )
            self.catalog.register_check(
                Check(
                    node=self.agent.node,
                    check_id=check_id,
                    name=name,
                    status=CRITICAL,
                    notes=reason,
                    service_id=service_id,
                    definition=CheckDefinition(),
                )
            )
        else:
            self.catalog.deregister_check(self.agent.node, check_id)
        return Reply(b"", content_type=TEXT)

    def service_maintenance(self, call: Call) -> Reply:
        service_id = call.params["id"]
        if not service_id:
            raise BadRequest("Missing service ID")
        if (self.agent.node, service_id) not in self.catalog.services:
            raise UnknownMaintenanceService(service_id)
        return self._maintenance(
            call, f"_service_maintenance:{service_id}", service_id, "Service Maintenance Mode"
        )

    def node_maintenance(self, call: Call) -> Reply:
        return self._maintenance(call, "_node_maintenance", "", "Node Maintenance Mode")

    def agent_services(self, call: Call) -> Reply:
        dc = self.agent.datacenter
        services = {s.id: consul.node_service_json(s, dc) for s in self._local_services()}
        return self._json(call, self._filtered(call, services))

    def agent_service(self, call: Call) -> Reply:
        service = self.catalog.services.get((self.agent.node, call.params["id"]))
        if service is None or service.source == "builtin":
            raise UnknownAgentService(call.params["id"])
        data = consul.node_service_json(service, self.agent.datacenter)
        data["ContentHash"] = f"{service.modify_index:016x}"
        return self._json(call, data)

    def _service_health(self, service: Service) -> tuple[str, dict[str, Any]]:
        # The agent's own checks (as Consul's local state: no serfHealth), node ones too.
        checks = [c for c in self.catalog.instance_checks(service) if c.source != "builtin"]
        status = aggregate_status(c.status for c in checks)
        data = consul.node_service_json(service, self.agent.datacenter)
        data["ContentHash"] = f"{service.modify_index:016x}"
        info = {
            "AggregatedStatus": status,
            "Service": data,
            "Checks": [consul.check_json(c) for c in checks],
        }
        return status, info

    def agent_health_by_id(self, call: Call) -> Reply:
        """One local instance's health: 200 passing, 429 warning, 503 critical, 404."""
        service_id = call.params["id"]
        if not service_id:
            raise BadRequest("Missing serviceID")
        service = self.catalog.services.get((self.agent.node, service_id))
        text = call.arg("format") == "text"
        if service is None or service.source == "builtin":
            reason = f"ServiceId {service_id} not found"
            if text:
                return Reply(reason.encode(), status=404, content_type=TEXT)
            missing = {"AggregatedStatus": CRITICAL, "Service": None, "Checks": None}
            return json_reply(missing, 404, call.pretty)
        status, info = self._service_health(service)
        if text:
            return Reply(status.encode(), status=HEALTH_CODES[status], content_type=TEXT)
        return json_reply(info, HEALTH_CODES[status], call.pretty)

    def agent_health_by_name(self, call: Call) -> Reply:
        """Every local instance of a service; the code is the worst of them."""
        if not call.params["name"]:
            raise BadRequest("Missing service Name")
        name = call.params["name"].lower()
        found = [self._service_health(s) for s in self._local_services() if s.name.lower() == name]
        text = call.arg("format") == "text"
        if not found:
            reason = f"ServiceName {call.params['name']} Not Found"
            if text:
                return Reply(reason.encode(), status=404, content_type=TEXT)
            return json_reply([], 404, call.pretty)
        status = aggregate_status(s for s, _ in found)
        if text:
            return Reply(status.encode(), status=HEALTH_CODES[status], content_type=TEXT)
        return json_reply([info for _, info in found], HEALTH_CODES[status], call.pretty)

    def agent_checks(self, call: Call) -> Reply:
        node = self.agent.node
        checks = sorted(
            (c for c in self.catalog.checks.values() if c.node == node and c.source != "builtin"),
            key=lambda c: c.check_id,
        )
        found = {c.check_id: consul.check_json(c) for c in checks}
        return self._json(call, self._filtered(call, found))

    def _member(self) -> dict[str, Any]:
        return {
            "Name": self.agent.node,
            "Addr": self.agent.address,
            "Port": 8301,
            "Tags": {
                "dc": self.agent.datacenter,
                "role": "consul",
                "id": self.agent.node_id,
                "build": __version__,
                "vsn": "2",
            },
            "Status": 1,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
        }

    def agent_self(self, call: Call) -> Reply:
        return self._json(
            call,
            {
                "Config": {
                    "Datacenter": self.agent.datacenter,
                    "PrimaryDatacenter": self.agent.datacenter,
                    "NodeName": self.agent.node,
                    "NodeID": self.agent.node_id,
                    "Revision": "homeport",
                    "Server": True,
                    "Version": __version__,
                    "BuildDate": "",
                },
                "Coord": None,
                "Member": self._member(),
                "Stats": {
                    "agent": {
                        "checks": str(len(self.catalog.checks)),
                        "services": str(len(self._local_services())),
                    },
                    "homeport": {
                        "version": __version__,
                        "uptime_seconds": str(int(self.clock.seconds() - self.agent.started)),
                    },
                    **self._server_stats(),
                },
                "Meta": {"consul-network-segment": ""},
                "xDS": None,
            },
        )

    def _server_stats(self) -> dict[str, dict[str, str]]:
        """``Stats.consul`` and ``Stats.raft`` of a Consul server that is its own leader
        (Consul's ``Server.Stats``): what ``/v1/status/leader`` and ``peers`` say."""
        leader = self._leader_address()
        index = str(self.catalog.index)
        return {
            "consul": {
                "server": "true",
                "leader": "true" if self.cluster is None else "false",
                "leader_addr": leader,
                "bootstrap": "true",
                "known_datacenters": "1",
                "acl": "disabled",
            },
            "raft": {
                "state": "Leader" if self.cluster is None else "Follower",
                "num_peers": "0" if self.cluster is None else str(len(self.cluster.peers()) - 1),
                "applied_index": index,
                "commit_index": index,
                "last_log_index": index,
                "latest_configuration": (
                    f"[{{Suffrage:Voter ID:{self.agent.node_id} Address:{leader}}}]"
                ),
            },
        }

    def agent_members(self, call: Call) -> Reply:
        if self.cluster is None:
            return self._json(call, self._filtered(call, [self._member()]))
        members = []
        for node, address, node_id in self.cluster.members():
            member = self._member()
            member.update(Name=node, Addr=address)
            member["Tags"] = {**member["Tags"], "id": node_id}
            members.append(member)
        return self._json(call, self._filtered(call, members))

    def check_register(self, call: Call) -> Reply:
        fields = self._decode(call, consul.CHECK)
        check = consul.agent_check(fields, self.agent.node)
        if check.service_id and (self.agent.node, check.service_id) not in self.catalog.services:
            raise AgentServiceIDMissing(check.service_id)
        self.scripts.vet([check])
        existing = self.catalog.checks.get((self.agent.node, check.check_id))
        if existing is not None and existing.source != "api":
            raise CheckNotManaged(check.check_id)
        self.catalog.register_check(check)
        return Reply(b"", content_type=TEXT)

    def check_deregister(self, call: Call) -> Reply:
        check_id = call.params["id"]
        if not check_id:
            raise MissingAgentID("CheckID")
        existing = self.catalog.checks.get((self.agent.node, check_id))
        if existing is None or existing.source == "builtin":
            raise UnknownCheck(check_id)
        self.catalog.deregister_check(self.agent.node, check_id, missing_ok=False)
        return Reply(b"", content_type=TEXT)

    def _ttl(self, status: str) -> Callable[[Call], Reply]:
        def update(call: Call) -> Reply:
            self.catalog.ttl_update(
                self.agent.node, call.params["id"], status, call.arg("note") or ""
            )
            return Reply(b"", content_type=TEXT)

        return update

    def check_update(self, call: Call) -> Reply:
        fields = CHECK_UPDATE.decode_body(consul.parse_body(call.body))
        status = fields.get("Status") or ""
        if status not in STATUSES:
            raise BadRequest(f"Invalid check status: '{status}'")
        self.catalog.ttl_update(
            self.agent.node, call.params["id"], status, fields.get("Output") or ""
        )
        return Reply(b"", content_type=TEXT)

    # -- health -------------------------------------------------------------------------

    def health_service(self, call: Call) -> Reply:
        passing = self._passing_filter(call)
        result = []
        for service in self._instances(call):
            checks = self.catalog.instance_checks(service)
            if passing and any(c.status != PASSING for c in checks):
                continue
            node = self.catalog.nodes.get(service.node)
            result.append(
                {
                    "Node": consul.node_json(node) if node else None,
                    "Service": consul.node_service_json(service),
                    "Checks": [consul.check_json(c) for c in checks],
                }
            )
        return self._json(call, self._filtered(call, result))

    def health_checks(self, call: Call) -> Reply:
        name = call.params["name"].lower()
        checks = sorted(
            (c for c in self.catalog.checks.values() if c.service_name.lower() == name),
            key=lambda c: (c.node, c.check_id),
        )
        return self._json(call, self._filtered(call, [consul.check_json(c) for c in checks]))

    def health_state(self, call: Call) -> Reply:
        state = call.params["state"]
        if state not in ("any", *STATUSES):
            raise BadRequest(f"Invalid check state: {state!r}")
        checks = sorted(
            (c for c in self.catalog.checks.values() if state in ("any", c.status)),
            key=lambda c: (c.node, c.check_id),
        )
        return self._json(call, self._filtered(call, [consul.check_json(c) for c in checks]))

    def health_node(self, call: Call) -> Reply:
        node = call.params["node"]
        checks = sorted(
            (c for c in self.catalog.checks.values() if c.node == node), key=lambda c: c.check_id
        )
        return self._json(call, self._filtered(call, [consul.check_json(c) for c in checks]))

    def ui_nodes(self, call: Call) -> Reply:
        """Consul's node dump for its UI: every node with its services and checks, in one
        answer (the dashboard's services page reads this, not one request per service)."""
        services: dict[str, list[Service]] = {}
        for service in self.catalog.services.values():
            services.setdefault(service.node, []).append(service)
        checks: dict[str, list[Check]] = {}
        for check in self.catalog.checks.values():
            checks.setdefault(check.node, []).append(check)
        dump = []
        for node in sorted(self.catalog.nodes.values(), key=lambda n: n.name):
            data = consul.node_json(node)
            data["Services"] = [
                consul.node_service_json(s)
                for s in sorted(services.get(node.name, ()), key=lambda s: s.id)
            ]
            data["Checks"] = [
                consul.check_json(c)
                for c in sorted(checks.get(node.name, ()), key=lambda c: c.check_id)
            ]
            dump.append(data)
        return self._json(call, self._filtered(call, dump))

    # -- status ---------------------------------------------------------------------------

    def _leader_address(self) -> str:
        """The raft leader's address: this one server's, or the shared store's leader."""
        if self.cluster is not None:
            return self.cluster.leader()
        return f"{self.agent.address}:8300"

    def status_leader(self, call: Call) -> Reply:
        return self._json(call, self._leader_address())

    def status_peers(self, call: Call) -> Reply:
        if self.cluster is not None:
            return self._json(call, self.cluster.peers())
        return self._json(call, [self._leader_address()])

    # -- KV ---------------------------------------------------------------------------------

    def kv_get(self, call: Call) -> Reply:
        """A key, a prefix (``?recurse``) or its keys (``?keys``), with Consul's index:
        the key's ModifyIndex, or the highest under the prefix (a deleted key's
        included), else the KV table's, so ``?index=<that>`` waits for a change."""
        key = call.params["key"]
        if call.has("keys"):
            return self._kv_keys(call, key)
        if call.has("recurse"):
            entries = self.catalog.kv_list(key)
            index = self.catalog.kv_prefix_index(key)
        else:
            found = self.catalog.kv_get(key)
            entries = [found] if found is not None else []
            index = self.catalog.kv_key_index(key)
        if not entries:
            return Reply(b"", status=404, content_type=TEXT, index=index)
        if call.has("raw") and not call.has("recurse"):
            return Reply(entries[0].value, content_type=TEXT, index=index)
        reply = self._json(call, [consul.kv_json(e) for e in entries])
        reply.index = index
        return reply

    def _kv_keys(self, call: Call, prefix: str) -> Reply:
        """Consul's ``KVSGetKeys``: the separator is the first ``?separator=`` (or the
        old spelling ``?seperator=``); no keys is 404 under a prefix, ``[]`` at the root."""
        separator = ""
        for spelling in ("seperator", "separator"):  # the right spelling wins
            if spelling in call.args:
                separator = call.args[spelling][0]
        keys: list[str] = []
        for entry in self.catalog.kv_list(prefix):
            name = entry.key
            if separator:
                cut = name.find(separator, len(prefix))
                if cut >= 0:
                    name = name[: cut + len(separator)]
            if not keys or keys[-1] != name:
                keys.append(name)
        index = self.catalog.kv_prefix_index(prefix)
        if not keys and prefix:
            return Reply(b"", status=404, content_type=TEXT, index=index)
        reply = self._json(call, keys)
        reply.index = index
        return reply

    def _kv_key(self, call: Call) -> str:
        key = call.params["key"]
        if not key and not call.has("recurse"):
            raise BadRequest("Missing key name")
        return key

    def kv_put(self, call: Call) -> Reply:
        key = self._kv_key(call)
        if len(call.body) > KV_MAX_VALUE:
            raise BodyTooLarge(len(call.body), KV_MAX_VALUE)
        flags = call.int_arg("flags", 0) or 0
        if not 0 <= flags < 2**64:
            raise BadRequest("Invalid flags")
        if call.has("acquire"):
            ok = self.catalog.kv_acquire(key, call.body, flags, call.arg("acquire") or "")
        elif call.has("release"):
            ok = self.catalog.kv_release(key, call.body, flags, call.arg("release") or "")
        else:
            ok = self.catalog.kv_put(key, call.body, flags=flags, cas=call.int_arg("cas"))
        return Reply(b"true" if ok else b"false")

    def kv_delete(self, call: Call) -> Reply:
        key = self._kv_key(call)
        ok = self.catalog.kv_delete(key, recurse=call.has("recurse"), cas=call.int_arg("cas"))
        return Reply(b"true" if ok else b"false")

    def txn(self, call: Call) -> Reply:
        """KV operations applied all together or not at all; 409 with the failed op."""
        ops = consul.txn_ops(consul.parse_body(call.body), MAX_TXN_OPS, KV_MAX_VALUE)
        # Consul's kvsPreApply, for every op before any runs: a key, unless deleting all.
        errors: list[tuple[int, object]] = [
            (n, "Must provide key")
            for n, op in enumerate(ops)
            if isinstance(op, KVOp) and not op.key and op.verb != "delete-tree"
        ]
        results: list[KVEntry] = []
        if not errors:
            results, kv_errors = self.catalog.kv_txn(ops)
            errors.extend(kv_errors)
        if errors:
            failed = [{"OpIndex": n, "What": str(what)} for n, what in errors]
            return json_reply({"Results": None, "Errors": failed}, 409, call.pretty)
        answer = {"Results": [{"KV": consul.kv_json(e)} for e in results], "Errors": None}
        return self._json(call, answer)

    # -- sessions -----------------------------------------------------------------------

    def session_create(self, call: Call) -> Reply:
        fields = self._optional_body(call, consul.SESSION)
        session = consul.session_from(fields, str(uuid.uuid4()), self.agent.node)
        created = self.catalog.session_create(session)
        return self._json(call, {"ID": created.id})

    def session_destroy(self, call: Call) -> Reply:
        self.catalog.session_destroy(call.params["id"])
        return self._true(call)

    def session_renew(self, call: Call) -> Reply:
        session = self.catalog.session_renew(call.params["id"])
        if session is None:
            return Reply(
                f"Session id '{call.params['id']}' not found".encode(),
                status=404,
                content_type=TEXT,
            )
        return self._json(call, [consul.session_json(session)])

    def _sessions(self, call: Call, keep: Callable[[Any], bool]) -> Reply:
        found = sorted(
            (s for s in self.catalog.sessions.values() if keep(s)), key=lambda s: s.create_index
        )
        return self._json(call, [consul.session_json(s) for s in found])

    def session_info(self, call: Call) -> Reply:
        return self._sessions(call, lambda s: s.id == call.params["id"])

    def session_node(self, call: Call) -> Reply:
        return self._sessions(call, lambda s: s.node == call.params["node"])

    def session_list(self, call: Call) -> Reply:
        return self._sessions(call, lambda s: True)


def api_resource(
    settings: Settings, reactor: IHomeportReactor, catalog: Catalog, metrics: Metrics
) -> ApiResource:
    """The ``/v1/`` resource over *catalog*: Consul's headers, errors, token and CORS
    rules (the primary's and a worker's alike)."""
    from ..http.auth import Token
    from ..http.cors import CORS

    return ApiResource(
        reactor,
        lambda: catalog.index,
        metrics,
        Token(settings.token),
        catalog.datacenter,
        cors=CORS(settings.cors_origins),
        errors=ERRORS,
    )
