"""The service catalog: nodes, services, checks, KV and sessions, served as Consul's HTTP API.

:mod:`.model` is the pure core (no Twisted), :mod:`.store` keeps it in SQLite,
:mod:`.checks` and :mod:`.sessions` run its timers, :mod:`.config` loads ``--config-dir``,
and :mod:`.api` is the face: Consul's routes on the ground floor's
:class:`~homeport.http.api.ApiResource`.  :func:`build` makes all of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService

from ..http.metrics import Metrics
from ..part import IHomeportReactor, Part, attach
from . import story

if TYPE_CHECKING:
    from twisted.web.resource import IResource

    from ..acl import Authorizer
    from ..http.api import ApiResource
    from .acl_records import AclRecords
    from .api import Agent
    from .checks import ScriptPolicy
    from .config import ConfigService
    from .etcdstore import EtcdCatalogStore
    from .model import Catalog, Change, Node


@dataclass(frozen=True, kw_only=True)
class Settings:
    datacenter: str = "dc1"
    #: This agent's node name and address.  No name: the one the data dir keeps (the
    #: hostname on the first start); no address: the first routable IPv4.
    node: str | None = None
    advertise: str | None = None
    config_dirs: tuple[Path, ...] = ()
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    #: Run script checks (Consul's ``Args``) from the HTTP API and ``--config-dir`` /
    #: from ``--config-dir`` only (Consul's enable_script_checks / _local_script_checks).
    enable_script_checks: bool = False
    enable_local_script_checks: bool = False
    #: The etcd cluster shared with the other agents (``--catalog etcd://…``) as
    #: http(s) URLs; empty: the embedded SQLite store in the data dir.
    etcd_endpoints: tuple[str, ...] = ()
    etcd_prefix: str = "/homeport/"
    etcd_ca: Path | None = None
    etcd_cert: Path | None = None
    etcd_key: Path | None = None
    #: With etcd: the TTL of this agent's liveness lease, and how long a dead agent's
    #: node stays before it is deregistered (Consul's reconnect_timeout, 72 h).
    agent_ttl: float = 10.0
    reap_after: float = 72 * 3600.0
    #: Consul's ACL system (``--acl``): every route enforces its rule; what no rule
    #: matches, *acl_default_policy* ("allow" or "deny") decides.
    acl: bool = False
    acl_default_policy: str = "deny"


@dataclass(frozen=True, kw_only=True)
class CatalogPart(Part):
    catalog: Catalog
    agent: Agent
    #: The Consul API resource: everything under ``/v1/`` no other part claims.
    api: ApiResource
    #: The dashboard's header facts; call on the reactor thread.
    facts: Callable[[], dict[str, Any]] = field(default=dict)
    #: Give ``PUT /v1/agent/reload`` what SIGHUP runs (the wiring calls it once).
    set_reload: Callable[[Callable[[], None]], None] = field(default=lambda reload: None)
    #: With ``--acl``: the anonymous token's Authorizer now (what DNS answers under).
    anonymous: Callable[[], Authorizer] | None = None
    #: Called after any token, policy or role change, here or from another agent
    #: (after the Resolver has forgotten its decisions).
    on_acl_change: list[Callable[[], None]] = field(default_factory=list)


def build(
    settings: Settings,
    reactor: IHomeportReactor,
    data_dir: Path,
    metrics: Metrics,
    publish: Callable[[str, Any], object] | None = None,
) -> CatalogPart:
    """The catalog loaded from ``<data_dir>/catalog.sqlite3``, its timers and its API.

    Changes go to *publish*'s topics ``catalog`` and ``kv``, user events to ``consul-event``.
    Raises what opening the database raises (``sqlite3.Error``, ``OSError``).
    """
    from .acl_records import AclRecords
    from .api import ConsulAPI, api_resource
    from .checks import ScriptPolicy
    from .summary import dashboard_facts

    service = MultiService()
    scripts = ScriptPolicy.from_settings(settings)
    on = _on_etcd if settings.etcd_endpoints else _on_sqlite
    catalog, agent, config, shared = on(settings, reactor, data_dir, scripts, service)
    _gauges(metrics, catalog)
    api = api_resource(settings, reactor, catalog, metrics)
    if shared is not None:
        _serve_shared(api, shared)
    # Before the API's listener: a change forgets the ACL decisions before parked
    # queries are asked again (see _acl).
    records = AclRecords(catalog)
    face = ConsulAPI(api, catalog, agent, reactor, scripts=scripts)
    face.cluster = shared
    v1 = _events_and_snapshots(api, catalog, agent.node, reactor, publish, service)
    if publish is not None:
        catalog.subscribe(_publisher(publish))

    def facts() -> dict[str, Any]:
        agents = [node for node, _, _ in shared.members()] if shared is not None else None
        return dashboard_facts(catalog, agent, reactor.seconds(), agents)

    set_reload = _agent_and_operator(api, catalog, agent, reactor, metrics, service, v1, data_dir)
    anonymous = _acl(settings, api, records, agent)
    return CatalogPart(
        service=service,
        v1=v1,
        on_hangup=(config.reload,) if settings.config_dirs else (),
        catalog=catalog,
        agent=agent,
        api=api,
        facts=facts,
        set_reload=set_reload,
        anonymous=anonymous,
        on_acl_change=records.on_change,
    )


def _acl(
    settings: Settings, api: ApiResource, records: AclRecords, agent: Agent
) -> Callable[[], Authorizer] | None:
    """The ACL endpoints and every route's guard; with ``--acl``, the resolver that
    makes the guards bite (its decisions forgotten on any ACL change, here or from
    another agent), and what gives the anonymous token's Authorizer (None without)."""
    import time

    from ..acl import ANONYMOUS_ACCESSOR, Resolver, TokenNotFound, compile_rules
    from . import acl_api, guards

    catalog = records.catalog
    acl_api.routes(api, acl_api.AclAPI(catalog, records, time.time), settings.acl)
    guards.attach(api, catalog, agent)
    if not settings.acl:
        return None
    resolver = Resolver(
        records,
        default=settings.acl_default_policy,
        management_secret=settings.token,
        datacenter=catalog.datacenter,
    )
    records.on_change.append(resolver.invalidate)
    api.acl = resolver

    def anonymous() -> Authorizer:
        try:
            return resolver.resolve(None)
        except TokenNotFound:  # an expired anonymous token: nothing may be read
            return compile_rules((), "deny", ANONYMOUS_ACCESSOR)

    return anonymous


