"""``twist homeport``: the options, and the one place that wires every part together."""

from __future__ import annotations

import gc
import ipaddress
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from . import __version__
from .errors import StartupError, fail
from .push import OPTION_PARAMETERS as PUSH_OPTIONS
from .tls.options import OPTION_PARAMETERS as TLS_OPTIONS
from .units import parse_hostport, parse_size

DEFAULT_HTTP = "tcp:8500:interface=127.0.0.1"
log = Logger(namespace="homeport")


def exposed_interfaces(description: str) -> bool:
    """Does this endpoint string listen beyond loopback?"""
    parts = description.split(":")
    if parts[0] in ("unix",):
        return False
    match = re.search(r"(?:^|:)interface=([^:]*)", description.replace("\\:", "%3A"))
    if match is None:
        return True
    interface = match.group(1).replace("%3A", ":")
    try:
        return not ipaddress.ip_address(interface).is_loopback
    except ValueError:
        return interface != "localhost"


ENV_PREFIX = "HOMEPORT_"
# The options an opt_* method collects into a list (and HOMEPORT_* splits on spaces).
REPEATABLE: tuple[str, ...] = ("http", "config-dir", "empty-file", "zmq-connect", "zmq-bind")
REPEATABLE += ("zmq-topic", "cors-origin")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def env_name(option: str) -> str:
    """``--data-dir`` -> ``HOMEPORT_DATA_DIR``."""
    return ENV_PREFIX + option.upper().replace("-", "_")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "homeport: a Consul-compatible service catalog (HTTP + DNS), a log sink for "
        "logging.handlers.HTTPHandler, live event push and a dashboard, in one daemon.\n\n"
        "Every option can also be set in the environment as HOMEPORT_<OPTION> "
        "(HOMEPORT_TOKEN, HOMEPORT_DATA_DIR, ...): repeatable ones take a space-separated "
        "list, flags take 1/0; the command line wins."
    )
    #: Where HOMEPORT_* settings are read (tests give their own).
    environ: Mapping[str, str] = os.environ
    optParameters = [
        ["dns", None, "127.0.0.1:8600", "DNS on UDP and TCP at HOST:PORT, or 'none'."],
        ["domain", None, "consul", "The DNS domain served."],
        ["dns-ttl", None, "0", "TTL in seconds of DNS answers."],
        [
            "dns-soa-min-ttl",
            None,
            "0",
            "SOA minimum TTL in seconds: how long resolvers may cache 'no such name'.",
        ],
        ["data-dir", None, "./homeport-data", "Where the SQLite files live (created if missing)."],
        ["datacenter", None, "dc1", "This agent's datacenter name."],
        ["node", None, None, "This agent's node name. [default: the hostname]"],
        [
            "advertise",
            None,
            None,
            "The address this node is known by. [default: first non-loopback IPv4, else 127.0.0.1]",
        ],
        ["token", None, None, "A secret required for every write (or use --token-file)."],
        ["token-file", None, None, "Read the write token from this file."],
        ["max-body-size", None, "1MiB", "Largest request body accepted (413 beyond)."],
        [
            "log-retention",
            None,
            "7d",
            "Prune stored log records older than an age (7d, 12h), beyond a count "
            "(1000000), or both (7d,1000000); 'none' keeps all.",
        ],
    ]
    optParameters += PUSH_OPTIONS  # --socketio-*, --sse-queue-limit, --event-history
    optParameters += TLS_OPTIONS  # --acme-directory, --acme-ca-file, --acme-email
    optFlags = [
        ["access-log", None, "Log one line per HTTP request (off: it halves hot-path speed)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        for name in REPEATABLE:
            self[name] = []

    def opt_zmq_connect(self, value: str) -> None:
        """ZeroMQ SUB socket connects to this publisher (repeatable). [default: none]"""
        self["zmq-connect"].append(value)

    def opt_zmq_bind(self, value: str) -> None:
        """ZeroMQ SUB socket binds here for publishers (repeatable). [default: none]"""
        self["zmq-bind"].append(value)

    def opt_zmq_topic(self, value: str) -> None:
        """ZeroMQ subscription prefix (repeatable). [default: everything]"""
        self["zmq-topic"].append(value)

    def opt_cors_origin(self, value: str) -> None:
        """Browser origin allowed to read event streams ('*': any; repeatable)."""
        self["cors-origin"].append(value)

    def opt_http(self, value: str) -> None:
        """HTTP on this Twisted endpoint (repeatable). [default: tcp:8500:interface=127.0.0.1]"""
        self["http"].append(value)

    def opt_config_dir(self, value: str) -> None:
        """Consul-style service definitions, reloaded on SIGHUP (repeatable). [default: none]"""
        self["config-dir"].append(value)

    def opt_empty_file(self, value: str) -> None:
        """Create this file empty unless it exists; with le: asks for its name's certificate."""
        self["empty-file"].append(value)

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"homeport {__version__}")
        raise SystemExit(0)

    def environment_arguments(self, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """The HOMEPORT_* variables as arguments to put before *argv* (which wins), and
        which option came from which variable."""
        flags = [str(flag[0]) for flag in self.optFlags]
        names = [str(param[0]) for param in self.optParameters] + list(REPEATABLE) + flags
        args: list[str] = []
        used: dict[str, str] = {}
        for name in names:
            variable = env_name(name)
            value = self.environ.get(variable)
            if value is None:
                continue
            if name in flags:
                word = value.strip().lower()
                if word in _TRUE:
                    args.append(f"--{name}")
                elif word not in _FALSE:
                    fail(f"{variable}={value!r}: expected 1 or 0 (true/false, yes/no)")
            elif name in REPEATABLE:
                if any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv):
                    continue  # the command line's list replaces the environment's
                for item in value.split():
                    args += [f"--{name}", item]
            else:
                args.append(f"--{name}={value}")
            used[name] = variable
        return args, used

    def parseOptions(self, options: Any = None) -> None:
        argv = list(sys.argv[1:] if options is None else options)
        from_env, used = self.environment_arguments(argv)
        try:
            super().parseOptions(from_env + argv)
        except usage.UsageError as e:
            message = str(e)
            for name, variable in used.items():
                if message.startswith(f"--{name} "):
                    message += f" (from {variable})"
            fail(message)

    def postOptions(self) -> None:
        if not self["http"]:
            self["http"] = [DEFAULT_HTTP]
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        for description in self["http"]:
            try:
                serverFromString(reactor, description)
            except Exception as e:  # every parser error type there is
                raise usage.UsageError(
                    f"--http {description!r}: not a valid endpoint ({e or type(e).__name__})"
                ) from None
        if self["dns"].lower() == "none":
            self["dns"] = None
        else:
            try:
                self["dns"] = parse_hostport(self["dns"], 8600)
            except ValueError:
                raise usage.UsageError(
                    f"--dns {self['dns']!r}: expected HOST:PORT (e.g. 127.0.0.1:8600) or 'none'"
                ) from None
        for name in ("dns-ttl", "dns-soa-min-ttl"):
            text = self[name]
            try:
                self[name] = int(text)
                if not 0 <= self[name] <= 2**31 - 1:
                    raise ValueError
            except ValueError:
                raise usage.UsageError(
                    f"--{name} {text!r}: expected a whole number of seconds"
                ) from None
        domain = self["domain"].strip(".").lower()
        if not re.fullmatch(
            r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*", domain
        ):
            raise usage.UsageError(f"--domain {self['domain']!r}: not a DNS domain name")
        self["domain"] = domain
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self["datacenter"]):
            raise usage.UsageError(
                f"--datacenter {self['datacenter']!r}: use letters, digits, '-' and '_'"
            )
        if self["node"] is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", self["node"]):
            raise usage.UsageError(f"--node {self['node']!r}: use letters, digits, '-', '_', '.'")
        if self["advertise"] is not None:
            try:
                ipaddress.ip_address(self["advertise"])
            except ValueError:
                raise usage.UsageError(
                    f"--advertise {self['advertise']!r}: not an IP address"
                ) from None
        try:
            self["max-body-size"] = parse_size(self["max-body-size"])
        except ValueError:
            raise usage.UsageError(
                f"--max-body-size {self['max-body-size']!r}: expected a size like 1MiB or 65536"
            ) from None
        from .logs.retention import RetentionError, parse_retention

        try:
            self["log-retention"] = parse_retention(self["log-retention"])
        except RetentionError:
            raise usage.UsageError(
                f"--log-retention {self['log-retention']!r}: expected an age like 7d, "
                "a record count like 1000000, both (7d,1000000), or none"
            ) from None
        if self["token"] is not None and self["token-file"] is not None:
            raise usage.UsageError("--token and --token-file: give one, not both")
        if self["token-file"] is not None:
            try:
                token = Path(self["token-file"]).read_text().strip()
            except OSError as e:
                raise usage.UsageError(
                    f"--token-file {self['token-file']!r}: {e.strerror}"
                ) from None
            if not token:
                raise usage.UsageError(f"--token-file {self['token-file']!r}: the file is empty")
            self["token"] = token
        if self["token"] is not None and not self["token"].strip():
            raise usage.UsageError("--token: must not be empty")
        for directory in self["config-dir"]:
            if not Path(directory).is_dir():
                raise usage.UsageError(f"--config-dir {directory!r}: not a directory")
        from .push import validate_options
        from .tls.options import validate_options as validate_tls_options

        validate_options(self)
        validate_tls_options(self)


