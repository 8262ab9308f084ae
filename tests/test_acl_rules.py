"""Consul's ACL rule language (homeport.acl.rules).

Cases ported from Consul's ``acl/policy_test.go`` (TestPolicySourceParse): the same
rules in HCL and JSON give the same rules; every resource refuses a policy it does not
know; name-less resources may be empty.  Added: where a bad policy went wrong (line and
column), and what Consul's Go decoder would silently drop (unknown resources, fields).
"""

from __future__ import annotations

import pytest

from homeport.acl import PolicyError, Rule, parse_rules

BASIC_HCL = """
agent_prefix "bar" {
    policy = "write"
}
agent "foo" {
    policy = "read"
}
event_prefix "" {
    policy = "read"
}
event "foo" {
    policy = "write"
}
event "bar" {
    policy = "deny"
}
key_prefix "" {
    policy = "read"
}
key_prefix "foo/" {
    policy = "write"
}
key_prefix "foo/bar/" {
    policy = "read"
}
key "foo/bar/baz" {
    policy = "deny"
}
keyring = "deny"
node_prefix "" {
    policy = "read"
}
node "foo" {
    policy = "write"
}
node "bar" {
    policy = "deny"
}
operator = "deny"
mesh = "deny"
peering = "deny"
service_prefix "" {
    policy = "write"
}
service "foo" {
    policy = "read"
}
session "foo" {
    policy = "write"
}
session "bar" {
    policy = "deny"
}
session_prefix "baz" {
    policy = "deny"
}
query_prefix "" {
    policy = "read"
}
query "foo" {
    policy = "write"
}
query "bar" {
    policy = "deny"
}
"""

BASIC_JSON = """
{
  "agent_prefix": {"bar": {"policy": "write"}},
  "agent": {"foo": {"policy": "read"}},
  "event_prefix": {"": {"policy": "read"}},
  "event": {"foo": {"policy": "write"}, "bar": {"policy": "deny"}},
  "key_prefix": {
    "": {"policy": "read"},
    "foo/": {"policy": "write"},
    "foo/bar/": {"policy": "read"}
  },
  "key": {"foo/bar/baz": {"policy": "deny"}},
  "keyring": "deny",
  "node_prefix": {"": {"policy": "read"}},
  "node": {"foo": {"policy": "write"}, "bar": {"policy": "deny"}},
  "operator": "deny",
  "mesh": "deny",
  "peering": "deny",
  "service_prefix": {"": {"policy": "write"}},
  "service": {"foo": {"policy": "read"}},
  "session_prefix": {"baz": {"policy": "deny"}},
  "session": {"foo": {"policy": "write"}, "bar": {"policy": "deny"}},
  "query_prefix": {"": {"policy": "read"}},
  "query": {"foo": {"policy": "write"}, "bar": {"policy": "deny"}}
}
"""

BASIC_RULES = {
    Rule("agent", "bar", True, "write"),
    Rule("agent", "foo", False, "read"),
    Rule("event", "", True, "read"),
    Rule("event", "foo", False, "write"),
    Rule("event", "bar", False, "deny"),
    Rule("key", "", True, "read"),
    Rule("key", "foo/", True, "write"),
    Rule("key", "foo/bar/", True, "read"),
    Rule("key", "foo/bar/baz", False, "deny"),
    Rule("keyring", "", False, "deny"),
    Rule("node", "", True, "read"),
    Rule("node", "foo", False, "write"),
    Rule("node", "bar", False, "deny"),
    Rule("operator", "", False, "deny"),
    Rule("mesh", "", False, "deny"),
    Rule("peering", "", False, "deny"),
    Rule("service", "", True, "write"),
    Rule("service", "foo", False, "read"),
    Rule("session", "foo", False, "write"),
    Rule("session", "bar", False, "deny"),
    Rule("session", "baz", True, "deny"),
    Rule("query", "", True, "read"),
    Rule("query", "foo", False, "write"),
    Rule("query", "bar", False, "deny"),
}


