"""Several agents, one catalog: three real etcd members and three homeport agents on
loopback (issue #16).  Register on one agent, read on another; kill agents and etcd
members with -9 and watch what clients see."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import consul
import pytest

from .daemon import Daemon, wait_for
from .etcd_cluster import Cluster
from .test_etcd_client import _certificates
from .test_push_sse import SSEClient

TTL = 3  # --agent-ttl: short, so that a dead agent is noticed quickly


def start_agent(workdir: Path, name: str, etcd: Cluster, *extra: str) -> Daemon:
    workdir.mkdir(parents=True, exist_ok=True)
    hosts = ",".join(e.split("://", 1)[1] for e in etcd.endpoints)
    scheme = "etcds" if etcd.endpoints[0].startswith("https://") else "etcd"
    agent = Daemon(workdir=workdir, node=name)
    agent.start(
        [
            "--catalog",
            f"{scheme}://{hosts}",
            "--agent-ttl",
            f"{TTL}s",
            "--dns",
            "127.0.0.1:0",
            *extra,
        ]
    )
    wait_for(lambda: node_listed(agent, name), 20, f"{name} in its own catalog")
    return agent


def node_listed(agent: Daemon, name: str) -> bool:
    status, _, body = agent.request("GET", "/v1/catalog/nodes")
    return status == 200 and name in {n["Node"] for n in json.loads(body)}


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory, etcd: Cluster) -> Iterator[list[Daemon]]:
    started = [
        start_agent(tmp_path_factory.mktemp(name), name, etcd) for name in ("ag-a", "ag-b", "ag-c")
    ]
    try:
        yield started
    finally:
        for agent in started:
            if agent.process is not None and agent.process.poll() is None:
                agent.process.kill()
                agent.process.wait()


def dig(agent: Daemon, name: str) -> list[str]:
    command = ["dig", "@127.0.0.1", "-p", str(agent.dns_port), "+short", "+time=3", "+tries=2"]
    result = subprocess.run([*command, name], capture_output=True, text=True, check=True)
    return sorted(result.stdout.split())


def register(agent: Daemon, service: dict[str, Any]) -> None:
    status, _, body = agent.request("PUT", "/v1/agent/service/register", service)
    assert status == 200, body


def serf(agent: Daemon, node: str) -> str:
    checks = agent.get_json(f"/v1/health/node/{node}")
    return str(next(c["Status"] for c in checks if c["CheckID"] == "serfHealth"))


def entries(agent: Daemon, prefix: str) -> list[dict[str, Any]]:
    """The KV entries under *prefix* on *agent* ([] when there are none)."""
    status, _, body = agent.request("GET", f"/v1/kv/{prefix}?recurse")
    return list(json.loads(body)) if status == 200 else []


def test_register_on_one_agent_dig_and_curl_any_other(agents: list[Daemon]) -> None:
    a, b, c = agents
    assert all(node_listed(x, n) for x in agents for n in ("ag-a", "ag-b", "ag-c"))
    register(a, {"Name": "shop", "ID": "shop-1", "Address": "10.1.0.1", "Port": 80})
    # The answer came back once the commit reached agent A; B and C follow its watch.
    wait_for(lambda: dig(c, "shop.service.consul") == ["10.1.0.1"], 5, "shop in C's DNS")
    [instance] = b.get_json("/v1/catalog/service/shop")
    assert instance["Node"] == "ag-a" and instance["ServicePort"] == 80
    _, headers, _ = b.request("GET", "/v1/catalog/service/shop")
    assert int(headers["X-Consul-Index"]) >= instance["ModifyIndex"]
    assert headers["X-Consul-Knownleader"] == "true"
    # The instance belongs to A: deregistering it through A removes it everywhere.
    assert a.request("PUT", "/v1/agent/service/deregister/shop-1")[0] == 200
    wait_for(lambda: b.get_json("/v1/catalog/service/shop") == [], 5, "shop gone on B")


def test_a_blocking_query_on_one_agent_wakes_for_a_write_on_another(
    agents: list[Daemon],
) -> None:
    a, b, _ = agents
    assert a.request("PUT", "/v1/kv/watched", b"1")[0] == 200
    _, headers, _ = b.request("GET", "/v1/kv/watched")
    index = headers["X-Consul-Index"]
    woke: list[float] = []

    def watch() -> None:
        started = time.monotonic()
        status, _, _ = b.request("GET", f"/v1/kv/watched?index={index}&wait=20s", timeout=30)
        assert status == 200
        woke.append(time.monotonic() - started)

    watcher = threading.Thread(target=watch)
    watcher.start()
    time.sleep(0.5)
    assert a.request("PUT", "/v1/kv/watched", b"2")[0] == 200
    watcher.join(30)
    assert woke and woke[0] < 15, woke
    [entry] = b.get_json("/v1/kv/watched")
    assert entry["Value"] == "Mg=="


def race(*calls: Any) -> list[Any]:
    """Run the calls at the same moment in threads; their results."""
    results: list[Any] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_cas_contended_from_two_agents_has_exactly_one_winner(agents: list[Daemon]) -> None:
    a, b, _ = agents
    for n in range(15):
        key = f"/v1/kv/race/{n}?cas=0"
        results = race(
            lambda key=key: a.request("PUT", key, b"a")[2],
            lambda key=key: b.request("PUT", key, b"b")[2],
        )
        assert sorted(results) == [b"false", b"true"], (n, results)
        [entry] = a.get_json(f"/v1/kv/race/{n}")
        winner = b"a" if results[0] == b"true" else b"b"
        assert entry["Value"] == {b"a": "YQ==", b"b": "Yg=="}[winner]


def test_a_lock_contended_from_two_agents_has_exactly_one_holder(agents: list[Daemon]) -> None:
    a, b, _ = agents
    sa = a.request("PUT", "/v1/session/create", {"Name": "a"})
    sb = b.request("PUT", "/v1/session/create", {"Name": "b"})
    session_a, session_b = json.loads(sa[2])["ID"], json.loads(sb[2])["ID"]
    for n in range(10):
        key = f"/v1/kv/leader/{n}"
        results = race(
            lambda key=key: a.request("PUT", f"{key}?acquire={session_a}", b"a")[2],
            lambda key=key: b.request("PUT", f"{key}?acquire={session_b}", b"b")[2],
        )
        assert sorted(results) == [b"false", b"true"], (n, results)
        [entry] = b.get_json(key)
        assert entry["Session"] == (session_a if results[0] == b"true" else session_b)
    # Destroying A's session on agent B releases A's locks for everyone (a consistent
    # read: a default one on another agent may lag the watch by a moment, as a Consul
    # follower's may).
    assert b.request("PUT", f"/v1/session/destroy/{session_a}")[0] == 200
    for n in range(10):
        [entry] = a.get_json(f"/v1/kv/leader/{n}?consistent")
        assert entry.get("Session") in (None, session_b)


def test_py_consul_works_against_any_agent(agents: list[Daemon]) -> None:
    _, b, c = agents
    on_b = consul.Consul(host="127.0.0.1", port=b.http_port)
    on_c = consul.Consul(host="127.0.0.1", port=c.http_port)
    assert on_b.kv.put("pyconsul/x", "1")
    index, entry = wait_for(lambda: on_c.kv.get("pyconsul/x")[1] and on_c.kv.get("pyconsul/x"))
    assert entry["Value"] == b"1" and int(index) >= entry["ModifyIndex"]
    assert on_c.agent.service.register("api", service_id="api-c", port=9000)
    wait_for(lambda: on_b.health.service("api")[1], 5, "api seen from B")
    assert on_c.agent.service.deregister("api-c")
    peers = sorted(on_b.status.peers())
    assert peers == sorted(on_c.status.peers()) and len(peers) == 3  # the etcd members
    assert on_b.status.leader() in peers
    members = {m["Name"] for m in on_b.agent.members()}
    assert {"ag-a", "ag-b", "ag-c"} <= members


def test_a_killed_agent_leaves_answers_and_comes_back(agents: list[Daemon], etcd: Cluster) -> None:
    a, b, c = agents
    register(b, {"Name": "cache", "ID": "cache-b", "Address": "10.2.0.2", "Port": 6379})
    wait_for(lambda: dig(c, "cache.service.consul") == ["10.2.0.2"], 5, "cache in C's DNS")
    b.kill9()
    killed = time.monotonic()
    wait_for(lambda: serf(a, "ag-b") == "critical", TTL + 5, "B's serfHealth critical on A")
    wait_for(lambda: dig(c, "cache.service.consul") == [], TTL + 5, "cache out of C's DNS")
    assert time.monotonic() - killed < TTL + 2 + 1.5  # TTL + 2 s, plus polling slack
    assert a.get_json("/v1/health/service/cache?passing") == []
    # B restarts with the same node name and takes its registrations back.
    b.start()
    wait_for(lambda: serf(c, "ag-b") == "passing", 20, "B passing again")
    wait_for(lambda: dig(c, "cache.service.consul") == ["10.2.0.2"], 10, "cache back")


def test_one_etcd_member_down_changes_nothing(agents: list[Daemon], etcd: Cluster) -> None:
    victim = etcd.members[0]
    victim.kill()
    try:
        for n, agent in enumerate(agents):
            status, _, body = agent.request("PUT", f"/v1/kv/one-down/{n}", b"x", timeout=20)
            assert status == 200, body
        for agent in agents:
            wait_for(partial(lambda a: len(entries(a, "one-down/")) == 3, agent), 10, "all seen")
            _, headers, _ = agent.request("GET", "/v1/kv/one-down/?recurse")
            assert headers["X-Consul-Knownleader"] == "true"
    finally:
        etcd.heal()


def test_without_a_quorum_reads_answer_and_writes_fail_cleanly(
    agents: list[Daemon], etcd: Cluster
) -> None:
    a, b, c = agents
    assert a.request("PUT", "/v1/kv/quorum/before", b"1")[0] == 200
    wait_for(lambda: b.request("GET", "/v1/kv/quorum/before")[0] == 200, 5, "seen on B")
    for member in etcd.members[:2]:
        member.kill()
    try:
        wait_for(
            lambda: b.request("GET", "/v1/kv/quorum/before")[1]["X-Consul-Knownleader"] == "false",
            15,
            "B to know there is no leader",
        )
        status, _, body = b.request("GET", "/v1/kv/quorum/before")
        assert status == 200 and json.loads(body)[0]["Value"] == "MQ=="
        started = time.monotonic()
        status, _, body = b.request("PUT", "/v1/kv/quorum/during", b"2", timeout=30)
        assert (status, body) == (500, b"No cluster leader")
        assert time.monotonic() - started < 6  # held 3 s for an election, then failed
        status, _, body = a.request(
            "PUT", "/v1/txn", [{"KV": {"Verb": "set", "Key": "quorum/t1", "Value": "eA=="}}]
        )
        assert status == 500
    finally:
        etcd.heal()
    wait_for(lambda: b.request("PUT", "/v1/kv/quorum/after", b"3")[0] == 200, 20, "writes back")
    assert c.request("GET", "/v1/kv/quorum/during")[0] == 404
    assert c.request("GET", "/v1/kv/quorum/t1")[0] == 404


def test_restarting_everything_loses_nothing_acknowledged(
    agents: list[Daemon], etcd: Cluster
) -> None:
    acknowledged = []
    for n in range(30):
        agent = agents[n % 3]
        if agent.request("PUT", f"/v1/kv/durable/{n}", str(n).encode())[0] == 200:
            acknowledged.append(n)
    assert len(acknowledged) == 30
    for agent in agents:
        agent.kill9()
    etcd.stop()
    etcd.heal()
    for agent, name in zip(agents, ("ag-a", "ag-b", "ag-c"), strict=True):
        agent.start()
        wait_for(partial(node_listed, agent, name), 20, f"{name} back")
    for agent in agents:
        found = wait_for(partial(entries, agent, "durable/"), 10, "keys back")
        assert sorted(int(e["Key"].rsplit("/", 1)[1]) for e in found) == acknowledged


def test_a_session_lives_on_its_lease_renewed_on_any_agent(agents: list[Daemon]) -> None:
    a, b, c = agents
    _, _, body = a.request("PUT", "/v1/session/create", {"TTL": "10s", "LockDelay": "0s"})
    session = json.loads(body)["ID"]
    assert a.request("PUT", f"/v1/kv/ttl-lock?acquire={session}", b"held")[2] == b"true"
    created = time.monotonic()
    # Consul keeps a session up to twice its TTL: renewing it on another agent (B)
    # keeps it alive past that.
    while time.monotonic() - created < 25:
        status, _, body = b.request("PUT", f"/v1/session/renew/{session}")
        assert status == 200, body
        time.sleep(4)
    assert c.get_json(f"/v1/session/info/{session}") != []
    renewed = time.monotonic()
    wait_for(lambda: c.get_json(f"/v1/session/info/{session}") == [], 30, "the session gone")
    assert time.monotonic() - renewed < 20 + 3
    # Its lock is released on every agent, the value kept (behavior "release").
    for agent in agents:
        [entry] = wait_for(
            partial(lambda x: [e for e in entries(x, "ttl-lock") if not e.get("Session")], agent),
            5,
            "the lock released",
        )
        assert entry["Value"] == "aGVsZA=="


def test_a_dead_agent_s_node_is_reaped_after_reap_after(
    tmp_path: Path, etcd: Cluster, agents: list[Daemon]
) -> None:
    reaper = start_agent(tmp_path / "d", "ag-reaper", etcd, "--reap-after", "3s")
    victim = start_agent(tmp_path / "e", "ag-victim", etcd)
    try:
        register(victim, {"Name": "doomed", "Port": 1})
        wait_for(lambda: agents[0].get_json("/v1/catalog/service/doomed"), 5, "doomed seen")
        victim.kill9()
        wait_for(lambda: serf(agents[0], "ag-victim") == "critical", TTL + 5, "victim critical")
        # Only the reaper has a short --reap-after; the node and its services go for all.
        for agent in agents:
            wait_for(partial(lambda x: not node_listed(x, "ag-victim"), agent), 15, "reaped")
            assert agent.get_json("/v1/catalog/service/doomed") == []
    finally:
        reaper.stop()
        if victim.process is not None and victim.process.poll() is None:
            victim.kill9()


def test_the_catalog_topic_on_every_agent_carries_changes_made_on_any(
    agents: list[Daemon],
) -> None:
    a, _, c = agents
    stream = SSEClient(c, "topic=catalog")
    try:
        register(a, {"Name": "pushed", "ID": "pushed-1", "Port": 7})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            event = stream.next(timeout=10).json()
            if event.get("service") == "pushed":
                assert event["node"] == "ag-a" and event["op"] == "set"
                break
        else:
            raise AssertionError("no catalog event for the registration on A")
    finally:
        stream.close()


def test_a_consistent_read_sees_a_write_just_made_on_another_agent(
    agents: list[Daemon],
) -> None:
    a, _, c = agents
    for n in range(10):
        assert a.request("PUT", "/v1/kv/fresh", str(n).encode())[0] == 200
        [entry] = c.get_json("/v1/kv/fresh?consistent")
        assert entry["Value"] == base64.b64encode(str(n).encode()).decode()


def etcd_revision(etcd: Cluster) -> int:
    command = [
        "etcdctl",
        "--endpoints",
        ",".join(etcd.endpoints),
        "endpoint",
        "status",
        "-w",
        "json",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    return max(int(s["Status"]["header"]["revision"]) for s in json.loads(result.stdout))


def test_a_ttl_renewal_that_changes_nothing_writes_nothing(
    agents: list[Daemon], etcd: Cluster
) -> None:
    a, b, _ = agents
    register(a, {"Name": "beat", "ID": "beat-1", "Check": {"TTL": "60s"}})
    assert a.request("PUT", "/v1/agent/check/pass/service:beat-1")[0] == 200
    wait_for(lambda: b.get_json("/v1/health/checks/beat")[0]["Status"] == "passing", 5, "passing")
    time.sleep(1.5)  # past a liveness keepalive or two (they are leases, not writes)
    before = etcd_revision(etcd)
    for _ in range(5):
        assert a.request("PUT", "/v1/agent/check/pass/service:beat-1")[0] == 200
    assert etcd_revision(etcd) == before
    assert a.request("PUT", "/v1/agent/check/fail/service:beat-1")[0] == 200
    assert etcd_revision(etcd) == before + 1  # a change of status is one write


def test_the_dashboard_names_the_agent_and_the_live_agents(agents: list[Daemon]) -> None:
    _, _, c = agents
    status, _, body = c.request("GET", "/ui/")
    page = body.decode()
    assert status == 200
    assert 'id="fact-node">ag-c<' in page
    agents_fact = page.split('id="fact-agents"', 1)[1].split("</dd>", 1)[0]
    assert all(name in agents_fact for name in ("ag-a", "ag-b", "ag-c"))


def test_an_agent_that_fell_behind_compaction_reloads_and_rejoins(
    agents: list[Daemon], etcd: Cluster
) -> None:
    a, b, _ = agents
    assert a.request("PUT", "/v1/kv/behind/old", b"x")[0] == 200
    wait_for(lambda: entries(b, "behind/"), 5, "old key on B")
    assert b.process is not None
    b.signal(signal.SIGSTOP)  # B hears nothing from here on
    try:
        # Every member restarts while B sleeps: its watch's connection is gone, and what
        # happens next never reaches its socket.
        etcd.stop()
        etcd.heal()
        wait_for(lambda: a.request("PUT", "/v1/kv/behind/0", b"y")[0] == 200, 20, "A writes")
        for n in range(1, 5):
            assert a.request("PUT", f"/v1/kv/behind/{n}", b"y")[0] == 200
        assert a.request("DELETE", "/v1/kv/behind/old")[0] == 200
        revision = etcd_revision(etcd)
        subprocess.run(
            ["etcdctl", "--endpoints", ",".join(etcd.endpoints), "compact", str(revision)],
            check=True,
            capture_output=True,
            env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        )
    finally:
        b.signal(signal.SIGCONT)
    found = wait_for(
        lambda: (
            sorted(e["Key"] for e in entries(b, "behind/")) == [f"behind/{n}" for n in range(5)]
        ),
        30,
        "B resynced after the compaction",
    )
    assert found
    assert "fell behind compaction" in b.output()
    # B was away longer than its TTL: its lease ran out, and it took its node back.
    wait_for(lambda: serf(a, "ag-b") == "passing", 30, "B passing again")
    assert b.request("PUT", "/v1/kv/behind/after", b"z")[0] == 200


def test_a_lock_delay_holds_on_every_agent(agents: list[Daemon]) -> None:
    a, b, c = agents
    first = json.loads(a.request("PUT", "/v1/session/create", {"LockDelay": "4s"})[2])["ID"]
    second = json.loads(c.request("PUT", "/v1/session/create", {"LockDelay": "0s"})[2])["ID"]
    assert a.request("PUT", f"/v1/kv/delayed?acquire={first}", b"1")[2] == b"true"
    assert b.request("PUT", f"/v1/session/destroy/{first}")[0] == 200
    invalidated = time.monotonic()
    # Consul refuses the key to any session for the lock delay, whichever agent asks.
    assert c.request("PUT", f"/v1/kv/delayed?acquire={second}", b"2")[2] == b"false"
    assert a.request("PUT", f"/v1/kv/delayed?acquire={second}", b"2")[2] == b"false"
    wait_for(
        lambda: c.request("PUT", f"/v1/kv/delayed?acquire={second}", b"2")[2] == b"true",
        15,
        "the key free again",
    )
    assert time.monotonic() - invalidated >= 3.5


def test_two_clusters_share_one_etcd_under_their_prefixes(tmp_path: Path, etcd: Cluster) -> None:
    red = start_agent(tmp_path / "red", "red-1", etcd, "--etcd-prefix", "/red/")
    blue = start_agent(tmp_path / "blue", "blue-1", etcd, "--etcd-prefix", "/blue/")
    try:
        register(red, {"Name": "only-red", "Port": 1})
        assert red.request("PUT", "/v1/kv/colour", b"red")[0] == 200
        assert {n["Node"] for n in blue.get_json("/v1/catalog/nodes")} == {"blue-1"}
        assert blue.get_json("/v1/catalog/service/only-red") == []
        assert blue.request("GET", "/v1/kv/colour")[0] == 404
    finally:
        red.stop()
        blue.stop()


def test_an_agent_talks_to_etcd_over_tls_with_a_client_certificate(tmp_path: Path) -> None:
    pem = _certificates(tmp_path)
    tls = ["--cert-file", str(pem["server"]), "--key-file", str(pem["server-key"])]
    tls += ["--trusted-ca-file", str(pem["ca"]), "--client-cert-auth"]
    secure = Cluster(tmp_path / "etcd", size=1, extra=tls)
    (tmp_path / "etcd").mkdir()
    secure.start()
    try:
        (endpoint,) = secure.endpoints
        assert endpoint.startswith("https://")
        files = ["--etcd-ca", str(pem["ca"]), "--etcd-cert", str(pem["client"])]
        files += ["--etcd-key", str(pem["client-key"])]
        agent = start_agent(tmp_path / "agent", "tls-1", secure, *files)
        try:
            assert agent.request("PUT", "/v1/kv/over-tls", b"1")[0] == 200
            assert entries(agent, "over-tls")[0]["Value"] == "MQ=="
        finally:
            agent.stop()
    finally:
        secure.stop()


def test_an_agent_started_before_etcd_serves_and_joins_when_it_comes(tmp_path: Path) -> None:
    (tmp_path / "etcd").mkdir()
    late = Cluster(tmp_path / "etcd", size=1).start()
    late.stop()  # its ports are known, and nothing answers on them
    hosts = late.endpoints[0].split("://", 1)[1]
    (tmp_path / "agent").mkdir()
    agent = Daemon(workdir=tmp_path / "agent", node="early-1")
    agent.start(["--catalog", f"etcd://{hosts}", "--agent-ttl", f"{TTL}s"])
    try:
        status, headers, _ = agent.request("GET", "/v1/catalog/nodes")
        assert status == 200 and headers["X-Consul-Knownleader"] == "false"
        status, _, body = agent.request("PUT", "/v1/kv/early", b"1", timeout=20)
        assert (status, body) == (500, b"No cluster leader")
        late.heal()
        wait_for(lambda: node_listed(agent, "early-1"), 30, "the agent joined")
        assert agent.request("PUT", "/v1/kv/early", b"1")[0] == 200
        assert "Traceback" not in agent.output()
    finally:
        agent.stop()
        late.stop()
