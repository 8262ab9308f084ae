"""Decisions from compiled rules (homeport.acl.authorizer).

Cases ported from Consul's ``acl/policy_authorizer_test.go`` (TestPolicyAuthorizer:
"Prefer Exact Matches", "Intention Wildcards - ...", TestAnyAllowed, TestAllAllowed) and
``acl/policy_test.go`` (TestMergePolicies, TestPrecedence), each decision followed by
the default authorizer behind it as Consul chains them (``static_authorizer.go``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from homeport.acl import (
    ANONYMOUS_ACCESSOR,
    Authorizer,
    PermissionDenied,
    Rule,
    TokenNotFound,
    compile_rules,
    filter_items,
    filter_names,
    management,
    parse_rules,
)
from homeport.acl import authorizer as authorizer_module
from homeport.acl.authorizer import merge

ACCESSOR = "3b5ce3a0-4a3a-4f57-9d1b-7f35a1e2a111"


def authorizer(text: str, default: str = "deny") -> Authorizer:
    return compile_rules(parse_rules(text), default, ACCESSOR)


# "Prefer Exact Matches": for each resource, exact "foo" write and "football" deny,
# prefixes "foot" and "fo" read.
EXACT_OVER_PREFIX = "\n".join(
    f'{r} "foo" {{ policy = "write" }}\n'
    f'{r} "football" {{ policy = "deny" }}\n'
    f'{r}_prefix "foot" {{ policy = "read" }}\n'
    f'{r}_prefix "fo" {{ policy = "read" }}'
    for r in ("agent", "key", "node", "service", "session", "event", "query")
)
#: name -> (read allowed, write allowed), the same for every resource
EXACT_OVER_PREFIX_CHECKS = {
    "fo": (True, False),
    "for": (True, False),
    "foo": (True, True),
    "foot": (True, False),
    "foot2": (True, False),
    "food": (True, False),
    "football": (False, False),
}


@pytest.mark.parametrize(
    "resource", ["agent", "key", "node", "service", "session", "event", "query"]
)
@pytest.mark.parametrize("name", sorted(EXACT_OVER_PREFIX_CHECKS))
def test_an_exact_rule_beats_a_prefix_and_the_longest_prefix_wins(resource: str, name: str) -> None:
    authz = authorizer(EXACT_OVER_PREFIX)
    read, write = EXACT_OVER_PREFIX_CHECKS[name]
    assert authz.allows(resource, name, "read") is read
    assert authz.allows(resource, name, "write") is write


@pytest.mark.parametrize("name", sorted(EXACT_OVER_PREFIX_CHECKS))
def test_service_rules_give_intention_read_unless_they_say_otherwise(name: str) -> None:
    """Prefer Exact Matches' intention checks: "foo" says intentions = "write", the
    prefixes say "read", "football" (policy deny) says nothing, so deny."""
    text = (
        'service "foo" { policy = "write" intentions = "write" }\n'
        'service "football" { policy = "deny" }\n'
        'service_prefix "foot" { policy = "read" intentions = "read" }\n'
        'service_prefix "fo" { policy = "read" intentions = "read" }\n'
    )
    authz = authorizer(text)
    read, write = EXACT_OVER_PREFIX_CHECKS[name]
    assert authz.allows("intention", name, "read") is read
    assert authz.allows("intention", name, "write") is write


def test_a_service_rule_without_intentions_gives_read_or_deny() -> None:
    authz = authorizer('service "w" { policy = "write" }\nservice "d" { policy = "deny" }')
    assert authz.allows("intention", "w", "read")
    assert not authz.allows("intention", "w", "write")
    assert not authz.allows("intention", "d", "read")


@pytest.mark.parametrize(
    ("text", "read_any", "write_all"),
    [
        # "Intention Wildcards - prefix denied"
        (
            'service "foo" { policy = "write" intentions = "write" }\n'
            'service_prefix "" { policy = "deny" intentions = "deny" }',
            True,
            False,
        ),
        # "Intention Wildcards - prefix allowed"
        (
            'service "foo" { policy = "write" intentions = "deny" }\n'
            'service_prefix "" { policy = "write" intentions = "write" }',
            True,
            False,
        ),
        # "Intention Wildcards - all allowed"
        (
            'service "foo" { policy = "write" intentions = "write" }\n'
            'service_prefix "" { policy = "write" intentions = "write" }',
            True,
            True,
        ),
        # "Intention Wildcards - all default": write on "*" is the default's (deny here)
        ('service "foo" { policy = "write" intentions = "write" }', True, False),
        # "Intention Wildcards - any default": read on "*" is the default's
        ('service "foo" { policy = "write" intentions = "deny" }', False, False),
    ],
)
def test_the_wildcard_intention_asks_any_for_read_and_all_for_write(
    text: str, read_any: bool, write_all: bool
) -> None:
    authz = authorizer(text)
    assert authz.allows("intention", "*", "read") is read_any
    assert authz.allows("intention", "*", "write") is write_all


def test_the_wildcard_intention_defaults_follow_the_default_policy() -> None:
    allow = authorizer('service "foo" { policy = "write" intentions = "deny" }', "allow")
    assert allow.allows("intention", "*", "read")  # "AnyDefault" -> allow
    assert not allow.allows("intention", "*", "write")  # "AllDenied"
    assert authorizer('service "foo" { intentions = "write" policy = "write" }', "allow").allows(
        "intention", "*", "write"
    )  # "AllDefault" -> allow


# TestAnyAllowed / TestAllAllowed: rules on "" (catch-all prefix) and on "foo", and the
# decision of anyAllowed and allAllowed for read, list and write.  None is "Default":
# the default policy decides.
SWEEPS = [
    # name, rules, any(read, list, write), all(read, list, write)
    ("no-rules-default", "", (None, None, None), (None, None, None)),
    ("prefix-write", 'key_prefix "" { policy = "write" }', (1, 1, 1), (1, 1, 1)),
    ("prefix-list", 'key_prefix "" { policy = "list" }', (1, 1, 0), (1, 1, 0)),
    ("prefix-read", 'key_prefix "" { policy = "read" }', (1, 0, 0), (1, 0, 0)),
    ("prefix-deny", 'key_prefix "" { policy = "deny" }', (0, 0, 0), (0, 0, 0)),
    (
        "prefix-write-other-deny-prefix",
        'key_prefix "" { policy = "write" }\nkey_prefix "foo" { policy = "deny" }',
        (1, 1, 1),
        (0, 0, 0),
    ),
    (
        "prefix-deny-other-write-prefix",
        'key_prefix "" { policy = "deny" }\nkey_prefix "foo" { policy = "write" }',
        (1, 1, 1),
        (0, 0, 0),
    ),
    (
        "prefix-deny-other-write-exact",
        'key_prefix "" { policy = "deny" }\nkey "foo" { policy = "write" }',
        (1, 1, 1),
        (0, 0, 0),
    ),
    (
        "prefix-deny-other-list-exact",
        'key_prefix "" { policy = "deny" }\nkey "foo" { policy = "list" }',
        (1, 1, 0),
        (0, 0, 0),
    ),
    (
        "prefix-deny-other-read-prefix",
        'key_prefix "" { policy = "deny" }\nkey_prefix "foo" { policy = "read" }',
        (1, 0, 0),
        (0, 0, 0),
    ),
    (
        "prefix-deny-other-deny-exact",
        'key_prefix "" { policy = "deny" }\nkey "foo" { policy = "deny" }',
        (0, 0, 0),
        (0, 0, 0),
    ),
    (
        "prefix-allow-other-write-exact",
        'key_prefix "" { policy = "write" }\nkey "foo" { policy = "write" }',
        (1, 1, 1),
        (1, 1, 1),
    ),
    (
        "prefix-allow-other-list-prefix",
        'key_prefix "" { policy = "write" }\nkey_prefix "foo" { policy = "list" }',
        (1, 1, 1),
        (1, 1, 0),
    ),
    (
        "prefix-allow-other-read-exact",
        'key_prefix "" { policy = "write" }\nkey "foo" { policy = "read" }',
        (1, 1, 1),
        (1, 0, 0),
    ),
    ("no-catch-all-write-exact", 'key "foo" { policy = "write" }', (1, 1, 1), (None, None, None)),
    ("no-catch-all-deny-exact", 'key "foo" { policy = "deny" }', (None, None, None), (0, 0, 0)),
]


@pytest.mark.parametrize(("name", "text", "any_", "all_"), SWEEPS, ids=[s[0] for s in SWEEPS])
@pytest.mark.parametrize("default", ["allow", "deny"])
def test_any_and_all_names_of_a_resource(
    name: str,
    text: str,
    any_: tuple[int | None, ...],
    all_: tuple[int | None, ...],
    default: str,
) -> None:
    authz = authorizer(text, default)
    for need, want_any, want_all in zip(("read", "list", "write"), any_, all_, strict=True):
        fallback = default == "allow"
        assert authz.allows_any("key", need) is (fallback if want_any is None else bool(want_any))
        assert authz.allows_all("key", need) is (fallback if want_all is None else bool(want_all))


def test_any_and_all_for_a_name_less_resource_is_its_one_rule() -> None:
    authz = authorizer('operator = "read"')
    assert authz.allows_any("operator", "read") and authz.allows_all("operator", "read")
    assert not authz.allows_any("operator", "write")


# TestMergePolicies, run through compile_rules: the rules of two policies in one list.
MERGES = [
    (
        "Agents",
        'agent "foo" { policy = "write" }\nagent "bar" { policy = "read" }\n'
        'agent "baz" { policy = "write" }\nagent_prefix "000" { policy = "write" }\n'
        'agent_prefix "111" { policy = "read" }\nagent_prefix "222" { policy = "write" }',
        'agent "foo" { policy = "read" }\nagent "baz" { policy = "deny" }\n'
        'agent_prefix "000" { policy = "read" }\nagent_prefix "222" { policy = "deny" }',
        {
            ("agent", False, "foo"): "write",
            ("agent", False, "bar"): "read",
            ("agent", False, "baz"): "deny",
            ("agent", True, "000"): "write",
            ("agent", True, "111"): "read",
            ("agent", True, "222"): "deny",
        },
    ),
    (
        "Keys",
        'key "foo" { policy = "write" }\nkey "bar" { policy = "read" }\n'
        'key "baz" { policy = "write" }\nkey "zoo" { policy = "list" }\n'
        'key_prefix "000" { policy = "write" }\nkey_prefix "111" { policy = "read" }\n'
        'key_prefix "222" { policy = "write" }\nkey_prefix "333" { policy = "list" }',
        'key "foo" { policy = "read" }\nkey "baz" { policy = "deny" }\n'
        'key "zoo" { policy = "read" }\nkey_prefix "000" { policy = "read" }\n'
        'key_prefix "222" { policy = "deny" }\nkey_prefix "333" { policy = "read" }',
        {
            ("key", False, "foo"): "write",
            ("key", False, "bar"): "read",
            ("key", False, "baz"): "deny",
            ("key", False, "zoo"): "list",
            ("key", True, "000"): "write",
            ("key", True, "111"): "read",
            ("key", True, "222"): "deny",
            ("key", True, "333"): "list",
        },
    ),
    (
        "Services",
        'service "foo" { policy = "write" intentions = "write" }\n'
        'service "bar" { policy = "read" intentions = "read" }\n'
        'service "baz" { policy = "write" intentions = "write" }',
        'service "foo" { policy = "read" intentions = "read" }\n'
        'service "baz" { policy = "deny" intentions = "deny" }',
        {
            ("service", False, "foo"): "write",
            ("intention", False, "foo"): "write",
            ("service", False, "bar"): "read",
            ("intention", False, "bar"): "read",
            ("service", False, "baz"): "deny",
            ("intention", False, "baz"): "deny",
        },
    ),
    (
        "Write Precedence",
        'acl = "read"\nkeyring = "read"\noperator = "read"\nmesh = "read"\npeering = "read"',
        'acl = "write"\nkeyring = "write"\noperator = "write"\nmesh = "write"\npeering = "write"',
        {(r, False, ""): "write" for r in ("acl", "keyring", "operator", "mesh", "peering")},
    ),
    (
        "Deny Precedence",
        'acl = "write"\nkeyring = "write"\noperator = "write"\nmesh = "write"\npeering = "write"',
        'acl = "deny"\nkeyring = "deny"\noperator = "deny"\nmesh = "deny"\npeering = "deny"',
        {(r, False, ""): "deny" for r in ("acl", "keyring", "operator", "mesh", "peering")},
    ),
    (
        "Read Precedence",
        'acl = "read"\nkeyring = "read"\noperator = "read"\nmesh = "read"\npeering = "read"',
        "",
        {(r, False, ""): "read" for r in ("acl", "keyring", "operator", "mesh", "peering")},
    ),
]


@pytest.mark.parametrize(
    ("name", "first", "second", "expected"), MERGES, ids=[m[0] for m in MERGES]
)
def test_rules_of_several_policies_merge_as_consul_merges_them(
    name: str, first: str, second: str, expected: dict[tuple[str, bool, str], str]
) -> None:
    for a, b in ((first, second), (second, first)):  # the order does not matter
        assert merge([*parse_rules(a), *parse_rules(b)]) == expected


@pytest.mark.parametrize(
    ("a", "b", "winner"),
    [  # TestPrecedence: deny > write > list > read
        ("deny", "write", "deny"),
        ("deny", "list", "deny"),
        ("deny", "read", "deny"),
        ("write", "list", "write"),
        ("write", "read", "write"),
        ("list", "read", "list"),
    ],
)
def test_the_merge_precedence_is_deny_write_list_read(a: str, b: str, winner: str) -> None:
    for pair in ((a, b), (b, a)):
        rules = [Rule("key", "k", True, access) for access in pair]
        assert merge(rules) == {("key", True, "k"): winner}


def test_a_deny_in_one_policy_wins_over_a_write_in_another() -> None:
    web_writer = parse_rules('service "web" { policy = "write" }')
    web_denied = parse_rules(
        'service "web" { policy = "deny" }\nservice_prefix "" { policy = "read" }'
    )
    authz = compile_rules([*web_writer, *web_denied], "allow", ACCESSOR)
    assert not authz.allows("service", "web", "read")
    assert authz.allows("service", "db", "read")
    assert not authz.allows("service", "db", "write")


RESOURCES_WITH_NAMES = ["agent", "event", "key", "node", "query", "service", "session"]


@pytest.mark.parametrize("resource", [*RESOURCES_WITH_NAMES, "intention"])
@pytest.mark.parametrize("need", ["read", "write", "list"])
def test_without_rules_the_default_decides(resource: str, need: str) -> None:
    """ "Defaults": an empty policy decides nothing, so the default policy does."""
    assert compile_rules((), "allow", ACCESSOR).allows(resource, "foo", need)
    assert not compile_rules((), "deny", ACCESSOR).allows(resource, "foo", need)


@pytest.mark.parametrize("resource", ["keyring", "operator", "mesh", "peering", "log", "ui"])
def test_name_less_resources_take_the_default_too(resource: str) -> None:
    assert compile_rules((), "allow", ACCESSOR).allows(resource, "", "write")
    assert not compile_rules((), "deny", ACCESSOR).allows(resource, "", "read")


def test_only_a_rule_or_management_grants_acl() -> None:
    """Consul's allow-all default does not manage ACLs (allowManage false)."""
    allow_all = compile_rules((), "allow", ACCESSOR)
    assert not allow_all.allows("acl", "", "read")
    assert not allow_all.allows("acl", "", "write")
    assert authorizer('acl = "read"').allows("acl", "", "read")
    assert not authorizer('acl = "read"').allows("acl", "", "write")
    assert management(ACCESSOR).allows("acl", "", "write")


