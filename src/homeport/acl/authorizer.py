"""What a token may do: its rules compiled into one :class:`Authorizer`, as Consul's
``acl/policy_authorizer.go`` behind its default (``static_authorizer.go``).

- A name's rule is its exact rule if there is one, else the longest prefix rule that
  matches it (Consul walks a radix tree; here each resource has a dict of exact names
  and its prefixes longest first).
- Rules from several policies are merged first (``policy_merger.go``): for one resource,
  name and kind (exact or prefix), ``deny`` beats ``write`` beats ``list`` beats
  ``read``.
- ``write`` grants read, list and write; ``list`` read and list; ``read`` only read;
  ``deny`` nothing.
- No rule: ``mesh`` and ``peering`` ask ``operator``; then the default policy decides,
  except for ``acl``, which only a rule or management grants (Consul's allow-all
  authorizer does not manage ACLs).

Decisions are memoised per (resource, name, need) in the Authorizer: a face asks the
same few questions on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from homeport.acl.rules import DENY, LIST, NAMED, NAMELESS, READ, WRITE, Rule
from homeport.errors import error

ALLOW = "allow"
#: Every resource :meth:`Authorizer.allows` knows ("intention" comes from ``service``
#: blocks' ``intentions``).
RESOURCES = frozenset((*NAMED, "intention", *NAMELESS))
NEEDS = frozenset((READ, WRITE, LIST))
#: The AccessorID of the anonymous token, the one a request without a token uses.
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
#: Consul's precedence when rules for the same thing are merged (takesPrecedenceOver).
_RANK = {DENY: 4, WRITE: 3, LIST: 2, READ: 1}
#: What each access grants.
_GRANTS = {
    WRITE: frozenset((READ, LIST, WRITE)),
    LIST: frozenset((READ, LIST)),
    READ: frozenset((READ,)),
    DENY: frozenset(),
}
#: Resources that fall back to another's rule when they have none of their own.
_FALLBACK = {"mesh": "operator", "peering": "operator"}
#: How many decisions one Authorizer remembers before it starts again.
MEMO_LIMIT = 8192
#: The memo's "names" for allows_any and allows_all (no resource name has a NUL).
_ANY = "\x00any"
_ALL = "\x00all"


@error
class PermissionDenied(Exception):
    """The token lacks *need* on *resource* (called *name*; "" for name-less ones)."""

    accessor: str
    resource: str
    name: str
    need: str

    def __str__(self) -> str:
        # Consul's PermissionDeniedError.Error(), acl/errors.go
        anonymous = self.accessor == ANONYMOUS_ACCESSOR
        who = "anonymous token" if anonymous else f"token with AccessorID '{self.accessor}'"
        text = f"Permission denied: {who} lacks permission '{self.resource}:{self.need}'"
        if self.name:
            text += f' on "{self.name}"'
        if anonymous:
            text += (
                ". The anonymous token is used implicitly when a request does not specify a token."
            )
        return text


@error
class TokenNotFound(Exception):
    """No token has the secret given (or it has expired)."""

    def __str__(self) -> str:
        return "ACL not found"


class _Table:
    """One named resource's rules: exact names, and prefixes longest first."""

    __slots__ = ("exact", "prefixes")

    def __init__(self) -> None:
        self.exact: dict[str, str] = {}
        self.prefixes: list[tuple[str, str]] = []

    def lookup(self, name: str) -> str | None:
        access = self.exact.get(name)
        if access is not None:
            return access
        for prefix, access in self.prefixes:
            if name.startswith(prefix):
                return access
        return None


