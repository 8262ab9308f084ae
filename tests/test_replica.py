"""The replicated catalog's proposals and applies (pure: catalog/replica.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from homeport.catalog.errors import ServiceIDMissing
from homeport.catalog.model import (
    PASSING,
    Change,
    Check,
    KVEntry,
    Node,
    Service,
    Session,
)
from homeport.catalog.replica import Proposal, ReplicatedCatalog


def test_a_proposal_changes_nothing_until_applied() -> None:
    catalog = ReplicatedCatalog()
    told: list[list[Change]] = []
    catalog.subscribe(told.append)
    with catalog.proposal() as proposal:
        catalog.register(Node("n1", "10.0.0.1"), [Service("n1", "web", "web", port=80)])
        assert "n1" in catalog.nodes  # the proposal's own later steps see it
    assert dict(catalog.nodes) == {} and dict(catalog.services) == {}
    assert catalog.index == 1 and told == []
    writes = proposal.writes()
    assert set(writes) == {("node", "n1"), ("service", ("n1", "web"))}
    assert all(before is None for before, _ in writes.values())


def test_later_steps_of_one_proposal_see_the_earlier_ones() -> None:
    catalog = ReplicatedCatalog()
    catalog.apply(5, [(("node", "n1"), Node("n1", "10.0.0.1", create_index=5, modify_index=5))])
    with catalog.proposal() as proposal:
        catalog.register_service(Service("n1", "web", "web"))
        catalog.register_check(Check("n1", "service:web", "web", service_id="web"))
    assert len(proposal.writes()) == 2
    with pytest.raises(ServiceIDMissing), catalog.proposal():
        catalog.register_check(Check("n1", "c", "c", service_id="nope"))


def test_apply_tells_listeners_with_the_store_s_revision() -> None:
    catalog = ReplicatedCatalog()
    told: list[list[Change]] = []
    catalog.subscribe(told.append)
    node = Node("n1", "10.0.0.1", create_index=7, modify_index=7)
    catalog.apply(7, [(("node", "n1"), node)])
    assert catalog.nodes["n1"] == node and catalog.index == 7
    assert [c.index for c in told[0]] == [7]
    catalog.apply(9, [(("node", "n1"), None)])
    assert "n1" not in catalog.nodes and told[-1][0].op == "delete"


def test_what_an_operation_looked_up_is_a_read_to_guard() -> None:
    catalog = ReplicatedCatalog()
    session = Session("s1", "n1", node_checks=(), create_index=3, modify_index=3)
    catalog.apply(2, [(("node", "n1"), Node("n1", "a", create_index=2, modify_index=2))])
    catalog.apply(3, [(("session", "s1"), session)])
    with catalog.proposal() as proposal:
        assert catalog.kv_acquire("lock", b"me", 0, "s1")
    assert ("session", "s1") in proposal.reads
    assert ("kv", "lock") not in proposal.reads  # written, so guarded as a write
    assert catalog.looked_up(("session", "s1")) == session


def test_an_operation_outside_a_proposal_is_one_of_its_own() -> None:
    catalog = ReplicatedCatalog()
    proposals: list[Proposal] = []
    catalog.on_proposal = proposals.append
    assert catalog.kv_put("a", b"1")
    assert "a" not in catalog.kv and len(proposals) == 1
    (slot, (before, after)) = next(iter(proposals[0].writes().items()))
    assert slot == ("kv", "a") and before is None and isinstance(after, KVEntry)


def test_a_status_that_does_not_change_proposes_nothing() -> None:
    catalog = ReplicatedCatalog()
    check = Check("n1", "c", "c", status=PASSING, create_index=4, modify_index=4)
    catalog.apply(4, [(("node", "n1"), Node("n1", "a", create_index=4, modify_index=4))])
    catalog.apply(4, [(("check", ("n1", "c")), check)])
    proposals: list[Proposal] = []
    catalog.on_proposal = proposals.append
    catalog.update_check("n1", "c", PASSING, "")
    assert proposals == []
    catalog.update_check("n1", "c", "critical", "down")
    assert len(proposals) == 1 and catalog.checks[("n1", "c")] == check


def test_reset_holds_exactly_what_the_store_has() -> None:
    catalog = ReplicatedCatalog()
    a = Node("a", "1", create_index=2, modify_index=2)
    b = Node("b", "2", create_index=3, modify_index=3)
    catalog.apply(2, [(("node", "a"), a)])
    catalog.reset(10, [(("node", "b"), b)])
    assert dict(catalog.nodes) == {"b": b} and catalog.index == 10


def test_orphaned_locks_are_released_or_deleted() -> None:
    catalog = ReplicatedCatalog()
    held = KVEntry("k", b"v", lock_index=1, session="gone", create_index=5, modify_index=5)
    catalog.apply(5, [(("kv", "k"), held)])
    proposals: list[Proposal] = []
    catalog.on_proposal = proposals.append
    catalog.release_orphans("gone", "release")
    after = proposals[0].writes()[("kv", "k")][1]
    assert after == replace(held, session="", modify_index=6)
    catalog.release_orphans("gone", "delete")
    assert proposals[1].writes()[("kv", "k")] == (held, None)