def _identity(settings: Settings, catalog: Catalog, data_dir: Path, now: float) -> Agent:
    """This agent, named as the data dir remembers (or ``--node`` says)."""
    import socket

    from .api import Agent, default_advertise
    from .identity import load_identity

    known = {node.name: node.id for node in catalog.nodes.values()}
    me = load_identity(data_dir, settings.node, socket.gethostname, known)
    agent = Agent(
        node=me.name,
        node_id=me.id,
        datacenter=catalog.datacenter,
        address=settings.advertise or default_advertise(),
        started=now,
    )
    return agent


#: Where the catalog is kept, as build needs it: the catalog, this agent, the
#: ``--config-dir`` loader, and the etcd store when there is one.
Kept = tuple["Catalog", "Agent", "ConfigService", "EtcdCatalogStore | None"]


def _on_sqlite(
    settings: Settings,
    reactor: IHomeportReactor,
    data_dir: Path,
    scripts: ScriptPolicy,
    service: MultiService,
) -> Kept:
    """The catalog kept in ``<data_dir>/catalog.sqlite3``, and its timers on *service*."""
    from .checks import HealthChecker
    from .config import ConfigService
    from .model import Catalog
    from .sessions import SessionTimers
    from .store import CatalogStore

    catalog = Catalog(datacenter=settings.datacenter, clock=reactor.seconds)
    store = CatalogStore(catalog, data_dir / "catalog.sqlite3")
    catalog.subscribe(story.teller())
    agent = _identity(settings, catalog, data_dir, reactor.seconds())
    _join(catalog, agent)
    config = ConfigService(catalog, agent.node, settings.config_dirs, scripts)
    timers = SessionTimers(catalog, reactor)
    checker = HealthChecker(catalog, agent.node, reactor, scripts)
    attach(service, store, checker, timers, config)
    return catalog, agent, config, None


def _on_etcd(
    settings: Settings,
    reactor: IHomeportReactor,
    data_dir: Path,
    scripts: ScriptPolicy,
    service: MultiService,
) -> Kept:
    """The catalog as this agent's copy of the cluster's, in etcd (see .etcdstore);
    sessions' TTLs ride on etcd leases, the checks start once etcd has been read."""
    from ..etcd import EtcdClient
    from .checks import HealthChecker
    from .config import ConfigService
    from .etcdstore import AgentInfo, EtcdCatalogStore
    from .replica import ReplicatedCatalog

    catalog = ReplicatedCatalog(datacenter=settings.datacenter, clock=reactor.seconds)
    catalog.subscribe(story.teller())
    agent = _identity(settings, catalog, data_dir, reactor.seconds())
    client = EtcdClient(
        reactor,
        settings.etcd_endpoints,
        ca=settings.etcd_ca,
        cert=settings.etcd_cert,
        key=settings.etcd_key,
    )
    me = AgentInfo(agent.node, agent.address, agent.node_id, agent.started)
    store = EtcdCatalogStore(
        catalog,
        client,
        settings.etcd_prefix.encode(),
        me,
        reactor,
        ttl=max(2, round(settings.agent_ttl)),
        reap_after=settings.reap_after,
        on_loaded=lambda: _join(catalog, agent, alone=False),
    )
    config = ConfigService(catalog, agent.node, settings.config_dirs, scripts)
    attach(store, HealthChecker(catalog, agent.node, reactor, scripts), config)
    attach(service, store)
    return catalog, agent, config, store


