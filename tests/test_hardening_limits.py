"""Issue #21 point 7 against the real daemon: a transaction cannot make a key with no
name (Consul's "Must provide key"), names and IDs have a length limit and service
metadata Consul's limits, and SIGTERM is a clean stop that exits 0, as the README says.
"""

from __future__ import annotations

import base64
import json
import signal

import pytest

from .daemon import Daemon

HUGE = "s" * 100_000


def kv_index(daemon: Daemon) -> str:
    _, headers, _ = daemon.request("GET", "/v1/kv/?recurse")
    return headers["X-Consul-Index"]


@pytest.mark.parametrize("verb", ["set", "cas", "get", "check-not-exists", "delete", "lock"])
def test_a_transaction_op_without_a_key_is_refused_as_consul_does(
    daemon: Daemon, verb: str
) -> None:
    before = kv_index(daemon)
    ops = [
        {"KV": {"Verb": "set", "Key": "fine", "Value": base64.b64encode(b"x").decode()}},
        {"KV": {"Verb": verb, "Key": "", "Value": "", "Session": "nope"}},
    ]
    status, _, body = daemon.request("PUT", "/v1/txn", ops)
    assert status == 409, body
    assert json.loads(body) == {
        "Results": None,
        "Errors": [{"OpIndex": 1, "What": "Must provide key"}],
    }
    assert daemon.request("GET", "/v1/kv/?recurse")[0] == 404  # not even "fine"
    assert kv_index(daemon) == before


def test_delete_tree_of_the_empty_prefix_needs_no_key(daemon: Daemon) -> None:
    assert daemon.request("PUT", "/v1/kv/a/b", "1")[0] == 200
    ops = [{"KV": {"Verb": "delete-tree", "Key": ""}}]
    status, _, body = daemon.request("PUT", "/v1/txn", ops)
    assert status == 200, body
    assert daemon.request("GET", "/v1/kv/a/b")[0] == 404


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ({"Name": HUGE}, "Service name"),
        ({"Name": "web", "ID": HUGE}, "Service ID"),
        ({"Name": "web", "Tags": ["ok", HUGE]}, "Service tag"),
        ({"Name": "web", "Check": {"CheckID": HUGE, "TTL": "10s"}}, "Check ID"),
    ],
)
def test_an_agent_registration_with_a_huge_name_is_refused(
    daemon: Daemon, body: dict[str, object], what: str
) -> None:
    status, _, answer = daemon.request("PUT", "/v1/agent/service/register", body)
    assert status == 400
    assert answer.decode() == f"{what} is too long: 100000 bytes (the limit is 512)"
    assert daemon.get_json("/v1/agent/services") == {}
    assert daemon.get_json("/v1/agent/checks") == {}


def test_a_name_at_the_limit_is_stored(daemon: Daemon) -> None:
    name = "n" * 512
    status, _, body = daemon.request("PUT", "/v1/agent/service/register", {"Name": name})
    assert status == 200, body
    assert list(daemon.get_json("/v1/agent/services")) == [name]


@pytest.mark.parametrize(
    "registration",
    [
        {"Node": HUGE, "Address": "10.0.0.1"},
        {"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": HUGE}},
        {"Node": "n1", "Address": "10.0.0.1", "Check": {"CheckID": HUGE}},
    ],
)
def test_a_catalog_registration_with_a_huge_name_is_refused(
    daemon: Daemon, registration: dict[str, object]
) -> None:
    status, _, body = daemon.request("PUT", "/v1/catalog/register", registration)
    assert status == 400
    assert b"is too long: 100000 bytes" in body
    assert [n["Node"] for n in daemon.get_json("/v1/catalog/nodes")] == [daemon_node(daemon)]


def daemon_node(daemon: Daemon) -> str:
    return str(daemon.get_json("/v1/agent/self")["Config"]["NodeName"])


@pytest.mark.parametrize(
    ("meta", "why"),
    [
        ({"k" * 129: "v"}, f"('{'k' * 129}', 'v'): Key is too long (limit: 128 characters)"),
        ({"k": "v" * 513}, f"('k', '{'v' * 513}'): Value is too long (limit: 512 characters)"),
        ({"consul-x": "v"}, "('consul-x', 'v'): Key prefix 'consul-' is reserved for internal use"),
        ({"a b": "v"}, "('a b', 'v'): Key contains invalid characters"),
    ],
)
def test_service_meta_has_consuls_limits(daemon: Daemon, meta: dict[str, str], why: str) -> None:
    body = {"Name": "web", "Meta": meta}
    status, _, answer = daemon.request("PUT", "/v1/agent/service/register", body)
    assert (status, answer.decode()) == (
        400,
        f"Invalid Service Meta: Couldn't load metadata pair {why}",
    )
    assert daemon.get_json("/v1/agent/services") == {}


def test_more_than_64_meta_pairs_are_refused(daemon: Daemon) -> None:
    meta = {f"k{i}": "v" for i in range(65)}
    status, _, answer = daemon.request(
        "PUT", "/v1/agent/service/register", {"Name": "web", "Meta": meta}
    )
    assert status == 400
    assert answer.decode() == (
        "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs"
    )


def test_sigterm_stops_cleanly_with_exit_status_0(daemon: Daemon) -> None:
    assert daemon.request("PUT", "/v1/agent/service/register", {"Name": "kept"})[0] == 200
    assert daemon.stop(signal.SIGTERM) == 0
    assert "Traceback" not in daemon.output()
    daemon.start()
    assert "kept" in daemon.get_json("/v1/agent/services")
