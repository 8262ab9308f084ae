"""Consul's JSON on the wire: decoding request bodies and encoding answers.

Pure functions.  Request bodies are decoded the way Consul's Go decoder does it:
keys match case-insensitively, snake_case aliases (``tls_skip_verify``) are the same
key, unknown keys are refused (``Request decode failed: json: unknown field "x"``),
and a value of the wrong type is refused naming the field.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import strictjson
from ..units import DurationError, format_duration, parse_duration
from .errors import (
    BadRequest,
    BadSessionTTL,
    ServerRefusal,
    SessionTTLOutOfRange,
    TooManyOps,
    TxnValueTooLarge,
)
from .model import (
    CRITICAL,
    SERF_CHECK_ID,
    STATUSES,
    Check,
    CheckDefinition,
    KVEntry,
    KVOp,
    Node,
    Service,
    Session,
    Source,
    TxnOp,
    UnknownVerbOp,
    Weights,
    check_ids_for,
    is_kv_verb,
)

# ---------------------------------------------------------------------------
# Decoding


class Schema:
    """The fields of one Go struct: canonical name -> type.

    Two decoders read it.  :meth:`decode_body` is Consul's for request bodies (Go's
    ``encoding/json`` with unknown fields refused): a key matches a field's name
    case-insensitively, as Go folds it, and the only other spellings are the aliases
    Consul declares for that struct (*go_aliases*: alias -> field, in Consul's order of
    precedence; a field listed as its own alias takes that place in the order).
    :meth:`decode` is for definition files (``--config-dir``), in Consul's config
    format: snake_case for everything, so case, ``_`` and ``-`` do not count, and
    homeport's own *aliases* are accepted too.  *body_kinds* gives a field another type
    in request bodies (a service's checks are Consul's ``CheckType`` there), or None:
    not a field of Consul's struct, so refused in request bodies.
    """

    def __init__(
        self,
        go_name: str,
        fields: Mapping[str, Any],
        aliases: Mapping[str, str] = {},
        *,
        go_aliases: Mapping[str, str] = {},
        body_kinds: Mapping[str, Any] = {},
    ) -> None:
        self.go_name = go_name
        self.fields = dict(fields)
        self._lookup = {_norm(name): name for name in fields}
        for alias, target in {**aliases, **go_aliases}.items():
            self._lookup[_norm(alias)] = target
        hidden = {name for name, kind in body_kinds.items() if kind is None}
        self._body_kinds = {**self.fields, **body_kinds}
        #: Go: the folded spelling -> the spelling (a field's name or an alias).
        self._spellings = {_fold(name): name for name in fields if name not in hidden}
        self._spellings.update({_fold(alias): alias for alias in go_aliases})
        #: Each field's spellings, the one that wins first.
        self._precedence = {name: [name] for name in fields if name not in hidden}
        for alias, target in go_aliases.items():
            order = self._precedence[target]
            if alias == target:
                order.remove(target)
            order.append(alias)
        self._target = dict(go_aliases)

    def _not_an_object(self, value: Any) -> BadRequest:
        return BadRequest(
            f"Request decode failed: json: cannot unmarshal {_json_type(value)} "
            f"into Go value of type {self.go_name}"
        )

    def decode(self, value: Any) -> dict[str, Any]:
        """A definition file's object: snake_case and any case."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._not_an_object(value)
        out: dict[str, Any] = {}
        for key, raw in value.items():
            name = self._lookup.get(_norm(key))
            if name is None:
                raise BadRequest(f'Request decode failed: json: unknown field "{key}"')
            out[name] = _coerce(self.fields[name], raw, f"{self.go_name}.{name}", body=False)
        return out

    def decode_body(self, value: Any) -> dict[str, Any]:
        """A request body's object, as Consul's Go decoder reads it."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._not_an_object(value)
        given: dict[str, Any] = {}
        for key, raw in value.items():  # in the document's order, as Go reports errors
            spelling = self._spellings.get(_fold(key))
            if spelling is None:
                raise BadRequest(f'Request decode failed: json: unknown field "{key}"')
            kind = self._body_kinds[self._target.get(spelling, spelling)]
            given[spelling] = _coerce(kind, raw, f"{self.go_name}.{spelling}", body=True)
        out: dict[str, Any] = {}
        for name, order in self._precedence.items():
            found = [(given[s], s) for s in order if s in given]
            if found:
                kind = self._body_kinds[name]
                out[name] = next((v for v, _ in found if _is_set(kind, v)), found[0][0])
        return out


def _is_set(kind: Any, value: Any) -> bool:
    """Whether Consul's ``UnmarshalJSON`` takes this spelling's value over the next one:
    a duration when given at all (``if aux.X == nil``), anything else when not its
    zero value (``if t.X == ""``, ``if len(t.X) == 0``, ``if aux.XSnake { ... }``)."""
    return value is not None if kind == "duration" else bool(value)


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _fold(key: str) -> str:
    """Go's ``encoding/json`` key folding (``foldName``): ASCII letters upper-cased, any
    other rune folded to the smallest rune of its case orbit (so the long s, U+017F,
    matches ``s`` and the Kelvin sign, U+212A, matches ``k``, as in Go)."""
    if key.isascii():
        return key.upper()
    return "".join(_fold_rune(c) for c in key)


def _fold_rune(c: str) -> str:
    if c.isascii():
        return c.upper()
    orbit = {c, c.upper(), c.lower(), c.upper().lower(), c.lower().upper()}
    smallest = min(o for o in orbit if len(o) == 1) if any(len(o) == 1 for o in orbit) else c
    return smallest.upper() if smallest.isascii() else smallest


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _type_error(value: Any, where: str, go_type: str) -> BadRequest:
    return BadRequest(
        f"Request decode failed: json: cannot unmarshal {_json_type(value)} "
        f"into Go struct field {where} of type {go_type}"
    )


def _whole(value: Any) -> bool:
    """An int, or a float without a fraction (NaN and inf have none either); no bool."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _strings(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def _string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _as_given(value: Any) -> Any:
    return value


