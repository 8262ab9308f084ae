"""The node's identity lives in the data dir: a container that gets a new hostname (and
a new name from ``--node``) on every run stays one node in the catalog (issue #22)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from homeport.catalog.identity import ID_FILE, NAME_FILE, legacy_node_id, load_identity
from homeport.catalog.model import PASSING, Catalog, Check, Node, Service, Session

from .daemon import Daemon, DaemonFactory


def _can_set_hostname() -> bool:
    """Whether ``unshare`` can give a process a hostname of its own (a new UTS
    namespace, as every container has)."""
    if shutil.which("unshare") is None:
        return False
    probe = ["unshare", "--user", "--map-root-user", "--uts", "hostname", "homeport-probe"]
    return subprocess.run(probe, capture_output=True).returncode == 0


def as_host(hostname: str) -> list[str]:
    """A command prefix running the daemon with *hostname*, as a new container would."""
    script = f'hostname {hostname} && exec "$@"'
    return ["unshare", "--user", "--map-root-user", "--uts", "sh", "-c", script, "sh"]


def register_web(d: Daemon) -> None:
    service = {"Name": "web", "Port": 8080, "Check": {"TTL": "1h", "Status": "passing"}}
    status, _, body = d.request("PUT", "/v1/agent/service/register", service)
    assert status == 200, body


def nodes(d: Daemon) -> list[str]:
    return [n["Node"] for n in d.get_json("/v1/catalog/nodes")]


def webs(d: Daemon) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = d.get_json("/v1/health/service/web")
    return found


@pytest.mark.skipif(not _can_set_hostname(), reason="unshare cannot set a hostname here")
def test_five_runs_with_new_hostnames_leave_one_node_with_web_once(
    daemon_factory: DaemonFactory,
) -> None:
    """Five starts on one data dir, each with another hostname and no --node, as five
    container runs on one volume: one node (the first run's name), web on it once."""
    d = daemon_factory(node=None)
    for run in range(5):
        d.prefix = as_host(f"c0ffee{run:06d}")
        d.start()
        if run == 0:
            register_web(d)
        assert nodes(d) == ["c0ffee000000"]
        [web] = webs(d)
        assert web["Node"]["Node"] == "c0ffee000000"
        assert [c["Status"] for c in web["Checks"]] == [PASSING, PASSING]
        assert d.get_json("/v1/agent/self")["Config"]["NodeName"] == "c0ffee000000"
        d.stop()
    assert (d.data_dir / NAME_FILE).read_text().strip() == "c0ffee000000"


def test_a_new_node_name_each_run_renames_the_node_and_moves_its_services(
    daemon_factory: DaemonFactory,
) -> None:
    """HOMEPORT_NODE set to a new name on each of five runs: the node is renamed each
    time (same node ID), web moves with it, and no earlier name is left in the catalog."""
    d = daemon_factory(node=None)
    ids = set()
    for run in range(5):
        d.env["HOMEPORT_NODE"] = f"run-{run}"
        d.start()
        if run == 0:
            register_web(d)
        assert nodes(d) == [f"run-{run}"]
        [web] = webs(d)
        assert web["Node"]["Node"] == f"run-{run}"
        assert web["Service"]["Port"] == 8080
        assert {c["CheckID"] for c in web["Checks"]} == {"serfHealth", "service:web"}
        ids.add(d.get_json("/v1/agent/self")["Config"]["NodeID"])
        d.stop()
    assert len(ids) == 1
    assert (d.data_dir / ID_FILE).read_text().strip() == ids.pop()


def test_catalog_registered_nodes_are_kept_across_a_rename(daemon_factory: DaemonFactory) -> None:
    """An external node registered through /v1/catalog/register has an owner (whoever
    registered it): a rename of the agent leaves it and its services alone."""
    d = daemon_factory(node="first").start()
    external = {"Node": "printer", "Address": "10.0.0.9", "Service": {"Service": "ipp"}}
    assert d.request("PUT", "/v1/catalog/register", external)[0] == 200
    d.stop()
    d.node = "second"
    d.start()
    assert sorted(nodes(d)) == ["printer", "second"]
    assert [s["Node"] for s in d.get_json("/v1/catalog/service/ipp")] == ["printer"]


def test_the_first_start_writes_the_identity_and_later_ones_read_it(tmp_path: Path) -> None:
    first = load_identity(tmp_path, None, lambda: "host-a", {})
    assert first.name == "host-a" and uuid.UUID(first.id)
    assert load_identity(tmp_path, None, lambda: "host-b", {}) == first
    renamed = load_identity(tmp_path, "named", lambda: "host-c", {})
    assert (renamed.name, renamed.id) == ("named", first.id)
    assert load_identity(tmp_path, None, lambda: "host-d", {}) == renamed


def test_a_data_dir_from_before_the_identity_files_keeps_its_nodes_id(tmp_path: Path) -> None:
    old = legacy_node_id("host-a", "dc1")
    assert load_identity(tmp_path, None, lambda: "host-a", {"host-a": old}).id == old


def test_a_node_id_file_that_is_not_a_uuid_is_refused(tmp_path: Path) -> None:
    (tmp_path / ID_FILE).write_text("not-a-uuid\n")
    with pytest.raises(ValueError, match="not a UUID"):
        load_identity(tmp_path, None, lambda: "host", {})


def test_merging_moves_services_and_checks_and_ends_the_old_nodes_sessions() -> None:
    catalog = Catalog()
    for name in ("old", "new"):
        catalog.register(Node(name, "10.0.0.1"))
        builtin = Check(name, "serfHealth", "Serf", status=PASSING, source="builtin")
        catalog.register_check(builtin)
    catalog.register_service(
        Service("old", "web", "web", port=80), [Check("old", "service:web", "web", PASSING)]
    )
    catalog.register_service(Service("old", "db", "db"))
    catalog.register_service(Service("new", "db", "db", port=5432))
    session = catalog.session_create(Session("s1", "old"))
    catalog.merge_nodes("new", ["old"])
    assert sorted(catalog.nodes) == ["new"]
    assert sorted(catalog.services) == [("new", "db"), ("new", "web")]
    assert catalog.services["new", "db"].port == 5432  # the node's own stays
    assert catalog.checks["new", "service:web"].status == PASSING
    assert session.id not in catalog.sessions


def test_nodes_an_earlier_homeport_made_for_itself_are_merged_into_this_one(
    daemon_factory: DaemonFactory,
) -> None:
    """A data dir from before the identity files holds the nodes of earlier runs, each
    with the ID homeport then derived from its name: on the next start their services
    move to this agent's node and the nodes go; they had no other owner."""
    d = daemon_factory(node="today").start()
    for run, port in (("c0ffee01", 81), ("c0ffee02", 82)):
        old = {
            "Node": run,
            "ID": legacy_node_id(run, "dc1"),
            "Address": "172.17.0.9",
            "Service": {"Service": "web", "Port": port},
        }
        assert d.request("PUT", "/v1/catalog/register", old)[0] == 200
    d.stop()
    d.start()
    assert nodes(d) == ["today"]
    [web] = webs(d)
    assert (web["Node"]["Node"], web["Service"]["Port"]) == ("today", 82)
    assert "Deregistered node c0ffee01" in d.output()
