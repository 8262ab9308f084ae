"""Consul's prepared queries, as pure data and operations (no Twisted, no I/O).

A query is stored in the catalog (:class:`~.model.PreparedQuery`, made durable by the
store like every other change) with its body as Consul's JSON.  This module decodes and
checks a body as Consul's ``PreparedQuery.Apply`` and state store do, finds a query by
ID or name (templates by the longest prefix of their name) and runs it against the
catalog as ``PreparedQuery.Execute`` does in one datacenter: the service's instances
without a critical check (without any non-passing one for ``OnlyPassing``), minus
``IgnoreCheckIDs``, filtered by ``NodeMeta``, ``ServiceMeta`` and ``Tags`` (``!tag``
excludes), shuffled, the ``Near`` node first, cut to ``?limit``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import error
from ..units import DurationError, parse_duration
from . import consul
from .consul import Schema
from .errors import BadRequest, CatalogError, ServerRefusal
from .filter import GoRegexpError, go_regexp
from .model import CRITICAL, PASSING, Catalog, Check, Node, PreparedQuery, Service

TEMPLATE_TYPE = "name_prefix_match"
#: How Consul shows a token it will not show (refused as a query's token).
REDACTED_TOKEN = "<hidden>"
UUID = re.compile(r"^[\da-f]{8}-[\da-f]{4}-[\da-f]{4}-[\da-f]{4}-[\da-f]{12}$", re.IGNORECASE)

TEMPLATE = Schema(
    "structs.QueryTemplateOptions", {"Type": "str", "Regexp": "str", "RemoveEmptyTags": "bool"}
)
FAILOVER_TARGET = Schema("structs.QueryFailoverTarget", {"Peer": "str", "Datacenter": "str"})
FAILOVER = Schema(
    "structs.QueryFailoverOptions",
    {"NearestN": "int", "Datacenters": "strlist", "Targets": [FAILOVER_TARGET]},
)
SERVICE_QUERY = Schema(
    "structs.ServiceQuery",
    {
        "Service": "str",
        "SamenessGroup": "str",
        "Failover": FAILOVER,
        "OnlyPassing": "bool",
        "IgnoreCheckIDs": "strlist",
        "Near": "str",
        "Tags": "strlist",
        "NodeMeta": "strmap",
        "ServiceMeta": "strmap",
        "Connect": "bool",
        "Peer": "str",
    },
)
DNS_OPTIONS = Schema("structs.QueryDNSOptions", {"TTL": "str"})
QUERY = Schema(
    "structs.PreparedQuery",
    {
        "ID": "str",
        "Name": "str",
        "Session": "str",
        "Token": "str",
        "Template": TEMPLATE,
        "Service": SERVICE_QUERY,
        "DNS": DNS_OPTIONS,
        "CreateIndex": "int",
        "ModifyIndex": "int",
    },
)

#: The zero value of each struct's fields, in Go's order (how Consul writes them).
_ZERO: dict[str, Any] = {"str": "", "int": 0, "bool": False, "strlist": None, "strmap": None}


def _filled(schema: Schema, given: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kind in schema.fields.items():
        value = given.get(name)
        if isinstance(kind, Schema):
            out[name] = _filled(kind, value or {})
        elif isinstance(kind, list):
            out[name] = [_filled(kind[0], v) for v in value] if value else None
        else:
            out[name] = value if value is not None else _ZERO[kind]
    return out


@error
class QueryNotFound(CatalogError):
    """Consul's ``ErrQueryNotFound`` (404)."""

    def __str__(self) -> str:
        return "Query not found"


# ---------------------------------------------------------------------------
# Writing


def decode(body: bytes) -> dict[str, Any]:
    """A request body as Consul's decoder reads a ``structs.PreparedQuery``, every field
    filled (raises :class:`~.errors.BadRequest`)."""
    return _filled(QUERY, QUERY.decode_body(consul.parse_body(body)))


def empty() -> dict[str, Any]:
    """The zero query (an update without a body)."""
    return _filled(QUERY, {})


def _from_fields(fields: Mapping[str, Any], query_id: str) -> PreparedQuery:
    definition = {k: fields[k] for k in ("Template", "Service", "DNS")}
    return PreparedQuery(
        id=query_id,
        name=fields["Name"],
        session=fields["Session"],
        token=fields["Token"],
        definition=definition,
    )


def create(catalog: Catalog, fields: Mapping[str, Any], new_id: Callable[[], str]) -> str:
    """``POST /v1/query``: the new query's ID (raises :class:`ServerRefusal`)."""
    if fields["ID"]:
        raise ServerRefusal("ID must be empty when creating a new prepared query")
    query_id = new_id()
    while query_id in catalog.queries:
        query_id = new_id()
    _store(catalog, _from_fields(fields, query_id))
    return query_id


def update(catalog: Catalog, query_id: str, fields: Mapping[str, Any]) -> None:
    """``PUT /v1/query/:id``: the ID is the path's, not the body's."""
    _existing(catalog, query_id)
    _store(catalog, _from_fields(fields, query_id))


def delete(catalog: Catalog, query_id: str) -> None:
    _existing(catalog, query_id)
    catalog.query_delete(query_id)


