"""The ACL rule of every catalog route (``--acl``), as Consul enforces it per endpoint.

One table, so a reviewer sees every rule at once and ``tests/test_acl_routes.py`` can
prove that no route is left without one.  Reads are filtered to what the token may
read; writes are checked before they run (on what the path, the body or the catalog
names).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..acl import Authorizer
from ..http.api import ApiResource, Call
from ..http.guard import (
    OPEN,
    Guard,
    body,
    checks_filter,
    each,
    field,
    inside,
    items,
    names,
    need,
    then,
)
from .api import Agent
from .model import Catalog

NODE = ("node", ("Node",))
SERVICE_NAME = ("service", ("ServiceName",))


def _service_write(authz: Authorizer, name: str) -> None:
    authz.check("service", name, "write")


class Guards:
    """The checks that need the catalog (a service's name by its ID, a session's node)."""

    def __init__(self, catalog: Catalog, agent: Agent) -> None:
        self.catalog = catalog
        self.agent = agent

    def _service_name(self, service_id: str, node: str | None = None) -> str:
        found = dict.get(self.catalog.services, (node or self.agent.node, service_id))
        return found.name if found is not None else service_id

    def agent_service(self, access: str) -> Callable[[Authorizer, Call], None]:
        def check(authz: Authorizer, call: Call) -> None:
            authz.check("service", self._service_name(call.params.get("id", "")), access)

        return check

    def _check_rule(self, authz: Authorizer, check_id: str, node: str, access: str) -> None:
        found = dict.get(self.catalog.checks, (node, check_id))
        if found is not None and found.service_name:
            authz.check("service", found.service_name, access)
        else:
            authz.check("node", node, access)

    def agent_check(self, authz: Authorizer, call: Call) -> None:
        self._check_rule(authz, call.params.get("id", ""), self.agent.node, "write")

    def service_register(self, authz: Authorizer, call: Call) -> None:
        data = body(call)
        name = field(data, ("Name",)) or field(data, ("ID",))
        _service_write(authz, str(name or ""))

    def check_register(self, authz: Authorizer, call: Call) -> None:
        service_id = field(body(call), ("ServiceID",))
        if isinstance(service_id, str) and service_id:
            _service_write(authz, self._service_name(service_id))
        else:
            authz.check("node", self.agent.node, "write")

    def catalog_register(self, authz: Authorizer, call: Call) -> None:
        data = body(call)
        node = str(field(data, ("Node",)) or "")
        service = field(data, ("Service", "Service"))
        existing = dict.get(self.catalog.nodes, node)
        if not isinstance(service, str) or not service or existing is None:
            authz.check("node", node, "write")  # a new or changed node
        if isinstance(service, str) and service:
            _service_write(authz, service)
        for check in [field(data, ("Check",)), *(field(data, ("Checks",)) or ())]:
            if isinstance(check, dict):
                self._registered_check(authz, node, check)

    def _registered_check(self, authz: Authorizer, node: str, check: dict[str, Any]) -> None:
        service_id = field(check, ("ServiceID",))
        if isinstance(service_id, str) and service_id:
            _service_write(authz, self._service_name(service_id, node))
        else:
            authz.check("node", node, "write")

    def catalog_deregister(self, authz: Authorizer, call: Call) -> None:
        data = body(call)
        node = str(field(data, ("Node",)) or "")
        service_id, check_id = field(data, ("ServiceID",)), field(data, ("CheckID",))
        if isinstance(service_id, str) and service_id:
            _service_write(authz, self._service_name(service_id, node))
        elif isinstance(check_id, str) and check_id:
            self._check_rule(authz, check_id, node, "write")
        else:
            authz.check("node", node, "write")

    def session_create(self, authz: Authorizer, call: Call) -> None:
        node = field(body(call), ("Node",))
        authz.check("session", str(node or self.agent.node), "write")

    def session_id(self, authz: Authorizer, call: Call) -> None:
        found = dict.get(self.catalog.sessions, call.params.get("id", ""))
        authz.check("session", found.node if found is not None else "", "write")

    def node_write(self, authz: Authorizer, call: Call) -> None:
        authz.check("node", self.agent.node, "write")

    def agent_rule(self, access: str) -> Callable[[Authorizer, Call], None]:
        def check(authz: Authorizer, call: Call) -> None:
            authz.check("agent", self.agent.node, access)

        return check

    def query_rule(self, access: str) -> Callable[[Authorizer, Call], None]:
        """A prepared query's name (from the body, else the stored query) needs *access*."""

        def check(authz: Authorizer, call: Call) -> None:
            name = field(body(call), ("Name",))
            if not isinstance(name, str):
                query_id = call.params.get("id", "").split("/")[0]
                found = dict.get(self.catalog.queries, query_id)
                if found is None:
                    found = next(
                        (q for q in self.catalog.queries.values() if q.name == query_id), None
                    )
                name = found.name if found is not None else query_id
            authz.check("query", name, access)

        return check


