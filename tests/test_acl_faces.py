"""The faces beside the catalog under ``--acl`` (issue #18), against the real daemon:
log ingest needs ``log:write`` and search ``log:read``; event streams deliver only what
the token may read and publishing needs ``event:write``; the dashboard needs ``ui:read``
(its login takes a SecretID); ``/metrics`` needs agent read on the node.  Tokens are
made over HTTP as a user would (``/v1/acl/policy``, ``/v1/acl/token``)."""

from __future__ import annotations

import http.client
import json
import logging
import logging.handlers
import urllib.parse
from typing import Any

import pytest
import socketio  # type: ignore[import-untyped]  # python-socketio ships no types

from tests.daemon import Daemon, DaemonFactory
from tests.test_acl_api import ANON_DENIED, bootstrap, call, ok, token_for
from tests.test_push_socketio import wait_for
from tests.test_push_sse import SSEClient


@pytest.fixture
def acl(daemon_factory: DaemonFactory) -> Daemon:
    return daemon_factory(["--acl"]).start()


def secret(d: Daemon, root: str, rules: str, name: str) -> str:
    found: str = token_for(d, root, rules, name)["SecretID"]
    return found


def search(d: Daemon, token: str | None, query: str) -> tuple[int, Any]:
    status, _, body = call(d, "GET", "/v1/logs?" + query, token)
    return status, json.loads(body) if status == 200 else body.decode()


def test_log_ingest_needs_log_write_and_search_log_read(
    acl: Daemon, logger: logging.Logger
) -> None:
    """HTTPHandler with a log-write token (as Basic auth's password) stores; without
    one it is refused and nothing is stored; searching needs log read."""
    root = bootstrap(acl)
    writer = secret(acl, root, 'log = "write"', "shipper")
    reader = secret(acl, root, 'log = "read"', "reader")
    host = f"127.0.0.1:{acl.http_port}"
    good = logging.handlers.HTTPHandler(host, "/log", method="POST", credentials=("x", writer))
    logger.addHandler(good)
    logger.warning("stored with the token")
    logger.removeHandler(good)
    logger.addHandler(logging.handlers.HTTPHandler(host, "/log", method="POST"))
    logger.warning("sent without a token")

    status, found = search(acl, reader, "logger=" + logger.name)
    assert status == 200
    assert [r["message"] for r in found["records"]] == ["stored with the token"]
    status, _, body = acl.request("POST", "/log", b"msg=anonymous&name=x&levelname=INFO")
    assert status == 403 and body.decode().startswith(ANON_DENIED), body
    assert "log:write" in body.decode()
    status, text = search(acl, writer, "logger=" + logger.name)  # write grants read
    assert status == 200
    status, text = search(acl, None, "logger=" + logger.name)
    assert status == 403 and "lacks permission 'log:read'" in text
    status, text = search(acl, "no-such-secret", "")
    assert (status, text) == (403, "ACL not found\n")
    assert "ACL denied GET /v1/logs: token 00000000-0000-0000-0000-000000000002" in acl.output()


def publish(d: Daemon, topic: str, token: str | None, data: Any) -> tuple[int, bytes]:
    status, _, body = call(d, "POST", f"/v1/events/{topic}", token, data)
    return status, body


def test_publishing_needs_event_write_on_the_topic(acl: Daemon) -> None:
    root = bootstrap(acl)
    token = secret(acl, root, 'event_prefix "deploy/" { policy = "write" }', "deployer")
    status, body = publish(acl, "deploy/web", token, {"v": 1})
    assert status == 200, body
    status, body = publish(acl, "other", token, {"v": 1})
    assert status == 403
    accessor = ok(acl, "GET", "/v1/acl/token/self", token)["AccessorID"]
    assert body.decode() == (
        f"Permission denied: token with AccessorID '{accessor}' lacks permission "
        "'event:write' on \"other\"\n"
    )
    assert publish(acl, "deploy/web", None, 1)[0] == 403
    assert publish(acl, "deploy/web", "no-such-secret", 1) == (403, b"ACL not found\n")
    assert f"ACL denied POST /v1/events/other: token {accessor} lacks event:write" in (acl.output())


def test_an_event_stream_delivers_only_what_its_token_may_read(acl: Daemon) -> None:
    """A kv stream shows only the keys the token may read; a user topic it may not
    read is refused up front; a prefix subscription is filtered per topic."""
    root = bootstrap(acl)
    rules = 'key_prefix "app/" { policy = "read" }\nevent_prefix "ok/" { policy = "read" }'
    token = secret(acl, root, rules, "app-reader")
    kv = SSEClient(acl, "topic=kv", {"X-Consul-Token": token})
    users = SSEClient(acl, "topic=*", {"X-Consul-Token": token})
    try:
        assert kv.status == 200 and users.status == 200
        ok(acl, "PUT", "/v1/kv/secret/db", root, "hidden")
        ok(acl, "PUT", "/v1/kv/app/name", root, "shown")
        first = kv.next(timeout=10).json()
        assert first["key"] == "app/name", first
        assert publish(acl, "no/x", root, "hidden")[0] == 200
        assert publish(acl, "ok/x", root, "shown")[0] == 200
        seen = users.next(timeout=10)
        while seen.event in ("kv", "catalog"):  # app/name: readable; secret/db never
            assert seen.json().get("key") != "secret/db"
            seen = users.next(timeout=10)
        assert (seen.event, seen.data) == ("ok/x", "shown")
    finally:
        kv.close()
        users.close()
    refused = SSEClient(acl, "topic=no/x", {"X-Consul-Token": token})
    assert refused.status == 403
    assert b"lacks permission 'event:read' on \"no/x\"" in refused.response.read()
    refused.close()
    logs = SSEClient(acl, "topic=logs")
    assert logs.status == 403
    logs.close()
    unknown = SSEClient(acl, "topic=kv&token=no-such-secret")
    assert unknown.status == 403 and unknown.response.read() == b"ACL not found\n"
    unknown.close()


