"""Decoding request bodies the way Consul's Go decoder does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from homeport import units
from homeport.catalog import consul, definitions
from homeport.catalog.errors import (
    BadRequest,
    BadSessionTTL,
    ServerRefusal,
    SessionTTLOutOfRange,
    TooLarge,
    TooManyOps,
    TxnValueTooLarge,
)
from homeport.catalog.model import KVOp, Service, UnknownVerbOp


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("0", 0), (10_000_000_000, 10)],
)
def test_durations_parse_like_go(text: str | int, seconds: float) -> None:
    assert units.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10", "abc", "1x", "s", True])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(units.DurationError):
        units.parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(10, "10s"), (90, "1m30s"), (3600, "1h0m0s"), (0.5, "500ms"), (0, "0s"), (1.5, "1.5s")],
)
def test_durations_format_like_go(seconds: float, text: str) -> None:
    assert units.format_duration(seconds) == text


def test_keys_match_case_insensitively_and_snake_case() -> None:
    fields = consul.AGENT_SERVICE.decode(
        {"name": "web", "PORT": 80, "enable_tag_override": True, "check": {"ttl": "10s"}}
    )
    assert fields["Name"] == "web"
    assert fields["Port"] == 80
    assert fields["EnableTagOverride"] is True
    assert fields["Check"]["TTL"] == 10


def test_unknown_fields_are_refused_with_consuls_text() -> None:
    with pytest.raises(BadRequest) as error:
        consul.AGENT_SERVICE.decode({"Name": "web", "Bogus": 1})
    assert str(error.value) == 'Request decode failed: json: unknown field "Bogus"'


def test_wrong_types_name_the_field() -> None:
    with pytest.raises(BadRequest) as error:
        consul.AGENT_SERVICE.decode({"Name": "web", "Port": "80"})
    assert "Port of type int" in str(error.value)


def test_empty_body_is_eof() -> None:
    with pytest.raises(BadRequest) as error:
        consul.parse_body(b"  ")
    assert str(error.value) == "Request decode failed: EOF"


@pytest.mark.parametrize("body", [b'{"TTL": NaN}', b'{"Port": Infinity}', b"[-Infinity]"])
def test_nan_and_infinity_are_not_json(body: bytes) -> None:
    """Python's json takes them, Go's (Consul's) does not: a NaN duration or port must
    not get as far as a timer or an int()."""
    with pytest.raises(BadRequest, match="Request decode failed: invalid character"):
        consul.parse_body(body)


def test_service_checks_get_consuls_ids() -> None:
    service, checks = consul.agent_service(
        consul.AGENT_SERVICE.decode(
            {"Name": "web", "Checks": [{"TTL": "5s"}, {"TCP": "127.0.0.1:80", "Interval": "1s"}]}
        ),
        "n1",
    )
    assert service.id == "web"
    assert [c.check_id for c in checks] == ["service:web:1", "service:web:2"]
    assert [c.type for c in checks] == ["ttl", "tcp"]
    assert all(c.status == "critical" for c in checks)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"HTTP": "http://x/"}, "Interval must be > 0"),
        ({"TTL": "5s", "Interval": "1s"}, "Interval and TTL cannot both be specified"),
        ({"GRPC": "127.0.0.1:9", "Interval": "1s"}, "not supported"),
        ({"TTL": "5s", "Status": "bogus"}, "Invalid check status"),
    ],
)
def test_invalid_checks_are_refused(check: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequest) as error:
        consul.agent_service(consul.AGENT_SERVICE.decode({"Name": "web", "Check": check}), "n1")
    assert message in str(error.value)


def test_missing_name_and_bad_weights() -> None:
    with pytest.raises(BadRequest, match="Missing service name"):
        consul.agent_service(consul.AGENT_SERVICE.decode({"Port": 1}), "n1")
    with pytest.raises(BadRequest, match="Invalid Weights"):
        consul.agent_service(
            consul.AGENT_SERVICE.decode({"Name": "a", "Weights": {"Passing": 0}}), "n1"
        )


def test_catalog_register_needs_node_and_address() -> None:
    """Consul answers these with 500, and clients expect that."""
    with pytest.raises(ServerRefusal, match="Must provide node"):
        consul.catalog_registration(consul.CATALOG_REGISTER.decode({"Address": "1.2.3.4"}), "dc1")
    with pytest.raises(ServerRefusal, match="Must provide address"):
        consul.catalog_registration(consul.CATALOG_REGISTER.decode({"Node": "n"}), "dc1")


def test_txn_ops_know_consul_s_verbs_and_keep_the_others_for_their_turn() -> None:
    ops = consul.txn_ops(
        [{"KV": {"Verb": "SET", "Key": "a", "Value": "eA=="}}, {"kv": {"Verb": "frob"}}], 128, 8
    )
    assert ops == [KVOp("set", "a", b"x"), UnknownVerbOp("frob")]
    with pytest.raises(TooManyOps) as many:
        consul.txn_ops([{"KV": {}}] * 3, 2, 8)
    assert str(many.value) == "Transaction contains too many operations (3 > 2)"
    with pytest.raises(TxnValueTooLarge) as large:
        consul.txn_ops([{"KV": {"Verb": "set", "Key": "k", "Value": "eHh4"}}], 2, 2)
    assert str(large.value) == 'Value for key "k" is too large (3 > 2 bytes)'


def test_session_ttls_are_durations_within_consul_s_bounds() -> None:
    with pytest.raises(BadSessionTTL) as bad:
        consul.session_from(consul.SESSION.decode({"TTL": "x"}), "id", "n1")
    assert bad.value.given == "x" and str(bad.value).startswith("Session TTL 'x' invalid: ")
    with pytest.raises(SessionTTLOutOfRange) as error:
        consul.session_from(consul.SESSION.decode({"TTL": "5s"}), "id", "n1")
    assert str(error.value) == "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_TXN_OP = st.fixed_dictionaries(
    {},
    optional={
        "Verb": st.sampled_from(["set", "get", "cas", "lock", "x"]) | _JSON,
        "Key": st.text(max_size=8) | _JSON,
        "Value": st.sampled_from(["", "aGk=", "%%"]) | _JSON,
        "Flags": st.integers() | _JSON,
        "Index": st.integers() | _JSON,
        "Session": _JSON,
    },
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from(["KV", "kv", "Node"]), _TXN_OP | _JSON, max_size=2))
    | _JSON
)
def test_any_txn_body_is_ops_or_a_4xx_never_a_crash(body: object) -> None:
    try:
        ops = consul.txn_ops(body, 128, 512 * 1024)
    except (BadRequest, TooLarge):
        return
    for op in ops:
        assert isinstance(op, UnknownVerbOp) or isinstance(op.value, bytes)


@settings(max_examples=500, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "LockDelay": st.floats() | st.integers() | st.text(max_size=6) | _JSON,
            "TTL": st.sampled_from(["10s", "5s", "1h", "x"]) | _JSON,
            "Checks": _JSON,
            "NodeChecks": _JSON,
            "ServiceChecks": _JSON,
            "Behavior": _JSON,
            "Name": _JSON,
        },
    )
)
@example({"LockDelay": float("nan")})  # json.loads("NaN") gives one
@example({"LockDelay": float("inf")})
@example({"LockDelay": -1})
def test_any_session_body_is_a_session_or_a_clear_error(body: dict[str, object]) -> None:
    try:
        session = consul.session_from(consul.SESSION.decode(body), "id", "node")
    except (BadRequest, BadSessionTTL, SessionTTLOutOfRange):
        return
    assert 0 <= session.lock_delay <= 60 and 0 <= session.ttl <= 86400
    consul.session_json(session)  # encodable


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"service": {"name": "web", "port": NaN}}', "invalid JSON: NaN is not a JSON number"),
        ('{"service": {"name": "web", "port": 1e999}}', "invalid JSON: 1e999 is not"),
        ('{"service": {"name": "web", "port": 80.5}}', "Port of type int"),
    ],
)
def test_a_definition_file_with_non_json_numbers_is_a_bad_file(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "web.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(reason)):
        definitions.parse_file(path, "n1")


def test_check_intervals_below_a_second_are_raised_to_one_as_consul_does() -> None:
    fast = consul.check_definition(
        consul.CHECK.decode({"HTTP": "http://127.0.0.1:1/", "Interval": "1us"})
    )
    assert fast.interval == 1.0
    slow = consul.check_definition(consul.CHECK.decode({"TCP": "127.0.0.1:1", "Interval": "5s"}))
    assert slow.interval == 5.0


# ---------------------------------------------------------------------------
# Request bodies, as Consul's Go decoder reads them (issue #14, item 2)


@pytest.mark.parametrize("node", ["Node", "node", "NODE", "nOdE"])
def test_body_keys_match_field_names_whatever_their_case(node: str) -> None:
    fields = consul.CATALOG_DEREGISTER.decode_body(
        {node: "n1", "datacenter": "dc2", "SERVICEID": "web"}
    )
    assert fields == {"Node": "n1", "Datacenter": "dc2", "ServiceID": "web"}


def test_body_keys_fold_as_go_folds_them() -> None:
    """Go's foldName: the long s folds to s and the Kelvin sign to k, as in Go."""
    fields = consul.CATALOG_SERVICE.decode_body({"\u017fervice": "db", "\u212aind": ""})
    assert fields == {"Service": "db", "Kind": ""}


@pytest.mark.parametrize(
    ("schema", "body", "unknown"),
    [
        (consul.CATALOG_REGISTER, {"Node": "n", "node_meta": {}}, "node_meta"),
        (consul.CATALOG_REGISTER, {"Node": "n", "skip-node-update": True}, "skip-node-update"),
        (consul.AGENT_SERVICE, {"Name": "web", "socket_path": "/s"}, "socket_path"),
        (consul.AGENT_SERVICE, {"Service": "web"}, "Service"),
        (consul.CHECK, {"Name": "c", "TTL": "5s", "CheckID": "c"}, "CheckID"),
        (
            consul.CHECK,
            {"Name": "c", "TTL": "5s", "success_before_passing": 2},
            "success_before_passing",
        ),
    ],
)
def test_only_consuls_own_aliases_are_other_spellings(
    schema: consul.Schema, body: dict[str, object], unknown: str
) -> None:
    """In a request body a key is a field's name in any case, or one of the snake_case
    aliases Consul declares for that struct; anything else is Consul's 400."""
    with pytest.raises(BadRequest) as error:
        schema.decode_body(body)
    assert str(error.value) == f'Request decode failed: json: unknown field "{unknown}"'
    schema.decode(body)  # a definition file (Consul's config format) takes them


def test_consuls_snake_case_aliases_on_agent_endpoints() -> None:
    """structs.ServiceDefinition / CheckType / CheckDefinition ``UnmarshalJSON``."""
    fields = consul.AGENT_SERVICE.decode_body(
        {
            "name": "web",
            "enable_tag_override": True,
            "tagged_addresses": {"lan": {"Address": "10.0.0.1", "Port": 80}},
            "check": {
                "script_args": ["/bin/check"],
                "interval": "10s",
                "deregister_critical_service_after": "1m",
                "docker_container_id": "c1",
                "tls_server_name": "web.example",
                "tls_skip_verify": True,
                "grpc_use_tls": True,
                "h2ping_use_tls": True,
                "service_id": "ignored",
            },
        }
    )
    assert fields["EnableTagOverride"] is True
    assert fields["TaggedAddresses"] == {"lan": {"Address": "10.0.0.1", "Port": 80}}
    check = fields["Check"]
    assert check["Args"] == ["/bin/check"]
    assert check["DeregisterCriticalServiceAfter"] == 60
    assert (check["DockerContainerID"], check["TLSServerName"]) == ("c1", "web.example")
    assert check["TLSSkipVerify"] and check["GRPCUseTLS"] and check["H2PingUseTLS"]
    registered = consul.CHECK.decode_body(
        {"name": "disk", "ttl": "30s", "service_id": "web", "disable_redirects": True}
    )
    assert registered["ServiceID"] == "web" and registered["DisableRedirects"] is True


def test_a_services_check_is_consuls_check_type() -> None:
    """CheckType has CheckID, no ID, and no disable_redirects alias (CheckDefinition,
    the body of /v1/agent/check/register, has both)."""
    for key in ("ID", "disable_redirects"):
        with pytest.raises(BadRequest, match=f'unknown field "{key}"'):
            consul.AGENT_SERVICE.decode_body({"Name": "web", "Check": {key: "x", "TTL": "5s"}})
    fields = consul.AGENT_SERVICE.decode_body(
        {"Name": "web", "Checks": [{"CheckID": "alive", "TTL": "5s"}]}
    )
    assert fields["Checks"][0]["CheckID"] == "alive"


@pytest.mark.parametrize(
    ("check", "args"),
    [
        ({"ScriptArgs": ["a"], "Args": ["b"], "script_args": ["c"]}, ["a"]),
        ({"script_args": ["c"], "args": ["b"]}, ["b"]),
        ({"ScriptArgs": [], "script_args": ["c"]}, ["c"]),
    ],
)
def test_script_args_spellings_win_in_consuls_order(
    check: dict[str, object], args: list[str]
) -> None:
    """``ScriptArgs``, then ``args``, then ``script_args``: the first not empty."""
    fields = consul.CHECK.decode_body({"Name": "c", "Interval": "5s", **check})
    assert fields["Args"] == args


def test_alias_precedence_follows_consuls_unmarshal_json() -> None:
    either = consul.AGENT_SERVICE.decode_body(
        {"Name": "w", "EnableTagOverride": False, "enable_tag_override": True}
    )
    assert either["EnableTagOverride"] is True  # if aux.EnableTagOverrideSnake { ... }
    canonical = consul.CHECK.decode_body(
        {
            "Name": "c",
            "TTL": "5s",
            "DeregisterCriticalServiceAfter": "0s",
            "deregister_critical_service_after": "1m",
        }
    )
    assert canonical["DeregisterCriticalServiceAfter"] == 0  # if aux.X == nil
    snake = consul.CHECK.decode_body(
        {"Name": "c", "TTL": "5s", "TLSServerName": "", "tls_server_name": "x"}
    )
    assert snake["TLSServerName"] == "x"  # if t.TLSServerName == ""


def test_the_last_of_two_spellings_of_one_field_wins_as_in_go() -> None:
    assert consul.CATALOG_DEREGISTER.decode_body({"Node": "a", "node": "b"}) == {"Node": "b"}


def test_txn_ops_match_case_insensitively() -> None:
    [op] = consul.txn_ops([{"kV": {"verb": "set", "KEY": "a", "value": "eA=="}}], 128, 8)
    assert op == KVOp("set", "a", b"x")


_KEYS = st.sampled_from(
    ["Name", "name", "enable_tag_override", "tagged_addresses", "check", "Checks", "Port"]
) | st.text(max_size=8)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(_KEYS, _JSON, max_size=5))
def test_any_service_body_decodes_or_is_a_400_never_a_crash(body: dict[str, object]) -> None:
    try:
        consul.agent_service(consul.AGENT_SERVICE.decode_body(body), "n1")
    except (BadRequest, ServerRefusal):
        return