def kv_read(authz: Authorizer, call: Call) -> None:
    if not (call.has("recurse") or call.has("keys")):
        authz.check("key", call.params.get("key", ""), "read")


def kv_delete(authz: Authorizer, call: Call) -> None:
    key = call.params.get("key", "")
    if call.has("recurse"):
        authz.check_key_write_prefix(key)
    else:
        authz.check("key", key, "write")


def kv_filter(authz: Authorizer, value: Any) -> tuple[Any, bool]:
    if isinstance(value, list) and value and isinstance(value[0], str):
        return names("key")(authz, value)
    return items(("key", ("Key",)))(authz, value)


def txn(authz: Authorizer, call: Call) -> None:
    ops = body(call)
    for op in ops if isinstance(ops, list) else ():
        kv = field(op, ("KV",))
        if not isinstance(kv, dict):
            continue
        verb, key = str(kv.get("Verb") or ""), str(kv.get("Key") or "")
        if verb == "delete-tree":
            authz.check_key_write_prefix(key)
        elif verb in ("get", "get-tree", "check-index", "check-session", "check-not-exists"):
            authz.check("key", key, "read")
        else:
            authz.check("key", key, "write")


def table(guards: Guards) -> dict[tuple[str, str], Guard]:
    """Every catalog route's guard, by (method, route)."""
    g = guards
    return {
        **_catalog(g),
        **_agent(g),
        **_health_kv_sessions(),
        **_others(g),
        **_acl(),
    }


def _catalog(g: Guards) -> dict[tuple[str, str], Guard]:
    return {
        ("PUT", "/v1/catalog/register"): Guard("node:write, service:write", g.catalog_register),
        ("PUT", "/v1/catalog/deregister"): Guard(
            "node:write or service:write", g.catalog_deregister
        ),
        ("GET", "/v1/catalog/datacenters"): OPEN,
        ("GET", "/v1/catalog/nodes"): Guard("node:read", filter=items(NODE)),
        ("GET", "/v1/catalog/services"): Guard("service:read", filter=names("service")),
        ("GET", "/v1/catalog/service/*name"): Guard(
            "service:read, node:read", filter=items(SERVICE_NAME, NODE)
        ),
        ("GET", "/v1/catalog/node/*node"): Guard(
            "node:read, service:read",
            filter=inside("Services", items(("service", ("Service",))), ("Node", "Node")),
        ),
        ("GET", "/v1/catalog/node-services/*node"): Guard(
            "node:read, service:read",
            filter=inside("Services", items(("service", ("Service",))), ("Node", "Node")),
        ),
    }


def _agent(g: Guards) -> dict[tuple[str, str], Guard]:
    service_read = Guard("service:read", g.agent_service("read"))
    check_write = Guard("service:write or node:write", g.agent_check)
    return {
        ("PUT", "/v1/agent/service/register"): Guard("service:write", g.service_register),
        ("PUT", "/v1/agent/service/deregister/*id"): Guard(
            "service:write", g.agent_service("write")
        ),
        ("PUT", "/v1/agent/service/maintenance/*id"): Guard(
            "service:write", g.agent_service("write")
        ),
        ("PUT", "/v1/agent/maintenance"): Guard("node:write", g.node_write),
        ("GET", "/v1/agent/services"): Guard(
            "service:read", filter=items(("service", ("Service",)))
        ),
        ("GET", "/v1/agent/service/*id"): service_read,
        ("GET", "/v1/agent/checks"): Guard("service:read or node:read", filter=checks_filter),
        ("GET", "/v1/agent/health/service/id/*id"): service_read,
        ("GET", "/v1/agent/health/service/name/*name"): need("service", "read", "name"),
        ("GET", "/v1/agent/self"): Guard("agent:read", g.agent_rule("read")),
        ("GET", "/v1/agent/members"): Guard("node:read", filter=items(("node", ("Name",)))),
        ("PUT", "/v1/agent/check/register"): Guard("service:write or node:write", g.check_register),
        ("PUT", "/v1/agent/check/deregister/*id"): check_write,
        ("PUT", "/v1/agent/check/pass/*id"): check_write,
        ("PUT", "/v1/agent/check/warn/*id"): check_write,
        ("PUT", "/v1/agent/check/fail/*id"): check_write,
        ("PUT", "/v1/agent/check/update/*id"): check_write,
        ("PUT", "/v1/agent/reload"): Guard("agent:write", g.agent_rule("write")),
        ("PUT", "/v1/agent/leave"): Guard("agent:write", g.agent_rule("write")),
        ("GET", "/v1/agent/metrics"): Guard("agent:read", g.agent_rule("read")),
        ("GET", "/v1/agent/monitor"): Guard("agent:read", g.agent_rule("read")),
    }


