"""Issue #14's last gaps, each as Consul's rule, against the real daemon (py-consul and
curl) and the pure parts: prepared queries in snapshots, the autopilot configuration
set with ``PUT`` (``?cas=``, kept across a restart)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import consul
import pytest

from homeport.catalog import queries, snapshot
from homeport.catalog.filter import GoRegexpError, go_regexp
from homeport.catalog.model import Catalog, Node, PreparedQuery, Session

from .daemon import Daemon, DaemonFactory, curl

NOW = 1_790_000_000.0


def client(daemon: Daemon) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=daemon.http_port)


def members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(archive))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def query_body(name: str, service: str, **more: Any) -> dict[str, Any]:
    return {"Name": name, "Service": {"Service": service}, **more}


# -- 1. prepared queries are in snapshots --------------------------------------------------


WEB_Q = "00000000-0000-0000-0000-000000000001"


def a_catalog_with_queries() -> Catalog:
    """A node, a session, a query named ``web`` and an unnamed one bound to the session."""
    catalog = Catalog()
    catalog.register(Node("agent", "10.0.0.1"))
    catalog.session_create(Session("s1", "agent", name="q", node_checks=()))
    ids = iter([WEB_Q, "00000000-0000-0000-0000-000000000002"])
    for name, session in (("web", ""), ("", "s1")):
        fields = queries.decode(json.dumps(query_body(name, "web", Session=session)).encode())
        queries.create(catalog, fields, lambda: next(ids))
    return catalog


def test_an_archive_holds_the_prepared_queries_and_a_restore_puts_them_back() -> None:
    catalog = a_catalog_with_queries()
    archive = snapshot.take(catalog, "agent", NOW)
    state = json.loads(members(archive)["state.json"])
    assert sorted(q["name"] for q in state["Queries"]) == ["", "web"]
    kept = dict(catalog.queries)
    for query_id in list(catalog.queries):
        catalog.query_delete(query_id)
    catalog.query_set(PreparedQuery("later", name="later", definition=kept[WEB_Q].definition))
    index = catalog.index
    snapshot.restore(catalog, archive, "agent")
    assert catalog.queries == kept  # with their own indexes, the later one gone
    assert catalog.index == index + 1  # in one change with the rest


def test_an_archive_whose_query_names_a_missing_session_is_refused() -> None:
    catalog = a_catalog_with_queries()
    files = members(snapshot.take(catalog, "agent", NOW))
    state = json.loads(files["state.json"])
    state["Sessions"] = []
    state["KV"] = []
    files["state.json"] = json.dumps(state).encode()
    archive = repack(files)
    before = snapshot.take(catalog, "agent", NOW)
    with pytest.raises(snapshot.InvalidSnapshot, match="names session 's1'"):  # the query
        snapshot.restore(catalog, archive, "agent")
    assert snapshot.take(catalog, "agent", NOW) == before


def test_an_archive_with_a_broken_query_definition_is_refused() -> None:
    catalog = a_catalog_with_queries()
    files = members(snapshot.take(catalog, "agent", NOW))
    state = json.loads(files["state.json"])
    state["Queries"][0]["definition"]["Service"]["Service"] = ""
    files["state.json"] = json.dumps(state).encode()
    with pytest.raises(snapshot.InvalidSnapshot, match="Must provide a Service name"):
        snapshot.read(repack(files))
    state["Queries"][0]["definition"] = {"Service": {}}
    files["state.json"] = json.dumps(state).encode()
    with pytest.raises(snapshot.InvalidSnapshot, match="not a prepared query's"):
        snapshot.read(repack(files))


def test_a_version_1_archive_without_queries_still_restores() -> None:
    catalog = a_catalog_with_queries()
    files = members(snapshot.take(catalog, "agent", NOW))
    meta = json.loads(files["meta.json"])
    state = json.loads(files["state.json"])
    del state["Queries"]
    files["meta.json"] = json.dumps({**meta, "Version": 1}).encode()
    files["state.json"] = json.dumps(state).encode()
    snapshot.restore(catalog, repack(files), "agent")
    assert catalog.queries == {}  # the state it holds had none
    files["meta.json"] = json.dumps({**meta, "Version": 3}).encode()
    with pytest.raises(snapshot.InvalidSnapshot, match="reads 1 and 2"):
        snapshot.read(repack(files))


def repack(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of *files*, with their SHA256SUMS made anew."""
    files = {k: v for k, v in files.items() if k != "SHA256SUMS"}
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items())
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in {**files, "SHA256SUMS": sums.encode()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue())


