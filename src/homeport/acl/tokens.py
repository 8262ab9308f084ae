"""Tokens, policies and roles as stored, and what a secret resolves to.

The records are plain values; whoever stores them (the catalog's SQLite store, or etcd)
hands them to a :class:`Resolver` through :class:`Records`.  A token's secret is kept
only as :func:`hash_secret` of it: the SecretID is a random UUID, so one SHA-256 is
enough, and the holder is the only one who knows it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from homeport.acl.authorizer import (
    ANONYMOUS_ACCESSOR,
    Authorizer,
    TokenNotFound,
    compile_rules,
    management,
)
from homeport.acl.rules import READ, WRITE, Rule, parse_rules

#: The builtin policy that grants everything (Consul's ACLPolicyGlobalManagementID).
GLOBAL_MANAGEMENT_ID = "00000000-0000-0000-0000-000000000001"
GLOBAL_MANAGEMENT_NAME = "global-management"
GLOBAL_MANAGEMENT_DESCRIPTION = "Builtin Policy that grants unlimited access"
#: Its rules, as Consul writes them (agent/structs/acl.go); homeport's own ``log`` and
#: ``ui`` added.  A token with this policy is management whatever the text says.
GLOBAL_MANAGEMENT_RULES = """
acl = "write"
agent_prefix "" {
\tpolicy = "write"
}
event_prefix "" {
\tpolicy = "write"
}
key_prefix "" {
\tpolicy = "write"
}
keyring = "write"
node_prefix "" {
\tpolicy = "write"
}
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" {
\tpolicy = "write"
}
service_prefix "" {
\tpolicy = "write"
\tintentions = "write"
}
session_prefix "" {
\tpolicy = "write"
}
log = "write"
ui = "write"
"""
#: The anonymous token's SecretID, as Consul's.
ANONYMOUS_SECRET = "anonymous"
ANONYMOUS_DESCRIPTION = "Anonymous Token"


def new_secret() -> str:
    """A fresh SecretID (a random UUID, as Consul)."""
    return str(uuid.uuid4())


def new_accessor() -> str:
    """A fresh AccessorID (a random UUID, as Consul)."""
    return str(uuid.uuid4())


def hash_secret(secret: str) -> str:
    """What is stored of *secret*: its SHA-256, hex."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def expired(expiration_time: float | None, now: float) -> bool:
    """Has a token with *expiration_time* (seconds since the epoch; None: never)
    expired at *now*?  As Consul's IsExpired: only once *now* is past it."""
    return expiration_time is not None and expiration_time < now


@dataclass(frozen=True)
class ServiceIdentity:
    """A token's or role's service identity: write on the service (and its sidecar),
    read on every service and node (Consul's aclPolicyTemplateServiceIdentity)."""

    name: str
    datacenters: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeIdentity:
    """A node identity: write on the node, read on every service, in one datacenter."""

    name: str
    datacenter: str


@dataclass(frozen=True)
class TokenRecord:
    """A token as stored: everything Consul's ACLToken has but the secret itself.

    Times are seconds since the epoch; *policies* and *roles* are IDs."""

    accessor: str
    secret_hash: str
    description: str = ""
    policies: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    service_identities: tuple[ServiceIdentity, ...] = ()
    node_identities: tuple[NodeIdentity, ...] = ()
    local: bool = False
    expiration_time: float | None = None
    create_time: float = 0.0
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True)
class PolicyRecord:
    """A policy: rules in Consul's syntax, valid in *datacenters* (empty: all)."""

    id: str
    name: str
    description: str = ""
    rules: str = ""
    datacenters: tuple[str, ...] = ()
    create_index: int = 0
    modify_index: int = 0


@dataclass(frozen=True)
class RoleRecord:
    """A role: policies (IDs) and identities a token gets by linking it."""

    id: str
    name: str
    description: str = ""
    policies: tuple[str, ...] = ()
    service_identities: tuple[ServiceIdentity, ...] = ()
    node_identities: tuple[NodeIdentity, ...] = ()
    create_index: int = 0
    modify_index: int = 0


GLOBAL_MANAGEMENT = PolicyRecord(
    id=GLOBAL_MANAGEMENT_ID,
    name=GLOBAL_MANAGEMENT_NAME,
    description=GLOBAL_MANAGEMENT_DESCRIPTION,
    rules=GLOBAL_MANAGEMENT_RULES,
)


def anonymous_token(create_time: float = 0.0) -> TokenRecord:
    """The anonymous token as Consul makes it: no policies (so the default decides)."""
    return TokenRecord(
        accessor=ANONYMOUS_ACCESSOR,
        secret_hash=hash_secret(ANONYMOUS_SECRET),
        description=ANONYMOUS_DESCRIPTION,
        create_time=create_time,
    )


class Records(Protocol):
    """Where a :class:`Resolver` reads tokens, policies and roles (the store's side)."""

    def token_by_secret_hash(self, secret_hash: str) -> TokenRecord | None: ...

    def policy(self, policy_id: str) -> PolicyRecord | None: ...

    def role(self, role_id: str) -> RoleRecord | None: ...