def _health_kv_sessions() -> dict[tuple[str, str], Guard]:
    session_read = Guard("session:read", filter=items(("session", ("Node",))))
    return {
        ("GET", "/v1/health/service/*name"): Guard(
            "service:read, node:read",
            filter=items(("service", ("Service", "Service")), ("node", ("Node", "Node"))),
        ),
        ("GET", "/v1/health/checks/*name"): Guard("service:read", filter=checks_filter),
        ("GET", "/v1/health/state/*state"): Guard(
            "service:read or node:read", filter=checks_filter
        ),
        ("GET", "/v1/health/node/*node"): Guard("service:read or node:read", filter=checks_filter),
        ("GET", "/v1/internal/ui/nodes"): Guard(
            "node:read, service:read",
            filter=then(
                items(NODE),
                each("Services", items(("service", ("Service",)))),
                each("Checks", checks_filter),
            ),
        ),
        ("GET", "/v1/status/leader"): OPEN,
        ("GET", "/v1/status/peers"): OPEN,
        ("GET", "/v1/kv/*key"): Guard("key:read", kv_read, kv_filter, empty_404=True),
        ("PUT", "/v1/kv/*key"): need("key", "write", "key"),
        ("DELETE", "/v1/kv/*key"): Guard("key:write (prefix with ?recurse)", kv_delete),
        ("PUT", "/v1/txn"): Guard("key:read/key:write per operation", txn),
        ("GET", "/v1/session/info/*id"): session_read,
        ("GET", "/v1/session/node/*node"): session_read,
        ("GET", "/v1/session/list"): session_read,
    }


def _others(g: Guards) -> dict[tuple[str, str], Guard]:
    operator_read = need("operator", "read")
    return {
        ("PUT", "/v1/session/create"): Guard("session:write", g.session_create),
        ("PUT", "/v1/session/destroy/*id"): Guard("session:write", g.session_id),
        ("PUT", "/v1/session/renew/*id"): Guard("session:write", g.session_id),
        ("PUT", "/v1/event/fire/*name"): need("event", "write", "name"),
        ("GET", "/v1/event/list"): Guard("event:read", filter=items(("event", ("Name",)))),
        ("POST", "/v1/query"): Guard("query:write", g.query_rule("write")),
        ("GET", "/v1/query"): Guard("query:read", filter=items(("query", ("Name",)))),
        ("GET", "/v1/query/*id"): Guard(
            "query:read; an execution's nodes by service:read, node:read",
            g.query_rule("read"),
            inside(
                "Nodes",
                items(("service", ("Service", "Service")), ("node", ("Node", "Node"))),
            ),
        ),
        ("PUT", "/v1/query/*id"): Guard("query:write", g.query_rule("write")),
        ("DELETE", "/v1/query/*id"): Guard("query:write", g.query_rule("write")),
        ("GET", "/v1/snapshot"): need("acl", "write"),
        ("PUT", "/v1/snapshot"): need("acl", "write"),
        ("GET", "/v1/coordinate/datacenters"): OPEN,
        ("GET", "/v1/coordinate/nodes"): Guard("node:read", filter=items(NODE)),
        ("GET", "/v1/coordinate/node/*node"): need("node", "read", "node"),
        ("PUT", "/v1/coordinate/update"): Guard(
            "node:write",
            lambda authz, call: authz.check(
                "node", str(field(body(call), ("Node",)) or ""), "write"
            ),
        ),
        ("GET", "/v1/operator/raft/configuration"): operator_read,
        ("GET", "/v1/operator/autopilot/configuration"): operator_read,
        ("PUT", "/v1/operator/autopilot/configuration"): need("operator", "write"),
        ("GET", "/v1/operator/autopilot/health"): operator_read,
        ("GET", "/v1/operator/autopilot/state"): operator_read,
        ("GET", "/v1/operator/usage"): operator_read,
    }


def _acl() -> dict[tuple[str, str], Guard]:
    read, write = need("acl", "read"), need("acl", "write")
    guards = {
        ("PUT", "/v1/acl/bootstrap"): OPEN,  # once only, then Consul's 403
        ("GET", "/v1/acl/token/self"): Guard("a valid token"),
    }
    for kind, lister in (("token", "tokens"), ("policy", "policies"), ("role", "roles")):
        guards["PUT", f"/v1/acl/{kind}"] = write
        guards["GET", f"/v1/acl/{lister}"] = read
        guards["GET", f"/v1/acl/{kind}/:id"] = read
        guards["PUT", f"/v1/acl/{kind}/:id"] = write
        guards["DELETE", f"/v1/acl/{kind}/:id"] = write
    guards["PUT", "/v1/acl/token/:id/clone"] = write
    guards["GET", "/v1/acl/policy/name/:name"] = read
    guards["GET", "/v1/acl/role/name/:name"] = read
    return guards


def attach(api: ApiResource, catalog: Catalog, agent: Agent) -> None:
    """Give every catalog route its guard."""
    api.guard(table(Guards(catalog, agent)))