def test_a_snapshot_saves_and_restores_prepared_queries_on_the_daemon(daemon: Daemon) -> None:
    c = client(daemon)
    kept = c.query.create("web", name="web-q", tags=["v1"])["ID"]
    archive = c.snapshot.save()
    c.query.delete(kept)
    later = c.query.create("db", name="db-q")["ID"]
    assert c.snapshot.restore(archive) is True
    assert [(q["ID"], q["Name"]) for q in c.query.list()] == [(kept, "web-q")]
    status, _, _ = daemon.request("GET", f"/v1/query/{later}")
    assert status == 404
    # The restored query is on disk like the rest.
    daemon.kill9()
    daemon.start()
    [query] = client(daemon).query.get(kept)
    assert query["Service"]["Tags"] == ["v1"]


# -- 2. PUT /v1/operator/autopilot/configuration -------------------------------------------


def test_the_autopilot_configuration_is_set_whole_with_cas_and_kept(daemon: Daemon) -> None:
    c = client(daemon)
    before = c.operator.autopilot_configuration()
    assert before["CleanupDeadServers"] is True and before["LastContactThreshold"] == "200ms"
    # As Consul: the body replaces the whole configuration (what it leaves out is zero).
    assert c.operator.update_autopilot_configuration(max_trailing_logs=500) is True
    after = c.operator.autopilot_configuration()
    assert after == {
        "CleanupDeadServers": False,
        "LastContactThreshold": "0s",
        "MaxTrailingLogs": 500,
        "MinQuorum": 0,
        "ServerStabilizationTime": "0s",
        "RedundancyZoneTag": "",
        "DisableUpgradeMigration": False,
        "UpgradeVersionTag": "",
        "CreateIndex": before["CreateIndex"],
        "ModifyIndex": after["ModifyIndex"],
    }
    assert after["ModifyIndex"] > before["ModifyIndex"]
    # ?cas= writes only while the kept ModifyIndex is the one given.
    stale = before["ModifyIndex"]
    assert c.operator.update_autopilot_configuration(min_quorum=3, cas=stale) is False
    assert c.operator.autopilot_configuration() == after
    body = json.dumps(
        {
            "CleanupDeadServers": True,
            "LastContactThreshold": "1m30s",
            "ServerStabilizationTime": 5_000_000_000,
            "MinQuorum": 3,
        }
    )
    url = f"{daemon.url}/v1/operator/autopilot/configuration?cas={after['ModifyIndex']}"
    assert curl("-fsS", "-X", "PUT", "--data-binary", body, url) == "true"
    latest = c.operator.autopilot_configuration()
    assert (latest["LastContactThreshold"], latest["ServerStabilizationTime"]) == ("1m30s", "5s")
    assert latest["MinQuorum"] == 3 and latest["CleanupDeadServers"] is True
    daemon.kill9()
    daemon.start()
    assert client(daemon).operator.autopilot_configuration() == latest


