"""Prepared queries (issue #14, item 12): ``/v1/query`` create, list, get, update, delete,
``/v1/query/:id|name/execute`` and DNS ``<name>.query.consul``, as Consul's.  With
py-consul, raw requests and dig against the real daemon, and the rules of
:mod:`homeport.catalog.queries` in memory."""

from __future__ import annotations

import json
import random
import subprocess
from typing import Any

import consul
import consul.exceptions
import pytest

from homeport.catalog import queries
from homeport.catalog.errors import BadRequest, ServerRefusal
from homeport.catalog.model import Catalog, Check, Node, Service

from .daemon import Daemon, DaemonFactory


def client(daemon: Daemon) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=daemon.http_port)


def register(c: consul.Consul, node: str, address: str, sid: str, **kw: Any) -> None:
    """A node with one instance of ``kw['service']`` and, with *status*, a check."""
    status = kw.pop("status", None)
    check = None
    if status is not None:
        check = {"CheckID": f"c-{sid}", "Name": "c", "Status": status, "ServiceID": sid}
    c.catalog.register(node, address, service={"ID": sid, **kw}, check=check)


def nodes(result: dict[str, Any]) -> list[str]:
    return sorted(e["Node"]["Node"] for e in result["Nodes"])


# ---------------------------------------------------------------------------
# The real daemon


def test_create_list_get_update_delete_with_py_consul(agent: Daemon) -> None:
    c = client(agent)
    created = c.query.create("crud-svc", name="crud", tags=["a"], ttl="10s")
    qid = created["ID"]
    assert len(qid) == 36
    [got] = c.query.get(qid)
    assert got["ID"] == qid and got["Name"] == "crud"
    assert got["Service"]["Service"] == "crud-svc"
    assert got["Service"]["Tags"] == ["a"]
    assert got["DNS"] == {"TTL": "10s"}
    # py-consul always sends a template of type name_prefix_match.
    assert got["Template"] == {"Type": "name_prefix_match", "Regexp": "", "RemoveEmptyTags": False}
    assert got["CreateIndex"] == got["ModifyIndex"] > 0
    assert qid in [q["ID"] for q in c.query.list()]

    assert c.query.update(qid, "crud-svc2", name="crud") is True
    [after] = c.query.get(qid)
    assert after["Service"]["Service"] == "crud-svc2"
    assert after["CreateIndex"] == got["CreateIndex"] < after["ModifyIndex"]

    assert c.query.delete(qid) is True
    status, _, body = agent.request("GET", f"/v1/query/{qid}")
    assert (status, body) == (404, b"Query not found")
    assert qid not in [q["ID"] for q in c.query.list()]


def test_execute_by_name_filters_health_and_tags(agent: Daemon) -> None:
    c = client(agent)
    register(c, "ex-n1", "10.9.0.1", "ex-1", Service="exsvc", Tags=["v1", "prod"])
    register(c, "ex-n2", "10.9.0.2", "ex-2", Service="exsvc", Tags=["v1"], status="warning")
    register(c, "ex-n3", "10.9.0.3", "ex-3", Service="exsvc", Tags=["v1"], status="critical")
    register(c, "ex-n4", "10.9.0.4", "ex-4", Service="exsvc", Tags=["v1", "canary"])
    c.query.create("exsvc", name="ex-all")
    c.query.create("exsvc", name="ex-passing", onlypassing=True)
    c.query.create("exsvc", name="ex-tags", tags=["v1", "!canary"])
    c.query.create("exsvc", name="ex-prod", tags=["PROD"])

    result = c.query.execute("ex-all")
    assert set(result) == {"Service", "Nodes", "DNS", "Datacenter", "Failovers"}
    assert result["Service"] == "exsvc"
    assert result["Datacenter"] == "dc1" and result["Failovers"] == 0
    assert result["DNS"] == {"TTL": ""}
    assert nodes(result) == ["ex-n1", "ex-n2", "ex-n4"]  # critical is never in
    entry = next(e for e in result["Nodes"] if e["Node"]["Node"] == "ex-n2")
    assert entry["Service"]["ID"] == "ex-2"
    assert [ch["CheckID"] for ch in entry["Checks"]] == ["c-ex-2"]
    assert nodes(c.query.execute("ex-passing")) == ["ex-n1", "ex-n4"]
    assert nodes(c.query.execute("ex-tags")) == ["ex-n1", "ex-n2"]
    assert nodes(c.query.execute("EX-PROD")) == ["ex-n1"]  # names and tags in any case
    assert len(c.query.execute("ex-all", limit=2)["Nodes"]) == 2