#: The plain kinds: Go's name for the type (in the error), whether a value is one, and
#: how it is kept.
_SCALARS: dict[str, tuple[str, Callable[[Any], bool], Callable[[Any], Any]]] = {
    "str": ("string", lambda v: isinstance(v, str), _as_given),
    "int": ("int", _whole, int),
    "bool": ("bool", lambda v: isinstance(v, bool), _as_given),
    "strlist": ("[]string", _strings, list),
    "strmap": ("map[string]string", _string_map, dict),
}


@dataclass(frozen=True)
class MapOf:
    """A Go ``map[string]<struct>``: each value is decoded with *schema*."""

    schema: Schema


def _coerce(kind: Any, value: Any, where: str, body: bool) -> Any:
    if isinstance(kind, Schema):
        return kind.decode_body(value) if body else kind.decode(value)
    if isinstance(kind, list):
        if value is None:
            return []
        if not isinstance(value, list):
            raise _type_error(value, where, f"[]{kind[0].go_name}")
        return [_coerce(kind[0], item, where, body) for item in value]
    if value is None:
        return None
    if isinstance(kind, MapOf):
        if not isinstance(value, dict):
            raise _type_error(value, where, f"map[string]{kind.schema.go_name}")
        return {name: _struct(kind.schema, item, where, body) for name, item in value.items()}
    return _plain(kind, value, where)


def _plain(kind: str, value: Any, where: str) -> Any:
    """A value of one of the plain kinds (not null)."""
    scalar = _SCALARS.get(kind)
    if scalar is not None:
        go_type, fits, keep = scalar
        if not fits(value):
            raise _type_error(value, where, go_type)
        return keep(value)
    if kind == "headers":
        return _headers(value, where)
    if kind == "duration":
        try:
            return parse_duration(value)
        except DurationError as e:
            raise BadRequest(f"Request decode failed: {e}") from None
    return value  # "any": kept as given


def _struct(schema: Schema, value: Any, where: str, body: bool) -> dict[str, Any]:
    """A struct as a map's value: an object, or null (Go's zero value)."""
    if value is not None and not isinstance(value, dict):
        raise _type_error(value, where, schema.go_name)
    return schema.decode_body(value) if body else schema.decode(value)