def test_a_broken_autopilot_file_stops_start_up_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "autopilot.json").write_text("{", "utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "homeport", "--data-dir", str(data), "--dns", "none"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("homeport: error: --data-dir "), lines
    assert "autopilot.json is not an autopilot configuration" in lines[0]


@pytest.mark.parametrize(
    ("query", "body", "text"),
    [
        (
            "",
            b"[]",
            "Error parsing autopilot config: json: cannot unmarshal array into Go "
            "value of type api.AutopilotConfiguration",
        ),
        (
            "",
            b'{"MaxTrailingLogs": "many"}',
            "Error parsing autopilot config: json: cannot "
            "unmarshal string into Go struct field AutopilotConfiguration.MaxTrailingLogs of "
            "type uint64",
        ),
        (
            "",
            b'{"MinQuorum": -1}',
            "Error parsing autopilot config: json: cannot unmarshal "
            "number -1 into Go struct field AutopilotConfiguration.MinQuorum of type uint",
        ),
        (
            "",
            b'{"LastContactThreshold": "soon"}',
            'Error parsing autopilot config: time: invalid duration "soon"',
        ),
        ("", b'{"Colour": 1}', 'Error parsing autopilot config: json: unknown field "Colour"'),
        ("", b"", "Error parsing autopilot config: EOF"),
        (
            "?cas=x",
            b"{}",
            'Error parsing cas value: strconv.ParseUint: parsing "x": invalid syntax',
        ),
        (
            "?cas=-1",
            b"{}",
            'Error parsing cas value: strconv.ParseUint: parsing "-1": invalid syntax',
        ),
    ],
)
def test_a_bad_autopilot_configuration_is_consuls_400(
    agent: Daemon, query: str, body: bytes, text: str
) -> None:
    before = agent.get_json("/v1/operator/autopilot/configuration")
    status, _, answer = agent.request("PUT", "/v1/operator/autopilot/configuration" + query, body)
    assert (status, answer.decode()) == (400, text)
    assert agent.get_json("/v1/operator/autopilot/configuration") == before


# -- 4. /v1/event/* is counted once in the metrics ---------------------------------------


def requests_by_route(daemon: Daemon) -> dict[str, float]:
    """``homeport_http_requests_total`` summed over the codes, by route."""
    found: dict[str, float] = {}
    for line in curl("-fsS", f"{daemon.url}/metrics").splitlines():
        match = re.match(
            r'^homeport_http_requests_total\{code="\d+",route="([^"]+)"\} (\S+)$', line
        )
        if match:
            found[match[1]] = found.get(match[1], 0.0) + float(match[2])
    return found


def test_event_requests_are_counted_once_each_on_their_route(daemon: Daemon) -> None:
    c = client(daemon)
    c.event.fire("deploy", "v1")
    index, _ = c.event.list()
    c.event.list()
    parked: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: parked.update(got=c.event.list(index=index)))
    waiter.start()  # parked or not yet sent: either way it sees both events
    c.event.fire("deploy", "v2")
    waiter.join(10)
    assert [e["Name"] for e in parked["got"][1]] == ["deploy", "deploy"]
    counted = requests_by_route(daemon)
    assert "/v1/event" not in counted
    assert counted["/v1/event/fire/*name"] == 2
    assert counted["/v1/event/list"] == 3


# -- 5. ?keys with no keys ---------------------------------------------------------------


def test_keys_with_none_is_404_under_a_prefix_and_an_empty_list_at_the_root(
    daemon: Daemon,
) -> None:
    c = client(daemon)
    status, headers, body = daemon.request("GET", "/v1/kv/?keys")
    assert (status, json.loads(body)) == (200, [])
    assert int(headers["X-Consul-Index"]) >= 1
    assert c.kv.get("", keys=True)[1] == []
    status, headers, body = daemon.request("GET", "/v1/kv/app/?keys")
    assert (status, body) == (404, b"")
    assert int(headers["X-Consul-Index"]) >= 1
    assert c.kv.get("app/", keys=True)[1] is None
    c.kv.put("app/db/url", "x")
    c.kv.put("app/name", "y")
    # The separator: the first ?separator=, or Consul's old spelling ?seperator=.
    assert daemon.get_json("/v1/kv/app/?keys&seperator=/") == ["app/db/", "app/name"]
    assert daemon.get_json("/v1/kv/app/?keys&separator=/&separator=x") == ["app/db/", "app/name"]
    assert daemon.get_json("/v1/kv/app/?keys&separator=/&seperator=d") == ["app/db/", "app/name"]


# -- 7. names with / in the routes that take the rest of the path -------------------------