class DecisionCache:
    """Authorizers by secret hash, all forgotten at once by :meth:`invalidate` (a
    generation bump: call it on any change to a token, policy or role)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self.generation = 0
        self._entries: dict[str, tuple[int, float | None, Authorizer]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, secret_hash: str, now: float) -> Authorizer | None:
        """The Authorizer remembered for *secret_hash*, unless it is from an older
        generation or its token has expired by *now*."""
        entry = self._entries.get(secret_hash)
        if entry is None:
            return None
        generation, expiration_time, authorizer = entry
        if generation != self.generation or expired(expiration_time, now):
            del self._entries[secret_hash]
            return None
        return authorizer

    def put(self, secret_hash: str, authorizer: Authorizer, expiration_time: float | None) -> None:
        if len(self._entries) >= self.limit:
            # Forget the oldest half: dicts keep insertion order.
            for stale in list(self._entries)[: self.limit // 2 or 1]:
                del self._entries[stale]
        self._entries[secret_hash] = (self.generation, expiration_time, authorizer)

    def invalidate(self) -> None:
        self.generation += 1
        self._entries.clear()


def management_accessor(secret: str) -> str:
    """The AccessorID homeport gives ``--token`` (the same on every agent and restart
    with the same secret; it does not reveal the secret)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "homeport:management:" + hash_secret(secret)))


class Resolver:
    """A secret in, that token's :class:`Authorizer` out (or :class:`TokenNotFound`).

    No secret (None or empty) is the anonymous token; *management_secret* (homeport's
    ``--token``) resolves to a management Authorizer without a stored token.  Answers
    are cached by secret hash until :meth:`invalidate`."""

    def __init__(
        self,
        records: Records,
        *,
        default: str,
        management_secret: str | None = None,
        datacenter: str = "dc1",
        clock: Callable[[], float] = time.time,
        cache_size: int = 4096,
    ) -> None:
        self.records = records
        self.default = default
        self.datacenter = datacenter
        self.clock = clock
        self.cache = DecisionCache(cache_size)
        self._management_secret = management_secret.encode() if management_secret else None
        self.management_accessor = (
            management_accessor(management_secret) if management_secret else None
        )
        compile_rules((), default, ANONYMOUS_ACCESSOR)  # a bad default fails here

    def invalidate(self) -> None:
        """A token, policy or role changed: forget every cached Authorizer."""
        self.cache.invalidate()

    def is_management_secret(self, secret: str | bytes | None) -> bool:
        """Is *secret* ``--token`` (compared in constant time)?"""
        if self._management_secret is None or not secret:
            return False
        given = secret.encode("utf-8", "surrogateescape") if isinstance(secret, str) else secret
        return hmac.compare_digest(given, self._management_secret)

    def resolve(self, secret: str | bytes | None) -> Authorizer:
        """The Authorizer for *secret*; :class:`TokenNotFound` if no live token has it."""
        if self.is_management_secret(secret):
            assert self.management_accessor is not None
            return management(self.management_accessor)
        text = _text(secret) or ANONYMOUS_SECRET
        secret_hash = hash_secret(text)
        now = self.clock()
        cached = self.cache.get(secret_hash, now)
        if cached is not None:
            return cached
        generation = self.cache.generation
        token = self.records.token_by_secret_hash(secret_hash)
        if token is None and text == ANONYMOUS_SECRET:
            token = anonymous_token()
        if token is None or expired(token.expiration_time, now):
            raise TokenNotFound()
        authorizer = self.authorizer_for(token)
        if generation == self.cache.generation:
            self.cache.put(secret_hash, authorizer, token.expiration_time)
        return authorizer

    def authorizer_for(self, token: TokenRecord) -> Authorizer:
        """Compile *token*'s policies, roles and identities (missing policies and roles
        are skipped, as Consul; a policy for other datacenters does not apply)."""
        policies = list(self._policies(token))
        if any(p.id == GLOBAL_MANAGEMENT_ID for p in policies):
            return management(token.accessor)
        rules: list[Rule] = []
        for policy in policies:
            rules.extend(parse_rules(policy.rules))
        rules.extend(self._identity_rules(token))
        return compile_rules(rules, self.default, token.accessor)

    def _roles(self, token: TokenRecord) -> Iterator[RoleRecord]:
        for role_id in dict.fromkeys(token.roles):
            role = self.records.role(role_id)
            if role is not None:
                yield role

    def _policies(self, token: TokenRecord) -> Iterator[PolicyRecord]:
        ids = list(token.policies)
        for role in self._roles(token):
            ids.extend(role.policies)
        for policy_id in dict.fromkeys(ids):
            policy = self.records.policy(policy_id)
            if policy is not None and (
                not policy.datacenters or self.datacenter in policy.datacenters
            ):
                yield policy

    def _identity_rules(self, token: TokenRecord) -> Iterator[Rule]:
        services = list(token.service_identities)
        nodes = list(token.node_identities)
        for role in self._roles(token):
            services.extend(role.service_identities)
            nodes.extend(role.node_identities)
        for service in services:
            if not service.datacenters or self.datacenter in service.datacenters:
                yield from service_identity_rules(service.name)
        for node in nodes:
            if node.datacenter == self.datacenter:
                yield from node_identity_rules(node.name)


def service_identity_rules(name: str) -> Iterable[Rule]:
    """Consul's aclPolicyTemplateServiceIdentity for service *name*."""
    return (
        Rule("service", name, False, WRITE),
        Rule("service", f"{name}-sidecar-proxy", False, WRITE),
        Rule("service", "", True, READ),
        Rule("node", "", True, READ),
    )


def node_identity_rules(name: str) -> Iterable[Rule]:
    """Consul's aclPolicyTemplateNodeIdentity for node *name*."""
    return (Rule("node", name, False, WRITE), Rule("service", "", True, READ))


def _text(secret: str | bytes | None) -> str:
    if secret is None:
        return ""
    if isinstance(secret, bytes):
        return secret.decode("utf-8", "surrogateescape")
    return secret