def _existing(catalog: Catalog, query_id: str) -> PreparedQuery:
    query = catalog.queries.get(query_id)
    if query is None:
        raise ServerRefusal(f"Cannot modify non-existent prepared query: '{query_id}'")
    return query


def _store(catalog: Catalog, query: PreparedQuery) -> None:
    """Consul's ``parseQuery`` then the state store's ``preparedQuerySetTxn``."""
    _parse(query)
    name = query.name.lower()
    for other in catalog.queries.values():
        if other.id == query.id:
            continue
        if name and other.name.lower() == name:
            raise ServerRefusal(f"name '{query.name}' aliases an existing query name")
        if not name and is_template(query) and is_template(other) and not other.name:
            raise ServerRefusal("a query template with an empty name already exists")
    if UUID.match(query.name) and query.name in catalog.queries:
        raise ServerRefusal(f"name '{query.name}' aliases an existing query ID")
    if query.session and query.session not in catalog.sessions:
        raise ServerRefusal(f'invalid session "{query.session}"')
    if is_template(query):
        try:
            render(query, query.name)
        except ServerRefusal as e:
            raise ServerRefusal(f"failed compiling template: {e}") from None
    catalog.query_set(query)


def check_stored(query: PreparedQuery) -> None:
    """A query as a snapshot brings it back: its definition exactly Consul's fields, of
    their types, and what ``parseQuery`` accepts (raises :class:`~.errors.BadRequest` or
    :class:`ServerRefusal`)."""
    fields = {k: query.definition.get(k) for k in ("Template", "Service", "DNS")}
    if set(query.definition) != set(fields) or _filled(QUERY, QUERY.decode_body(fields)) != {
        **empty(),
        **fields,
    }:
        raise BadRequest("the query's definition is not a prepared query's")
    _parse(query)
    if is_template(query):
        render(query, query.name)


def _parse(query: PreparedQuery) -> None:
    service = query.definition["Service"]
    if not query.name and not is_template(query) and not query.session:
        raise _invalid("Must be bound to a session")
    if query.token == REDACTED_TOKEN:
        raise _invalid(
            f"Bad Token '{query.token}', it looks like a query definition with a redacted "
            "token was submitted"
        )
    if not service["Service"]:
        raise _invalid("Must provide a Service name to query")
    nearest = service["Failover"]["NearestN"]
    if nearest < 0:
        raise _invalid(f"Bad NearestN '{nearest}', must be >= 0")
    ttl = query.definition["DNS"]["TTL"]
    if ttl:
        try:
            seconds = parse_duration(ttl)
        except DurationError as e:
            raise _invalid(f"Bad DNS TTL '{ttl}': {e}") from None
        if seconds < 0:
            raise _invalid(f"DNS TTL '{round(seconds * 1e9)}', must be >=0")


def _invalid(reason: str) -> ServerRefusal:
    return ServerRefusal(f"Invalid prepared query: {reason}")


# ---------------------------------------------------------------------------
# Templates


def is_template(query: PreparedQuery) -> bool:
    return bool(query.definition["Template"]["Type"])


_VARIABLE = re.compile(r"\$\{\s*([^}]*?)\s*\}")
_MATCH = re.compile(r"^match\(\s*(\d+)\s*\)$")


def render(query: PreparedQuery, name: str) -> PreparedQuery:
    """A template rendered for the looked-up *name*: ``${name.full}``,
    ``${name.prefix}``, ``${name.suffix}``, ``${match(N)}`` (the template's ``Regexp``
    on the name) and ``${agent.segment}`` in every string of the query."""
    template = query.definition["Template"]
    if template["Type"] != TEMPLATE_TYPE:
        raise ServerRefusal(f"Bad Template.Type '{template['Type']}'")
    matches: Sequence[str] = ()
    if template["Regexp"]:
        try:
            pattern = go_regexp(template["Regexp"])
        except GoRegexpError as e:
            raise ServerRefusal(f"Bad Regexp: error parsing regexp: {e}") from None
        found = pattern.search(name)  # Go's FindStringSubmatch
        if found is not None:
            matches = [found.group(0), *(g or "" for g in found.groups())]
    values = {
        "name.full": name,
        "name.prefix": query.name,
        "name.suffix": name[len(query.name) :] if name.startswith(query.name) else name,
        "agent.segment": "",
    }

    def variable(m: re.Match[str]) -> str:
        text = m.group(1)
        if text in values:
            return values[text]
        index = _MATCH.match(text)
        if index is None:
            raise ServerRefusal(f"unknown variable accessed: {text}")
        n = int(index.group(1))
        return matches[n] if n < len(matches) else ""

    definition = _walk(dict(query.definition), lambda s: _VARIABLE.sub(variable, s))
    service = definition["Service"]
    if template["RemoveEmptyTags"] and service["Tags"]:
        service["Tags"] = [t for t in service["Tags"] if t]
    return replace(query, definition=definition)


def _walk(value: Any, text: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {k: _walk(v, text) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, text) for v in value]
    return value


# ---------------------------------------------------------------------------
# Reading and running


