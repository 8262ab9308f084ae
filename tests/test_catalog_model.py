"""The pure catalog: values, indexes and change records."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from twisted.internet import defer
from twisted.python.failure import Failure

from homeport.catalog.errors import (
    CatalogError,
    CheckCritical,
    InvalidBehavior,
    InvalidCheckStatus,
    InvalidSession,
    MissingCheckRegistration,
    MissingNodeRegistration,
    NodeNotRegistered,
    NoTTL,
    ServiceIDMissing,
    UnknownKVVerb,
    UnknownService,
)
from homeport.catalog.model import (
    CRITICAL,
    PASSING,
    WARNING,
    Catalog,
    Change,
    Check,
    CheckDefinition,
    KVOp,
    Node,
    Service,
    Session,
    TxnOp,
    UnknownVerbOp,
    aggregate_status,
    check_ids_for,
    entity_from_dict,
    entity_to_dict,
)


def catalog_with_node() -> tuple[Catalog, list[Change]]:
    catalog = Catalog()
    changes: list[Change] = []
    catalog.subscribe(changes.extend)
    catalog.register(Node("n1", "10.0.0.1"))
    return catalog, changes


def test_each_operation_bumps_the_index_once() -> None:
    """One register with a node, a service and a check is one new index for all three."""
    catalog = Catalog()
    start = catalog.index
    catalog.register(
        Node("n1", "10.0.0.1"),
        [Service("n1", "web", "web", port=80)],
        [Check("n1", "c1", "c1", status=PASSING, service_id="web")],
    )
    assert catalog.index == start + 1
    service = catalog.services[("n1", "web")]
    assert service.create_index == service.modify_index == catalog.index
    assert catalog.checks[("n1", "c1")].service_name == "web"


def test_an_unchanged_registration_changes_nothing() -> None:
    """Re-registering identical data keeps the index and tells nobody."""
    catalog, changes = catalog_with_node()
    catalog.register_service(Service("n1", "web", "web", port=80))
    index = catalog.index
    changes.clear()
    catalog.register_service(Service("n1", "web", "web", port=80))
    assert catalog.index == index
    assert changes == []


def test_changes_carry_old_and_new_values() -> None:
    """Listeners see what changed, with the previous value."""
    catalog, changes = catalog_with_node()
    catalog.register_service(Service("n1", "web", "web", port=80))
    catalog.register_service(Service("n1", "web", "web", port=81))
    last = changes[-1]
    assert last.kind == "service" and last.op == "set"
    assert isinstance(last.previous, Service) and last.previous.port == 80
    assert isinstance(last.value, Service) and last.value.port == 81
    assert last.value.create_index < last.value.modify_index
    assert last.as_event()["service"] == "web"


def test_deregistering_a_service_removes_its_checks() -> None:
    catalog, changes = catalog_with_node()
    catalog.register_service(
        Service("n1", "web", "web"), [Check("n1", "service:web", "c", service_id="web")]
    )
    catalog.deregister_service("n1", "web")
    assert catalog.services == {} or ("n1", "web") not in catalog.services
    assert ("n1", "service:web") not in catalog.checks
    assert [c.kind for c in changes[-2:]] == ["check", "service"]


def test_unknown_service_is_an_error_when_asked() -> None:
    catalog, _ = catalog_with_node()
    with pytest.raises(UnknownService) as error:
        catalog.deregister_service("n1", "nope", missing_ok=False)
    assert error.value == UnknownService("nope")
    assert str(error.value) == (
        'Unknown service ID "nope". Ensure that the service ID is passed, not the service name.'
    )


def test_a_service_on_an_unknown_node_is_refused() -> None:
    catalog = Catalog()
    with pytest.raises(NodeNotRegistered) as error:
        catalog.register_service(Service("ghost", "web", "web"))
    assert error.value.node == "ghost" and str(error.value) == "Node 'ghost' is not registered"
    assert catalog.services == {}


def test_a_check_needs_a_known_status_and_its_service() -> None:
    catalog, _ = catalog_with_node()
    with pytest.raises(InvalidCheckStatus) as bad:
        catalog.register_check(Check("n1", "c", "c", status="fine"))
    assert str(bad.value) == "Invalid check status: 'fine'"
    with pytest.raises(ServiceIDMissing) as missing:
        catalog.register_check(Check("n1", "c", "c", service_id="db"))
    assert str(missing.value) == 'ServiceID "db" does not exist'


def test_errors_are_frozen_values_that_still_travel_as_exceptions() -> None:
    """Fields cannot change, yet contextlib and Twisted may set __traceback__ on them."""
    error = UnknownService("web")
    assert error == UnknownService("web") and error != UnknownService("db")
    with pytest.raises(dataclasses.FrozenInstanceError):
        error.service_id = "db"  # type: ignore[misc]

    @contextmanager
    def around() -> Iterator[None]:
        yield

    with pytest.raises(UnknownService), around():
        raise error
    assert error.__traceback__ is not None
    failure = Failure(error)
    failure.cleanFailure()
    assert error.__traceback__ is None

    def fail(_: object) -> None:
        raise error

    caught: list[Failure] = []
    defer.succeed(None).addCallback(fail).addErrback(caught.append)
    assert [f.value for f in caught] == [error]


def test_ttl_updates_need_a_ttl_check() -> None:
    """A TTL update of a non-TTL check gives the text clients match on."""
    catalog, _ = catalog_with_node()
    catalog.register_check(Check("n1", "c", "c", definition=CheckDefinition(tcp="x:1", interval=1)))
    with pytest.raises(NoTTL) as error:
        catalog.ttl_update("n1", "c", PASSING, "")
    assert str(error.value) == 'CheckID "c" does not have associated TTL'


def test_instances_are_case_insensitive_and_filter_by_every_tag() -> None:
    catalog, _ = catalog_with_node()
    catalog.register_service(Service("n1", "a", "Redis", tags=("primary", "v6")))
    catalog.register_service(Service("n1", "b", "redis", tags=("replica", "v6")))
    assert [s.id for s in catalog.instances("REDIS")] == ["a", "b"]
    assert [s.id for s in catalog.instances("redis", ["v6", "primary"])] == ["a"]
    assert catalog.instances("redis", ["nope"]) == []


def test_instance_status_is_the_worst_of_node_and_service_checks() -> None:
    catalog, _ = catalog_with_node()
    web = Service("n1", "web", "web")
    catalog.register_service(web, [Check("n1", "s", "s", status=PASSING, service_id="web")])
    web = catalog.services[("n1", "web")]
    assert catalog.instance_status(web) == PASSING
    catalog.register_check(Check("n1", "node", "node", status=WARNING))
    assert catalog.instance_status(web) == WARNING
    catalog.update_check("n1", "s", CRITICAL, "down")
    assert catalog.instance_status(web) == CRITICAL


def test_kv_cas_semantics() -> None:
    """cas=0 writes only if absent; cas=N only if ModifyIndex is N."""
    catalog = Catalog()
    assert catalog.kv_put("a", b"1", cas=0)
    assert not catalog.kv_put("a", b"2", cas=0)
    index = catalog.kv["a"].modify_index
    assert not catalog.kv_put("a", b"2", cas=index + 100)
    assert catalog.kv_put("a", b"2", cas=index)
    assert catalog.kv["a"].value == b"2"
    assert not catalog.kv_delete("a", cas=1)
    assert catalog.kv_delete("a", cas=catalog.kv["a"].modify_index)
    assert "a" not in catalog.kv


def test_kv_recursive_delete_takes_the_prefix_only() -> None:
    catalog = Catalog()
    for key in ("app/a", "app/b/c", "apple", "other"):
        catalog.kv_put(key, b"x")
    catalog.kv_delete("app/", recurse=True)
    assert sorted(catalog.kv) == ["apple", "other"]


def test_a_kv_read_has_consuls_index() -> None:
    """One key: its ModifyIndex (whatever else changed since); a missing key: the KV
    table's index; a prefix: the highest ModifyIndex under it."""
    catalog = Catalog()
    assert catalog.kv_key_index("a") == 0 and catalog.kv_prefix_index("") == 0
    catalog.kv_put("app/a", b"1")
    written = catalog.kv["app/a"].modify_index
    catalog.register(Node("n1", "10.0.0.1"))
    catalog.kv_put("other", b"1")
    assert catalog.index > written
    assert catalog.kv_key_index("app/a") == written
    assert catalog.kv_key_index("missing") == catalog.kv["other"].modify_index
    assert catalog.kv_prefix_index("app/") == written
    assert catalog.kv_prefix_index("") == catalog.kv["other"].modify_index
    assert catalog.kv_prefix_index("nothing/") == catalog.kv["other"].modify_index