# ---------------------------------------------------------------------------
# Tagged addresses in Consul's shape (issue #14, item 8)


def register(body: dict[str, object]) -> Service:
    service, _ = consul.agent_service(consul.AGENT_SERVICE.decode_body(body), "n1")
    return service


def test_tagged_addresses_take_consuls_shape_whatever_the_case() -> None:
    service = register(
        {
            "Name": "web",
            "tagged_addresses": {
                "lan": {"address": "10.0.0.1", "PORT": 8080},
                "wan": {"ADDRESS": "203.0.113.1"},
                "virtual": None,
            },
        }
    )
    assert service.tagged_addresses == {
        "lan": {"Address": "10.0.0.1", "Port": 8080},
        "wan": {"Address": "203.0.113.1", "Port": 0},
        "virtual": {"Address": "", "Port": 0},
    }
    assert consul.node_service_json(service, "dc1")["TaggedAddresses"] == service.tagged_addresses


@pytest.mark.parametrize(
    ("address", "added"),
    [
        ("10.0.0.5", {"lan_ipv4", "wan_ipv4"}),
        ("::ffff:10.0.0.5", {"lan_ipv4", "wan_ipv4"}),
        ("2001:db8::5", {"lan_ipv6", "wan_ipv6"}),
        ("web.internal", set()),
        ("", set()),
    ],
)
def test_the_agent_adds_tagged_addresses_for_the_services_own_ip(
    address: str, added: set[str]
) -> None:
    """Consul's ``Agent.addServiceInternal``: lan/wan for the address's IP version, with
    the service's port, unless given."""
    service = register({"Name": "web", "Address": address, "Port": 80})
    assert set(service.tagged_addresses) == added
    for name in added:
        assert service.tagged_addresses[name] == {"Address": address, "Port": 80}
    given = {"lan_ipv4": {"Address": "10.9.9.9", "Port": 1}}
    kept = register({"Name": "web", "Address": "10.0.0.5", "TaggedAddresses": given})
    assert kept.tagged_addresses["lan_ipv4"] == {"Address": "10.9.9.9", "Port": 1}