def resolve(catalog: Catalog, id_or_name: str) -> PreparedQuery:
    """Consul's ``PreparedQueryResolve``: by ID, then by exact name (any case), then
    the template with the longest prefix of the name; templates rendered."""
    if not id_or_name:
        raise ServerRefusal("Missing Query ID")  # Consul's ErrMissingQueryID
    if UUID.match(id_or_name):
        query = catalog.queries.get(id_or_name)
        if query is not None:
            if is_template(query):
                raise ServerRefusal(
                    "prepared query templates can only be resolved up by name, not by ID"
                )
            return query
    wanted = id_or_name.lower()
    for query in catalog.queries.values():
        if query.name and query.name.lower() == wanted:
            return render(query, id_or_name) if is_template(query) else query
    templates = [
        q for q in catalog.queries.values() if is_template(q) and wanted.startswith(q.name.lower())
    ]
    if not templates:
        raise QueryNotFound()
    return render(max(templates, key=lambda q: len(q.name)), id_or_name)


@dataclass(frozen=True)
class Entry:
    """One result: a node, its instance of the service and their checks."""

    node: Node
    service: Service
    checks: tuple[Check, ...]

    @property
    def status(self) -> str:
        if any(c.status == CRITICAL for c in self.checks):
            return CRITICAL
        return PASSING if all(c.status == PASSING for c in self.checks) else "warning"


@dataclass(frozen=True)
class Result:
    query: PreparedQuery
    entries: tuple[Entry, ...]

    @property
    def service(self) -> str:
        return str(self.query.definition["Service"]["Service"])

    @property
    def dns_ttl(self) -> float | None:
        """The query's DNS TTL in seconds, None when it sets none."""
        ttl = self.query.definition["DNS"]["TTL"]
        return parse_duration(ttl) if ttl else None


@dataclass(frozen=True)
class Source:
    """Who runs the query: the agent's node, and ``?near=`` (overrides ``Near``)."""

    agent_node: str
    near: str = ""
    limit: int = 0


def execute(
    catalog: Catalog, id_or_name: str, source: Source, rng: random.Random | None = None
) -> Result:
    query = resolve(catalog, id_or_name)
    spec = query.definition["Service"]
    entries = [] if spec["Connect"] else _healthy(catalog, spec)
    (rng or random.Random()).shuffle(entries)
    near = source.near or spec["Near"]
    if near == "_agent":
        near = source.agent_node
    if near and near != "_ip":
        for i, entry in enumerate(entries[:10]):
            if entry.node.name == near:
                entries[0], entries[i] = entries[i], entries[0]
                break
    if source.limit > 0:
        entries = entries[: source.limit]
    return Result(query, tuple(entries))


def _healthy(catalog: Catalog, spec: Mapping[str, Any]) -> list[Entry]:
    ignored = set(spec["IgnoreCheckIDs"] or ())
    only_passing = spec["OnlyPassing"]
    found = []
    for service in catalog.instances(spec["Service"]):
        node = catalog.nodes.get(service.node)
        if node is None:
            continue
        checks = tuple(catalog.instance_checks(service))
        statuses = [c.status for c in checks if c.check_id not in ignored]
        if any(s == CRITICAL or (only_passing and s != PASSING) for s in statuses):
            continue
        if not _meta_matches(node.meta, spec["NodeMeta"]):
            continue
        if not _meta_matches(service.meta, spec["ServiceMeta"]):
            continue
        if not _tags_match(service.tags, spec["Tags"] or ()):
            continue
        found.append(Entry(node, service, checks))
    return found


def _meta_matches(meta: Mapping[str, str], wanted: Mapping[str, str] | None) -> bool:
    return all(meta.get(k) == v for k, v in (wanted or {}).items())


def _tags_match(tags: Iterable[str], wanted: Iterable[str]) -> bool:
    """Consul's ``tagFilter``: every tag, none of the ``!tag`` ones, in any case."""
    have = {t.lower() for t in tags}
    for tag in (t.lower() for t in wanted):
        if tag.startswith("!"):
            if tag[1:] in have:
                return False
        elif tag not in have:
            return False
    return True


# ---------------------------------------------------------------------------
# Consul's JSON


def query_json(query: PreparedQuery) -> dict[str, Any]:
    return {
        "ID": query.id,
        "Name": query.name,
        "Session": query.session,
        "Token": query.token,
        **{k: query.definition[k] for k in ("Template", "Service", "DNS")},
        "CreateIndex": query.create_index,
        "ModifyIndex": query.modify_index,
    }


def result_json(result: Result, datacenter: str) -> dict[str, Any]:
    """``PreparedQueryExecuteResponse``; one datacenter, so never a failover."""
    nodes = [
        {
            "Node": consul.node_json(e.node),
            "Service": consul.node_service_json(e.service),
            "Checks": [consul.check_json(c) for c in e.checks],
        }
        for e in result.entries
    ]
    return {
        "Service": result.service,
        "Nodes": nodes,
        "DNS": {"TTL": result.query.definition["DNS"]["TTL"]},
        "Datacenter": datacenter,
        "Failovers": 0,
    }
