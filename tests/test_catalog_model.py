"""The pure catalog: values, indexes and change records."""

from __future__ import annotations

import pytest

from homeport.catalog.model import (
    CRITICAL,
    PASSING,
    WARNING,
    Catalog,
    Change,
    Check,
    CheckDefinition,
    Node,
    NoTTL,
    ServerRefusal,
    Service,
    UnknownService,
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
    assert 'Unknown service ID "nope"' in str(error.value)
    assert error.value.status == 404


def test_a_service_on_an_unknown_node_is_refused() -> None:
    catalog = Catalog()
    with pytest.raises(ServerRefusal):
        catalog.register_service(Service("ghost", "web", "web"))
    assert catalog.services == {}


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
