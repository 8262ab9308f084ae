"""``twist homeport``: the one place that wires every part together.

Each part is built from its own settings (:mod:`homeport.options` makes them) by its
own ``build``; this module only puts the parts in order, mounts their resources on the
one HTTP site and starts them as one service.
"""

from __future__ import annotations

import gc
import os
import re
import socket
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from twisted.application.service import IService, MultiService
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource

from . import __version__, catalog, dns, logs, push, tls, web
from .errors import StartupError, fail
from .files import PRIVATE_DIR, create_private, private_dir, tighten_tree
from .http.auth import Access, Token
from .http.hosts import Names
from .http.listen import Listener
from .http.metrics import Metrics, MetricsResource
from .http.site import HomeportSite, Root, V1Dispatch
from .options import Options, Settings
from .part import IHomeportReactor, Part, attach
from .services import HangupService, OnStop, TermService

if TYPE_CHECKING:
    from .catalog.api import Agent

__all__ = ["HomeportService", "Options", "makeService"]
log = Logger(namespace="homeport")


class HomeportService(MultiService):
    """The whole daemon; start-up errors become one line and exit code 1."""

    def __init__(self, site: HomeportSite, catalog: catalog.CatalogPart) -> None:
        MultiService.__init__(self)
        self.site = site
        self.catalog = catalog.catalog
        self.api = catalog.api
        self.listeners: list[Listener] = []

    def startService(self) -> None:
        try:
            MultiService.startService(self)
        except StartupError as e:
            MultiService.stopService(self)
            fail(str(e))