def _headers(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise _type_error(value, where, "map[string][]string")
    headers: dict[str, tuple[str, ...]] = {}
    for name, values in value.items():
        one_or_more = [values] if isinstance(values, str) else values
        if not _strings(one_or_more):
            raise _type_error(one_or_more, where, "[]string")
        headers[name] = tuple(one_or_more)
    return headers


WEIGHTS = Schema("api.AgentWeights", {"Passing": "int", "Warning": "int"})
#: A service's tagged address (``structs.ServiceAddress``): ``{"Address", "Port"}``.
SERVICE_ADDRESS = Schema("structs.ServiceAddress", {"Address": "str", "Port": "int"})

CHECK = Schema(
    "structs.CheckType",
    {
        "ID": "str",
        "CheckID": "str",
        "Name": "str",
        "Notes": "str",
        "ServiceID": "str",
        "Status": "str",
        "TTL": "duration",
        "HTTP": "str",
        "Method": "str",
        "Header": "headers",
        "Body": "str",
        "DisableRedirects": "bool",
        "TLSSkipVerify": "bool",
        "TLSServerName": "str",
        "TCP": "str",
        "TCPUseTLS": "bool",
        "Interval": "duration",
        "Timeout": "duration",
        "DeregisterCriticalServiceAfter": "duration",
        "SuccessBeforePassing": "int",
        "FailuresBeforeWarning": "int",
        "FailuresBeforeCritical": "int",
        "OutputMaxSize": "int",
        "Args": "strlist",
        "Shell": "str",
        "DockerContainerID": "str",
        "GRPC": "str",
        "GRPCUseTLS": "bool",
        "H2PING": "str",
        "H2PingUseTLS": "bool",
        "UDP": "str",
        "OSService": "str",
        "AliasNode": "str",
        "AliasService": "str",
        "Namespace": "str",
        "Partition": "str",
        "Type": "str",
        "Definition": "any",
    },
    # Consul's structs.CheckDefinition.UnmarshalJSON (agent/structs/check_definition.go).
    go_aliases={
        "ScriptArgs": "Args",
        "Args": "Args",
        "script_args": "Args",
        "deregister_critical_service_after": "DeregisterCriticalServiceAfter",
        "docker_container_id": "DockerContainerID",
        "tls_server_name": "TLSServerName",
        "tls_skip_verify": "TLSSkipVerify",
        "grpc_use_tls": "GRPCUseTLS",
        "service_id": "ServiceID",
        "h2ping_use_tls": "H2PingUseTLS",
        "disable_redirects": "DisableRedirects",
    },
    # Not fields of structs.CheckDefinition: definition files only.
    body_kinds={"CheckID": None, "Type": None, "Definition": None},
)

#: A service's checks in a request body: Consul's structs.CheckType (check_type.go),
#: which has no ID (CheckID), ignores ServiceID and translates fewer snake_case names.
CHECK_TYPE = Schema(
    "structs.CheckType",
    {
        **{k: v for k, v in CHECK.fields.items() if k not in ("ID", "Type", "Definition")},
        "ProxyHTTP": "str",
        "ProxyGRPC": "str",
    },
    go_aliases={
        "ScriptArgs": "Args",
        "Args": "Args",
        "script_args": "Args",
        "deregister_critical_service_after": "DeregisterCriticalServiceAfter",
        "docker_container_id": "DockerContainerID",
        "tls_server_name": "TLSServerName",
        "tls_skip_verify": "TLSSkipVerify",
        "grpc_use_tls": "GRPCUseTLS",
        "h2ping_use_tls": "H2PingUseTLS",
        "service_id": "ServiceID",
    },
    body_kinds={"Namespace": None, "Partition": None},
)

AGENT_SERVICE = Schema(
    "structs.ServiceDefinition",
    {
        "ID": "str",
        "Name": "str",
        "Tags": "strlist",
        "Address": "str",
        "Port": "int",
        "Meta": "strmap",
        "TaggedAddresses": MapOf(SERVICE_ADDRESS),
        "Weights": WEIGHTS,
        "EnableTagOverride": "bool",
        "Kind": "str",
        "Check": CHECK,
        "Checks": [CHECK],
        "Proxy": "any",
        "Connect": "any",
        "SocketPath": "str",
        "Namespace": "str",
        "Partition": "str",
        "Locality": "any",
        "Token": "str",
    },
    aliases={"service": "Name"},
    # Consul's structs.ServiceDefinition.UnmarshalJSON (agent/structs/service_definition.go).
    go_aliases={
        "enable_tag_override": "EnableTagOverride",
        "tagged_addresses": "TaggedAddresses",
    },
    body_kinds={"Check": CHECK_TYPE, "Checks": [CHECK_TYPE]},
)

CATALOG_SERVICE = Schema(
    "structs.NodeService",
    {
        "ID": "str",
        "Service": "str",
        "Tags": "strlist",
        "Address": "str",
        "Port": "int",
        "Meta": "strmap",
        "TaggedAddresses": MapOf(SERVICE_ADDRESS),
        "Weights": WEIGHTS,
        "EnableTagOverride": "bool",
        "Kind": "str",
        "Proxy": "any",
        "Connect": "any",
        "SocketPath": "str",
        "Namespace": "str",
        "Partition": "str",
        "Locality": "any",
        "PeerName": "str",
        "CreateIndex": "int",
        "ModifyIndex": "int",
    },
    aliases={"name": "Service"},
)

HEALTH_CHECK = Schema(
    "structs.HealthCheck",
    {
        "Node": "str",
        "CheckID": "str",
        "Name": "str",
        "Status": "str",
        "Notes": "str",
        "Output": "str",
        "ServiceID": "str",
        "ServiceName": "str",
        "ServiceTags": "strlist",
        "Type": "str",
        "Interval": "str",
        "Timeout": "str",
        "ExposedPort": "int",
        "Definition": "any",
        "Namespace": "str",
        "Partition": "str",
        "PeerName": "str",
        "CreateIndex": "int",
        "ModifyIndex": "int",
    },
    aliases={"ID": "CheckID"},
)

CATALOG_REGISTER = Schema(
    "structs.RegisterRequest",
    {
        "ID": "str",
        "Node": "str",
        "Address": "str",
        "Datacenter": "str",
        "TaggedAddresses": "strmap",
        "NodeMeta": "strmap",
        "Service": CATALOG_SERVICE,
        "Check": HEALTH_CHECK,
        "Checks": [HEALTH_CHECK],
        "SkipNodeUpdate": "bool",
        "Namespace": "str",
        "Partition": "str",
        "Locality": "any",
        "PeerName": "str",
        "Token": "str",
        # py-consul sends the token here too (Go's embedded structs.WriteRequest)
        "WriteRequest": "any",
    },
)

CATALOG_DEREGISTER = Schema(
    "structs.DeregisterRequest",
    {
        "Node": "str",
        "ServiceID": "str",
        "CheckID": "str",
        "Datacenter": "str",
        "Namespace": "str",
        "Partition": "str",
        "PeerName": "str",
        "Token": "str",
        # py-consul sends the token here too (Go's embedded structs.WriteRequest)
        "WriteRequest": "any",
    },
)


SERVICE_CHECK = Schema("structs.ServiceCheck", {"ID": "str", "Namespace": "str"})

SESSION = Schema(
    "structs.Session",
    {
        "ID": "str",
        "Name": "str",
        "Node": "str",
        "LockDelay": "any",
        "Behavior": "str",
        "TTL": "str",
        "Checks": "strlist",
        "NodeChecks": "strlist",
        "ServiceChecks": [SERVICE_CHECK],
        "Namespace": "str",
        "Partition": "str",
        "CreateIndex": "int",
        "ModifyIndex": "int",
    },
)

# Consul's bounds (structs.SessionTTLMax, the default session_ttl_min, MaxLockDelay).
SESSION_TTL_MIN = 10.0
SESSION_TTL_MAX = 86400.0
MAX_LOCK_DELAY = 60.0


def _lock_delay(value: Any) -> float:
    """Consul's ``FixupLockDelay``: a duration string, or a number that is seconds when
    under 1000 and nanoseconds otherwise; at most a minute."""
    if isinstance(value, bool):
        raise BadRequest(f"Request decode failed: invalid LockDelay {value!r}")
    if isinstance(value, int | float):
        seconds = float(value) if value < 1000 else float(value) / 1e9
    else:
        try:
            seconds = parse_duration(value)
        except DurationError as e:
            raise BadRequest(f"Request decode failed: {e}") from None
    if not 0 <= seconds < float("inf"):  # negative, NaN (json.loads accepts it) or infinite
        raise BadRequest(f"Request decode failed: invalid LockDelay {value!r}")
    return min(seconds, MAX_LOCK_DELAY)


def session_from(fields: Mapping[str, Any], session_id: str, default_node: str) -> Session:
    """A new session from a ``PUT /v1/session/create`` body (defaults as Consul's)."""
    node_checks: list[str] = [SERF_CHECK_ID]
    if "Checks" in fields or "NodeChecks" in fields:  # given, even empty: no default
        node_checks = list(
            dict.fromkeys((fields.get("Checks") or []) + (fields.get("NodeChecks") or []))
        )
    service_checks = [c.get("ID") or "" for c in fields.get("ServiceChecks") or []]
    ttl_text = fields.get("TTL") or ""
    try:
        ttl = parse_duration(ttl_text) if ttl_text else 0.0
    except DurationError as e:
        raise BadSessionTTL(ttl_text, str(e)) from None
    if ttl and not SESSION_TTL_MIN <= ttl <= SESSION_TTL_MAX:
        raise SessionTTLOutOfRange(ttl, SESSION_TTL_MIN, SESSION_TTL_MAX)
    lock_delay = 15.0 if fields.get("LockDelay") is None else _lock_delay(fields["LockDelay"])
    return Session(
        id=session_id,
        node=fields.get("Node") or default_node,
        name=fields.get("Name") or "",
        node_checks=tuple(node_checks),
        service_checks=tuple(c for c in service_checks if c),
        lock_delay=lock_delay,
        behavior=fields.get("Behavior") or "release",
        ttl=ttl,
    )


KV_TXN_OP = Schema(
    "api.KVTxnOp",
    {
        "Verb": "str",
        "Key": "str",
        "Value": "str",
        "Flags": "int",
        "Index": "int",
        "Session": "str",
        "Namespace": "str",
        "Partition": "str",
    },
)
TXN_KINDS = ("KV", "Node", "Service", "Check", "Session")


def txn_ops(value: Any, max_ops: int, max_value: int) -> list[TxnOp]:
    """The body of ``PUT /v1/txn`` as KV operations (only KV ones are run here)."""
    if not isinstance(value, list):
        raise BadRequest(
            f"Failed to parse body: json: cannot unmarshal {_json_type(value)} "
            "into Go value of type api.TxnOps"
        )
    if len(value) > max_ops:
        raise TooManyOps(len(value), max_ops)
    return [_txn_op(item, max_value) for item in value]


def _txn_op(item: Any, max_value: int) -> TxnOp:
    if not isinstance(item, dict) or len(item) != 1:
        raise BadRequest("Failed to parse body: each operation is an object with one key")
    [(kind, fields)] = item.items()
    canonical = next((k for k in TXN_KINDS if _fold(k) == _fold(kind)), None)
    if canonical is None:
        raise BadRequest(f'Failed to parse body: json: unknown field "{kind}"')
    if canonical != "KV":
        raise BadRequest(f"homeport runs KV operations in transactions, not {canonical}")
    op = KV_TXN_OP.decode_body(fields)
    key = op.get("Key") or ""
    try:
        data = base64.b64decode(op.get("Value") or "", validate=True)
    except ValueError:
        raise BadRequest("Failed to parse body: illegal base64 data in Value") from None
    if len(data) > max_value:
        raise TxnValueTooLarge(key, len(data), max_value)
    flags = op.get("Flags") or 0
    if not 0 <= flags < 2**64:
        raise BadRequest("Invalid flags")
    verb = (op.get("Verb") or "").lower()
    if not is_kv_verb(verb):
        return UnknownVerbOp(verb)
    return KVOp(
        verb=verb,
        key=key,
        value=data,
        flags=flags,
        index=op.get("Index") or 0,
        session=op.get("Session") or "",
    )


def parse_body(body: bytes) -> Any:
    """JSON from a request body, with Consul's error texts."""
    if not body.strip():
        raise BadRequest("Request decode failed: EOF")
    try:
        return strictjson.loads(body)
    except UnicodeDecodeError:
        raise BadRequest("Request decode failed: invalid UTF-8 in request body") from None
    except strictjson.TooDeep:  # Go's decoder has a limit too (10000 levels)
        raise BadRequest("Request decode failed: exceeded max depth") from None
    except strictjson.NotJSON as e:  # NaN, Infinity: Go's decoder refuses them too
        raise BadRequest(
            f"Request decode failed: invalid character '{e.text[0]}' looking for beginning of value"
        ) from None
    except json.JSONDecodeError as e:
        raise BadRequest(f"Request decode failed: {e}") from None


def _weights(value: Mapping[str, Any] | None) -> Weights:
    if not value:
        return Weights()
    passing = value.get("Passing", 1)
    warning = value.get("Warning", 1)
    if passing is None or passing < 1:
        raise BadRequest("Invalid Weights: Passing must be greater than 0")
    if warning is None or warning < 0:
        raise BadRequest("Invalid Weights: Warning must be greater or equal than 0")
    return Weights(passing=passing, warning=warning)


def _check_address(address: str) -> str:
    if address in ("0.0.0.0", "::", "[::]"):
        raise BadRequest("Invalid service address")
    return address


MIN_CHECK_INTERVAL = 1.0
_UNSUPPORTED_CHECKS = ("Shell", "DockerContainerID", "GRPC", "H2PING", "UDP", "OSService")


def check_definition(fields: Mapping[str, Any]) -> CheckDefinition:
    """Validate an agent check definition (TTL, HTTP, TCP or script: ``Args``)."""
    for name in _UNSUPPORTED_CHECKS:
        if fields.get(name):
            raise BadRequest(
                f"Invalid check: {name} checks are not supported; homeport runs TTL, HTTP, "
                "TCP and script checks"
            )
    args = tuple(fields.get("Args") or ())
    ttl = fields.get("TTL") or 0.0
    interval = fields.get("Interval") or 0.0
    http = fields.get("HTTP") or ""
    tcp = fields.get("TCP") or ""
    probed = bool(http or tcp or args)
    if ttl < 0:
        raise BadRequest("Invalid check: TTL must be > 0 for TTL checks")
    if ttl and interval:
        raise BadRequest("Invalid check: Interval and TTL cannot both be specified")
    if probed and interval <= 0:
        raise BadRequest(
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or "
            "OSService checks"
        )
    if not (ttl or probed):
        raise BadRequest("Invalid check: TTL must be > 0 for TTL checks")
    if probed:
        # Consul's checks.MinInterval: a 1 µs interval would have the reactor do
        # nothing but probe.
        interval = max(interval, MIN_CHECK_INTERVAL)
    if http and not re.match(r"^https?://", http):
        raise BadRequest(f"Invalid check: HTTP must be an http:// or https:// URL, not {http!r}")
    if tcp and ":" not in tcp:
        raise BadRequest(f"Invalid check: TCP must be host:port, not {tcp!r}")
    return CheckDefinition(
        ttl=ttl,
        http=http,
        method=fields.get("Method") or "",
        header=fields.get("Header") or {},
        body=fields.get("Body") or "",
        tls_skip_verify=bool(fields.get("TLSSkipVerify")),
        tcp=tcp,
        interval=interval,
        timeout=fields.get("Timeout") or 0.0,
        deregister_critical_service_after=fields.get("DeregisterCriticalServiceAfter") or 0.0,
        args=args,
    )


def _status(fields: Mapping[str, Any]) -> str:
    status = fields.get("Status") or CRITICAL
    if status not in STATUSES:
        raise BadRequest(f'Invalid check status: "{status}"')
    return str(status)


def agent_check(fields: Mapping[str, Any], node: str, source: Source = "api") -> Check:
    """A check from ``/v1/agent/check/register`` (already decoded with CHECK)."""
    name = fields.get("Name") or ""
    if not name:
        raise BadRequest("Missing check name")
    check_id = limit_name(fields.get("ID") or fields.get("CheckID") or name, "Check ID")
    return Check(
        node=node,
        check_id=check_id,
        name=name,
        status=_status(fields),
        notes=fields.get("Notes") or "",
        service_id=fields.get("ServiceID") or "",
        definition=check_definition(fields),
        source=source,
    )


#: The longest name or ID homeport stores (bytes of UTF-8).  Consul has no limit (it
#: warns that a name over 63 bytes cannot be found over DNS), but a name is a DNS label,
#: a URL segment and a key in every answer: nothing real comes near this.
MAX_NAME = 512
#: Consul's limits on service metadata (``structs.ValidateServiceMetadata``).
META_MAX_PAIRS = 64
META_KEY_MAX = 128
META_VALUE_MAX = 512
_META_KEY = re.compile(r"[a-zA-Z0-9_-]+")


def limit_name(value: str, what: str) -> str:
    """*value*, if it is not longer than :data:`MAX_NAME` bytes (400 if it is)."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME:
        raise BadRequest(f"{what} is too long: {size} bytes (the limit is {MAX_NAME})")
    return value


def validate_service_meta(meta: Mapping[str, str]) -> None:
    """Consul's ``ValidateServiceMetadata`` for the agent's register, in its words."""
    if len(meta) > META_MAX_PAIRS:
        raise BadRequest(
            "Invalid Service Meta: Node metadata cannot contain more than "
            f"{META_MAX_PAIRS} key/value pairs"
        )
    for key, value in meta.items():
        why = _meta_pair_error(key, value)
        if why:
            raise BadRequest(
                f"Invalid Service Meta: Couldn't load metadata pair ('{key}', '{value}'): {why}"
            )


def _meta_pair_error(key: str, value: str) -> str | None:
    if not key:
        return "Key cannot be blank"
    if not _META_KEY.fullmatch(key):
        return "Key contains invalid characters"
    if len(key) > META_KEY_MAX:
        return f"Key is too long (limit: {META_KEY_MAX} characters)"
    if key.startswith("consul-"):
        return "Key prefix 'consul-' is reserved for internal use"
    if len(value) > META_VALUE_MAX:
        return f"Value is too long (limit: {META_VALUE_MAX} characters)"
    return None


def _limit_service(service: Service) -> None:
    limit_name(service.name, "Service name")
    limit_name(service.id, "Service ID")
    for tag in service.tags:
        limit_name(tag, "Service tag")


def agent_service(
    fields: Mapping[str, Any], node: str, source: Source = "api"
) -> tuple[Service, list[Check]]:
    """A service and its checks from ``/v1/agent/service/register`` or a definition file."""
    name = fields.get("Name") or ""
    if not name:
        raise BadRequest("Missing service name")
    validate_service_meta(fields.get("Meta") or {})
    service_id = fields.get("ID") or name
    port = fields.get("Port") or 0
    if not 0 <= port <= 65535:
        raise BadRequest(f"Invalid service port: {port}")
    service = Service(
        node=node,
        id=service_id,
        name=name,
        tags=tuple(fields.get("Tags") or ()),
        address=_check_address(fields.get("Address") or ""),
        port=port,
        meta=fields.get("Meta") or {},
        weights=_weights(fields.get("Weights")),
        enable_tag_override=bool(fields.get("EnableTagOverride")),
        kind=fields.get("Kind") or "",
        tagged_addresses=agent_tagged_addresses(
            fields.get("TaggedAddresses") or {}, fields.get("Address") or "", port
        ),
        source=source,
    )
    _limit_service(service)
    definitions = ([fields["Check"]] if fields.get("Check") else []) + list(
        fields.get("Checks") or []
    )
    checks = []
    for check_id, definition in zip(
        check_ids_for(service_id, len(definitions)), definitions, strict=False
    ):
        checks.append(
            Check(
                node=node,
                check_id=limit_name(
                    definition.get("ID") or definition.get("CheckID") or check_id, "Check ID"
                ),
                name=definition.get("Name") or f"Service '{name}' check",
                status=_status(definition),
                notes=definition.get("Notes") or "",
                service_id=service_id,
                service_name=name,
                service_tags=service.tags,
                definition=check_definition(definition),
                source=source,
            )
        )
    _check_tagged_addresses(service.tagged_addresses)
    return service, checks


def service_addresses(value: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Tagged addresses in Consul's shape, ``{"lan": {"Address": ..., "Port": ...}}``,
    from a decoded body or from what an older homeport stored (an address alone, or
    keys in another case)."""
    shaped: dict[str, dict[str, Any]] = {}
    for name, item in value.items():
        fields = {_fold(k): v for k, v in item.items()} if isinstance(item, Mapping) else {}
        address = item if isinstance(item, str) else fields.get("ADDRESS")
        port = fields.get("PORT")
        shaped[name] = {
            "Address": address if isinstance(address, str) else "",
            "Port": port if _whole(port) else 0,
        }
    return shaped


#: The tagged addresses Consul's agent fills in from a service's own IP address.
_DEFAULT_TAGS = {4: ("lan_ipv4", "wan_ipv4"), 6: ("lan_ipv6", "wan_ipv6")}


def agent_tagged_addresses(
    given: Mapping[str, Any], address: str, port: int
) -> dict[str, dict[str, Any]]:
    """A local service's tagged addresses: as given, plus ``lan_ipv4``/``wan_ipv4`` (or
    the ``ipv6`` pair) for its own address when it is an IP, as Consul's agent adds."""
    tagged = service_addresses(given)
    version = _ip_version(address)
    for name in _DEFAULT_TAGS.get(version, ()) if version else ():
        tagged.setdefault(name, {"Address": address, "Port": port})
    return tagged


def _ip_version(address: str) -> int | None:
    """4 or 6 as Go's ``net.ParseIP`` sees it (an IPv4-mapped IPv6 address is 4; no
    zone), None if not an IP address."""
    if "%" in address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return 4
    return ip.version


def _check_tagged_addresses(tagged: Mapping[str, Mapping[str, Any]]) -> None:
    """Consul's ``Agent.validateService``: the ``lan_ipv4``/``wan_ipv4`` tagged addresses
    must be IPv4 addresses and ``lan_ipv6`` an IPv6 one (Consul checks ``wan_ipv6``
    nowhere), an error from the agent, so a 500."""
    for name, version in (("lan_ipv4", 4), ("wan_ipv4", 4), ("lan_ipv6", 6)):
        if name in tagged and _ip_version(tagged[name]["Address"]) != version:
            raise ServerRefusal(
                f'Service tagged address "{name}" must be a valid ipv{version} address'
            )


def catalog_registration(
    fields: Mapping[str, Any], datacenter: str
) -> tuple[Node, list[Service], list[Check], bool]:
    """``PUT /v1/catalog/register``: the node, its services and checks."""
    node_name = fields.get("Node") or ""
    if not node_name:
        raise ServerRefusal("Must provide node")
    limit_name(node_name, "Node name")
    skip = bool(fields.get("SkipNodeUpdate"))
    address = fields.get("Address") or ""
    if not address and not skip:
        raise ServerRefusal("Must provide address if SkipNodeUpdate is not set")
    node = Node(
        name=node_name,
        address=address,
        id=fields.get("ID") or "",
        datacenter=datacenter,
        tagged_addresses=fields.get("TaggedAddresses") or {},
        meta=fields.get("NodeMeta") or {},
    )
    svc = fields.get("Service") or {}
    services = [_catalog_service(svc, node_name)] if svc else []
    checks = _catalog_checks(fields, node_name)
    return node, services, checks, skip


def _catalog_service(svc: Mapping[str, Any], node_name: str) -> Service:
    name = svc.get("Service") or ""
    if not name:
        raise BadRequest("Must provide service name with ID")
    service = Service(
        node=node_name,
        id=svc.get("ID") or name,
        name=name,
        tags=tuple(svc.get("Tags") or ()),
        address=svc.get("Address") or "",
        port=svc.get("Port") or 0,
        meta=svc.get("Meta") or {},
        weights=_weights(svc.get("Weights")),
        enable_tag_override=bool(svc.get("EnableTagOverride")),
        kind=svc.get("Kind") or "",
        tagged_addresses=service_addresses(svc.get("TaggedAddresses") or {}),
    )
    _limit_service(service)
    return service


def _catalog_checks(fields: Mapping[str, Any], node_name: str) -> list[Check]:
    checks: list[Check] = []
    raw_checks = ([fields["Check"]] if fields.get("Check") else []) + list(
        fields.get("Checks") or []
    )
    for raw in raw_checks:
        check_id = raw.get("CheckID") or raw.get("Name") or ""
        if not check_id:
            raise BadRequest("Missing check ID")
        limit_name(check_id, "Check ID")
        checks.append(
            Check(
                node=node_name,
                check_id=check_id,
                name=raw.get("Name") or check_id,
                status=_status(raw),
                notes=raw.get("Notes") or "",
                output=raw.get("Output") or "",
                service_id=raw.get("ServiceID") or "",
            )
        )
    return checks


def valid_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------
# Encoding


def weights_json(w: Weights) -> dict[str, int]:
    return {"Passing": w.passing, "Warning": w.warning}


def node_json(node: Node) -> dict[str, Any]:
    return {
        "ID": node.id,
        "Node": node.name,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": dict(node.tagged_addresses)
        or {
            "lan": node.address,
            "lan_ipv4": node.address,
            "wan": node.address,
            "wan_ipv4": node.address,
        },
        "Meta": dict(node.meta),
        "CreateIndex": node.create_index,
        "ModifyIndex": node.modify_index,
    }


def node_service_json(service: Service, datacenter: str | None = None) -> dict[str, Any]:
    """``structs.NodeService``: used by catalog/node, health/service and agent/services."""
    data: dict[str, Any] = {
        "ID": service.id,
        "Service": service.name,
        "Tags": list(service.tags),
        "Address": service.address,
        "Meta": dict(service.meta),
        "Port": service.port,
        "Weights": weights_json(service.weights),
        "EnableTagOverride": service.enable_tag_override,
    }
    if service.kind:
        data["Kind"] = service.kind
    if service.tagged_addresses:
        data["TaggedAddresses"] = service_addresses(service.tagged_addresses)
    if datacenter is not None:
        data["Datacenter"] = datacenter
    else:
        data["CreateIndex"] = service.create_index
        data["ModifyIndex"] = service.modify_index
    return data


def catalog_service_json(node: Node | None, service: Service, datacenter: str) -> dict[str, Any]:
    """``structs.ServiceNode``: one entry of /v1/catalog/service/:name."""
    data = {
        "ID": node.id if node else "",
        "Node": service.node,
        "Address": node.address if node else "",
        "Datacenter": datacenter,
        "TaggedAddresses": dict(node.tagged_addresses) if node and node.tagged_addresses else None,
        "NodeMeta": dict(node.meta) if node else {},
        "ServiceKind": service.kind,
        "ServiceID": service.id,
        "ServiceName": service.name,
        "ServiceTags": list(service.tags),
        "ServiceAddress": service.address,
        "ServiceTaggedAddresses": service_addresses(service.tagged_addresses),
        "ServiceWeights": weights_json(service.weights),
        "ServiceMeta": dict(service.meta),
        "ServicePort": service.port,
        "ServiceSocketPath": "",
        "ServiceEnableTagOverride": service.enable_tag_override,
        "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
        "ServiceConnect": {},
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }
    if not data["ServiceTaggedAddresses"]:
        del data["ServiceTaggedAddresses"]  # json:",omitempty"
    return data


def check_json(check: Check) -> dict[str, Any]:
    d = check.definition
    definition: dict[str, Any] = {}
    if d.http:
        definition = {
            "HTTP": d.http,
            "Method": d.method,
            "Header": {k: list(v) for k, v in d.header.items()} or None,
            "TLSSkipVerify": d.tls_skip_verify,
        }
    elif d.tcp:
        definition = {"TCP": d.tcp}
    elif d.args:
        definition = {"ScriptArgs": list(d.args)}
    if d.http or d.tcp or d.args:
        definition.update(
            Interval=format_duration(d.interval),
            Timeout=format_duration(d.timeout),
            DeregisterCriticalServiceAfter=format_duration(d.deregister_critical_service_after),
        )
    return {
        "Node": check.node,
        "CheckID": check.check_id,
        "Name": check.name,
        "Status": check.status,
        "Notes": check.notes,
        "Output": check.output,
        "ServiceID": check.service_id,
        "ServiceName": check.service_name,
        "ServiceTags": list(check.service_tags),
        "Type": check.type,
        "Interval": format_duration(d.interval) if d.interval else "",
        "Timeout": format_duration(d.timeout) if d.timeout else "",
        "ExposedPort": 0,
        "Definition": definition,
        "CreateIndex": check.create_index,
        "ModifyIndex": check.modify_index,
    }


def kv_json(entry: KVEntry) -> dict[str, Any]:
    data: dict[str, Any] = {
        "LockIndex": entry.lock_index,
        "Key": entry.key,
        "Flags": entry.flags,
        "Value": base64.b64encode(entry.value).decode("ascii") if entry.value else None,
    }
    if entry.session:
        data["Session"] = entry.session
    data["CreateIndex"] = entry.create_index
    data["ModifyIndex"] = entry.modify_index
    return data


def session_json(session: Session) -> dict[str, Any]:
    return {
        "ID": session.id,
        "Name": session.name,
        "Node": session.node,
        "LockDelay": round(session.lock_delay * 1e9),
        "Behavior": session.behavior,
        "TTL": format_duration(session.ttl) if session.ttl else "",
        "NodeChecks": list(session.node_checks) or None,
        "ServiceChecks": [{"ID": c, "Namespace": ""} for c in session.service_checks] or None,
        "CreateIndex": session.create_index,
        "ModifyIndex": session.modify_index,
    }