def test_execute_by_id_near_agent_and_errors(agent: Daemon) -> None:
    c = client(agent)
    register(c, "near-n1", "10.8.0.1", "near-1", Service="nearsvc")
    c.agent.service.register("nearsvc", service_id="near-local", port=80)
    body = {"Name": "near", "Service": {"Service": "nearsvc", "Near": "_agent"}}
    status, _, raw = agent.request("POST", "/v1/query", body)
    assert status == 200, raw
    qid = json.loads(raw)["ID"]
    for _ in range(8):
        result = c.query.execute(qid)
        assert result["Nodes"][0]["Node"]["Node"] == "testnode"
        assert nodes(result) == ["near-n1", "testnode"]
    assert c.query.execute(qid, near="near-n1")["Nodes"][0]["Node"]["Node"] == "near-n1"

    status, _, raw = agent.request("GET", "/v1/query/no-such-query/execute")
    assert (status, raw) == (404, b"Query not found")
    status, _, raw = agent.request("GET", f"/v1/query/{qid}/execute?limit=x")
    assert (status, raw) == (500, b'Bad limit: strconv.Atoi: parsing "x": invalid syntax')
    status, _, raw = agent.request("PUT", f"/v1/query/{qid}/execute")
    assert status == 405


@pytest.mark.parametrize(
    ("body", "status", "text"),
    [
        ({"Service": {"Service": "x"}}, 500, "Invalid prepared query: Must be bound to a session"),
        ({"Name": "bad"}, 500, "Invalid prepared query: Must provide a Service name to query"),
        ({"Name": "b", "ID": "x", "Service": {"Service": "x"}}, 500, "ID must be empty"),
        (
            {"Name": "b", "Service": {"Service": "x"}, "DNS": {"TTL": "soon"}},
            500,
            "Invalid prepared query: Bad DNS TTL 'soon': time: invalid duration \"soon\"",
        ),
        ({"Name": "b", "Service": {"Service": "x"}, "Session": "nope"}, 500, "invalid session"),
        ({"Name": "b", "Bogus": 1}, 400, 'Request decode failed: json: unknown field "Bogus"'),
    ],
)
def test_refusals(agent: Daemon, body: dict[str, Any], status: int, text: str) -> None:
    got, _, raw = agent.request("POST", "/v1/query", body)
    assert got == status and raw.decode().startswith(text), raw


def test_names_are_unique_and_updates_need_a_query(agent: Daemon) -> None:
    c = client(agent)
    c.query.create("u-svc", name="unique-one")
    with pytest.raises(consul.exceptions.ConsulException, match="aliases an existing query name"):
        c.query.create("u-svc", name="UNIQUE-ONE")
    missing = "00000000-0000-0000-0000-000000000000"
    status, _, raw = agent.request("PUT", f"/v1/query/{missing}", {"Name": "z"})
    assert status == 500
    assert raw == f"Cannot modify non-existent prepared query: '{missing}'".encode()
    status, _, raw = agent.request("DELETE", f"/v1/query/{missing}")
    assert status == 500


def test_a_query_bound_to_a_session_goes_with_it(agent: Daemon) -> None:
    c = client(agent)
    session = c.session.create(node="testnode", checks=[])
    body = {"Session": session, "Service": {"Service": "s-svc"}}
    status, _, raw = agent.request("POST", "/v1/query", body)
    assert status == 200, raw
    qid = json.loads(raw)["ID"]
    assert c.query.get(qid)[0]["Session"] == session
    c.session.destroy(session)
    assert agent.request("GET", f"/v1/query/{qid}")[0] == 404


def test_templates_match_the_longest_prefix_and_render(agent: Daemon) -> None:
    c = client(agent)
    register(c, "tpl-n1", "10.7.0.1", "tpl-1", Service="tplweb")
    body = {
        "Name": "tpl-",
        "Template": {"Type": "name_prefix_match", "Regexp": "^tpl-(.+)$"},
        "Service": {"Service": "${match(1)}"},
    }
    status, _, raw = agent.request("POST", "/v1/query", body)
    assert status == 200, raw
    qid = json.loads(raw)["ID"]
    result = c.query.execute("tpl-tplweb")
    assert result["Service"] == "tplweb" and nodes(result) == ["tpl-n1"]
    explained = agent.get_json("/v1/query/tpl-tplweb/explain")
    assert explained["Query"]["Service"]["Service"] == "tplweb"
    status, _, raw = agent.request("GET", f"/v1/query/{qid}/execute")
    assert status == 500
    assert raw == b"prepared query templates can only be resolved up by name, not by ID"