def test_a_deleted_key_raises_its_prefix_index() -> None:
    """Consul's graveyard: deleting the newest key under a prefix must not lower the
    prefix's index, or a watcher holding it would never see the delete."""
    catalog = Catalog()
    catalog.kv_put("app/a", b"1")
    catalog.kv_put("app/b", b"1")
    catalog.kv_put("zzz", b"1")
    held = catalog.kv_prefix_index("app/")
    catalog.kv_delete("app/b")
    deleted_at = catalog.index
    assert catalog.kv_prefix_index("app/") == deleted_at > held
    assert catalog.kv_key_index("app/b") == deleted_at  # the table's index
    catalog.kv_put("zzz", b"2")
    assert catalog.kv_prefix_index("app/") == deleted_at
    catalog.kv_delete("app/", recurse=True)
    assert catalog.kv_prefix_index("app/") == catalog.index


def test_a_failed_transaction_leaves_the_kv_indexes_alone() -> None:
    catalog = Catalog()
    catalog.kv_put("app/a", b"1")
    before = catalog.kv_prefix_index("app/"), catalog.kv_key_index("nope")
    _, errors = catalog.kv_txn([KVOp("delete", "app/a"), KVOp("get", "nope")])
    assert errors
    assert (catalog.kv_prefix_index("app/"), catalog.kv_key_index("nope")) == before


