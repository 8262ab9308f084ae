"""Which events a token may read, and which topics it may publish on (``--acl``).

Pure: an event and an :class:`~homeport.acl.Authorizer` in, a yes or no out.  The topics
follow the rules of what they tell about, as Consul would map them:

- ``catalog``: read on every name the event carries: ``node`` (node read), ``service``
  (service read), ``query`` (query read);
- ``kv``: key read on the event's ``key``; a session's event: session read
  (``session_prefix ""``);
- ``consul-event`` (Consul's user events, ``PUT /v1/event/fire``): event read on its
  ``Name``;
- ``logs``: the ``log`` rule's read;
- any other topic (published ones, ``zmq/...``): event read on the topic's name.

Publishing on a topic needs event write on its name.
"""

from __future__ import annotations

from typing import Any

from ..acl import Authorizer
from .hub import Event

READ = "read"
#: The topic of Consul's user events (``homeport.catalog.events_api``).
CONSUL_EVENT = "consul-event"
#: What each name in a ``catalog`` event needs read on.
_CATALOG_NAMES = (("node", "node"), ("service", "service"), ("query", "query"))


def topic_rule(topic: str) -> tuple[str, str] | None:
    """(resource, name) reading every event of *topic* needs, when the topic alone
    decides it; None when each event's names do (``catalog``, ``kv``, user events)."""
    if topic == "logs":
        return "log", ""
    if topic in ("catalog", "kv", CONSUL_EVENT):
        return None
    return "event", topic


def readable(authz: Authorizer, event: Event) -> bool:
    """May *authz* read *event*?"""
    topic, data = event.topic, event.data
    if topic == "catalog":
        return _catalog(authz, data)
    if topic == "kv":
        return _kv(authz, data)
    if topic == CONSUL_EVENT:
        name = data.get("Name") if isinstance(data, dict) else None
        return authz.allows("event", name if isinstance(name, str) else topic, READ)
    rule = topic_rule(topic)
    assert rule is not None
    return authz.allows(rule[0], rule[1], READ)


def _catalog(authz: Authorizer, data: Any) -> bool:
    if not isinstance(data, dict):
        return authz.allows_all("service", READ) and authz.allows_all("node", READ)
    for key, resource in _CATALOG_NAMES:
        name = data.get(key)
        if isinstance(name, str) and name and not authz.allows(resource, name, READ):
            return False
    return True


def _kv(authz: Authorizer, data: Any) -> bool:
    if not isinstance(data, dict):
        return authz.allows_all("key", READ)
    key = data.get("key")
    if isinstance(key, str):
        return authz.allows("key", key, READ)
    return authz.allows("session", "", READ)