def test_queries_survive_a_restart_and_answer_dns(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--dns", "127.0.0.1:0"]).start()
    c = client(daemon)
    register(c, "dns-n1", "10.6.0.1", "dns-1", Service="dnssvc", Port=8080)
    register(c, "dns-n2", "10.6.0.2", "dns-2", Service="dnssvc", Port=8081, Tags=["old"])
    c.query.create("dnssvc", name="dnsq", ttl="42s", tags=["!old"])
    c.query.create("dnssvc", name="dnsall")
    created = c.query.list()
    daemon.kill9()
    daemon.start()
    assert c.query.list() == created
    assert nodes(c.query.execute("dnsq")) == ["dns-n1"]

    def dig(*args: str) -> str:
        command = ["dig", "@127.0.0.1", "-p", str(daemon.dns_port), "+time=3", "+tries=2"]
        return subprocess.run(
            [*command, *args], check=True, capture_output=True, text=True, timeout=30
        ).stdout

    assert dig("+short", "dnsq.query.consul", "A").split() == ["10.6.0.1"]
    assert "42\tIN\tA\t10.6.0.1" in dig("+noall", "+answer", "dnsq.query.consul", "A")
    assert sorted(dig("+short", "dnsall.query.dc1.consul", "A").split()) == [
        "10.6.0.1",
        "10.6.0.2",
    ]
    srv = dig("+short", "dnsq.query.consul", "SRV").split()
    assert srv == ["1", "1", "8080", "dns-n1.node.dc1.consul."]
    assert "status: NXDOMAIN" in dig("nosuch.query.consul", "A")
    # A change to the query is seen by the next lookup.
    [query] = [q for q in c.query.list() if q["Name"] == "dnsq"]
    c.query.update(query["ID"], "dnssvc", name="dnsq", tags=["old"])
    assert dig("+short", "dnsq.query.consul", "A").split() == ["10.6.0.2"]


# ---------------------------------------------------------------------------
# The rules in memory


def catalog_with(*instances: tuple[str, tuple[str, ...], str]) -> Catalog:
    catalog = Catalog()
    for n, (node, tags, status) in enumerate(instances):
        catalog.register(
            Node(node, f"10.0.0.{n + 1}"),
            [Service(node, f"s{n}", "web", tags=tags)],
            [Check(node, f"c{n}", "c", status=status, service_id=f"s{n}")],
        )
    return catalog


def make(catalog: Catalog, **body: Any) -> str:
    fields = queries.decode(json.dumps(body).encode())
    return queries.create(catalog, fields, lambda: f"{len(catalog.queries):08d}-0-0-0-0")


def run(catalog: Catalog, name: str) -> list[str]:
    result = queries.execute(catalog, name, queries.Source(agent_node="a"), random.Random(1))
    return sorted(e.node.name for e in result.entries)


def test_ignore_check_ids_node_meta_and_connect() -> None:
    catalog = catalog_with(("a", (), "critical"), ("b", (), "passing"))
    make(catalog, Name="ign", Service={"Service": "web", "IgnoreCheckIDs": ["c0"]})
    make(catalog, Name="meta", Service={"Service": "web", "NodeMeta": {"k": "v"}})
    make(catalog, Name="conn", Service={"Service": "web", "Connect": True})
    assert run(catalog, "ign") == ["a", "b"]
    assert run(catalog, "meta") == []
    assert run(catalog, "conn") == []


def test_decoding_is_go_s() -> None:
    fields = queries.decode(b'{"name": "x", "service": {"service": "web", "onlypassing": true}}')
    assert fields["Name"] == "x"
    assert fields["Service"]["OnlyPassing"] is True
    assert fields["Service"]["Failover"] == {"NearestN": 0, "Datacenters": None, "Targets": None}
    with pytest.raises(BadRequest):
        queries.decode(b'{"DNS": {"TTL": 10}}')
    with pytest.raises(ServerRefusal, match="Bad NearestN '-1'"):
        make(Catalog(), Name="n", Service={"Service": "w", "Failover": {"NearestN": -1}})
    template = {"Type": "name_prefix_match", "Regexp": "-(v[0-9]+)"}
    catalog = catalog_with(("a", ("v2",), "passing"), ("b", ("v1",), "passing"))
    make(
        catalog, Name="web-", Template=template, Service={"Service": "web", "Tags": ["${match(1)}"]}
    )
    assert run(catalog, "web-v2") == ["a"]  # the Regexp matches anywhere, as Go's
    with pytest.raises(ServerRefusal, match=r"Bad Template\.Type 'other'"):
        make(Catalog(), Name="n", Template={"Type": "other"}, Service={"Service": "w"})