@pytest.mark.parametrize("text", [BASIC_HCL, BASIC_JSON], ids=["hcl", "json"])
def test_every_resource_parses_the_same_from_hcl_and_json(text: str) -> None:
    """Consul's "Basic" case: every resource, exact and prefix, in either syntax."""
    rules = parse_rules(text)
    assert set(rules) == BASIC_RULES
    assert len(rules) == len(BASIC_RULES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # "Service No Intentions"
        ('service "foo" { policy = "write" }', [Rule("service", "foo", False, "write")]),
        ('{ "service": { "foo": { "policy": "write" }}}', [Rule("service", "foo", False, "write")]),
        # "Service Intentions": an explicit intention rule beside the service rule
        (
            'service "foo" { policy = "write" intentions = "read" }',
            [Rule("service", "foo", False, "write"), Rule("intention", "foo", False, "read")],
        ),
        (
            '{ "service": { "foo": { "policy": "write", "intentions": "read" }}}',
            [Rule("service", "foo", False, "write"), Rule("intention", "foo", False, "read")],
        ),
        # "Keyring Empty", "Operator Empty", "Mesh Empty", "Peering Empty"
        ('keyring = ""', []),
        ('{ "operator": "" }', []),
        ('mesh = ""', []),
        ('peering = ""', []),
        # key rules take "list" too (Consul's KeyList)
        ('key_prefix "app/" { policy = "list" }', [Rule("key", "app/", True, "list")]),
        # homeport's own resources
        (
            'log = "write"\nui = "read"',
            [Rule("log", "", False, "write"), Rule("ui", "", False, "read")],
        ),
        # no rules at all
        ("", []),
        ("  \n# nothing but a comment\n", []),
        ("{}", []),
    ],
)
def test_small_policies_parse_to_their_rules(text: str, expected: list[Rule]) -> None:
    assert list(parse_rules(text)) == expected


BAD_POLICIES = [
    ('service "foo" { policy = "write" intentions = "foo" }', "Invalid service intentions policy"),
    ('acl = "list"', "Invalid acl policy"),
    ('agent "foo" { policy = "nope" }', "Invalid agent policy"),
    ('agent_prefix "foo" { policy = "nope" }', "Invalid agent_prefix policy"),
    ('key "foo" { policy = "nope" }', "Invalid key policy"),
    ('key_prefix "foo" { policy = "nope" }', "Invalid key_prefix policy"),
    ('node "foo" { policy = "nope" }', "Invalid node policy"),
    ('node_prefix "foo" { policy = "nope" }', "Invalid node_prefix policy"),
    ('service "foo" { policy = "nope" }', "Invalid service policy"),
    ('service_prefix "foo" { policy = "nope" }', "Invalid service_prefix policy"),
    ('session "foo" { policy = "nope" }', "Invalid session policy"),
    ('session_prefix "foo" { policy = "nope" }', "Invalid session_prefix policy"),
    ('event "foo" { policy = "nope" }', "Invalid event policy"),
    ('event_prefix "foo" { policy = "nope" }', "Invalid event_prefix policy"),
    ('query "foo" { policy = "nope" }', "Invalid query policy"),
    ('query_prefix "foo" { policy = "nope" }', "Invalid query_prefix policy"),
    ('keyring = "nope"', "Invalid keyring policy"),
    ('operator = "nope"', "Invalid operator policy"),
    ('mesh = "nope"', "Invalid mesh policy"),
    ('peering = "nope"', "Invalid peering policy"),
    # only key rules take "list"
    ('service "foo" { policy = "list" }', "Invalid service policy"),
    ('operator = "list"', "Invalid operator policy"),
    # a block without a policy grants nothing Consul knows
    ('node "foo" { }', "Invalid node policy"),
]


def _as_json(hcl_text: str) -> str:
    """The JSON form of one of BAD_POLICIES' one-liners."""
    head, _, body = hcl_text.partition("{")
    if not body:
        key, _, value = hcl_text.partition("=")
        return f'{{ "{key.strip()}": {value.strip()} }}'
    resource, name = head.split()
    fields = [f.split("=") for f in body.rstrip("} ").split('" ') if "=" in f]
    inner = ", ".join(f'"{k.strip()}": "{v.strip().strip(chr(34))}"' for k, v in fields)
    return f'{{ "{resource}": {{ {name}: {{ {inner} }}}}}}'