def test_node_service_and_session_names_may_hold_a_slash(daemon: Daemon) -> None:
    c = client(daemon)
    check = {"CheckID": "up", "Name": "up", "Status": "passing", "ServiceID": "web-1"}
    service = {"ID": "web-1", "Service": "team/web", "Port": 80}
    assert c.catalog.register("rack/1", "10.0.0.7", service=service, check=check)
    session = c.session.create(node="rack/1", checks=[])
    _, node = c.catalog.node("rack/1")
    assert node["Node"]["Node"] == "rack/1" and list(node["Services"]) == ["web-1"]
    services = daemon.get_json("/v1/catalog/node-services/rack/1")
    assert [s["ID"] for s in services["Services"]] == ["web-1"]
    assert [h["CheckID"] for h in c.health.node("rack/1")[1]] == ["up"]
    assert [s["ServiceID"] for s in c.catalog.service("team/web")[1]] == ["web-1"]
    assert [h["Node"]["Node"] for h in c.health.service("team/web")[1]] == ["rack/1"]
    assert [h["CheckID"] for h in c.health.checks("team/web")[1]] == ["up"]
    assert [s["ID"] for s in c.session.node("rack/1")[1]] == [session]
    # Written as %2F too, as Go's URL.Path decodes it.
    assert [s["ID"] for s in daemon.get_json("/v1/session/node/rack%2F1")] == [session]
    assert daemon.get_json(f"/v1/session/info/{session}/x") == []


@pytest.mark.parametrize(
    ("method", "path", "text"),
    [
        ("GET", "/v1/catalog/node/", "Missing node name"),
        ("GET", "/v1/catalog/node-services/", "Missing node name"),
        ("GET", "/v1/catalog/service/", "Missing service name"),
        ("GET", "/v1/health/node/", "Missing node name"),
        ("GET", "/v1/health/service/", "Missing service name"),
        ("GET", "/v1/health/checks/", "Missing service name"),
        ("GET", "/v1/health/state/", "Missing check state"),
        ("GET", "/v1/session/node/", "Missing node name"),
        ("GET", "/v1/session/info/", "Missing session"),
        ("PUT", "/v1/session/renew/", "Missing session"),
        ("PUT", "/v1/session/destroy/", "Missing session"),
    ],
)
def test_an_empty_name_is_consuls_400(agent: Daemon, method: str, path: str, text: str) -> None:
    status, _, body = agent.request(method, path, b"" if method == "PUT" else None)
    assert (status, body.decode()) == (400, text)


# -- 8. event filters and template regexps are Go's RE2 -----------------------------------


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        ("(?=x)", "invalid or unsupported Perl syntax: `(?=`"),
        ("(abc", "missing closing ): `(abc`"),
        ("a**", "invalid nested repetition operator: `**`"),
        ("x{1001}", "invalid repeat count: `{1001}`"),
        (r"a\Z", r"invalid escape sequence: `\Z`"),
    ],
)
def test_go_regexp_refuses_what_go_refuses_with_gos_text(pattern: str, text: str) -> None:
    with pytest.raises(GoRegexpError) as refused:
        go_regexp(pattern)
    assert str(refused.value) == text


def test_event_filters_are_go_regexps(agent: Daemon) -> None:
    c = client(agent)
    # RE2's syntax that Python's re lacks: Unicode classes, POSIX classes.
    for node_filter in (r"^\pL+$", "^[[:alpha:]]+$"):
        fired = c.event.fire("re2", node=node_filter)
        assert fired["NodeFilter"] == node_filter
        _, events = c.event.list(name="re2")
        assert fired["ID"] in [e["ID"] for e in events]  # kept: the filter matches testnode
    # What Go refuses, with Go's text (Python's re would take the lookahead).
    status, _, body = agent.request("PUT", "/v1/event/fire/re2?node=(%3F%3Dtest)")
    assert (status, body.decode()) == (
        500,
        "Invalid node filter: error parsing regexp: invalid or unsupported Perl syntax: `(?=`",
    )


def test_a_template_regexp_is_go_regexp(agent: Daemon) -> None:
    template = {"Type": "name_prefix_match", "Regexp": "^re2-(?P<x>.+)$|(?=never)"}
    body = {"Name": "re2-", "Template": template, "Service": {"Service": "${match(1)}"}}
    status, _, answer = agent.request("POST", "/v1/query", body)
    assert status == 500
    assert answer.decode() == (
        "failed compiling template: Bad Regexp: error parsing regexp: invalid or unsupported "
        "Perl syntax: `(?=`"
    )
    template["Regexp"] = r"^re2-(\pL+)$"
    status, _, answer = agent.request("POST", "/v1/query", body)
    assert status == 200, answer
    query_id = json.loads(answer)["ID"]
    explained = agent.get_json("/v1/query/re2-web/explain")
    assert explained["Query"]["Service"]["Service"] == "web"
    agent.request("DELETE", f"/v1/query/{query_id}")