def test_the_graveyard_keeps_the_newest_deletes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("homeport.catalog.model.KV_TOMBSTONES", 2)
    catalog = Catalog()
    for key in ("a/1", "b/1", "c/1", "keep"):
        catalog.kv_put(key, b"x")
    for key in ("a/1", "b/1", "c/1"):
        catalog.kv_delete(key)
    table = catalog.kv_table_index
    assert catalog.kv_prefix_index("a/") == table  # forgotten: the table's index
    assert catalog.kv_prefix_index("b/") == table - 1
    assert catalog.kv_prefix_index("c/") == table


def test_after_a_load_kv_indexes_start_from_the_loaded_index() -> None:
    """Deletes before a restart are not remembered: a watcher's older index is answered
    (once), never left waiting through a delete it did not see."""
    catalog = Catalog()
    catalog.kv_put("app/a", b"1")
    catalog.kv_put("app/b", b"1")
    catalog.kv_delete("app/b")
    stored = list(catalog.kv.values())
    again = Catalog()
    again.load(stored, catalog.index)
    assert again.kv_key_index("app/a") == catalog.kv["app/a"].modify_index
    assert again.kv_prefix_index("app/") == catalog.index
    assert again.kv_key_index("app/b") == catalog.index


def test_replace_source_adds_changes_and_removes_in_one_index() -> None:
    """A definition reload is one change: new, changed and removed services at once."""
    catalog, changes = catalog_with_node()
    catalog.replace_source("n1", "config", [Service("n1", "a", "a", source="config")], [])
    catalog.replace_source(
        "n1",
        "config",
        [Service("n1", "b", "b", source="config")],
        [Check("n1", "service:b", "b", service_id="b", source="config")],
    )
    assert ("n1", "a") not in catalog.services
    assert ("n1", "b") in catalog.services
    assert len({c.index for c in changes[-3:]}) == 1


def test_check_ids_follow_consul() -> None:
    assert list(check_ids_for("web", 1)) == ["service:web"]
    assert list(check_ids_for("web", 2)) == ["service:web:1", "service:web:2"]


def test_aggregate_status() -> None:
    assert aggregate_status([]) == PASSING
    assert aggregate_status([PASSING, WARNING]) == WARNING
    assert aggregate_status([WARNING, CRITICAL, PASSING]) == CRITICAL


def test_entities_round_trip_through_the_store_format() -> None:
    catalog, _ = catalog_with_node()
    catalog.register_service(
        Service("n1", "web", "web", tags=("a",), meta={"k": "v"}),
        [
            Check(
                "n1",
                "service:web",
                "c",
                service_id="web",
                definition=CheckDefinition(http="http://x/", interval=5, header={"A": ("b",)}),
            )
        ],
    )
    catalog.kv_put("k", b"\x00\xffbytes")
    for entity in [
        catalog.nodes["n1"],
        catalog.services[("n1", "web")],
        catalog.checks[("n1", "service:web")],
        catalog.kv["k"],
    ]:
        kind = type(entity).__name__.lower().replace("kventry", "kv")
        assert entity_from_dict(kind, entity_to_dict(entity)) == entity  # type: ignore[arg-type]


