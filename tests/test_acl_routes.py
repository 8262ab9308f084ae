"""No endpoint is left unguarded (issue #18): every route of the API, as the daemon wires
it (:func:`homeport.http.site.faces`), declares its ACL rule, and every other face
declares the rule it enforces (its resource's ``acl_rule``, checked against the table
here) or is listed with why it needs none.  A route or face added later without one
fails.  (tests/test_acl_faces.py proves the faces' rules bite.)"""

from __future__ import annotations

import tempfile
from typing import Any, cast

import pytest
from twisted.internet.testing import MemoryReactorClock

from homeport.http.api import ApiResource, all_routes
from homeport.http.site import faces
from homeport.part import IHomeportReactor
from homeport.tap import Options, makeService

#: Faces that are not API routes and enforce a rule of their own: the rule.
GUARDED = {
    "/metrics": "agent:read",
    "/log": "log:write",
    "/v1/logs": "log:read",
    "/ui": "ui:read",
    "/socket.io": "topic read (push.access)",
    "/v1/events": "topic read (push.access); POST: event:write",
}
#: Faces that are not API routes and declare no rule, and why each is safe.
UNGUARDED = {
    "/.well-known": "ACME challenges: public by design",
    "/v1/agent": "the monitor stream, guarded as GET /v1/agent/monitor; else the API",
    "/v1/event": "the blocking event list, answered (and filtered) by the API",
}
NOT_ROUTES = {**GUARDED, **UNGUARDED}


def _site() -> Any:
    data = tempfile.mkdtemp(prefix="homeport-acl-routes-")
    options = Options()
    options.parseOptions(["--data-dir", data, "--advertise", "127.0.0.1", "--acl"])
    top: Any = makeService(options, reactor=cast(IHomeportReactor, MemoryReactorClock()))
    return top.site.resource


SITE = _site()
API = cast(ApiResource, SITE.children[b"v1"].api)
ROUTES = sorted(all_routes(API), key=lambda r: r.name)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.methods[0].decode()} {r.name}")
def test_every_route_declares_its_rule(route: Any) -> None:
    assert route.guard is not None, f"{route.name} has no ACL guard (catalog/guards.py)"
    assert route.guard.rule
    if route.guard.rule != "none" and route.guard.check is None:
        assert route.guard.filter is not None or route.name == "/v1/acl/token/self"


def test_every_face_is_a_route_or_listed() -> None:
    paths = {face.path for face in faces(SITE) if not face.methods}
    assert paths - set(NOT_ROUTES) == set(), "a new face: guard it, then list it here"
    assert set(NOT_ROUTES) - paths == set(), "a listed face is gone: drop it from the list"


def _resource(path: str) -> Any:
    """The resource the site serves *path* with (``/name`` or ``/v1/name``)."""
    node = SITE
    for name in path.strip("/").split("/"):
        node = node.children[name.encode()]
    return node


@pytest.mark.parametrize("path", sorted(GUARDED))
def test_every_other_face_declares_its_rule(path: str) -> None:
    """Each face outside the API says which ACL rule it enforces, the one listed."""
    rule = getattr(_resource(path), "acl_rule", None)
    assert rule == GUARDED[path], f"{path}: its resource's acl_rule"


def test_the_unguarded_faces_declare_no_rule() -> None:
    """A face listed as needing no rule does not claim one (else list it as guarded)."""
    for path in UNGUARDED:
        assert getattr(_resource(path), "acl_rule", None) is None, path


def test_there_are_routes_to_check() -> None:
    assert len(ROUTES) > 60
    open_routes = {r.name for r in ROUTES if r.guard is not None and r.guard.rule == "none"}
    assert open_routes == {
        "/v1/acl/bootstrap",
        "/v1/catalog/datacenters",
        "/v1/coordinate/datacenters",
        "/v1/status/leader",
        "/v1/status/peers",
    }