@pytest.mark.parametrize(
    ("access", "read", "list_", "write"),
    [
        ("write", True, True, True),
        ("list", True, True, False),
        ("read", True, False, False),
        ("deny", False, False, False),
    ],
)
def test_write_grants_all_list_grants_read_read_grants_read(
    access: str, read: bool, list_: bool, write: bool
) -> None:
    authz = authorizer(f'key_prefix "" {{ policy = "{access}" }}', "allow")
    assert (
        authz.allows("key", "a/b", "read"),
        authz.allows("key", "a/b", "list"),
        authz.allows("key", "a/b", "write"),
    ) == (read, list_, write)


def test_mesh_and_peering_fall_back_to_operator() -> None:
    authz = authorizer('operator = "write"\npeering = "read"')
    assert authz.allows("mesh", "", "write")
    assert authz.allows("peering", "", "read")
    assert not authz.allows("peering", "", "write")
    denied = authorizer('operator = "deny"', "allow")
    assert not denied.allows("mesh", "", "read")


def test_homeport_s_own_resources() -> None:
    shipper = authorizer('log = "write"')
    assert shipper.allows("log", "", "write")
    assert not shipper.allows("ui", "", "read")
    reader = authorizer('log = "read"\nui = "read"')
    assert reader.allows("log", "", "read") and not reader.allows("log", "", "write")
    assert reader.allows("ui", "", "read")