def _serve_shared(api: ApiResource, store: EtcdCatalogStore) -> None:
    """Writes through etcd, ``?consistent`` after a barrier, the leader as etcd knows it."""
    from twisted.internet.defer import Deferred

    api.writer = store.run
    api.barrier = lambda: Deferred.fromCoroutine(store.barrier())
    api.known_leader = lambda: store.health.reachable
    store.health.on_change.append(api.invalidate)


def _join(catalog: Catalog, agent: Agent, alone: bool = True) -> None:
    """Register this agent's own node, ``consul`` service and ``serfHealth`` check; the
    services of its earlier names move to it, and their nodes go (no agent answers for
    them).  Its earlier names are the nodes with its node ID and, in a catalog it has
    *alone*, those with the ID an earlier homeport derived from their name (earlier
    runs on this data dir); in a shared catalog those may be other agents' nodes."""
    from .api import bootstrap
    from .identity import legacy_node_id

    def earlier_name(node: Node) -> bool:
        if node.name == agent.node:
            return False
        return node.id == agent.node_id or (
            alone and node.id == legacy_node_id(node.name, node.datacenter)
        )

    earlier = [node.name for node in catalog.nodes.values() if earlier_name(node)]
    bootstrap(catalog, agent)
    catalog.merge_nodes(agent.node, earlier)


def _events_and_snapshots(
    api: ApiResource,
    catalog: Catalog,
    node: str,
    reactor: IHomeportReactor,
    publish: Callable[[str, Any], object] | None,
    service: MultiService,
) -> dict[bytes, IResource]:
    """User events and snapshots: their routes on *api*, the events' service on
    *service*; returns what to mount under ``/v1/`` (the blocking event list)."""
    from . import events_api, queries_api, snapshot_api

    events = events_api.routes(api, catalog, node, reactor, publish)
    snapshot_api.routes(api, catalog, node, reactor.seconds)
    queries_api.routes(api, catalog, node)
    attach(service, events.service)
    return {b"event": events.resource}


def _agent_and_operator(
    api: ApiResource,
    catalog: Catalog,
    agent: Agent,
    reactor: IHomeportReactor,
    metrics: Metrics,
    service: MultiService,
    v1: dict[bytes, IResource],
    data_dir: Path,
) -> Callable[[Callable[[], None]], None]:
    """The rest of a server agent's routes (reload, leave, metrics, monitor, coordinates,
    operator: its autopilot configuration kept in the data dir); the monitor's stream
    joins *v1*; returns the reload's setter."""
    from ..services import OnStop
    from . import agent_api, operator_api

    face, streams = agent_api.routes(api, metrics, reactor)
    server = operator_api.Server(
        agent.node, agent.node_id, agent.address, agent.datacenter, agent.started
    )
    operator_api.routes(api, catalog, server, data_dir / "autopilot.json")
    attach(service, OnStop(streams.close))
    v1[b"agent"] = streams
    return face.set_reload


def _gauges(metrics: Metrics, catalog: Catalog) -> None:
    gauge = metrics.gauge
    gauge("homeport_catalog_nodes", "Nodes in the catalog", lambda: len(catalog.nodes))
    gauge(
        "homeport_catalog_services",
        "Service instances in the catalog",
        lambda: len(catalog.services),
    )
    gauge("homeport_catalog_checks", "Health checks in the catalog", lambda: len(catalog.checks))
    gauge("homeport_kv_entries", "Keys in the KV store", lambda: len(catalog.kv))
    gauge("homeport_sessions", "Live sessions", lambda: len(catalog.sessions))
    gauge("homeport_catalog_index", "The catalog's current index", lambda: catalog.index)


def _publisher(publish: Callable[[str, Any], object]) -> Callable[[list[Change]], None]:
    """A catalog listener putting each change on the event feed (``catalog``, ``kv``)."""

    def changed(changes: list[Change]) -> None:
        for change in changes:
            if change.topic != "acl":  # tokens and policies are nobody's news
                publish(change.topic, change.as_event())

    return changed
