"""py-consul's ACL calls against the real daemon (issue #18): the issue's scenarios as a
Consul user writes them."""

from __future__ import annotations

import consul
import pytest

from tests.daemon import Daemon, DaemonFactory


def client(daemon: Daemon, token: str | None = None) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=daemon.http_port, token=token)


@pytest.fixture
def acl(daemon_factory: DaemonFactory) -> Daemon:
    return daemon_factory(["--acl"]).start()


def test_a_service_web_token(acl: Daemon) -> None:
    root = client(acl).acl.bootstrap()["SecretID"]
    admin = client(acl, root)
    admin.catalog.register("db-host", "10.0.0.9", service={"Service": "db"})
    rules = {"service": {"web": {"policy": "write"}}, "node_prefix": {"": {"policy": "read"}}}
    admin.acl.policy.create("web-only", rules=rules)
    made = admin.acl.token.create(description="ci", policies_name=["web-only"])
    assert made["Policies"][0]["Name"] == "web-only"
    web = client(acl, made["SecretID"])
    assert web.agent.service.register("web", port=8080) is True
    with pytest.raises(consul.ACLPermissionDenied, match="lacks permission 'service:write' on"):
        web.agent.service.register("db", port=5432)
    _, services = web.catalog.services()
    assert services == {"web": []}
    _, everything = admin.catalog.services()
    assert {"web", "db", "consul"} <= set(everything)
    _, nodes = web.health.service("db")
    assert nodes == []
    assert web.acl.token.read_self()["AccessorID"] == made["AccessorID"]
    with pytest.raises(consul.ACLPermissionDenied):
        web.acl.token.list()


def test_key_prefix_app_tokens(acl: Daemon) -> None:
    admin = client(acl, client(acl).acl.bootstrap()["SecretID"])
    admin.kv.put("app/one", "1")
    admin.kv.put("secrets/db", "hunter2")
    admin.acl.policy.create("app", rules={"key_prefix": {"app/": {"policy": "write"}}})
    role = admin.acl.role.create("app-role", policies_name=["app"])
    app = client(acl, admin.acl.token.create(roles_id=[role["ID"]])["SecretID"])
    assert app.kv.put("app/two", "2") is True
    with pytest.raises(consul.ACLPermissionDenied):
        app.kv.put("secrets/new", "x")
    with pytest.raises(consul.ACLPermissionDenied):
        app.kv.get("secrets/db")
    _, entries = app.kv.get("", recurse=True)
    assert [e["Key"] for e in entries] == ["app/one", "app/two"]
    _, keys = app.kv.get("", keys=True)
    assert keys == ["app/one", "app/two"]
    _, value = app.kv.get("app/one")
    assert value is not None and value["Value"] == b"1"


def test_unknown_token_is_acl_not_found(acl: Daemon) -> None:
    client(acl).acl.bootstrap()
    with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
        client(acl, "00000000-dead-beef-0000-000000000000").kv.get("x")