class ThreadPoolService(Service):
    """Owns a thread pool (for the WSGI dashboard) from start to stop.

    The pool is joined in a thread of its own, not on the reactor thread: a dashboard
    request still in a worker waits for the reactor (WSGIResource writes its answer,
    and ui_info reads the catalog, with blockingCallFromThread), so joining there
    would wait for ever - a daemon asked to stop while a page loaded never exited.
    """

    def __init__(self, pool: ThreadPool, reactor: Any) -> None:
        self.pool = pool
        self.reactor = reactor

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        joined: Deferred[None] = Deferred()

        def join() -> None:
            self.pool.stop()
            self.reactor.callFromThread(joined.callback, None)

        threading.Thread(target=join, name="homeport-wsgi-stop", daemon=True).start()
        return joined


class Listener(Service):
    """One ``--http`` endpoint; a port that cannot be bound stops start-up clearly."""

    def __init__(self, description: str, endpoint: Any, factory: Any, reactor: Any) -> None:
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        failure: list[Any] = []
        d = self.endpoint.listen(self.factory)
        d.addCallbacks(self._listening, failure.append)
        if failure:
            raise StartupError(
                f"--http {self.description!r}: cannot listen: {failure[0].getErrorMessage()}"
            )
        if self.port is None:
            d.addErrback(self._failed_later)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        log.info("HTTP listening on {address}", address=port.getHost())
        return port

    def _failed_later(self, failure: Any) -> None:
        log.critical(
            "--http {description!r}: cannot listen: {reason}",
            description=self.description,
            reason=failure.getErrorMessage(),
        )
        self.reactor.stop()

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


