"""Consul's ``/v1/acl/*`` endpoints (``--acl``): bootstrap, tokens, policies, roles.

JSON shapes as Consul's ``api/acl.go``.  A token's SecretID is stored only as its hash,
so it is shown once (bootstrap, create, clone, and to its own holder at
``/v1/acl/token/self``); every other read shows ``<hidden>``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ..acl import (
    ANONYMOUS_ACCESSOR,
    ANONYMOUS_SECRET,
    GLOBAL_MANAGEMENT,
    GLOBAL_MANAGEMENT_ID,
    NodeIdentity,
    PolicyRecord,
    RoleRecord,
    ServiceIdentity,
    TokenNotFound,
    TokenRecord,
    anonymous_token,
    hash_secret,
    new_accessor,
    new_secret,
    parse_rules,
)
from ..http.api import ApiResource, Call, Handler, Reply, json_reply
from ..http.auth import given_token
from ..units import DurationError, parse_duration
from . import consul
from .acl_records import AclRecords
from .errors import BadRequest, CatalogError
from .model import Catalog

HIDDEN = "<hidden>"
#: The fields of Consul's ACL bodies, for its case-blind decoding (Go's encoding/json).
FIELDS = {
    name.lower(): name
    for name in (
        "AccessorID SecretID Description Policies Roles ServiceIdentities NodeIdentities "
        "TemplatedPolicies Local ExpirationTime ExpirationTTL ID Name Rules Datacenters "
        "BootstrapSecret ServiceName NodeName Datacenter Namespace Partition"
    ).split()
}
NAME = re.compile(r"^[A-Za-z0-9\-_]{1,128}$")
#: Consul's default bounds on ExpirationTTL (acl_token_min/max_expiration_ttl).
MIN_TTL = 60.0
MAX_TTL = 24 * 3600.0


class NotFound(CatalogError):
    """A policy or role that is not there (Consul's 404 with a text)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class AclDisabled(CatalogError):
    """An ACL endpoint without ``--acl`` (Consul's 401)."""

    def __str__(self) -> str:
        return "ACL support disabled"


class BootstrapDone(CatalogError):
    """Consul's refusal of a second bootstrap (a 403)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index

    def __str__(self) -> str:
        return f"Permission denied: ACL bootstrap no longer allowed (reset index: {self.index})"


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _parse_time(text: Any, field: str) -> float:
    if not isinstance(text, str):
        raise BadRequest(f"Invalid {field}: not a time")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadRequest(f"Invalid {field}: {text!r} is not an RFC 3339 time") from None


def _hash(value: Any) -> str:
    data = json.dumps(value, sort_keys=True, default=str).encode()
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _identities(
    data: dict[str, Any],
) -> tuple[tuple[ServiceIdentity, ...], tuple[NodeIdentity, ...]]:
    services = []
    for item in data.get("ServiceIdentities") or ():
        name = item.get("ServiceName") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name:
            raise BadRequest("Service identity is missing the service name field on this token")
        services.append(ServiceIdentity(name, tuple(item.get("Datacenters") or ())))
    nodes = []
    for item in data.get("NodeIdentities") or ():
        name = item.get("NodeName") if isinstance(item, dict) else None
        dc = item.get("Datacenter") if isinstance(item, dict) else None
        if not isinstance(name, str) or not name or not isinstance(dc, str) or not dc:
            raise BadRequest("Node identity is missing the node name or datacenter field")
        nodes.append(NodeIdentity(name, dc))
    return tuple(services), tuple(nodes)


def _services_json(services: Iterable[ServiceIdentity]) -> list[dict[str, Any]]:
    out = []
    for s in services:
        item: dict[str, Any] = {"ServiceName": s.name}
        if s.datacenters:
            item["Datacenters"] = list(s.datacenters)
        out.append(item)
    return out


def _nodes_json(nodes: Iterable[NodeIdentity]) -> list[dict[str, Any]]:
    return [{"NodeName": n.name, "Datacenter": n.datacenter} for n in nodes]


class AclAPI:
    """The endpoints, over the catalog's ACL tables."""

    def __init__(self, catalog: Catalog, records: AclRecords, clock: Callable[[], float]) -> None:
        self.catalog = catalog
        self.records = records
        self.clock = clock

    # -- lookups ------------------------------------------------------------------

    def _policies(self) -> dict[str, PolicyRecord]:
        found = {GLOBAL_MANAGEMENT_ID: GLOBAL_MANAGEMENT}
        found.update(self.catalog.acl_policies)
        return found

    def _policy_named(self, name: str) -> PolicyRecord | None:
        return next((p for p in self._policies().values() if p.name == name), None)

    def _role_named(self, name: str) -> RoleRecord | None:
        return next((r for r in self.catalog.acl_roles.values() if r.name == name), None)

    def _token(self, accessor: str) -> TokenRecord | None:
        found = self.catalog.acl_tokens.get(accessor)
        if found is None and accessor == ANONYMOUS_ACCESSOR:
            return anonymous_token()
        return found

    def _links(self, given: Any, kind: str) -> tuple[str, ...]:
        """Policy or role links (``[{"ID": …}]`` or ``[{"Name": …}]``) as IDs."""
        ids: list[str] = []
        for link in given or ():
            if not isinstance(link, dict):
                raise BadRequest(f"Invalid {kind} link")
            ident, name = link.get("ID"), link.get("Name")
            if ident:
                known = self._policies() if kind == "policy" else self.catalog.acl_roles
                if ident not in known:
                    raise BadRequest(f"No such ACL {kind} with ID {ident!r}")
                ids.append(str(ident))
                continue
            named = (
                self._policy_named(str(name)) if kind == "policy" else self._role_named(str(name))
            )
            if named is None:
                raise BadRequest(f"No such ACL {kind} with name {name!r}")
            ids.append(named.id)
        return tuple(dict.fromkeys(ids))

    # -- JSON ---------------------------------------------------------------------

    def _link_json(self, ids: Iterable[str], kind: str) -> list[dict[str, str]]:
        table: dict[str, Any] = self._policies() if kind == "policy" else self.catalog.acl_roles
        return [{"ID": i, "Name": table[i].name} for i in ids if i in table]

    def token_json(self, token: TokenRecord, secret: str = HIDDEN) -> dict[str, Any]:
        data: dict[str, Any] = {
            "AccessorID": token.accessor,
            "SecretID": secret,
            "Description": token.description,
            "Policies": self._link_json(token.policies, "policy"),
            "Roles": self._link_json(token.roles, "role"),
            "ServiceIdentities": _services_json(token.service_identities),
            "NodeIdentities": _nodes_json(token.node_identities),
            "Local": token.local,
            "CreateTime": _time(token.create_time),
        }
        if token.expiration_time is not None:
            data["ExpirationTime"] = _time(token.expiration_time)
        data["Hash"] = _hash(data)
        data["CreateIndex"] = token.create_index
        data["ModifyIndex"] = token.modify_index
        return data

    def policy_json(self, policy: PolicyRecord, rules: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ID": policy.id,
            "Name": policy.name,
            "Description": policy.description,
            "Datacenters": list(policy.datacenters) or None,
        }
        if rules:
            data["Rules"] = policy.rules
        data["Hash"] = _hash([policy.name, policy.rules, policy.datacenters])
        data["CreateIndex"] = policy.create_index
        data["ModifyIndex"] = policy.modify_index
        return data

    def role_json(self, role: RoleRecord) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ID": role.id,
            "Name": role.name,
            "Description": role.description,
            "Policies": self._link_json(role.policies, "policy"),
            "ServiceIdentities": _services_json(role.service_identities),
            "NodeIdentities": _nodes_json(role.node_identities),
        }
        data["Hash"] = _hash(data)
        data["CreateIndex"] = role.create_index
        data["ModifyIndex"] = role.modify_index
        return data

    # -- bootstrap ----------------------------------------------------------------

    def bootstrap(self, call: Call) -> Reply:
        done = [t for t in self.catalog.acl_tokens.values() if t.accessor != ANONYMOUS_ACCESSOR]
        if done:
            raise BootstrapDone(min(t.create_index for t in done))
        given = _canonical(consul.parse_body(call.body)) if call.body.strip() else {}
        secret = given.get("BootstrapSecret") if isinstance(given, dict) else None
        secret = str(secret) if secret else new_secret()
        token = TokenRecord(
            accessor=new_accessor(),
            secret_hash=hash_secret(secret),
            description="Bootstrap Token (Global Management)",
            policies=(GLOBAL_MANAGEMENT_ID,),
            create_time=self.clock(),
        )
        stored = self.catalog.acl_set(token)
        assert isinstance(stored, TokenRecord)
        return json_reply(self.token_json(stored, secret), pretty=call.pretty)

    # -- tokens -------------------------------------------------------------------

    def _expiry(self, data: dict[str, Any], now: float) -> float | None:
        ttl, at = data.get("ExpirationTTL"), data.get("ExpirationTime")
        if ttl and at:
            raise BadRequest("Expiration TTL and Expiration Time cannot both be set")
        if at:
            when = _parse_time(at, "ExpirationTime")
            if when < now:
                raise BadRequest("ExpirationTime cannot be in the past")
            return when
        if not ttl:
            return None
        try:
            seconds = parse_duration(ttl)
        except DurationError:
            raise BadRequest(f"Invalid ExpirationTTL: {ttl!r}") from None
        if seconds < MIN_TTL or seconds > MAX_TTL:
            raise BadRequest("ExpirationTTL cannot be less than 1m0s or more than 24h0m0s")
        return now + seconds

    def _token_from(self, data: dict[str, Any], old: TokenRecord | None) -> tuple[TokenRecord, str]:
        now = self.clock()
        secret = str(data.get("SecretID") or "") or (None if old else new_secret())
        if old is not None and secret is not None and hash_secret(secret) != old.secret_hash:
            raise BadRequest("Changing a tokens SecretID is not permitted")
        services, nodes = _identities(data)
        token = TokenRecord(
            accessor=old.accessor if old else str(data.get("AccessorID") or new_accessor()),
            secret_hash=old.secret_hash if old else hash_secret(secret or ""),
            description=str(data.get("Description") or ""),
            policies=self._links(data.get("Policies"), "policy"),
            roles=self._links(data.get("Roles"), "role"),
            service_identities=services,
            node_identities=nodes,
            local=bool(data.get("Local", old.local if old else False)),
            expiration_time=old.expiration_time if old else self._expiry(data, now),
            create_time=old.create_time if old else now,
        )
        return token, secret or HIDDEN

    def _body(self, call: Call) -> dict[str, Any]:
        data = _canonical(consul.parse_body(call.body))
        if not isinstance(data, dict):
            raise BadRequest("Request decode failed: not an object")
        return data

    def token_create(self, call: Call) -> Reply:
        data = self._body(call)
        if data.get("AccessorID") and data["AccessorID"] in self.catalog.acl_tokens:
            raise BadRequest("Invalid Token: AccessorID is already in use")
        secret = data.get("SecretID")
        if secret and self.records.token_by_secret_hash(hash_secret(str(secret))):
            raise BadRequest("Invalid Token: SecretID is already in use")
        token, secret_id = self._token_from(data, None)
        stored = self.catalog.acl_set(token)
        assert isinstance(stored, TokenRecord)
        return json_reply(self.token_json(stored, secret_id), pretty=call.pretty)

    def token_read(self, call: Call) -> Reply:
        token = self._token(call.params["id"])
        if token is None:
            raise TokenNotFound()
        return json_reply(self.token_json(token), pretty=call.pretty)

    def token_self(self, call: Call) -> Reply:
        given = call.arg("token") or given_token(call.request)
        secret = given.decode("utf-8", "replace") if isinstance(given, bytes) else given
        token = self.records.token_by_secret_hash(hash_secret(secret or ANONYMOUS_SECRET))
        if token is None and not secret:
            token = anonymous_token()
        if token is None:
            raise TokenNotFound()
        return json_reply(self.token_json(token, secret or ANONYMOUS_SECRET), pretty=call.pretty)

    def token_update(self, call: Call) -> Reply:
        accessor = call.params["id"]
        data = self._body(call)
        if data.get("AccessorID") and data["AccessorID"] != accessor:
            raise BadRequest("Token Accessor ID in URL and payload do not match")
        old = self._token(accessor)
        if old is None:
            raise BadRequest(f"Cannot find token {accessor!r}")
        token, _ = self._token_from(data, old)
        stored = self.catalog.acl_set(token)
        assert isinstance(stored, TokenRecord)
        return json_reply(self.token_json(stored), pretty=call.pretty)

    def token_clone(self, call: Call) -> Reply:
        old = self._token(call.params["id"])
        if old is None:
            raise TokenNotFound()
        data = self._body(call) if call.body.strip() else {}
        secret = new_secret()
        token = TokenRecord(
            accessor=new_accessor(),
            secret_hash=hash_secret(secret),
            description=str(data.get("Description") or old.description),
            policies=old.policies,
            roles=old.roles,
            service_identities=old.service_identities,
            node_identities=old.node_identities,
            local=old.local,
            expiration_time=old.expiration_time,
            create_time=self.clock(),
        )
        stored = self.catalog.acl_set(token)
        assert isinstance(stored, TokenRecord)
        return json_reply(self.token_json(stored, secret), pretty=call.pretty)

    def token_delete(self, call: Call) -> Reply:
        accessor = call.params["id"]
        if accessor == ANONYMOUS_ACCESSOR:
            raise BadRequest("Delete operation not permitted on the anonymous token")
        if call.authz is not None and call.authz.accessor == accessor:
            raise BadRequest("Deletion of the request's authorization token is not permitted")
        self.catalog.acl_delete("acl-token", accessor)
        return Reply(b"true")

    def token_list(self, call: Call) -> Reply:
        tokens = list(self.catalog.acl_tokens.values())
        if ANONYMOUS_ACCESSOR not in self.catalog.acl_tokens:
            tokens.append(anonymous_token())
        policy, role = call.arg("policy"), call.arg("role")
        if policy:
            tokens = [t for t in tokens if policy in t.policies]
        if role:
            tokens = [t for t in tokens if role in t.roles]
        now = time.time()
        live = [t for t in tokens if t.expiration_time is None or t.expiration_time >= now]
        return json_reply([self.token_json(t) for t in live], pretty=call.pretty)

    # -- policies -----------------------------------------------------------------

    def _policy_from(self, data: dict[str, Any], old: PolicyRecord | None) -> PolicyRecord:
        name = str(data.get("Name") or "")
        if not name:
            raise BadRequest("Invalid Policy: no Name is set")
        if not NAME.match(name):
            raise BadRequest(
                "Invalid Policy: invalid Name. Only alphanumeric characters, '-' and '_' "
                "are allowed"
            )
        same = self._policy_named(name)
        if same is not None and (old is None or same.id != old.id):
            raise BadRequest(f"Invalid Policy: A Policy with Name {name!r} already exists")
        rules = str(data.get("Rules") or "")
        if old is not None and old.id == GLOBAL_MANAGEMENT_ID:
            if rules != old.rules:
                raise BadRequest(
                    "Changing the Rules for the builtin global-management policy is not permitted"
                )
        parse_rules(rules)  # a PolicyError is a 400 with line and column
        return PolicyRecord(
            id=old.id if old else str(data.get("ID") or new_accessor()),
            name=name,
            description=str(data.get("Description") or ""),
            rules=rules,
            datacenters=tuple(str(d) for d in data.get("Datacenters") or ()),
        )

    def policy_create(self, call: Call) -> Reply:
        data = self._body(call)
        if data.get("ID"):
            raise BadRequest("Cannot specify an ID when creating a policy")
        stored = self.catalog.acl_set(self._policy_from(data, None))
        assert isinstance(stored, PolicyRecord)
        return json_reply(self.policy_json(stored), pretty=call.pretty)

    def _policy(self, policy_id: str) -> PolicyRecord:
        found = self._policies().get(policy_id)
        if found is None:
            raise NotFound(f"Requested policy does not exist: ACL not found: {policy_id}")
        return found

    def policy_read(self, call: Call) -> Reply:
        return json_reply(self.policy_json(self._policy(call.params["id"])), pretty=call.pretty)

    def policy_read_name(self, call: Call) -> Reply:
        found = self._policy_named(call.params["name"])
        if found is None:
            raise NotFound(f"Requested policy does not exist: ACL not found: {call.params['name']}")
        return json_reply(self.policy_json(found), pretty=call.pretty)

    def policy_update(self, call: Call) -> Reply:
        data = self._body(call)
        old = self._policy(call.params["id"])
        if data.get("ID") and data["ID"] != old.id:
            raise BadRequest("Policy ID in URL and payload do not match")
        stored = self.catalog.acl_set(self._policy_from(data, old))
        assert isinstance(stored, PolicyRecord)
        return json_reply(self.policy_json(stored), pretty=call.pretty)

    def policy_delete(self, call: Call) -> Reply:
        policy_id = call.params["id"]
        if policy_id == GLOBAL_MANAGEMENT_ID:
            raise BadRequest(
                "Delete operation not permitted on the builtin global-management policy"
            )
        self.catalog.acl_delete("acl-policy", policy_id)
        return Reply(b"true")

    def policy_list(self, call: Call) -> Reply:
        listed = [self.policy_json(p, rules=False) for p in self._policies().values()]
        return json_reply(listed, pretty=call.pretty)

    # -- roles --------------------------------------------------------------------

    def _role_from(self, data: dict[str, Any], old: RoleRecord | None) -> RoleRecord:
        name = str(data.get("Name") or "")
        if not name:
            raise BadRequest("Invalid Role: no Name is set")
        if not NAME.match(name):
            raise BadRequest(
                "Invalid Role: invalid Name. Only alphanumeric characters, '-' and '_' are allowed"
            )
        same = self._role_named(name)
        if same is not None and (old is None or same.id != old.id):
            raise BadRequest(f"Invalid Role: A Role with Name {name!r} already exists")
        services, nodes = _identities(data)
        return RoleRecord(
            id=old.id if old else new_accessor(),
            name=name,
            description=str(data.get("Description") or ""),
            policies=self._links(data.get("Policies"), "policy"),
            service_identities=services,
            node_identities=nodes,
        )

    def role_create(self, call: Call) -> Reply:
        data = self._body(call)
        if data.get("ID"):
            raise BadRequest("Cannot specify an ID when creating a role")
        stored = self.catalog.acl_set(self._role_from(data, None))
        assert isinstance(stored, RoleRecord)
        return json_reply(self.role_json(stored), pretty=call.pretty)

    def _role(self, role_id: str) -> RoleRecord:
        found = self.catalog.acl_roles.get(role_id)
        if found is None:
            raise NotFound(f"Requested role does not exist: ACL not found: {role_id}")
        return found

    def role_read(self, call: Call) -> Reply:
        return json_reply(self.role_json(self._role(call.params["id"])), pretty=call.pretty)

    def role_read_name(self, call: Call) -> Reply:
        found = self._role_named(call.params["name"])
        if found is None:
            raise NotFound(f"Requested role does not exist: ACL not found: {call.params['name']}")
        return json_reply(self.role_json(found), pretty=call.pretty)

    def role_update(self, call: Call) -> Reply:
        data = self._body(call)
        old = self._role(call.params["id"])
        if data.get("ID") and data["ID"] != old.id:
            raise BadRequest("Role ID in URL and payload do not match")
        stored = self.catalog.acl_set(self._role_from(data, old))
        assert isinstance(stored, RoleRecord)
        return json_reply(self.role_json(stored), pretty=call.pretty)

    def role_delete(self, call: Call) -> Reply:
        self.catalog.acl_delete("acl-role", call.params["id"])
        return Reply(b"true")

    def role_list(self, call: Call) -> Reply:
        roles = list(self.catalog.acl_roles.values())
        policy = call.arg("policy")
        if policy:
            roles = [r for r in roles if policy in r.policies]
        return json_reply([self.role_json(r) for r in roles], pretty=call.pretty)