class Authorizer:
    """The compiled rules of one token: ask :meth:`allows`, or :meth:`check` to raise."""

    __slots__ = ("_memo", "_nameless", "_tables", "accessor", "default_allow", "management")

    def __init__(
        self,
        accessor: str,
        *,
        tables: Mapping[str, _Table] | None = None,
        nameless: Mapping[str, str] | None = None,
        default_allow: bool = False,
        management: bool = False,
    ) -> None:
        self.accessor = accessor
        self.management = management
        self.default_allow = default_allow
        self._tables = dict(tables or {})
        self._nameless = dict(nameless or {})
        self._memo: dict[tuple[str, str, str], bool] = {}

    def __repr__(self) -> str:
        default = "allow" if self.default_allow else "deny"
        kind = "management" if self.management else f"default {default}"
        return f"<Authorizer {self.accessor} {kind}>"

    def allows(self, resource: str, name: str, need: str) -> bool:
        """May this token *need* ("read", "write" or "list") *resource* called *name*?"""
        key = (resource, name, need)
        decision = self._memo.get(key)
        if decision is None:
            decision = self._decide(resource, name, need)
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = decision
        return decision

    def check(self, resource: str, name: str, need: str) -> None:
        """Raise :class:`PermissionDenied` unless :meth:`allows`."""
        if not self.allows(resource, name, need):
            raise PermissionDenied(self.accessor, resource, name, need)

    def allows_any(self, resource: str, need: str) -> bool:
        """Does some rule grant *need* on some name of *resource*?  (Consul's
        anyAllowed, as in ServiceWriteAny: a catch-all ``_prefix ""`` rule that grants it
        allows; any rule that grants it allows; else a catch-all decides, else the
        default.)"""
        key = (resource, _ANY, need)
        decision = self._memo.get(key)
        if decision is None:
            decision = self._sweep(resource, need, want_all=False)
            self._memo[key] = decision
        return decision

    def allows_all(self, resource: str, need: str) -> bool:
        """Is *need* granted on every name of *resource*?  (Consul's allAllowed, as in
        ServiceReadAll and NodeReadAll: no rule may grant less, and a catch-all prefix
        rule, or else the default, must grant it.)"""
        key = (resource, _ALL, need)
        decision = self._memo.get(key)
        if decision is None:
            decision = self._sweep(resource, need, want_all=True)
            self._memo[key] = decision
        return decision

    def _sweep(self, resource: str, need: str, *, want_all: bool) -> bool:
        self._valid(resource, need)
        if self.management:
            return True
        if resource in NAMELESS:
            return self.allows(resource, "", need)
        table = self._tables.get(resource)
        if table is None:
            return self.default_allow
        grants = [
            need in _GRANTS[a] for a in (*table.exact.values(), *(a for _, a in table.prefixes))
        ]
        catch_all = next((a for p, a in table.prefixes if p == ""), None)
        base = None if catch_all is None else need in _GRANTS[catch_all]
        if want_all:
            if base is False or not all(grants):
                return False
            return base or self.default_allow
        if base or any(grants):
            return True
        return self.default_allow if base is None else False

    def allows_key_write_prefix(self, prefix: str) -> bool:
        """May this token delete every key under *prefix* (a recursive KV delete)?

        Consul's KeyWritePrefix: the longest prefix rule at *prefix* must grant write,
        and no rule (exact or prefix) for a name under *prefix* may grant less."""
        if self.management:
            return True
        table = self._tables.get("key")
        if table is None:
            return self.default_allow
        base = next((a for p, a in table.prefixes if prefix.startswith(p)), None)
        if base is not None and base != WRITE:
            return False
        under = [a for p, a in table.prefixes if p.startswith(prefix)]
        under += [a for n, a in table.exact.items() if n.startswith(prefix)]
        if any(access != WRITE for access in under):
            return False
        return base == WRITE or self.default_allow

    def check_key_write_prefix(self, prefix: str) -> None:
        """Raise :class:`PermissionDenied` (key:write on *prefix*) unless allowed."""
        if not self.allows_key_write_prefix(prefix):
            raise PermissionDenied(self.accessor, "key", prefix, WRITE)

    @staticmethod
    def _valid(resource: str, need: str) -> None:
        if resource not in RESOURCES:
            raise ValueError(f"unknown ACL resource {resource!r}")
        if need not in NEEDS:
            raise ValueError(f"unknown ACL access {need!r}")

    def _decide(self, resource: str, name: str, need: str) -> bool:
        self._valid(resource, need)
        if self.management:
            return True
        if resource == "intention" and name == "*":
            # an intention for every service: read if any may be read, write only if
            # all may be written (Consul's IntentionRead/IntentionWrite on "*")
            if need == WRITE:
                return self.allows_all(resource, need)
            return self.allows_any(resource, need)
        access = self._access(resource, name)
        if access is None and resource in _FALLBACK:
            access = self._access(_FALLBACK[resource], "")
        if access is not None:
            return need in _GRANTS[access]
        if resource == "acl":
            return False
        return self.default_allow

    def _access(self, resource: str, name: str) -> str | None:
        if resource in NAMELESS:
            return self._nameless.get(resource)
        table = self._tables.get(resource)
        return None if table is None else table.lookup(name)


def merge(rules: Iterable[Rule]) -> dict[tuple[str, bool, str], str]:
    """One access per (resource, prefix, name): Consul's MergePolicies, where deny beats
    write beats list beats read."""
    merged: dict[tuple[str, bool, str], str] = {}
    for rule in rules:
        key = (rule.resource, rule.prefix, rule.name)
        held = merged.get(key)
        if held is None or _RANK[rule.access] > _RANK[held]:
            merged[key] = rule.access
    # A service rule without an explicit "intentions" gives intention read when it
    # grants read or write, deny otherwise (Consul's loadRules).
    for (resource, prefix, name), access in list(merged.items()):
        if resource == "service" and ("intention", prefix, name) not in merged:
            derived = READ if access in (READ, WRITE) else DENY
            merged["intention", prefix, name] = derived
    return merged


def compile_rules(rules: Iterable[Rule], default: str, accessor: str) -> Authorizer:
    """The Authorizer for *rules* (all of a token's policies', in any order) behind the
    *default* policy ("allow" or "deny")."""
    if default not in (ALLOW, DENY):
        raise ValueError(f"default policy must be 'allow' or 'deny', not {default!r}")
    tables: dict[str, _Table] = {}
    nameless: dict[str, str] = {}
    for (resource, prefix, name), access in merge(rules).items():
        if resource in NAMELESS:
            nameless[resource] = access
            continue
        table = tables.setdefault(resource, _Table())
        if prefix:
            table.prefixes.append((name, access))
        else:
            table.exact[name] = access
    for table in tables.values():
        table.prefixes.sort(key=lambda pair: len(pair[0]), reverse=True)
    return Authorizer(accessor, tables=tables, nameless=nameless, default_allow=default == ALLOW)


def management(accessor: str) -> Authorizer:
    """An Authorizer that allows everything (the global-management policy's)."""
    return Authorizer(accessor, management=True, default_allow=True)


_T = TypeVar("_T")


def filter_names(
    authorizer: Authorizer, resource: str, names: Iterable[str], need: str = READ
) -> list[str]:
    """The *names* of *resource* the token may *need* (read, by default), in order."""
    return [name for name in names if authorizer.allows(resource, name, need)]


def filter_items(
    authorizer: Authorizer,
    resource: str,
    items: Iterable[_T],
    name_of: Callable[[_T], str],
    need: str = READ,
) -> tuple[list[_T], bool]:
    """The *items* whose ``name_of(item)`` the token may *need*, and whether any were
    left out (what ``X-Consul-Results-Filtered-By-ACLs`` says)."""
    kept: list[_T] = []
    dropped = False
    for item in items:
        if authorizer.allows(resource, name_of(item), need):
            kept.append(item)
        else:
            dropped = True
    return kept, dropped