def test_socketio_subscriptions_follow_the_token(acl: Daemon) -> None:
    """The token in Socket.IO's auth: a topic it may not read is refused, a readable
    one delivered; an unknown token cannot connect."""
    root = bootstrap(acl)
    token = secret(acl, root, 'event "ok" { policy = "read" }', "sio")
    client = socketio.Client(reconnection=False)
    received: list[Any] = []
    client.on("ok", received.append)
    client.connect(acl.url, transports=["polling"], auth={"token": token}, wait_timeout=5)
    try:
        assert "lacks permission 'event:read' on \"no\"" in client.call(
            "subscribe", "no", timeout=5
        ).get("error", "")
        assert client.call("subscribe", "ok", timeout=5) == {"topics": ["ok"]}
        publish(acl, "ok", root, "yes")
        wait_for(lambda: received)
        assert received[0]["data"] == "yes"
    finally:
        client.disconnect()
    stranger = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        stranger.connect(acl.url, transports=["polling"], auth={"token": "nope"}, wait_timeout=5)


def dashboard(
    d: Daemon, method: str, path: str, form: dict[str, str] | None = None, cookie: str = ""
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=10)
    headers = {"Cookie": cookie} if cookie else {}
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body, headers)
    response = conn.getresponse()
    fields = {k.lower(): v for k, v in response.getheaders()}
    text = response.read().decode()
    conn.close()
    return response.status, fields, text


def test_the_dashboard_needs_ui_read_and_logs_in_with_a_secret_id(acl: Daemon) -> None:
    root = bootstrap(acl)
    viewer = secret(acl, root, 'ui = "read"', "viewer")
    other = secret(acl, root, 'key_prefix "" { policy = "read" }', "no-ui")
    status, fields, _ = dashboard(acl, "GET", "/ui/")
    assert status == 302 and "/ui/login" in fields["location"]
    status, _, page = dashboard(acl, "GET", "/ui/login")
    assert status == 200 and "SecretID" in page
    status, _, page = dashboard(acl, "POST", "/ui/login", {"token": "no-such-secret"})
    assert status == 403 and "ACL not found" in page
    status, _, page = dashboard(acl, "POST", "/ui/login", {"token": other})
    assert status == 403 and "lacks permission &#39;ui:read&#39;" in page
    status, _, page = dashboard(acl, "GET", "/ui/", cookie=f"homeport_token={other}")
    assert status == 403 and "ui:read" in page
    status, fields, _ = dashboard(acl, "POST", "/ui/login", {"token": viewer})
    assert status == 303 and fields["set-cookie"].startswith(f"homeport_token={viewer};")
    status, _, page = dashboard(acl, "GET", "/ui/", cookie=f"homeport_token={viewer}")
    assert status == 200 and "<html" in page
    status, _, info = dashboard(acl, "GET", "/ui/info.json", cookie=f"homeport_token={viewer}")
    assert status == 200 and json.loads(info)["node"]
    assert "ACL denied GET /ui/: token" in acl.output()


def test_metrics_need_agent_read_on_the_node(acl: Daemon) -> None:
    root = bootstrap(acl)
    node = ok(acl, "GET", "/v1/agent/self", root)["Config"]["NodeName"]
    allowed = secret(acl, root, f'agent "{node}" {{ policy = "read" }}', "scraper")
    elsewhere = secret(acl, root, 'agent "other-node" { policy = "read" }', "elsewhere")
    status, _, body = call(acl, "GET", "/metrics", allowed)
    assert status == 200 and b"homeport_catalog_nodes" in body
    status, _, body = call(acl, "GET", "/metrics", elsewhere)
    assert status == 403 and f"lacks permission 'agent:read' on \"{node}\"".encode() in body
    status, _, body = call(acl, "GET", "/metrics")
    assert status == 403 and body.decode().startswith(ANON_DENIED)
    status, _, body = call(acl, "GET", "/metrics?token=" + root)
    assert status == 200


def test_without_acl_the_faces_keep_the_token_rules(daemon_factory: DaemonFactory) -> None:
    """--token alone: reads open, writes need the token, as before --acl existed."""
    d = daemon_factory(["--token", "s3cret"]).start()
    assert call(d, "GET", "/metrics")[0] == 200
    assert call(d, "GET", "/v1/logs")[0] == 200
    assert publish(d, "demo", None, 1)[0] == 403
    assert publish(d, "demo", "s3cret", 1)[0] == 200
    assert d.request("POST", "/log", b"msg=x&name=y")[0] == 401


def test_the_dashboard_s_reads_carry_its_login(acl: Daemon) -> None:
    """A page's own GETs (no ``Origin``, ``Sec-Fetch-Site: same-origin`` from the
    browser) read with the logged-in token; the cookie from another origin of the same
    site (``same-site``) or with no such header is not taken: the anonymous token reads."""
    root = bootstrap(acl)
    reader = secret(acl, root, 'log = "read"', "dashboard")
    cookie = {"Cookie": f"homeport_token={reader}"}
    status, _, _ = acl.request(
        "GET", "/v1/logs", headers={**cookie, "Sec-Fetch-Site": "same-origin"}
    )
    assert status == 200
    for other in ({"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"}, {}):
        status, _, body = acl.request("GET", "/v1/logs", headers={**cookie, **other})
        assert status == 403 and "lacks permission 'log:read'" in body.decode(), other
