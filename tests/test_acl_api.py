"""Consul's ACL system against the real daemon (issue #18): bootstrap, tokens, policies,
roles, enforcement and filtering, kept across ``kill -9``."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest

from tests.daemon import Daemon, DaemonFactory
from tests.test_fast_path import exchange, get

ANON_DENIED = "Permission denied: anonymous token lacks permission"


def call(
    d: Daemon, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"X-Consul-Token": token} if token else {}
    return d.request(method, path, body, headers=headers)


def filtered(headers: dict[str, str]) -> bool:
    """Consul's X-Consul-Results-Filtered-By-ACLs (header names are case-blind)."""
    found = {k.lower(): v for k, v in headers.items()}
    return found.get("x-consul-results-filtered-by-acls") == "true"


def ok(d: Daemon, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    status, _, data = call(d, method, path, token, body)
    assert status == 200, (method, path, status, data)
    return json.loads(data) if data else None


@pytest.fixture
def acl(daemon_factory: DaemonFactory) -> Daemon:
    return daemon_factory(["--acl"]).start()


def bootstrap(d: Daemon) -> str:
    token = ok(d, "PUT", "/v1/acl/bootstrap")
    secret: str = token["SecretID"]
    return secret


def token_for(d: Daemon, root: str, rules: str, name: str) -> dict[str, Any]:
    policy = ok(d, "PUT", "/v1/acl/policy", root, {"Name": name, "Rules": rules})
    body = {"Description": name, "Policies": [{"ID": policy["ID"]}]}
    created: dict[str, Any] = ok(d, "PUT", "/v1/acl/token", root, body)
    return created


def test_bootstrap_once_and_kept_across_kill9(acl: Daemon) -> None:
    first = ok(acl, "PUT", "/v1/acl/bootstrap")
    assert first["Policies"] == [
        {"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}
    ]
    status, _, body = call(acl, "PUT", "/v1/acl/bootstrap")
    assert status == 403
    assert body.startswith(b"Permission denied: ACL bootstrap no longer allowed")
    # only the hash is at rest
    assert first["SecretID"].encode() not in (acl.data_dir / "catalog.sqlite3").read_bytes()
    acl.kill9()
    acl.start()
    assert call(acl, "PUT", "/v1/acl/bootstrap")[0] == 403
    me = ok(acl, "GET", "/v1/acl/token/self", first["SecretID"])
    assert me["AccessorID"] == first["AccessorID"]
    listed = ok(acl, "GET", "/v1/acl/tokens", first["SecretID"])
    assert {t["SecretID"] for t in listed} == {"<hidden>"}


def test_unknown_token_and_anonymous_denied(acl: Daemon) -> None:
    bootstrap(acl)
    status, _, body = call(acl, "GET", "/v1/kv/x", "no-such-secret")
    assert (status, body) == (403, b"ACL not found")
    status, _, body = call(acl, "PUT", "/v1/kv/x", None, "v")
    assert status == 403 and body.decode().startswith(ANON_DENIED)
    assert "ACL denied PUT /v1/kv/x: token 00000000-0000-0000-0000-000000000002" in acl.output()


def test_service_write_token(acl: Daemon) -> None:
    root = bootstrap(acl)
    ok(
        acl,
        "PUT",
        "/v1/catalog/register",
        root,
        {"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": "db"}},
    )
    web = token_for(
        acl, root, 'service "web" { policy = "write" }\nnode_prefix "" { policy = "read" }', "web"
    )
    secret = web["SecretID"]
    assert ok(acl, "PUT", "/v1/agent/service/register", secret, {"Name": "web", "Port": 80}) is None
    status, _, body = call(acl, "PUT", "/v1/agent/service/register", secret, {"Name": "db"})
    assert status == 403
    assert body.decode() == (
        f"Permission denied: token with AccessorID '{web['AccessorID']}' lacks permission "
        "'service:write' on \"db\""
    )
    status, headers, data = call(acl, "GET", "/v1/catalog/services", secret)
    assert status == 200 and json.loads(data) == {"web": []}
    assert filtered(headers)
    everything = ok(acl, "GET", "/v1/catalog/services", root)
    assert {"web", "db", "consul"} <= set(everything)
    assert ok(acl, "GET", "/v1/catalog/service/db", secret) == []
    assert [e["Service"]["Service"] for e in ok(acl, "GET", "/v1/health/service/web", secret)] == [
        "web"
    ]
    assert ok(acl, "GET", "/v1/health/service/db", secret) == []
    assert len(ok(acl, "GET", "/v1/health/service/db", root)) == 1
    assert set(ok(acl, "GET", "/v1/agent/services", secret)) == {"web"}
    dump = ok(acl, "GET", "/v1/internal/ui/nodes", secret)
    assert {n["Node"] for n in dump} == {"n1", "testnode"}
    assert {s["Service"] for n in dump for s in n["Services"]} == {"web"}
    assert {c["ServiceName"] for n in dump for c in n["Checks"]} <= {"", "web"}


def test_key_prefix_token(acl: Daemon) -> None:
    root = bootstrap(acl)
    for key in ("app/a", "app/b", "other/c"):
        assert ok(acl, "PUT", f"/v1/kv/{key}", root, "v") is True
    app = token_for(acl, root, 'key_prefix "app/" { policy = "write" }', "app")["SecretID"]
    assert ok(acl, "PUT", "/v1/kv/app/new", app, "v") is True
    assert call(acl, "PUT", "/v1/kv/other/new", app, "v")[0] == 403
    assert call(acl, "GET", "/v1/kv/other/c", app)[0] == 403
    assert ok(acl, "GET", "/v1/kv/?keys", app) == ["app/a", "app/b", "app/new"]
    _, headers, data = call(acl, "GET", "/v1/kv/?recurse", app)
    assert [e["Key"] for e in json.loads(data)] == ["app/a", "app/b", "app/new"]
    assert filtered(headers)
    assert call(acl, "GET", "/v1/kv/other/?recurse", app)[0] == 404
    assert call(acl, "DELETE", "/v1/kv/?recurse", app)[0] == 403
    assert call(acl, "DELETE", "/v1/kv/app/?recurse", app)[0] == 200
    assert ok(acl, "GET", "/v1/kv/?keys", root) == ["other/c"]


def test_policy_that_does_not_parse(acl: Daemon) -> None:
    root = bootstrap(acl)
    status, _, body = call(
        acl, "PUT", "/v1/acl/policy", root, {"Name": "bad", "Rules": 'key "a" {\n  policy = }'}
    )
    assert status == 400
    assert b"Failed to parse ACL rules" in body and b"line 2" in body


def test_policy_change_takes_effect_at_once(acl: Daemon) -> None:
    root = bootstrap(acl)
    token = token_for(acl, root, 'key "k" { policy = "read" }', "p")
    secret = token["SecretID"]
    assert call(acl, "PUT", "/v1/kv/k", secret, "v")[0] == 403
    policy_id = token["Policies"][0]["ID"]
    ok(
        acl,
        "PUT",
        f"/v1/acl/policy/{policy_id}",
        root,
        {"Name": "p", "Rules": 'key "k" { policy = "write" }'},
    )
    assert ok(acl, "PUT", "/v1/kv/k", secret, "v") is True
    ok(acl, "DELETE", f"/v1/acl/token/{token['AccessorID']}", root)
    assert call(acl, "GET", "/v1/kv/k", secret)[:3:2] == (403, b"ACL not found")


def test_roles_clone_and_token_self(acl: Daemon) -> None:
    root = bootstrap(acl)
    policy = ok(
        acl,
        "PUT",
        "/v1/acl/policy",
        root,
        {"Name": "ev", "Rules": 'event_prefix "" { policy = "write" }'},
    )
    role = ok(acl, "PUT", "/v1/acl/role", root, {"Name": "events", "Policies": [{"Name": "ev"}]})
    assert role["Policies"] == [{"ID": policy["ID"], "Name": "ev"}]
    assert ok(acl, "GET", "/v1/acl/role/name/events", root)["ID"] == role["ID"]
    token = ok(acl, "PUT", "/v1/acl/token", root, {"Roles": [{"ID": role["ID"]}]})
    assert ok(acl, "PUT", "/v1/event/fire/deploy", token["SecretID"])["Name"] == "deploy"
    clone = ok(acl, "PUT", f"/v1/acl/token/{token['AccessorID']}/clone", root, {})
    assert clone["SecretID"] != token["SecretID"] and clone["Roles"] == token["Roles"]
    me = ok(acl, "GET", "/v1/acl/token/self", clone["SecretID"])
    assert me["AccessorID"] == clone["AccessorID"]
    assert call(acl, "GET", "/v1/acl/tokens", clone["SecretID"])[0] == 403
    assert ok(acl, "GET", "/v1/acl/policy/name/global-management", root)["Rules"]


def test_management_token_option_and_default_allow(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(["--acl", "--acl-default-policy", "allow", "--token", "s3cret"]).start()
    assert ok(d, "PUT", "/v1/kv/a", None, "v") is True  # anonymous, default allow
    assert call(d, "GET", "/v1/acl/tokens")[0] == 403  # acl takes a rule, never the default
    assert ok(d, "GET", "/v1/acl/tokens", "s3cret")


def test_acl_off_endpoints_say_so(daemon: Daemon) -> None:
    status, _, body = call(daemon, "PUT", "/v1/acl/bootstrap")
    assert (status, body) == (401, b"ACL support disabled")


def test_cached_answers_do_not_leak(acl: Daemon) -> None:
    """What a management token read (and the read cache keeps) is not what the anonymous
    token is answered, whether by twisted.web or the connection's fast path."""
    root = bootstrap(acl)
    assert ok(acl, "PUT", "/v1/kv/secret", root, "s3") is True
    for _ in range(3):
        assert call(acl, "GET", "/v1/kv/secret?raw", root)[2] == b"s3"
        assert len(ok(acl, "GET", "/v1/catalog/services", root)) >= 1
    for _ in range(3):
        status, _, body = call(acl, "GET", "/v1/kv/secret?raw")
        assert status == 403 and body.decode().startswith(ANON_DENIED)
        status, headers, body = call(acl, "GET", "/v1/catalog/services")
        assert (status, json.loads(body)) == (200, {}) and filtered(headers)
    status, _, body = call(acl, "GET", "/v1/agent/monitor")
    assert status == 403 and b"'agent:read'" in body


def test_token_from_bearer_and_query(acl: Daemon) -> None:
    root = bootstrap(acl)
    status, _, _ = acl.request("GET", "/v1/acl/tokens", headers={"Authorization": f"Bearer {root}"})
    assert status == 200
    assert acl.request("GET", f"/v1/acl/tokens?token={root}")[0] == 200
    assert acl.request("GET", "/v1/acl/tokens?token=wrong")[:3:2] == (403, b"ACL not found")


def fast_answers_seen_by(d: Daemon, token: str) -> int:
    """The fast path's answer count, from /metrics (agent:read under --acl)."""
    status, _, text = call(d, "GET", "/metrics", token)
    assert status == 200, text
    found = re.search(rb"^homeport_http_fast_answers_total (\S+)$", text, re.MULTILINE)
    assert found is not None
    return int(float(found.group(1)))


def test_the_fast_path_answers_the_anonymous_token_only(acl: Daemon) -> None:
    """Requests without a token take the fast path (their answer is the anonymous
    token's); a token's own answer is served from it to that token alone (cached per
    AccessorID: tests/test_acl_fast_path.py)."""
    root = bootstrap(acl)
    assert ok(acl, "PUT", "/v1/kv/secret", root, "s3") is True
    with_token = get("/v1/kv/secret?raw", headers=f"Host: x\r\nX-Consul-Token: {root}\r\n")
    anonymous = get("/v1/kv/secret?raw")
    services = get("/v1/catalog/services")
    before = fast_answers_seen_by(acl, root)
    answers = exchange(acl, with_token, with_token, anonymous, anonymous, services, services)
    assert [a.endswith(b"\r\n\r\ns3") for a in answers[:2]] == [True, True]
    assert all(a.startswith(b"HTTP/1.1 403") for a in answers[2:4])
    assert [a.endswith(b"\r\n\r\n{}") for a in answers[4:]] == [True, True]
    # the token's second read and the second anonymous catalog read
    assert fast_answers_seen_by(acl, root) == before + 2


def test_prepared_query_execution_shows_only_readable_nodes(acl: Daemon) -> None:
    root = bootstrap(acl)
    ok(acl, "PUT", "/v1/agent/service/register", root, {"Name": "db", "Port": 5432})
    made = ok(acl, "POST", "/v1/query", root, {"Name": "db", "Service": {"Service": "db"}})
    rules = 'query_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }'
    reader = token_for(acl, root, rules, "q")["SecretID"]
    assert len(ok(acl, "GET", f"/v1/query/{made['ID']}/execute", root)["Nodes"]) == 1
    status, headers, body = call(acl, "GET", f"/v1/query/{made['ID']}/execute", reader)
    assert status == 200 and json.loads(body)["Nodes"] == [] and filtered(headers)
    assert (
        call(acl, "POST", "/v1/query", reader, {"Name": "x", "Service": {"Service": "db"}})[0]
        == 403
    )


def test_a_parked_blocking_query_loses_its_token(acl: Daemon) -> None:
    """A token deleted while its blocking query waits: the query is answered 403 then,
    not with the data once the wait is over."""
    root = bootstrap(acl)
    ok(acl, "PUT", "/v1/kv/k", root, "v")
    token = token_for(acl, root, 'key "k" { policy = "read" }', "kr")
    _, headers, _ = call(acl, "GET", "/v1/kv/k", token["SecretID"])
    index = headers["X-Consul-Index"]
    answers: list[tuple[int, bytes]] = []

    def block() -> None:
        got = acl.request(
            "GET",
            f"/v1/kv/k?index={index}&wait=5m",
            headers={"X-Consul-Token": token["SecretID"]},
            timeout=120,
        )
        answers.append((got[0], got[2]))

    waiting = threading.Thread(target=block)
    waiting.start()
    time.sleep(0.5)  # let it park; had it not yet, it is refused the same way
    ok(acl, "DELETE", f"/v1/acl/token/{token['AccessorID']}", root)
    waiting.join(100)
    assert answers == [(403, b"ACL not found")]