def makeService(options: Options, reactor: IHomeportReactor | None = None) -> IService:
    """Build every part from *options*; nothing listens until the service starts."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = cast(IHomeportReactor, global_reactor)
    settings = options.settings
    data_dir = writable(settings.data_dir)
    metrics = Metrics()
    # Who a request is, for every face: --token, and with --acl the catalog's Resolver
    # (bound below, once the catalog has made it).
    access = Access(Token(settings.token))
    with opening(data_dir, "events.sqlite3"):
        pushed = push.build(settings.push, reactor, data_dir, metrics, access)
    with opening(data_dir, "catalog.sqlite3"):
        cat = catalog.build(settings.catalog, reactor, data_dir, metrics, pushed.hub.publish)
    with opening(data_dir, "logs.sqlite3"):
        sink = logs.build(
            settings.logs, reactor, data_dir, pushed.hub.publish_many, metrics, access
        )
    access.bind(cat.api.acl)
    root = Root()
    site = http_site(settings, root, metrics, host_names(settings, cat.agent.node))
    try:
        https = tls.build(settings.tls, reactor, settings.http, site, partial(http_site, settings))
    except StartupError as e:
        fail(str(e))
    top = HomeportService(site, cat)
    parts = [cat, pushed, sink, web.build(settings.web, reactor, cat.facts, access), https]
    listenings, shared = (https.listeners, []) if settings.workers == 1 else share(https, reactor)
    parts.append(listen(listenings, reactor, top.listeners))
    dns_part = None
    if settings.dns is not None:
        dns_settings = replace(settings.dns, reuse_port=settings.workers > 1)
        # With --acl, DNS answers what the anonymous token may read (as Consul's).
        dns_acl = dns.Acl(cat.anonymous, cat.on_acl_change.append) if cat.anonymous else None
        dns_part = dns.build(dns_settings, reactor, cat.catalog, metrics, dns_acl)
        parts.append(dns_part)
    if settings.workers > 1:
        parts.append(workers(settings, reactor, site, cat, top, shared, dns_part))
    mount(root, V1Dispatch(cat.api), parts, MetricsResource(metrics, access, cat.agent.node))
    site.serve_fast(cat.api.fast_answer if settings.fast_path else None)
    attach(top, *(part.service for part in parts))
    hangup = HangupService(reactor, [a for p in parts for a in p.on_hangup])
    attach(top, hangup, TermService(reactor))
    cat.set_reload(hangup.run)  # PUT /v1/agent/reload runs what SIGHUP runs
    # Stopped first (services stop in reverse): answer parked blocking queries.
    attach(top, OnStop(cat.api.close))
    announce(settings, cat.agent, data_dir, exposed=any(p.exposed for p in parts))
    if os.environ.get("HOMEPORT_PRINT_PORTS"):
        reactor.callWhenRunning(_print_ports, top)
    reactor.callWhenRunning(reactor.callLater, 1.0, settle_heap)
    return top


def share(https: tls.TLSPart, reactor: IHomeportReactor) -> tuple[list[tls.Listening], list[int]]:
    """``--workers``: each plain ``tcp:`` listener bound to be shared (``SO_REUSEPORT``);
    the listeners, and the positions of the shared ones among them."""
    from .http.reuseport import SharedTCPEndpoint

    listenings: list[tls.Listening] = []
    shared: list[int] = []
    for listening in https.listeners:
        address = plain_tcp(listening.description)
        if address is not None:
            endpoint = SharedTCPEndpoint(reactor, address[1], address[0], backlog=1024)
            listening = replace(listening, endpoint=endpoint)
            shared.append(len(listenings))
        listenings.append(listening)
    return listenings, shared


def plain_tcp(description: str) -> tuple[str, int] | None:
    """(interface, port) of a ``tcp:PORT[:interface=HOST]`` endpoint string, else None."""
    fields = description.replace("\\:", "\0").split(":")
    if fields[0] != "tcp" or len(fields) < 2 or not fields[1].isdigit():
        return None
    options = dict(f.split("=", 1) for f in fields[2:] if "=" in f)
    if set(options) - {"interface", "backlog"}:
        return None
    return options.get("interface", "").replace("\0", ":"), int(fields[1])


def workers(
    settings: Settings,
    reactor: IHomeportReactor,
    site: HomeportSite,
    cat: catalog.CatalogPart,
    top: HomeportService,
    shared: list[int],
    dns_part: Part | None,
) -> Part:
    """The primary's internal socket (PROXY protocol, for the connections workers hand
    over) and the pool of ``--workers`` processes sharing its ports."""
    from twisted.internet.endpoints import serverFromString

    from .worker import Hello, WorkerPool

    path = settings.data_dir.resolve() / "primary.sock"
    path.unlink(missing_ok=True)
    escaped = str(path).replace(":", "\\:")
    internal = serverFromString(reactor, f"haproxy:unix:address={escaped}:mode=0600")
    service = MultiService()
    attach(service, Listener("the workers' socket", internal, site, reactor))

    def hello() -> Hello:
        ports = [top.listeners[n].port for n in shared]
        hosts = [cast(Any, p.getHost()) for p in ports if p is not None]
        http = tuple((h.host, h.port) for h in hosts)
        dns_port = getattr(dns_part.service, "port", None) if dns_part is not None else None
        return Hello(settings, cat.agent, http, dns_port, str(path), reads=not settings.catalog.acl)

    attach(service, WorkerPool(reactor, settings.workers - 1, cat.catalog, hello))
    return Part(service=service)


def writable(data_dir: Path) -> Path:
    """*data_dir*, created 0700 if missing and checked to be writable; the files in it
    made private (a warning for a directory others may read, left as it is: the
    operator may share it on purpose)."""
    try:
        mode = private_dir(data_dir)
        probe = data_dir / ".write-test"
        create_private(probe)
        probe.unlink()
        tightened = tighten_tree(data_dir)
    except OSError as e:
        fail(f"--data-dir {str(data_dir)!r}: {e.strerror}")
    if mode is not None and mode & ~PRIVATE_DIR:
        log.warn(
            "--data-dir {path!r} is mode {mode}: other accounts on this host can "
            "list it; chmod 700 it",
            path=str(data_dir),
            mode=f"{mode:04o}",
        )
    if tightened:
        log.warn(
            "--data-dir {path!r}: took group and other access off {count} file(s) (first: {first})",
            path=str(data_dir),
            count=len(tightened),
            first=tightened[0].name,
        )
    return data_dir


@contextmanager
def opening(data_dir: Path, name: str) -> Iterator[None]:
    """A part opening ``<data_dir>/<name>``: a failure is one line and exit 1."""
    try:
        yield
    except (OSError, sqlite3.Error, ValueError) as e:
        fail(f"--data-dir {str(data_dir)!r}: cannot open {name}: {e}")


def http_site(
    settings: Settings,
    resource: Resource,
    metrics: Metrics | None = None,
    names: Names | None = None,
) -> HomeportSite:
    """A site for *resource*; *names* checks Host and Origin (none on the site that only
    redirects to HTTPS and answers ACME challenges, which must answer any name)."""
    return HomeportSite(
        resource,
        access_log=settings.access_log,
        max_body=settings.max_body,
        metrics=metrics,
        names=names,
        limits=settings.limits,
        parsePOSTFormSubmission=False,  # /log parses its own bodies; nothing else wants it
    )


def host_names(settings: Settings, node: str) -> Names:
    """The ``Host`` names the API answers (``http.hosts``: besides IPs, localhost and
    single-label names): the node's, the machine's, the ``--http`` interfaces' and
    ``--allow-host``; the write origins besides its own: ``--allow-origin`` and
    ``--cors-origin`` (already trusted to read with credentials)."""
    domain = settings.dns.domain if settings.dns is not None else "consul"
    hosts = [node, f"{node}.node.{domain}", f"{node}.node.{settings.catalog.datacenter}.{domain}"]
    hosts.append(socket.gethostname())
    hosts += [i for d in settings.http for i in re.findall(r"interface=([^:\\]+)", d)]
    origins = settings.allow_origins + settings.push.cors_origins
    return Names(hosts + list(settings.allow_hosts), origins)


def listen(
    listenings: Sequence[tls.Listening], reactor: IHomeportReactor, started: list[Listener]
) -> Part:
    """A service listening on every ``--http`` endpoint (each added to *started*)."""
    service = MultiService()
    for listening in listenings:
        what = f"--http {listening.description!r}"
        listener = Listener(what, listening.endpoint, listening.factory, reactor)
        attach(service, listener)
        started.append(listener)
    return Part(service=service)


def mount(root: Root, v1: V1Dispatch, parts: Sequence[Part], metrics: IResource) -> None:
    """Every part's resources on the site: ``/<name>`` and ``/v1/<name>``."""
    for part in parts:
        for name, resource in part.resources.items():
            root.putChild(name, resource)
        for name, resource in part.v1.items():
            v1.putChild(name, resource)
    root.putChild(b"v1", v1)
    root.putChild(b"metrics", metrics)


