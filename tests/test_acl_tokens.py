"""From a secret to its Authorizer (homeport.acl.tokens): the anonymous token, the
``--token`` management secret, policies through roles, expiry, and the cache that a
change to any token, policy or role invalidates."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from homeport.acl import (
    ANONYMOUS_ACCESSOR,
    GLOBAL_MANAGEMENT,
    GLOBAL_MANAGEMENT_ID,
    DecisionCache,
    NodeIdentity,
    PolicyError,
    PolicyRecord,
    Resolver,
    RoleRecord,
    ServiceIdentity,
    TokenNotFound,
    TokenRecord,
    anonymous_token,
    compile_rules,
    expired,
    hash_secret,
    new_accessor,
    new_secret,
    parse_rules,
)
from homeport.acl.tokens import management_accessor

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


@dataclass
class MemoryRecords:
    """The records in dicts, as a store would hand them over (Records)."""

    tokens: dict[str, TokenRecord] = field(default_factory=dict)
    policies: dict[str, PolicyRecord] = field(default_factory=dict)
    roles: dict[str, RoleRecord] = field(default_factory=dict)
    lookups: int = 0

    def token_by_secret_hash(self, secret_hash: str) -> TokenRecord | None:
        self.lookups += 1
        return self.tokens.get(secret_hash)

    def policy(self, policy_id: str) -> PolicyRecord | None:
        return self.policies.get(policy_id)

    def role(self, role_id: str) -> RoleRecord | None:
        return self.roles.get(role_id)

    def add_token(self, secret: str, **fields: Any) -> TokenRecord:
        token = replace(TokenRecord(new_accessor(), hash_secret(secret)), **fields)
        self.tokens[token.secret_hash] = token
        return token

    def add_policy(self, rules: str, **fields: Any) -> PolicyRecord:
        fresh = PolicyRecord(str(uuid.uuid4()), f"p{len(self.policies)}", rules=rules)
        policy = replace(fresh, **fields)
        self.policies[policy.id] = policy
        return policy


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def resolver(
    records: MemoryRecords,
    default: str = "deny",
    *,
    management_secret: str | None = None,
    datacenter: str = "dc1",
    clock: Clock | None = None,
    cache_size: int = 4096,
) -> Resolver:
    return Resolver(
        records,
        default=default,
        management_secret=management_secret,
        datacenter=datacenter,
        clock=clock or Clock(),
        cache_size=cache_size,
    )


def test_secrets_and_accessors_are_random_uuids_and_only_a_hash_is_kept() -> None:
    assert UUID.match(new_secret()) and UUID.match(new_accessor())
    assert new_secret() != new_secret()
    secret = new_secret()
    assert hash_secret(secret) == hash_secret(secret)
    assert re.fullmatch(r"[0-9a-f]{64}", hash_secret(secret))
    assert secret not in hash_secret(secret)


def test_a_token_expires_only_once_its_time_has_passed() -> None:
    assert not expired(None, 1e12)
    assert not expired(100.0, 99.0)
    assert not expired(100.0, 100.0)  # Consul: ExpirationTime.Before(now)
    assert expired(100.0, 100.5)


def test_no_secret_is_the_anonymous_token_and_the_default_decides() -> None:
    records = MemoryRecords()
    for secret in (None, "", b""):
        authz = resolver(records, "deny").resolve(secret)
        assert authz.accessor == ANONYMOUS_ACCESSOR
        assert not authz.allows("service", "web", "read")
    assert resolver(records, "allow").resolve(None).allows("service", "web", "write")


def test_the_anonymous_token_has_the_policies_it_is_given() -> None:
    records = MemoryRecords()
    dns = records.add_policy(
        'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }'
    )
    anonymous = replace(anonymous_token(), policies=(dns.id,))
    records.tokens[anonymous.secret_hash] = anonymous
    authz = resolver(records).resolve(None)
    assert authz.allows("service", "web", "read")
    assert not authz.allows("service", "web", "write")
    assert resolver(records).resolve("anonymous").allows("node", "n1", "read")


def test_an_unknown_secret_is_acl_not_found() -> None:
    with pytest.raises(TokenNotFound) as caught:
        resolver(MemoryRecords()).resolve("00000000-dead-beef-0000-000000000000")
    assert str(caught.value) == "ACL not found"


def test_the_management_secret_allows_everything_with_a_stable_accessor() -> None:
    records = MemoryRecords()
    one = resolver(records, management_secret="s3cret").resolve("s3cret")
    assert one.management and one.allows("acl", "", "write")
    again = resolver(records, management_secret="s3cret").resolve(b"s3cret")
    assert one.accessor == again.accessor == management_accessor("s3cret")
    assert UUID.match(one.accessor) is None  # a version-5 UUID, not a random one
    assert "s3cret" not in one.accessor
    with pytest.raises(TokenNotFound):
        resolver(records, management_secret="s3cret").resolve("s3cret ")
    assert records.lookups == 1  # only the wrong one was looked up


def test_a_token_gets_its_policies_and_its_roles_policies() -> None:
    records = MemoryRecords()
    web = records.add_policy('service "web" { policy = "write" }')
    app = records.add_policy('key_prefix "app/" { policy = "write" }')
    role = RoleRecord("r1", "app-role", policies=(app.id, "no-such-policy"))
    records.roles[role.id] = role
    token = records.add_token("t", policies=(web.id,), roles=(role.id, "no-such-role"))
    authz = resolver(records).resolve("t")
    assert authz.accessor == token.accessor
    assert authz.allows("service", "web", "write")
    assert not authz.allows("service", "db", "write")
    assert authz.allows("key", "app/x", "write")
    assert not authz.allows("key", "other", "read")


def test_a_deny_in_one_policy_wins_over_another_s_write() -> None:
    records = MemoryRecords()
    writer = records.add_policy('service_prefix "" { policy = "write" }')
    no_db = records.add_policy('service_prefix "" { policy = "deny" }')
    records.add_token("t", policies=(writer.id, no_db.id))
    assert not resolver(records).resolve("t").allows("service", "web", "read")


def test_a_token_with_the_global_management_policy_is_management() -> None:
    records = MemoryRecords()
    records.policies[GLOBAL_MANAGEMENT_ID] = GLOBAL_MANAGEMENT
    token = records.add_token("root", policies=(GLOBAL_MANAGEMENT_ID,))
    authz = resolver(records).resolve("root")
    assert authz.management and authz.accessor == token.accessor
    assert authz.allows("ui", "", "write") and authz.allows("acl", "", "write")


def test_the_global_management_rules_grant_everything_on_their_own() -> None:
    """The rules text (Consul's, plus log and ui) is valid and grants write everywhere,
    should it be compiled as a plain policy."""
    authz = compile_rules(parse_rules(GLOBAL_MANAGEMENT.rules), "deny", "x")
    for resource in ("acl", "agent", "event", "key", "keyring", "node", "operator"):
        assert authz.allows(resource, "any", "write")
    for resource in ("mesh", "peering", "query", "service", "session", "intention", "log", "ui"):
        assert authz.allows(resource, "any", "write")


def test_a_policy_for_other_datacenters_does_not_apply() -> None:
    records = MemoryRecords()
    here = records.add_policy('service "a" { policy = "write" }', datacenters=("dc1",))
    there = records.add_policy('service "b" { policy = "write" }', datacenters=("dc2",))
    records.add_token("t", policies=(here.id, there.id))
    authz = resolver(records, datacenter="dc1").resolve("t")
    assert authz.allows("service", "a", "write")
    assert not authz.allows("service", "b", "write")


def test_service_and_node_identities_give_consul_s_templates() -> None:
    records = MemoryRecords()
    role = RoleRecord(
        "r", "r", node_identities=(NodeIdentity("n1", "dc1"), NodeIdentity("n2", "dc2"))
    )
    records.roles["r"] = role
    records.add_token(
        "t",
        service_identities=(ServiceIdentity("web"), ServiceIdentity("db", ("dc9",))),
        roles=("r",),
    )
    authz = resolver(records).resolve("t")
    assert authz.allows("service", "web", "write")
    assert authz.allows("service", "web-sidecar-proxy", "write")
    assert not authz.allows("service", "db", "write")  # that identity is for dc9
    assert authz.allows("service", "db", "read") and authz.allows("node", "x", "read")
    assert authz.allows("node", "n1", "write")
    assert not authz.allows("node", "n2", "write")


def test_an_expired_token_is_not_found_even_when_cached() -> None:
    records = MemoryRecords()
    clock = Clock()
    records.add_token("t", expiration_time=clock.now + 60)
    resolve = resolver(records, "allow", clock=clock).resolve
    assert resolve("t").allows("service", "web", "read")
    clock.now += 30
    resolve("t")
    clock.now += 31
    with pytest.raises(TokenNotFound):
        resolve("t")


def test_answers_are_cached_until_a_change_invalidates_them() -> None:
    records = MemoryRecords()
    policy = records.add_policy('service "web" { policy = "read" }')
    records.add_token("t", policies=(policy.id,))
    res = resolver(records)
    first = res.resolve("t")
    assert res.resolve("t") is first
    assert records.lookups == 1
    # The store changes the policy and says so.
    records.policies[policy.id] = replace(policy, rules='service "web" { policy = "write" }')
    res.invalidate()
    second = res.resolve("t")
    assert second is not first and second.allows("service", "web", "write")
    # A deleted token is not found once the store says so.
    records.tokens.clear()
    res.invalidate()
    with pytest.raises(TokenNotFound):
        res.resolve("t")


def test_an_answer_computed_across_an_invalidation_is_not_cached() -> None:
    """A change that lands while a token is being resolved must not leave the old
    answer in the cache."""
    records = MemoryRecords()
    policy = records.add_policy('key "k" { policy = "read" }')
    records.add_token("t", policies=(policy.id,))
    res = resolver(records)

    class Changing(MemoryRecords):
        def policy(self, policy_id: str) -> PolicyRecord | None:
            found = super().policy(policy_id)
            res.invalidate()  # the change arrives mid-resolve
            return found

    res.records = Changing(records.tokens, records.policies, records.roles)
    res.resolve("t")
    assert len(res.cache) == 0


def test_the_cache_is_bounded() -> None:
    records = MemoryRecords()
    for i in range(10):
        records.add_token(f"t{i}")
    res = resolver(records, cache_size=4)
    for i in range(10):
        res.resolve(f"t{i}")
    assert len(res.cache) <= 4
    assert res.resolve("t9") is res.resolve("t9")


def test_the_decision_cache_forgets_everything_on_a_generation_bump() -> None:
    cache = DecisionCache(limit=8)
    authz = compile_rules((), "deny", "a")
    cache.put("h", authz, None)
    assert cache.get("h", 0.0) is authz
    generation = cache.generation
    cache.invalidate()
    assert cache.generation == generation + 1
    assert cache.get("h", 0.0) is None
    cache.put("e", authz, 10.0)
    assert cache.get("e", 10.0) is authz
    assert cache.get("e", 11.0) is None


def test_a_bad_default_policy_is_refused_at_once() -> None:
    with pytest.raises(ValueError, match="default"):
        resolver(MemoryRecords(), "maybe")


def test_a_stored_policy_that_no_longer_parses_is_an_error_not_a_silent_grant() -> None:
    records = MemoryRecords()
    bad = records.add_policy('service "web" { policy = "sometimes" }')
    records.add_token("t", policies=(bad.id,))
    with pytest.raises(PolicyError):
        resolver(records, "allow").resolve("t")