# -- 3. ?filter= on every list endpoint Consul takes it on -------------------------------


def test_filter_on_a_nodes_services_and_on_the_members(daemon: Daemon) -> None:
    c = client(daemon)
    for sid, port in (("web-1", 80), ("web-2", 81), ("db-1", 5432)):
        service = {"ID": sid, "Service": sid.split("-")[0], "Port": port}
        c.catalog.register("box", "10.0.0.8", service=service)
    wanted = 'Service == "web" and Port != 81'
    node = daemon.get_json(f"/v1/catalog/node/box?filter={quote(wanted)}")
    assert list(node["Services"]) == ["web-1"]
    listed = daemon.get_json(f"/v1/catalog/node-services/box?filter={quote(wanted)}")
    assert [s["ID"] for s in listed["Services"]] == ["web-1"]
    assert [m["Name"] for m in daemon.get_json("/v1/agent/members?filter=Name%20==%20testnode")]
    assert daemon.get_json("/v1/agent/members?filter=Name%20==%20other") == []
    # Every list endpoint Consul filters: each takes the expression, and a bad one is
    # go-bexpr's error, which Consul passes through as a 500.
    for path in (
        "/v1/agent/services",
        "/v1/agent/checks",
        "/v1/agent/members",
        "/v1/catalog/nodes",
        "/v1/catalog/services",
        "/v1/catalog/service/web",
        "/v1/catalog/node/box",
        "/v1/catalog/node-services/box",
        "/v1/health/node/testnode",
        "/v1/health/checks/web",
        "/v1/health/service/web",
        "/v1/health/state/any",
        "/v1/internal/ui/nodes",
    ):
        status, _, body = daemon.request("GET", path + "?filter=" + quote("Nope == 1"))
        if status == 200:  # nothing to filter: no fields to check the selector against
            assert json.loads(body) in ([], {}), path
            continue
        assert status == 500, (path, body)
        assert body.startswith(b'Failed to create boolean expression evaluator: Selector "Nope"')


# -- 6. a snapshot larger than --max-body-size still restores ----------------------------


def test_a_snapshot_bigger_than_the_body_limit_restores(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--max-body-size", "64KiB"]).start()
    c = client(daemon)
    values = {f"big/{n}": os.urandom(40_000) for n in range(6)}  # random: gzip keeps it big
    for key, value in values.items():
        assert daemon.request("PUT", f"/v1/kv/{key}", value)[0] == 200
    archive = c.snapshot.save()
    assert len(archive) > 200_000  # over three times the limit
    c.kv.delete("big", recurse=True)
    # Other writes keep the limit.
    status, _, _ = daemon.request("PUT", "/v1/kv/too-big", os.urandom(70_000))
    assert status == 413
    # curl sends it chunked (no Content-Length) and with one: both restore.
    saved = daemon.workdir / "big.snap"
    saved.write_bytes(archive)
    url = f"{daemon.url}/v1/snapshot"
    curl("-fsS", "-X", "PUT", "-H", "Transfer-Encoding: chunked", "-T", str(saved), url)
    assert {k: c.kv.get(k)[1]["Value"] for k in values} == values
    c.kv.delete("big", recurse=True)
    curl("-fsS", "-X", "PUT", "--data-binary", f"@{saved}", url)
    assert {k: c.kv.get(k)[1]["Value"] for k in values} == values
    # A broken big one is still refused whole.
    saved.write_bytes(archive[:-100])
    c.kv.delete("big", recurse=True)
    status, _, body = daemon.request("PUT", "/v1/snapshot", saved.read_bytes())
    assert status == 400 and body.startswith(b"Invalid snapshot: "), body
    assert c.kv.get("big/0")[1] is None