@pytest.mark.parametrize(
    ("text", "prefix", "default", "allowed"),
    [
        # write on the prefix and nothing below it that grants less
        ('key_prefix "app/" { policy = "write" }', "app/", "deny", True),
        ('key_prefix "app/" { policy = "write" }', "app/x/", "deny", True),
        # a rule under the prefix that grants less denies the recursive delete
        (
            'key_prefix "app/" { policy = "write" }\nkey "app/keep" { policy = "read" }',
            "app/",
            "deny",
            False,
        ),
        (
            'key_prefix "app/" { policy = "write" }\nkey_prefix "app/s/" { policy = "deny" }',
            "app/",
            "allow",
            False,
        ),
        # the longest prefix rule at the prefix does not grant write
        (
            'key_prefix "" { policy = "write" }\nkey_prefix "app/" { policy = "read" }',
            "app/x",
            "allow",
            False,
        ),
        # no rule applies: the default
        ('key_prefix "other/" { policy = "read" }', "app/", "allow", True),
        ('key_prefix "other/" { policy = "read" }', "app/", "deny", False),
        # an exact write rule at the prefix is not a prefix rule: the default decides
        ('key "app/" { policy = "write" }', "app/", "deny", False),
        # a write rule under the prefix is fine, but the prefix itself still needs one
        ('key_prefix "app/a/" { policy = "write" }', "app/", "deny", False),
        ('key_prefix "app/a/" { policy = "write" }', "app/", "allow", True),
    ],
)
def test_a_recursive_delete_needs_write_on_everything_under_the_prefix(
    text: str, prefix: str, default: str, allowed: bool
) -> None:
    """Consul's KeyWritePrefix (the conditions in its comment, policy_authorizer.go)."""
    authz = authorizer(text, default)
    assert authz.allows_key_write_prefix(prefix) is allowed
    if allowed:
        authz.check_key_write_prefix(prefix)
    else:
        with pytest.raises(PermissionDenied) as caught:
            authz.check_key_write_prefix(prefix)
        assert (caught.value.resource, caught.value.name, caught.value.need) == (
            "key",
            prefix,
            "write",
        )