@pytest.mark.parametrize(
    ("tagged", "message"),
    [
        (
            {"lan": "10.0.0.1"},
            "Request decode failed: json: cannot unmarshal string into Go struct field "
            "structs.ServiceDefinition.TaggedAddresses of type structs.ServiceAddress",
        ),
        ({"lan": {"Addr": "10.0.0.1"}}, 'Request decode failed: json: unknown field "Addr"'),
        ({"lan": {"Port": "80"}}, "Port of type int"),
        (["10.0.0.1"], "of type map[string]structs.ServiceAddress"),
    ],
)
def test_tagged_addresses_of_another_shape_are_consuls_400(tagged: object, message: str) -> None:
    with pytest.raises(BadRequest) as error:
        register({"Name": "web", "TaggedAddresses": tagged})
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("name", "address"),
    [("lan_ipv4", "2001:db8::1"), ("wan_ipv4", "web"), ("lan_ipv6", "10.0.0.1")],
)
def test_ip_tagged_addresses_must_be_of_their_version(name: str, address: str) -> None:
    """Consul's ``Agent.validateService``, an agent error: 500."""
    with pytest.raises(ServerRefusal) as error:
        register({"Name": "web", "TaggedAddresses": {name: {"Address": address}}})
    version = name[-1]
    assert (
        str(error.value) == f'Service tagged address "{name}" must be a valid ipv{version} address'
    )


