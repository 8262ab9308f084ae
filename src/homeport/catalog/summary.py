"""What the dashboard's overview shows: counts and services, read from the catalog."""

from __future__ import annotations

from typing import Any

from .. import __version__
from .api import Agent
from .model import Catalog


def summary(catalog: Catalog) -> dict[str, Any]:
    """Counts of services, instances, check states, nodes and keys, and each service's
    instance count and tags.  Called on the reactor thread: the catalog is not locked."""
    services: dict[str, dict[str, Any]] = {}
    for service in sorted(catalog.services.values(), key=lambda s: s.name):
        row = services.setdefault(service.name, {"instances": 0, "tags": set()})
        row["instances"] += 1
        row["tags"].update(service.tags)
    counts = {"services": len(services), "instances": len(catalog.services)}
    counts.update(passing=0, warning=0, critical=0)
    for check in catalog.checks.values():
        counts[check.status] = counts.get(check.status, 0) + 1
    counts.update(nodes=len(catalog.nodes), keys=len(catalog.kv))
    return {
        "counts": counts,
        "services": {
            k: {"instances": v["instances"], "tags": sorted(v["tags"])} for k, v in services.items()
        },
    }


def dashboard_facts(
    catalog: Catalog, agent: Agent, now: float, agents: list[str] | None = None
) -> dict[str, Any]:
    """The dashboard header's facts: who this agent is, since when, the live agents
    sharing the catalog (with etcd; None: this one alone), and :func:`summary`."""
    return {
        "agents": agents or [],
        "node": agent.node,
        "datacenter": agent.datacenter,
        "version": __version__,
        "uptime_seconds": now - agent.started,
        **summary(catalog),
    }