def test_management_allows_everything() -> None:
    authz = management(ACCESSOR)
    for resource in sorted(authorizer_module.RESOURCES):
        for need in ("read", "write", "list"):
            assert authz.allows(resource, "anything", need)
        assert authz.allows_all(resource, "write")
    assert authz.allows_key_write_prefix("")
    assert authz.management and not authorizer("").management


def test_a_denial_is_worded_as_consul_words_it() -> None:
    """acl/errors.go: PermissionDeniedError.Error()."""
    authz = authorizer('service "web" { policy = "read" }')
    with pytest.raises(PermissionDenied) as caught:
        authz.check("service", "web", "write")
    assert str(caught.value) == (
        f"Permission denied: token with AccessorID '{ACCESSOR}' lacks permission"
        " 'service:write' on \"web\""
    )
    assert caught.value == PermissionDenied(ACCESSOR, "service", "web", "write")
    authz.check("service", "web", "read")  # allowed: nothing raised


def test_a_denial_of_a_name_less_resource_names_none() -> None:
    error = PermissionDenied(ACCESSOR, "operator", "", "read")
    assert str(error) == (
        f"Permission denied: token with AccessorID '{ACCESSOR}' lacks permission 'operator:read'"
    )


def test_a_denial_of_the_anonymous_token_says_so() -> None:
    anonymous = compile_rules((), "deny", ANONYMOUS_ACCESSOR)
    with pytest.raises(PermissionDenied) as caught:
        anonymous.check("key", "app/x", "read")
    assert str(caught.value) == (
        "Permission denied: anonymous token lacks permission 'key:read' on \"app/x\"."
        " The anonymous token is used implicitly when a request does not specify a token."
    )