@pytest.mark.parametrize(("text", "message"), BAD_POLICIES)
@pytest.mark.parametrize("syntax", ["hcl", "json"])
def test_a_policy_a_resource_does_not_take_is_refused(text: str, message: str, syntax: str) -> None:
    """Consul's "Bad Policy - ..." cases, in both syntaxes: the error starts with
    Consul's words."""
    source = text if syntax == "hcl" else _as_json(text)
    with pytest.raises(PolicyError) as caught:
        parse_rules(source)
    assert caught.value.message.startswith(message), (source, caught.value.message)
    assert str(caught.value).startswith(f"Failed to parse ACL rules: {message}")
    assert caught.value.line >= 1
    assert caught.value.column >= 1


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        # HCL that does not parse: pyhcl's parser error, placed on the token
        ('service "web" {\n  policy = \n}', 3, 1, "unexpected RIGHTBRACE"),
        ('service "web" {\n  policy = "write" }}', 2, 21, "unexpected RIGHTBRACE"),
        # the lexer's error
        ('operator = "read"\nkey "a" { policy = "read" } $', 2, 29, "Illegal character '$'"),
        ('service "web" {\n  policy = "write', 2, 18, "EOF before closing string quote"),
        # the text ends too early: where it ends
        ('service "web" { policy = "write" ', 1, 33, "Unexpected end of file"),
        # JSON that does not parse: json's own position
        ('{"service": {"web": {"policy": "write"}}', 1, 41, "Expecting ',' delimiter"),
        ('{\n  "operator": read\n}', 2, 15, "Expecting value"),
        # parses, but Consul refuses it: where the bad value is written
        ('service "web" {\n  policy = "nope"\n}', 2, 12, "Invalid service policy"),
        (
            'key_prefix "a/" { policy = "read" }\nkey "b" {\n\tpolicy = "nope"\n}',
            3,
            11,
            "Invalid key",
        ),
        ('{\n  "service": {"web": {"policy": "nope"}}\n}', 2, 33, "Invalid service policy"),
        ('node_prefix "" { policy = "read" }\noperator = "admin"', 2, 12, "Invalid operator"),
        # a resource Consul does not have
        ('service "a" { policy = "read" }\nservices "b" { policy = "read" }', 2, 1, "Unknown ACL"),
        # a field a block does not take
        ('service "a" {\n  polcy = "read"\n}', 2, 3, 'Unknown field "polcy"'),
        # a named resource without a name, a name-less one with a block
        ('service { policy = "write" }', 1, 1, "service rules take a name"),
        ('operator "x" { policy = "read" }', 1, 1, "operator takes one access"),
        ('service "a" { policy = 1 }', 1, 24, "policy must be a string"),
    ],
)
def test_a_bad_policy_says_where(text: str, line: int, column: int, fragment: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_rules(text)
    error = caught.value
    assert fragment in error.message
    assert (error.line, error.column) == (line, column), error
    assert str(error) == (
        f"Failed to parse ACL rules: {error.message} at line {line}, column {column}"
    )


def test_a_policy_error_without_a_position_says_none() -> None:
    assert str(PolicyError("bad", 0, 0)) == "Failed to parse ACL rules: bad"


def test_parsing_the_same_rules_twice_gives_the_same_rules() -> None:
    """Rules are parsed once per text (a cache); what comes back is the same value."""
    text = 'service "web" { policy = "write" }'
    assert parse_rules(text) == parse_rules(text) == (Rule("service", "web", False, "write"),)


def test_a_name_is_any_string_and_may_be_empty() -> None:
    rules = parse_rules(
        'key "a b/ü\\"q" { policy = "read" }\nservice_prefix "" { policy = "read" }'
    )
    assert rules == (Rule("key", 'a b/ü"q', False, "read"), Rule("service", "", True, "read"))


@pytest.mark.parametrize(
    "text",
    [
        'service "a" { policy = "write" }\nservice "b" { policy = "read" }\n'
        'service "a" { policy = "deny" }',
        '{"service": {"a": {"policy": "write"}, "b": {"policy": "read"}, "a": {"policy": "deny"}}}',
        # HCL's JSON form of repeated blocks: arrays of objects
        '{"service": [{"a": {"policy": "write"}}, {"b": [{"policy": "read"}]}, '
        '{"a": {"policy": "deny"}}]}',
    ],
    ids=["hcl", "json", "json-arrays"],
)
def test_a_block_written_twice_gives_both_rules_to_merge(text: str) -> None:
    """Consul decodes repeated blocks into a list and merges them (deny wins), where
    pyhcl alone would keep only the last."""
    rules = parse_rules(text)
    assert len(rules) == 3
    assert set(rules) == {
        Rule("service", "a", False, "write"),
        Rule("service", "b", False, "read"),
        Rule("service", "a", False, "deny"),
    }


@pytest.mark.parametrize(
    ("text", "argument", "line", "column"),
    [
        ('operator = "read"\noperator = "write"', "operator", 2, 1),
        ('service "a" {\n  policy = "read"\n  policy = "write"\n}', "policy", 3, 3),
        ('{"operator": "read",\n "operator": "write"}', "operator", 2, 2),
        ('{"key": {"k": {"policy": "read", "policy": "deny"}}}', "policy", 1, 34),
    ],
)
def test_an_argument_set_twice_is_refused_as_consul_refuses_it(
    text: str, argument: str, line: int, column: int
) -> None:
    """policy_ce.go decodes with DecodeErrorOnDuplicates."""
    with pytest.raises(PolicyError) as caught:
        parse_rules(text)
    assert caught.value.message == (
        f'The argument "{argument}" was already set. Each argument can only be defined once'
    )
    assert (caught.value.line, caught.value.column) == (line, column)
