"""ACL tokens and policies shared through etcd (issue #18): made on one agent, in force
on another at once, and a policy change there forgets the other agent's decisions."""

from __future__ import annotations

from pathlib import Path

from .daemon import wait_for
from .etcd_cluster import Cluster
from .test_acl_api import call, ok
from .test_cluster import start_agent


def test_tokens_and_policies_reach_every_agent(tmp_path: Path, etcd: Cluster) -> None:
    # default allow, so the helpers' anonymous reads see the catalog; the rules decide
    acl = ("--acl", "--acl-default-policy", "allow")
    a = start_agent(tmp_path / "a", "acl-a", etcd, *acl)
    b = start_agent(tmp_path / "b", "acl-b", etcd, *acl)
    try:
        root = ok(a, "PUT", "/v1/acl/bootstrap")["SecretID"]
        assert call(b, "PUT", "/v1/acl/bootstrap")[0] == 403
        policy = ok(
            a, "PUT", "/v1/acl/policy", root, {"Name": "k", "Rules": 'key "k" { policy = "read" }'}
        )
        token = ok(a, "PUT", "/v1/acl/token", root, {"Policies": [{"Name": "k"}]})
        secret = token["SecretID"]
        wait_for(
            lambda: call(b, "GET", "/v1/acl/token/self", secret)[0] == 200, 15, "the token on b"
        )
        status, _, body = call(b, "PUT", "/v1/kv/k", secret, "v")
        assert status == 403 and b"lacks permission 'key:write' on \"k\"" in body
        rules = 'key "k" { policy = "write" }'
        ok(a, "PUT", f"/v1/acl/policy/{policy['ID']}", root, {"Name": "k", "Rules": rules})
        wait_for(lambda: call(b, "PUT", "/v1/kv/k", secret, "v")[0] == 200, 15, "the new rule on b")
        ok(b, "DELETE", f"/v1/acl/token/{token['AccessorID']}", root)
        wait_for(lambda: call(a, "GET", "/v1/kv/k", secret)[0] == 403, 15, "the token gone on a")
        assert call(a, "GET", "/v1/kv/k?raw", root)[2] == b"v"
    finally:
        for agent in (a, b):
            if agent.process is not None and agent.process.poll() is None:
                agent.process.kill()
                agent.process.wait()