class OnStop(Service):
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback

    def stopService(self) -> None:
        super().stopService()
        self.callback()


class HangupService(Service):
    """SIGHUP: read again what lives in files (``--config-dir``, certificate directories).

    The handler is installed only when there is something to read again, so a daemon
    without either keeps SIGHUP's default meaning.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.actions: list[Callable[[], None]] = []
        self._previous_handler: Any = None

    def startService(self) -> None:
        super().startService()
        if self.actions and hasattr(signal, "SIGHUP"):
            try:
                self._previous_handler = signal.signal(signal.SIGHUP, self._hup)
            except ValueError:  # not the main thread (tests)
                self._previous_handler = None

    def stopService(self) -> None:
        super().stopService()
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None

    def _hup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self.run)

    def run(self) -> None:
        for action in list(self.actions):
            try:
                action()
            except Exception:
                log.failure("Reading files again after SIGHUP")


class ConfigService(Service):
    """Loads ``--config-dir`` files at start (and again on SIGHUP, see HangupService)."""

    def __init__(self, catalog: Any, node: str, directories: list[Path], reactor: Any) -> None:
        self.catalog = catalog
        self.node = node
        self.directories = directories
        self.reactor = reactor
        self._good: dict[Path, Any] = {}

    def startService(self) -> None:
        super().startService()
        self.reload()

    def reload(self) -> None:
        from .catalog import definitions
        from .catalog.model import CatalogError

        loaded = definitions.load(self.directories, self.node, self._good)
        for error in loaded.errors:
            log.error("Bad service definition {error}", error=str(error))
        try:
            self.catalog.replace_source(
                self.node, definitions.SOURCE, loaded.services, loaded.checks
            )
        except CatalogError as e:
            log.error("Loading service definitions failed: {reason}", reason=str(e))
            return
        self._good = loaded.by_file
        log.info(
            "Loaded {services} service(s) and {checks} check(s) from {files} definition file(s)",
            services=len(loaded.services),
            checks=len(loaded.checks),
            files=len(loaded.by_file),
        )


class HomeportService(MultiService):
    """The whole daemon; start-up errors become one line and exit code 1."""

    def __init__(self) -> None:
        super().__init__()
        self.api: Any = None
        self.catalog: Any = None
        self.site: Any = None
        self.listeners: list[Listener] = []

    def startService(self) -> None:
        try:
            super().startService()
        except StartupError as e:
            self.stopService()
            fail(str(e))


def makeService(options: Options, reactor: Any = None) -> IService:
    """Build every part from *options*; nothing listens until the service starts."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    from twisted.internet.endpoints import serverFromString
    from twisted.web.wsgi import WSGIResource

    from .catalog.api import ERRORS, ConsulAPI, bootstrap, local_identity
    from .catalog.checks import HealthChecker
    from .catalog.model import Catalog
    from .catalog.sessions import SessionTimers
    from .catalog.store import CatalogStore
    from .http.api import ApiResource
    from .http.auth import Token
    from .http.cors import CORS
    from .http.metrics import Metrics, MetricsResource
    from .http.site import HomeportSite, Root
    from .web.ui import create_app

    top = HomeportService()
    data_dir = Path(options["data-dir"])
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        fail(f"--data-dir {str(data_dir)!r}: {e.strerror}")

    catalog = Catalog(datacenter=options["datacenter"], clock=reactor.seconds)
    try:
        store = CatalogStore(catalog, data_dir / "catalog.sqlite3")
    except Exception as e:
        fail(f"--data-dir {str(data_dir)!r}: cannot open catalog.sqlite3: {e}")
    store.setServiceParent(top)

    agent = local_identity(
        options["node"], options["advertise"], catalog.datacenter, reactor.seconds()
    )
    bootstrap(catalog, agent)
    top.catalog = catalog

    HealthChecker(catalog, agent.node, reactor).setServiceParent(top)
    SessionTimers(catalog, reactor).setServiceParent(top)
    hangup = HangupService(reactor)
    hangup.setServiceParent(top)
    config = ConfigService(catalog, agent.node, [Path(d) for d in options["config-dir"]], reactor)
    config.setServiceParent(top)
    if config.directories:
        hangup.actions.append(config.reload)

    metrics = Metrics()
    metrics.gauge("homeport_catalog_nodes", "Nodes in the catalog", lambda: len(catalog.nodes))
    metrics.gauge(
        "homeport_catalog_services",
        "Service instances in the catalog",
        lambda: len(catalog.services),
    )
    metrics.gauge(
        "homeport_catalog_checks", "Health checks in the catalog", lambda: len(catalog.checks)
    )
    metrics.gauge("homeport_kv_entries", "Keys in the KV store", lambda: len(catalog.kv))
    metrics.gauge("homeport_sessions", "Live sessions", lambda: len(catalog.sessions))
    metrics.gauge("homeport_catalog_index", "The catalog's current index", lambda: catalog.index)

    api = ApiResource(
        reactor,
        lambda: catalog.index,
        metrics,
        Token(options["token"]),
        catalog.datacenter,
        cors=CORS(options["cors-origin"]),
        errors=ERRORS,
    )
    ConsulAPI(api, catalog, agent, reactor)
    top.api = api

    def ui_facts() -> dict[str, Any]:  # on the reactor thread: the catalog is not locked
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
            "node": agent.node,
            "datacenter": agent.datacenter,
            "version": __version__,
            "uptime_seconds": reactor.seconds() - agent.started,
            "counts": counts,
            "services": {
                k: {"instances": v["instances"], "tags": sorted(v["tags"])}
                for k, v in services.items()
            },
        }

    def ui_info() -> dict[str, Any]:  # called by the dashboard on a WSGI thread
        from twisted.internet.threads import blockingCallFromThread

        info: dict[str, Any] = blockingCallFromThread(reactor, ui_facts)
        return info

    pool = ThreadPool(minthreads=1, maxthreads=8, name="homeport-wsgi")
    ThreadPoolService(pool, reactor).setServiceParent(top)

    from . import push as push_module
    from .logs.http import V1Dispatch
    from .logs.service import LogSink

    try:
        push = push_module.build(options, reactor, data_dir, metrics)
    except Exception as e:
        fail(f"--data-dir {str(data_dir)!r}: cannot open events.sqlite3: {e}")
    push.service.setServiceParent(top)

    def catalog_events(changes: list[Any]) -> None:  # topics "catalog" and "kv"
        for change in changes:
            push.hub.publish(change.topic, change.as_event())

    catalog.subscribe(catalog_events)

    max_age, max_records = options["log-retention"]
    try:
        logs = LogSink(
            data_dir / "logs.sqlite3",
            reactor,
            token=options["token"],
            publish=push.hub.publish,
            max_age=max_age,
            max_records=max_records,
        )
    except Exception as e:
        fail(f"--data-dir {str(data_dir)!r}: cannot open logs.sqlite3: {e}")
    logs.setServiceParent(top)

    root = Root()
    v1 = V1Dispatch(api)  # /v1/logs is not a cached catalog read
    v1.putChild(b"logs", logs.search)
    v1.putChild(b"events", push.events)
    if push.socketio is not None:
        root.putChild(b"socket.io", push.socketio)
    root.putChild(b"v1", v1)
    root.putChild(b"log", logs.ingest)
    root.putChild(b"metrics", MetricsResource(metrics))
    root.putChild(b"ui", WSGIResource(reactor, pool, create_app(ui_info, options["token"])))
    site = HomeportSite(
        root,
        access_log=options["access-log"],
        max_body=options["max-body-size"],
        parsePOSTFormSubmission=False,  # /log parses its own bodies; nothing else wants it
    )
    top.site = site

    from .tls.options import create_empty_files
    from .tls.wiring import wire_tls

    error = create_empty_files(options["empty-file"])
    if error is not None:
        fail(error)
    endpoints = [(d, serverFromString(reactor, d), exposed_interfaces(d)) for d in options["http"]]
    # ACME: http-01 on the root, an issuing service per le:/lets: cert dir, HTTPS redirects.
    factories = wire_tls(
        endpoints,
        root,
        site,
        lambda resource: HomeportSite(
            resource, access_log=options["access-log"], max_body=options["max-body-size"]
        ),
        top,
        reactor,
        acme_directory=options["acme-directory"],
        ca_file=options["acme-ca-file"],
        email=options["acme-email"],
        on_hangup=hangup.actions,
    )
    exposed = False
    for (description, endpoint, _), factory in zip(endpoints, factories, strict=True):
        listener = Listener(description, endpoint, factory, reactor)
        listener.setServiceParent(top)
        top.listeners.append(listener)
        exposed = exposed or exposed_interfaces(description)

    if options["dns"] is not None:
        try:
            from .dns.server import DNSService  # type: ignore[import-not-found]
        except ImportError:  # pragma: no cover - the DNS part lands separately
            log.warn("DNS is not available in this build")
        else:
            host, port = options["dns"]
            dns = DNSService(
                catalog,
                host,
                port,
                domain=options["domain"],
                ttl=options["dns-ttl"],
                soa_min_ttl=options["dns-soa-min-ttl"],
                reactor=reactor,
            )
            dns.setServiceParent(top)
            exposed = exposed or not ipaddress.ip_address(host).is_loopback

    # Stopped first (services stop in reverse): answer parked blocking queries.
    OnStop(api.close).setServiceParent(top)

    if exposed and not options["token"]:
        log.warn(
            "\n" + "*" * 72 + "\n"
            "* WARNING: homeport listens beyond loopback and no --token is set:\n"
            "* ANYONE who can reach it can register services, write KV and logs.\n"
            "* Set --token or --token-file, or bind to 127.0.0.1.\n" + "*" * 72
        )
    log.info(
        "homeport {version}: node {node} ({address}) in {dc}, data in {data}",
        version=__version__,
        node=agent.node,
        address=agent.address,
        dc=agent.datacenter,
        data=str(data_dir.resolve()),
    )
    if os.environ.get("HOMEPORT_PRINT_PORTS"):
        reactor.callWhenRunning(_print_ports, top)
    reactor.callWhenRunning(reactor.callLater, 1.0, settle_heap)
    return top


def settle_heap() -> None:
    """Move everything built at start-up out of the garbage collector's sight.

    The daemon imports a lot (twisted, Flask, cryptography, acme, ...) and keeps all of
    it for its life.  Without this, every full collection walks those ~10^5 objects
    again; under an ingest flood, where requests waiting for a commit live long enough
    to reach the old generation, full collections come often and the reactor thread
    spent ~15% more CPU per log record (measured with bench/ingest.py).  ``gc.freeze``
    after one last collection leaves only what is made while serving to be scanned.
    """
    gc.collect()
    gc.freeze()


def _print_ports(top: HomeportService) -> None:
    """For tests and scripts that start on port 0: one line per bound port on stdout."""
    for listener in top.listeners:
        if listener.port is not None:
            address: Any = listener.port.getHost()
            sys.stdout.write(f"homeport-port http {address.port}\n")
    for service in top:
        port = getattr(service, "port", None)
        if isinstance(port, int):
            sys.stdout.write(f"homeport-port dns {port}\n")
    sys.stdout.write("homeport-ports-done\n")
    sys.stdout.flush()