# -- sessions and locks ---------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def catalog_with_sessions() -> tuple[Catalog, FakeClock]:
    clock = FakeClock()
    catalog = Catalog(clock=clock)
    catalog.register(
        Node("n1", "10.0.0.1"),
        checks=[
            Check("n1", "serfHealth", "Serf", status=PASSING),
            Check("n1", "disk", "Disk", status=PASSING),
        ],
    )
    catalog.session_create(Session("s1", "n1", name="one"))
    catalog.session_create(Session("s2", "n1", name="two", lock_delay=0))
    return catalog, clock


def test_a_lock_goes_to_one_session_at_a_time_and_counts_its_holders() -> None:
    """Consul's acquire: LockIndex counts acquisitions; the holder may write again
    (LockIndex kept); another session gets false; release frees it for the next."""
    catalog, _ = catalog_with_sessions()
    assert catalog.kv_acquire("leader", b"one", 0, "s1")
    assert (catalog.kv["leader"].session, catalog.kv["leader"].lock_index) == ("s1", 1)
    assert not catalog.kv_acquire("leader", b"two", 0, "s2")
    assert catalog.kv_acquire("leader", b"one again", 0, "s1")
    assert catalog.kv["leader"].lock_index == 1 and catalog.kv["leader"].value == b"one again"
    assert not catalog.kv_release("leader", b"", 0, "s2")  # not the holder
    # A plain write leaves the lock where it is.
    assert catalog.kv_put("leader", b"plain")
    assert catalog.kv["leader"].session == "s1"
    assert catalog.kv_release("leader", b"released", 0, "s1")
    assert (catalog.kv["leader"].session, catalog.kv["leader"].value) == ("", b"released")
    assert catalog.kv_acquire("leader", b"two", 0, "s2")
    assert catalog.kv["leader"].lock_index == 2
    with pytest.raises(InvalidSession, match='invalid session "nope"'):
        catalog.kv_acquire("leader", b"", 0, "nope")


def test_destroying_a_session_releases_its_locks_behind_the_lock_delay() -> None:
    catalog, clock = catalog_with_sessions()
    catalog.kv_acquire("leader", b"one", 0, "s1")
    catalog.session_destroy("s1")
    assert "s1" not in catalog.sessions
    assert catalog.kv["leader"].session == "" and catalog.kv["leader"].value == b"one"
    # s1's lock delay (15 s) keeps everyone out, then the key is free.
    assert not catalog.kv_acquire("leader", b"two", 0, "s2")
    clock.now += 15.5
    assert catalog.kv_acquire("leader", b"two", 0, "s2")
    # s2 has no lock delay: its keys are free at once.
    catalog.session_destroy("s2")
    catalog.session_create(Session("s3", "n1"))
    assert catalog.kv_acquire("leader", b"three", 0, "s3")


def test_a_delete_session_takes_its_keys_with_it() -> None:
    catalog, _ = catalog_with_sessions()
    catalog.session_create(Session("eph", "n1", behavior="delete"))
    catalog.kv_acquire("workers/a", b"alive", 0, "eph")
    catalog.kv_put("workers/b", b"someone else's")
    catalog.session_destroy("eph")
    assert sorted(catalog.kv) == ["workers/b"]


def test_a_session_ends_with_its_checks_or_its_node() -> None:
    """Critical (not warning) on a session's check, removing the check, or removing the
    node invalidates the session and releases its keys."""
    catalog, _ = catalog_with_sessions()
    catalog.session_create(Session("d", "n1", node_checks=("serfHealth", "disk")))
    catalog.kv_acquire("k", b"", 0, "d")
    catalog.update_check("n1", "disk", WARNING, "")
    assert "d" in catalog.sessions
    catalog.update_check("n1", "disk", CRITICAL, "full")
    assert "d" not in catalog.sessions and catalog.kv["k"].session == ""
    assert set(catalog.sessions) == {"s1", "s2"}  # they do not name "disk"

    catalog.update_check("n1", "disk", PASSING, "")
    catalog.session_create(Session("d2", "n1", node_checks=("disk",)))
    catalog.deregister_check("n1", "disk")
    assert "d2" not in catalog.sessions

    catalog.deregister_node("n1")
    assert catalog.sessions == {}