def routes(api: ApiResource, face: AclAPI, enabled: bool) -> None:
    """The endpoints on *api*; without ``--acl`` (not *enabled*) each is Consul's 401."""

    def r(methods: str, path: str, handler: Handler) -> None:
        api.route(methods, path, handler if enabled else _disabled)

    r("PUT", "/v1/acl/bootstrap", face.bootstrap)
    r("PUT", "/v1/acl/token", face.token_create)
    r("GET", "/v1/acl/tokens", face.token_list)
    r("GET", "/v1/acl/token/self", face.token_self)
    r("PUT", "/v1/acl/token/:id/clone", face.token_clone)
    r("GET", "/v1/acl/token/:id", face.token_read)
    r("PUT", "/v1/acl/token/:id", face.token_update)
    r("DELETE", "/v1/acl/token/:id", face.token_delete)
    r("PUT", "/v1/acl/policy", face.policy_create)
    r("GET", "/v1/acl/policies", face.policy_list)
    r("GET", "/v1/acl/policy/name/:name", face.policy_read_name)
    r("GET", "/v1/acl/policy/:id", face.policy_read)
    r("PUT", "/v1/acl/policy/:id", face.policy_update)
    r("DELETE", "/v1/acl/policy/:id", face.policy_delete)
    r("PUT", "/v1/acl/role", face.role_create)
    r("GET", "/v1/acl/roles", face.role_list)
    r("GET", "/v1/acl/role/name/:name", face.role_read_name)
    r("GET", "/v1/acl/role/:id", face.role_read)
    r("PUT", "/v1/acl/role/:id", face.role_update)
    r("DELETE", "/v1/acl/role/:id", face.role_delete)


def _disabled(call: Call) -> Reply:
    raise AclDisabled()


def _canonical(value: Any) -> Any:
    """*value* with its objects' keys spelled as Consul's fields (matched case-blind)."""
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    if isinstance(value, dict):
        return {FIELDS.get(str(k).lower(), k): _canonical(v) for k, v in value.items()}
    return value
