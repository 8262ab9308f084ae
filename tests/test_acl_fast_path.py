"""The fast path with ``--acl`` (issue #18): a GET carrying ``X-Consul-Token`` is
answered from the answer cached for that token's AccessorID, so it is fast, and an
answer cached for one token never reaches another token, a deleted one or one whose
policy changed.  Keep-alive HTTP/1.1 GETs with only ignorable headers, as the fast
path takes them, against the real daemon."""

from __future__ import annotations

import http.client
import json
from typing import Any

from .daemon import Daemon, DaemonFactory
from .test_acl_api import ok, token_for

ROOT = "fast-root"


def get(d: Daemon, path: str, token: str) -> tuple[int, Any]:
    """Three GETs on one keep-alive connection (the first fills the cache, the others
    are the fast path's); all must agree."""
    connection = http.client.HTTPConnection("127.0.0.1", d.http_port, timeout=10)
    answers = []
    try:
        for _ in range(3):
            connection.request("GET", path, headers={"X-Consul-Token": token})
            response = connection.getresponse()
            answers.append((response.status, response.read()))
    finally:
        connection.close()
    assert len(set(answers)) == 1, answers
    status, body = answers[0]
    return status, json.loads(body) if status == 200 else body


def test_an_answer_cached_for_one_token_never_reaches_another(
    daemon_factory: DaemonFactory,
) -> None:
    d = daemon_factory(["--acl", "--token", ROOT]).start()
    for name in ("web", "db"):
        body = {"Node": f"n-{name}", "Address": "10.8.0.1", "Service": {"Service": name}}
        ok(d, "PUT", "/v1/catalog/register", ROOT, body)
    web = token_for(d, ROOT, 'service "web" { policy = "read" }', "web")
    db = token_for(d, ROOT, 'service "db" { policy = "read" }', "db")
    for _ in range(2):
        assert set(get(d, "/v1/catalog/services", web["SecretID"])[1]) == {"web"}
        assert set(get(d, "/v1/catalog/services", db["SecretID"])[1]) == {"db"}
        assert set(get(d, "/v1/catalog/services", ROOT)[1]) >= {"web", "db", "consul"}
    # another token with the same rights gets its own entry, the same answer
    web2 = token_for(d, ROOT, 'service "web" { policy = "read" }', "web2")
    assert set(get(d, "/v1/catalog/services", web2["SecretID"])[1]) == {"web"}
    # an unknown token is refused, not answered from anyone's entry
    assert get(d, "/v1/catalog/services", "no-such-token")[0] == 403
    # the web token's policy widened: the next answer shows it
    policy = ok(d, "GET", f"/v1/acl/token/{web['AccessorID']}", ROOT)["Policies"][0]["ID"]
    rules = 'service_prefix "" { policy = "read" }'
    ok(d, "PUT", f"/v1/acl/policy/{policy}", ROOT, {"Name": "web", "Rules": rules})
    assert set(get(d, "/v1/catalog/services", web["SecretID"])[1]) >= {"web", "db"}
    assert set(get(d, "/v1/catalog/services", db["SecretID"])[1]) == {"db"}
    # deleted: refused at once
    ok(d, "DELETE", f"/v1/acl/token/{web['AccessorID']}", ROOT)
    assert get(d, "/v1/catalog/services", web["SecretID"])[0] == 403
    assert set(get(d, "/v1/catalog/services", db["SecretID"])[1]) == {"db"}
