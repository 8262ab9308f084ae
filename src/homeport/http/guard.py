"""What ACL rule a route enforces (``--acl``): checked before the handler, and what of
its JSON answer the token may see.

Every API route declares a :class:`Guard` (``tests/test_acl_routes.py`` proves it): a
*check* that raises :class:`~homeport.acl.PermissionDenied` (from the path, the body or
what the catalog holds), and/or a *filter* over the decoded answer that drops what the
token may not read (Consul's ``X-Consul-Results-Filtered-By-ACLs``).  A route without a
guard answers management tokens only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..acl import Authorizer

if TYPE_CHECKING:
    from .api import Call

#: A check: raise PermissionDenied when the token may not make this call.
Check = Callable[[Authorizer, "Call"], None]
#: A filter: (the answer the token may see, whether anything was left out).
Filter = Callable[[Authorizer, Any], tuple[Any, bool]]


@dataclass(frozen=True)
class Guard:
    """*rule* says it in words (``service:read``, for the route table and the docs)."""

    rule: str
    check: Check | None = None
    filter: Filter | None = None
    #: A list answer left empty by the filter is Consul's 404 (KV ``?recurse``).
    empty_404: bool = False


#: For the routes Consul answers without looking at the token (datacenters, leader).
OPEN = Guard("none")


def need(resource: str, access: str, param: str | None = None, name: str = "") -> Guard:
    """*access* on *resource* named by the path parameter *param* (else *name*)."""

    def check(authz: Authorizer, call: Call) -> None:
        authz.check(resource, call.params.get(param, "") if param else name, access)

    return Guard(f"{resource}:{access}", check=check)


def body(call: Call) -> Any:
    """The request body as JSON, or None when it is not (the handler says why)."""
    try:
        return json.loads(call.body) if call.body.strip() else None
    except ValueError:
        return None


def field(value: Any, path: Sequence[str]) -> Any:
    """``value[a][b]…`` for *path*, each name matched case-blind as Consul's decoder
    does; None where something is missing."""
    for name in path:
        if not isinstance(value, dict):
            return None
        if name in value:
            value = value[name]
            continue
        lower = name.lower()
        value = next((v for k, v in value.items() if str(k).lower() == lower), None)
    return value


def readable(authz: Authorizer, item: Any, tests: Sequence[tuple[str, tuple[str, ...]]]) -> bool:
    """May *authz* read every name *tests* find in *item* (an absent one passes)?"""
    for resource, path in tests:
        name = field(item, path)
        if isinstance(name, str) and not authz.allows(resource, name, "read"):
            return False
    return True


def items(*tests: tuple[str, tuple[str, ...]]) -> Filter:
    """Keep the items (of a list, or the values of a map) whose names may be read."""

    def filtered(authz: Authorizer, value: Any) -> tuple[Any, bool]:
        if isinstance(value, list):
            kept: Any = [v for v in value if readable(authz, v, tests)]
        elif isinstance(value, dict):
            kept = {k: v for k, v in value.items() if readable(authz, v, tests)}
        else:
            return value, False
        return kept, len(kept) != len(value)

    return filtered


def names(resource: str) -> Filter:
    """Keep the names (a list of strings, or the keys of a map) that may be read."""

    def filtered(authz: Authorizer, value: Any) -> tuple[Any, bool]:
        if isinstance(value, list):
            kept: Any = [v for v in value if authz.allows(resource, str(v), "read")]
        elif isinstance(value, dict):
            kept = {k: v for k, v in value.items() if authz.allows(resource, k, "read")}
        else:
            return value, False
        return kept, len(kept) != len(value)

    return filtered


def check_or_service(resource: str = "node") -> Callable[[Any], tuple[str, str]]:
    """A check's rule: service read on its service, else *resource* read on its node."""

    def rule(check: Any) -> tuple[str, str]:
        service = field(check, ("ServiceName",))
        if isinstance(service, str) and service:
            return "service", service
        node = field(check, ("Node",))
        return resource, node if isinstance(node, str) else ""

    return rule


def checks_filter(authz: Authorizer, value: Any) -> tuple[Any, bool]:
    """Checks (a list, or a map by ID): service read for a service's, node read else."""
    rule = check_or_service()

    def ok(check: Any) -> bool:
        resource, name = rule(check)
        return authz.allows(resource, name, "read")

    if isinstance(value, list):
        kept: Any = [c for c in value if ok(c)]
    elif isinstance(value, dict):
        kept = {k: c for k, c in value.items() if ok(c)}
    else:
        return value, False
    return kept, len(kept) != len(value)


def inside(key: str, inner: Filter, node_path: tuple[str, ...] = ()) -> Filter:
    """Apply *inner* to ``value[key]``; with *node_path*, the whole answer is null
    unless that node may be read (a node's own answer)."""

    def filtered(authz: Authorizer, value: Any) -> tuple[Any, bool]:
        if not isinstance(value, dict):
            return value, False
        if node_path and not readable(authz, value, [("node", node_path)]):
            return None, True
        if key not in value or value[key] is None:
            return value, False
        kept, dropped = inner(authz, value[key])
        return {**value, key: kept}, dropped

    return filtered


def then(*filters: Filter) -> Filter:
    """*filters* one after the other."""

    def filtered(authz: Authorizer, value: Any) -> tuple[Any, bool]:
        dropped = False
        for one in filters:
            value, more = one(authz, value)
            dropped = dropped or more
        return value, dropped

    return filtered


def each(key: str, inner: Filter) -> Filter:
    """Apply *inner* to ``item[key]`` of every item of a list."""

    def filtered(authz: Authorizer, value: Any) -> tuple[Any, bool]:
        if not isinstance(value, list):
            return value, False
        kept, dropped = [], False
        for item in value:
            if isinstance(item, dict) and item.get(key) is not None:
                part, more = inner(authz, item[key])
                item = {**item, key: part}
                dropped = dropped or more
            kept.append(item)
        return kept, dropped

    return filtered