def container_runtime(root: Path = Path("/")) -> str | None:
    """``podman`` or ``docker`` when this process runs in their container, else None."""
    if (root / "run" / ".containerenv").exists():
        return "podman"
    if (root / ".dockerenv").exists():
        return "docker"
    return None


def interface_of(address: str) -> str | None:
    """The name of the network interface that holds IPv4 *address*, if any."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue  # no IPv4 address on it
            if socket.inet_ntoa(answer[20:24]) == address:
                return name
    return None


def on_container_network(address: str, sys_net: Path = Path("/sys/class/net")) -> bool:
    """Whether *address* is on a container's own network (a veth pair's end, or the tun
    device of rootless networking) rather than on one of the host's interfaces, as with
    ``--network host``.  Unknown counts as the container's own."""
    name = interface_of(address)
    if name is None:
        return True
    link = sys_net / name
    try:
        if (link / "tun_flags").exists():
            return True
        return (link / "iflink").read_text().strip() != (link / "ifindex").read_text().strip()
    except OSError:
        return True


def _warn_open_zmq(settings: Settings) -> None:
    """--zmq-bind beyond loopback without CURVE: the token does not guard ZeroMQ."""
    from .push.zmq import exposed_bind

    if settings.push.zmq_curve_server_key is not None:
        return
    for address in settings.push.zmq_bind:
        if exposed_bind(address):
            log.warn(
                "\n" + "*" * 72 + "\n"
                "* WARNING: --zmq-bind {address} listens beyond loopback without CURVE:\n"
                "* ANYONE who can reach it can publish events (--token does not cover it).\n"
                "* Set --zmq-curve-server-key and --zmq-curve-clients, or bind to\n"
                "* 127.0.0.1.\n" + "*" * 72,
                address=address,
            )


def announce(
    settings: Settings, agent: Agent, data_dir: Path, exposed: bool, root: Path = Path("/")
) -> None:
    """The start-up lines: warnings (anyone may write; a container advertising its own
    address), then who and where we are."""
    runtime = container_runtime(root)
    if (
        runtime
        and settings.catalog.advertise is None
        and not agent.address.startswith("127.")
        and on_container_network(agent.address, root / "sys" / "class" / "net")
    ):
        log.warn(
            "Advertising {address}, this {runtime} container's own address, which other "
            "hosts cannot reach: give the host's address with --advertise (or "
            "HOMEPORT_ADVERTISE)",
            address=agent.address,
            runtime=runtime,
        )
    if exposed and not settings.token:
        log.warn(
            "\n" + "*" * 72 + "\n"
            "* WARNING: homeport listens beyond loopback and no --token is set:\n"
            "* ANYONE who can reach it can register services, write KV and logs.\n"
            "* Set --token or --token-file, or bind to 127.0.0.1.\n" + "*" * 72
        )
    _warn_open_zmq(settings)
    log.info(
        "homeport {version}: node {node} ({address}) in {dc}, data in {data}",
        version=__version__,
        node=agent.node,
        address=agent.address,
        dc=agent.datacenter,
        data=str(data_dir.resolve()),
    )


def settle_heap() -> None:
    """Move everything built at start-up out of the garbage collector's sight.

    The daemon imports a lot (twisted, Flask, cryptography, acme, ...) and keeps all of
    it for its life.  Without this, every full collection walks those ~10^5 objects
    again; under an ingest flood, where requests waiting for a commit live long enough
    to reach the old generation, full collections come often and the reactor thread
    spent ~15% more CPU per log record (measured with bench/ingest.py).  ``gc.freeze``
    after one last collection leaves only what is made while serving to be scanned.
    The ``homeport`` command starts with the collector off (``cli.main``): on from here.
    """
    gc.collect()
    gc.freeze()
    gc.enable()


def _print_ports(top: HomeportService) -> None:
    """For tests and scripts that start on port 0: one line per bound port on stdout."""
    for listener in top.listeners:
        if listener.port is not None:
            port = getattr(listener.port.getHost(), "port", None)
            sys.stdout.write(f"homeport-port http {port}\n")
    for service in top:
        port = getattr(service, "port", None)
        if isinstance(port, int):
            sys.stdout.write(f"homeport-port dns {port}\n")
    sys.stdout.write("homeport-ports-done\n")
    sys.stdout.flush()