def test_a_session_needs_its_node_and_healthy_checks() -> None:
    catalog, _ = catalog_with_sessions()
    catalog.update_check("n1", "disk", CRITICAL, "")
    for session, refusal, text in [
        (Session("x", "ghost"), MissingNodeRegistration("ghost"), "Missing node registration"),
        (
            Session("x", "n1", node_checks=("nope",)),
            MissingCheckRegistration("nope"),
            "Missing check 'nope' registration",
        ),
        (
            Session("x", "n1", node_checks=("disk",)),
            CheckCritical("disk"),
            "Check 'disk' is in critical state",
        ),
        (
            Session("x", "n1", behavior="keep"),
            InvalidBehavior("keep"),
            "Invalid Behavior setting 'keep'",
        ),
    ]:
        with pytest.raises(CatalogError) as error:
            catalog.session_create(session)
        assert (error.value, str(error.value)) == (refusal, text)
    assert "x" not in catalog.sessions


def test_sessions_and_held_keys_survive_the_store_format() -> None:
    catalog, _ = catalog_with_sessions()
    catalog.kv_acquire("leader", b"\x00\xff", 3, "s1")
    for kind, entity in [("session", catalog.sessions["s1"]), ("kv", catalog.kv["leader"])]:
        assert entity_from_dict(kind, entity_to_dict(entity)) == entity  # type: ignore[arg-type]


# -- transactions ---------------------------------------------------------------------


def test_a_transaction_applies_every_op_under_one_index() -> None:
    catalog, _ = catalog_with_sessions()
    catalog.kv_put("app/old", b"x")
    changes: list[Change] = []
    catalog.subscribe(changes.extend)
    before = catalog.index
    results, errors = catalog.kv_txn(
        [
            KVOp("set", "app/a", b"1"),
            KVOp("cas", "app/b", b"2", index=0),
            KVOp("lock", "app/leader", b"me", session="s1"),
            KVOp("delete", "app/old"),
            KVOp("get", "app/a"),
            KVOp("get-tree", "app/"),
        ]
    )
    assert errors == []
    assert catalog.index == before + 1 and {c.index for c in changes} == {before + 1}
    assert [(e.key, e.value) for e in results] == [
        ("app/a", b""),  # a write's result carries no value
        ("app/b", b""),
        ("app/leader", b""),
        ("app/a", b"1"),  # a read's does
        ("app/a", b"1"),
        ("app/b", b"2"),
        ("app/leader", b"me"),
    ]
    assert catalog.kv["app/leader"].session == "s1"
    assert "app/old" not in catalog.kv


def test_a_failing_op_leaves_everything_as_it_was() -> None:
    catalog, _ = catalog_with_sessions()
    catalog.kv_acquire("leader", b"one", 0, "s1")
    catalog.kv_put("config", b"v1")
    index = catalog.kv["config"].modify_index
    changes: list[Change] = []
    catalog.subscribe(changes.extend)
    before = catalog.index
    cases: list[tuple[list[TxnOp], int, str]] = [
        (
            [KVOp("set", "new", b"x"), KVOp("cas", "config", b"v2", index=index + 7)],
            1,
            'failed to set key "config", index is stale',
        ),
        (
            [KVOp("delete", "config"), KVOp("lock", "leader", b"two", session="s2")],
            1,
            'failed to lock key "leader", lock is already held',
        ),
        ([KVOp("check-not-exists", "config")], 0, 'key "config" exists'),
        ([KVOp("check-index", "config", index=1)], 0, f"current modify index {index} != 1"),
        ([KVOp("get", "nope")], 0, 'key "nope" doesn\'t exist'),
        ([KVOp("unlock", "leader", session="s2")], 0, 'failed to unlock key "leader", lock'),
        ([KVOp("lock", "x", session="ghost")], 0, 'invalid session "ghost"'),
        ([KVOp("delete-tree", ""), UnknownVerbOp("frobnicate")], 1, 'unknown KV verb "frobnicate"'),
        ([KVOp("lock", "x")], 0, "Missing session"),
        ([KVOp("check-session", "leader", session="s2")], 0, 'current session "s1" != "s2"'),
        ([KVOp("delete-cas", "config", index=1)], 0, 'failed to delete key "config", index is'),
    ]
    for ops, failed, reason in cases:
        results, errors = catalog.kv_txn(ops)
        assert results == []
        [(n, what)] = errors
        assert n == failed and str(what).startswith(reason), what
        assert isinstance(what, CatalogError)
    _, [(_, unknown)] = catalog.kv_txn([UnknownVerbOp("frobnicate")])
    assert unknown == UnknownKVVerb("frobnicate")
    assert changes == [] and catalog.index == before
    assert sorted(catalog.kv) == ["config", "leader"]
    assert catalog.kv["leader"].session == "s1" and catalog.kv["config"].value == b"v1"