def test_an_unknown_token_is_acl_not_found() -> None:
    assert str(TokenNotFound()) == "ACL not found"


def test_an_unknown_resource_or_access_is_a_programming_error() -> None:
    authz = authorizer("")
    with pytest.raises(ValueError, match="resource"):
        authz.allows("services", "web", "read")
    with pytest.raises(ValueError, match="access"):
        authz.allows("service", "web", "deny")
    with pytest.raises(ValueError, match="default"):
        compile_rules((), "block", ACCESSOR)


def test_decisions_stay_right_past_the_memo_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memo is bounded: when full it starts again, and answers do not change."""
    monkeypatch.setattr(authorizer_module, "MEMO_LIMIT", 8)
    authz = authorizer(
        'service_prefix "web-" { policy = "write" }\nservice "web-x" { policy = "deny" }'
    )
    for round_ in range(3):
        for i in range(20):
            assert authz.allows("service", f"web-{i}", "write"), round_
            assert not authz.allows("service", f"db-{i}", "read")
        assert not authz.allows("service", "web-x", "read")
    assert len(authz._memo) <= 8


def test_filters_keep_what_the_token_may_read_in_order() -> None:
    authz = authorizer(
        'service_prefix "web" { policy = "read" }\nservice "web-admin" { policy = "deny" }'
    )
    names = ["db", "web", "web-admin", "web-api", "cache"]
    assert filter_names(authz, "service", names) == ["web", "web-api"]
    assert filter_names(authz, "service", names, "write") == []

    @dataclass
    class Entry:
        service: str

    entries = [Entry(n) for n in names]
    kept, dropped = filter_items(authz, "service", entries, lambda e: e.service)
    assert [e.service for e in kept] == ["web", "web-api"] and dropped
    everything = management(ACCESSOR)
    assert filter_items(everything, "service", entries, lambda e: e.service) == (entries, False)


def test_the_acl_core_imports_no_twisted_and_no_part() -> None:
    """homeport.acl is on the shared floor and pure: every face asks it."""
    package = Path(authorizer_module.__file__).parent
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith("twisted"), (path.name, name)
                parts = ("catalog", "dns", "logs", "push", "tls", "web", "http")
                assert not any(name.startswith(f"homeport.{p}") for p in parts), (path.name, name)
