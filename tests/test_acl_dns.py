"""DNS under ``--acl`` (issue #18): answers follow the anonymous token's policy, as
Consul's DNS asks with the agent's token.  The real daemon, real ``dig``: what the
anonymous token may not read is NXDOMAIN (Consul's answer when its filtered lookup
comes back empty), and a change to its policies shows in the next answer, made here,
on another agent through etcd, or with ``--workers`` (whose copies hold no ACL records,
so they leave DNS to the primary)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .daemon import Daemon, DaemonFactory, wait_for
from .etcd_cluster import Cluster
from .test_acl_api import ok
from .test_cluster import start_agent
from .test_workers import WORKERS, children, primary_stopped

ROOT = "acl-dns-root"
ANONYMOUS = "00000000-0000-0000-0000-000000000002"
EVERYTHING = 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }'


def dig(d: Daemon, name: str, *options: str) -> tuple[str, list[str]]:
    """(status, the answer section's data) for *name* asked of *d*'s DNS."""
    command = ["dig", "@127.0.0.1", "-p", str(d.dns_port), "+time=2", "+tries=2"]
    result = subprocess.run(
        [*command, "+noall", "+comments", "+answer", *options, name],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"status: (\w+)", result.stdout)
    status = found.group(1) if found else "NO ANSWER"
    answers = [
        line.split()[-1]
        for line in result.stdout.splitlines()
        if line.strip() and not line.startswith(";")
    ]
    return status, sorted(answers)


def answers(d: Daemon, name: str, *options: str) -> list[str]:
    status, found = dig(d, name, *options)
    assert status == "NOERROR", (name, status)
    return found


def not_there(d: Daemon, name: str) -> bool:
    return dig(d, name) == ("NXDOMAIN", [])


def register(d: Daemon, node: str, address: str, service: str, token: str = ROOT) -> None:
    body = {"Node": node, "Address": address, "Service": {"Service": service, "Port": 80}}
    ok(d, "PUT", "/v1/catalog/register", token, body)


def policy(d: Daemon, name: str, rules: str, token: str = ROOT) -> str:
    made: dict[str, Any] = ok(d, "PUT", "/v1/acl/policy", token, {"Name": name, "Rules": rules})
    return str(made["ID"])


def anonymous_gets(d: Daemon, *policies: str, token: str = ROOT) -> None:
    """The anonymous token's policies are now *policies* (IDs), updated as Consul's
    clients do it."""
    body = {"AccessorID": ANONYMOUS, "Policies": [{"ID": p} for p in policies]}
    ok(d, "PUT", f"/v1/acl/token/{ANONYMOUS}", token, body)


@pytest.fixture
def deny(daemon_factory: DaemonFactory) -> Daemon:
    d = daemon_factory(["--acl", "--token", ROOT, "--dns", "127.0.0.1:0"]).start()
    register(d, "n-web", "10.7.0.1", "web")
    register(d, "n-db", "10.7.0.2", "db")
    return d


def test_default_deny_answers_nothing_the_anonymous_token_may_not_read(deny: Daemon) -> None:
    for name in ("web.service.consul", "db.service.consul", "consul.service.consul"):
        assert dig(deny, name) == ("NXDOMAIN", []), name
    for name in ("n-web.node.consul", "testnode.node.consul"):
        assert dig(deny, name) == ("NXDOMAIN", []), name
    assert dig(deny, "10.7.0.1", "-x")[0] == "REFUSED"  # an address it does not know
    # but the HTTP API with the management token sees both
    assert {s for s in ok(deny, "GET", "/v1/catalog/services", ROOT)} >= {"web", "db"}
    # the zone itself is no secret
    assert dig(deny, "consul", "SOA")[0] == "NOERROR"


def test_the_anonymous_token_s_service_and_node_rules_decide(deny: Daemon) -> None:
    web = policy(deny, "web", 'service "web" { policy = "read" }')
    anonymous_gets(deny, web)
    # a service's instances need node:read on their node too (Consul's filter)
    assert not_there(deny, "web.service.consul")
    nodes = policy(deny, "nodes", 'node_prefix "n-" { policy = "read" }')
    anonymous_gets(deny, web, nodes)
    assert answers(deny, "web.service.consul") == ["10.7.0.1"]
    assert len(answers(deny, "web.service.consul", "SRV")) == 1
    assert not_there(deny, "db.service.consul")  # node read, but not service read
    assert answers(deny, "n-db.node.consul") == ["10.7.0.2"]
    assert not_there(deny, "testnode.node.consul")  # not under n-
    assert answers(deny, "10.7.0.2", "-x") == ["n-db.node.dc1.consul."]
    # narrowing the policy itself (not the token) shows at once too
    narrower = {"Name": "nodes", "Rules": 'node "n-db" { policy = "read" }'}
    ok(deny, "PUT", f"/v1/acl/policy/{nodes}", ROOT, narrower)
    assert not_there(deny, "web.service.consul")  # n-web is no longer readable
    assert not_there(deny, "n-web.node.consul")
    assert answers(deny, "n-db.node.consul") == ["10.7.0.2"]
    # taking the policies away takes the answers away
    anonymous_gets(deny)
    assert not_there(deny, "n-db.node.consul")
    assert dig(deny, "10.7.0.2", "-x")[0] == "REFUSED"


def test_a_prepared_query_needs_query_read_and_shows_what_may_be_read(deny: Daemon) -> None:
    register(deny, "n-web2", "10.7.0.3", "web")
    query = {"Name": "webq", "Service": {"Service": "web"}}
    ok(deny, "POST", "/v1/query", ROOT, query)
    anonymous_gets(deny, policy(deny, "all", EVERYTHING))
    assert answers(deny, "web.service.consul") == ["10.7.0.1", "10.7.0.3"]
    assert not_there(deny, "webq.query.consul")  # no query:read
    rules = 'query "webq" { policy = "read" }\nservice "web" { policy = "read" }\n'
    limited = policy(deny, "webq", rules + 'node "n-web2" { policy = "read" }')
    anonymous_gets(deny, limited)
    assert answers(deny, "webq.query.consul") == ["10.7.0.3"]  # only n-web2 is readable


def test_default_allow_answers_everything(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(
        ["--acl", "--acl-default-policy", "allow", "--token", ROOT, "--dns", "127.0.0.1:0"]
    ).start()
    register(d, "n-web", "10.7.0.1", "web")
    register(d, "n-db", "10.7.0.2", "db")
    assert answers(d, "web.service.consul") == ["10.7.0.1"]
    assert answers(d, "db.service.consul") == ["10.7.0.2"]
    assert answers(d, "n-db.node.consul") == ["10.7.0.2"]
    assert answers(d, "consul.service.consul") == ["127.0.0.1"]
    # an explicit deny still bites under allow
    anonymous_gets(d, policy(d, "no-db", 'service "db" { policy = "deny" }'))
    assert not_there(d, "db.service.consul")
    assert answers(d, "web.service.consul") == ["10.7.0.1"]


def test_without_acl_nothing_changes(daemon_factory: DaemonFactory) -> None:
    d = daemon_factory(["--dns", "127.0.0.1:0"]).start()
    status, _, body = d.request(
        "PUT",
        "/v1/catalog/register",
        {"Node": "n-web", "Address": "10.7.0.1", "Service": {"Service": "web"}},
    )
    assert status == 200, body
    assert answers(d, "web.service.consul") == ["10.7.0.1"]
    assert answers(d, "n-web.node.consul") == ["10.7.0.1"]


def test_workers_leave_dns_to_the_primary_under_acl(daemon_factory: DaemonFactory) -> None:
    """A worker's copy holds no ACL records: under --acl it must not answer DNS (it
    would answer from the unfiltered catalog)."""
    args = ["--acl", "--token", ROOT, "--workers", str(WORKERS), "--dns", "127.0.0.1:0"]
    d = daemon_factory(args).start(timeout=30)
    wait_for(lambda: len(children(d)) == WORKERS - 1, 30, "the workers")
    wait_for(lambda: d.output().count("serving reads") >= WORKERS - 1, 30, "the workers")
    register(d, "n-web", "10.7.0.1", "web")
    for _ in range(12):  # each dig from a fresh port: the kernel spreads them
        assert not_there(d, "web.service.consul")
    with primary_stopped(d):
        stopped = [dig(d, "web.service.consul", "+time=1", "+tries=1") for _ in range(12)]
    assert all(status == "NO ANSWER" for status, _ in stopped), stopped
    anonymous_gets(d, policy(d, "all", EVERYTHING))
    for _ in range(6):
        assert answers(d, "web.service.consul") == ["10.7.0.1"]


def test_a_policy_changed_on_another_agent_changes_the_answers(
    tmp_path: Path, etcd: Cluster
) -> None:
    acl = ("--acl", "--acl-default-policy", "allow", "--token", ROOT)
    a = start_agent(tmp_path / "a", "acl-dns-a", etcd, *acl)
    b = start_agent(tmp_path / "b", "acl-dns-b", etcd, *acl)
    try:
        register(a, "n-web", "10.7.0.1", "web")
        wait_for(lambda: dig(b, "web.service.consul")[1] == ["10.7.0.1"], 15, "web on b")
        no_web = policy(a, "no-web", 'service "web" { policy = "deny" }')
        anonymous_gets(a, no_web)
        wait_for(lambda: not_there(b, "web.service.consul"), 15, "web gone from b's DNS")
        assert not_there(a, "web.service.consul")
        ok(b, "PUT", f"/v1/acl/policy/{no_web}", ROOT, {"Name": "no-web", "Rules": ""})
        wait_for(lambda: dig(a, "web.service.consul")[1] == ["10.7.0.1"], 15, "web back on a")
    finally:
        for agent in (a, b):
            if agent.process is not None and agent.process.poll() is None:
                agent.process.kill()
                agent.process.wait()