def test_what_an_older_homeport_stored_comes_back_in_consuls_shape() -> None:
    stored = Service(
        "n1", "web", "web", tagged_addresses={"lan": "10.0.0.1", "wan": {"address": "x", "port": 9}}
    )
    shaped = {"lan": {"Address": "10.0.0.1", "Port": 0}, "wan": {"Address": "x", "Port": 9}}
    assert consul.node_service_json(stored)["TaggedAddresses"] == shaped
    assert consul.catalog_service_json(None, stored, "dc1")["ServiceTaggedAddresses"] == shaped


def test_a_catalog_entry_without_tagged_addresses_leaves_them_out() -> None:
    """``structs.ServiceNode.ServiceTaggedAddresses`` is ``json:",omitempty"``."""
    assert "ServiceTaggedAddresses" not in consul.catalog_service_json(
        None, Service("n1", "web", "web"), "dc1"
    )
    _, [service], _, _ = consul.catalog_registration(
        consul.CATALOG_REGISTER.decode_body(
            {
                "Node": "n1",
                "Address": "10.0.0.9",
                "Service": {"Service": "db", "TaggedAddresses": {"lan": {"address": "10.0.0.9"}}},
            }
        ),
        "dc1",
    )
    assert service.tagged_addresses == {"lan": {"Address": "10.0.0.9", "Port": 0}}
