"""The catalog's story in the daemon's own log: a line for each registration,
deregistration, health status change and session invalidation (issue #22, item 3)."""

from __future__ import annotations

from homeport.catalog.model import CRITICAL, PASSING, Catalog, Change, Check, Node, Service, Session
from homeport.catalog.story import LARGEST_TOLD, lines

from .daemon import Daemon, wait_for


def told(catalog: Catalog) -> list[str]:
    """What the story says about each change of *catalog* from now on."""
    said: list[str] = []

    def listen(changes: list[Change]) -> None:
        said.extend(text.format(**fields) for text, fields in lines(changes))

    catalog.subscribe(listen)
    return said


def test_each_kind_of_change_is_one_line() -> None:
    catalog = Catalog()
    said = told(catalog)
    catalog.register(Node("n1", "10.0.0.1"))
    catalog.register_service(
        Service("n1", "web-1", "web", port=80),
        [Check("n1", "service:web-1", "web", PASSING, service_id="web-1")],
    )
    catalog.register_check(Check("n1", "disk", "Disk", PASSING))
    catalog.update_check("n1", "service:web-1", CRITICAL, "connection refused\n")
    catalog.deregister_service("n1", "web-1")
    assert said == [
        "Registered node n1 at 10.0.0.1",
        "Registered service web (web-1) on node n1 port 80",
        "Registered check disk on node n1 (passing)",
        "Check service:web-1 of service web on node n1: passing -> critical (connection refused)",
        "Deregistered service web (web-1) from node n1",
    ]


def test_an_unchanged_status_and_builtin_entries_say_nothing() -> None:
    catalog = Catalog()
    catalog.register(Node("n1", "10.0.0.1"))
    said = told(catalog)
    catalog.register_service(Service("n1", "consul", "consul", source="builtin"))
    catalog.register_check(Check("n1", "serfHealth", "Serf", PASSING, source="builtin"))
    catalog.register_check(Check("n1", "disk", "Disk", PASSING))
    catalog.update_check("n1", "disk", PASSING, "still fine")
    assert said == ["Registered check disk on node n1 (passing)"]


def test_an_invalidated_session_says_why_and_which_locks_it_let_go() -> None:
    catalog = Catalog()
    catalog.register(Node("n1", "10.0.0.1"), checks=[Check("n1", "serfHealth", "S", PASSING)])
    session = catalog.session_create(Session("s-1", "n1", name="leader"))
    catalog.kv_acquire("service/leader", b"me", 0, session.id)
    said = told(catalog)
    catalog.update_check("n1", "serfHealth", CRITICAL, "")
    assert said == [
        "Check serfHealth on node n1: passing -> critical",
        "Invalidated session s-1 (leader) of node n1: its check serfHealth is critical; "
        "released service/leader",
    ]


def test_a_snapshot_restore_is_one_line() -> None:
    catalog = Catalog()
    catalog.register(Node("n1", "10.0.0.1"))
    services = [Service("n1", f"s{i}", f"s{i}") for i in range(LARGEST_TOLD + 1)]
    said = told(catalog)
    catalog.restore([Node("n1", "10.0.0.1"), *services])
    assert len(said) == 1 and said[0].startswith("Catalog replaced: ")


def test_the_daemon_logs_its_catalog_story(daemon: Daemon) -> None:
    """A registration, a status change, a session invalidation and a deregistration,
    each one line in the daemon's own log."""
    service = {"Name": "api", "ID": "api-1", "Port": 9000, "Check": {"TTL": "1h"}}
    assert daemon.request("PUT", "/v1/agent/service/register", service)[0] == 200
    assert daemon.request("PUT", "/v1/agent/check/pass/service:api-1")[0] == 200
    body = {"Name": "deploy", "Checks": ["serfHealth", "service:api-1"]}
    status, _, created = daemon.request("PUT", "/v1/session/create", body)
    assert status == 200, created
    assert daemon.request("PUT", "/v1/agent/check/fail/service:api-1?note=down")[0] == 200
    assert daemon.request("PUT", "/v1/agent/service/deregister/api-1")[0] == 200
    expected = [
        "Registered service api (api-1) on node testnode port 9000",
        "Check service:api-1 of service api on node testnode: critical -> passing",
        "Check service:api-1 of service api on node testnode: passing -> critical (down)",
        "Invalidated session ",
        "its check service:api-1 is critical",
        "Deregistered service api (api-1) from node testnode",
    ]
    wait_for(lambda: all(e in daemon.output() for e in expected), what="\n".join(expected))
    [line] = [x for x in daemon.output().splitlines() if "Invalidated session" in x]
    assert " INFO " in line and "(deploy) of node testnode" in line
