"""The options of ``twist homeport``, from the command line and ``HOMEPORT_*``, and the one
place they become each part's typed :class:`Settings`.

:class:`Options` checks every value as it parses (a bad one is one line naming the option
and exit 1) and leaves what it read as given; :func:`make_settings` is what the wiring
(``tap.py``) builds the parts from.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from twisted.python import usage

from . import __version__, catalog, dns, logformat, logs, push, tls, web
from .errors import fail
from .http.limits import Limits
from .units import parse_hostport, parse_seconds, parse_size

DEFAULT_HTTP = "tcp:8500:interface=127.0.0.1"
ENV_PREFIX = "HOMEPORT_"
# The options an opt_* method collects into a list (and HOMEPORT_* splits on spaces).
REPEATABLE: tuple[str, ...] = ("http", "config-dir", "empty-file", "zmq-connect", "zmq-bind")
REPEATABLE += ("zmq-topic", "cors-origin", "allow-host", "allow-origin")
REPEATABLE += ("syslog", "syslog-tls", "relp", "json-lines")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The whole daemon's settings: the shared ones, then each part's."""

    data_dir: Path
    http: tuple[str, ...]
    access_log: bool
    fast_path: bool
    #: Processes sharing the HTTP and DNS ports, this one included (``--workers``).
    workers: int
    max_body: int
    #: ``--allow-host`` / ``--allow-origin``: Host names and write origins beyond the
    #: defaults (``homeport.http.hosts``).
    allow_hosts: tuple[str, ...]
    allow_origins: tuple[str, ...]
    #: ``--header-timeout``, ``--body-timeout``, ``--max-client-connections``.
    limits: Limits
    token: str | None
    catalog: catalog.Settings
    dns: dns.Settings | None  # None: no DNS (--dns none)
    logs: logs.Settings
    push: push.Settings
    tls: tls.Settings
    web: web.Settings


def env_name(option: str) -> str:
    """``--data-dir`` -> ``HOMEPORT_DATA_DIR``."""
    return ENV_PREFIX + option.upper().replace("-", "_")


OPTION_PARAMETERS: list[list[Any]] = [
    ["dns", None, "127.0.0.1:8600", "DNS on UDP and TCP at HOST:PORT, or 'none'."],
    ["domain", None, "consul", "The DNS domain served."],
    ["dns-ttl", None, "0", "TTL in seconds of DNS answers."],
    [
        "dns-soa-min-ttl",
        None,
        "0",
        "SOA minimum TTL in seconds: how long resolvers may cache 'no such name'.",
    ],
    ["dns-cache-size", None, "64MiB", "Memory the precomputed DNS replies may take."],
    [
        "workers",
        None,
        "1",
        "Processes serving catalog, health, KV and DNS reads on the same ports "
        "(SO_REUSEPORT): a number, or 'auto' for one per core.",
    ],
    ["data-dir", None, "./homeport-data", "Where the SQLite files live (created if missing)."],
    ["datacenter", None, "dc1", "This agent's datacenter name."],
    [
        "node",
        None,
        None,
        "This agent's node name, kept in the data dir with its node ID (another name "
        "renames the node). [default: the name kept, else the hostname]",
    ],
    [
        "advertise",
        None,
        None,
        "The address this node is known by. [default: first non-loopback IPv4, else 127.0.0.1]",
    ],
    [
        "catalog",
        None,
        "sqlite",
        "Where the catalog, KV and sessions live: 'sqlite' (in --data-dir, one machine) "
        "or etcd://HOST:PORT[,HOST:PORT...] (shared by every agent of a cluster).",
    ],
    ["etcd-prefix", None, "/homeport/", "The etcd key prefix of this cluster."],
    ["etcd-ca", None, None, "CA certificate (PEM) etcd's TLS is checked against (https)."],
    ["etcd-cert", None, None, "Client certificate (PEM) for etcd (with --etcd-key)."],
    ["etcd-key", None, None, "Client certificate's private key (PEM) for etcd."],
    ["agent-ttl", None, "10s", "With etcd: how soon other agents see this one gone."],
    ["reap-after", None, "72h", "With etcd: a dead agent's node is deregistered after this."],
    ["token", None, None, "A secret required for every write (or use --token-file)."],
    [
        "acl-default-policy",
        None,
        "deny",
        "With --acl: what a token may do where no rule of its says (deny or allow).",
    ],
    ["token-file", None, None, "Read the write token from this file."],
    [
        "zmq-curve-server-key",
        None,
        None,
        "ZeroMQ CURVE: the server's secret-key certificate (as zmq.auth.create_certificates "
        "writes); only publishers listed in --zmq-curve-clients get through.",
    ],
    [
        "zmq-curve-clients",
        None,
        None,
        "ZeroMQ CURVE: directory of allowed publishers' public-key certificates "
        "(read again when it changes).",
    ],
    ["max-body-size", None, "1MiB", "Largest request body accepted (413 beyond)."],
    ["header-timeout", None, "60s", "Time a request's head may take to arrive (408 beyond)."],
    [
        "body-timeout",
        None,
        "60s",
        "Time a request's body may take to arrive after its head (408 beyond).",
    ],
    [
        "max-client-connections",
        None,
        "256",
        "HTTP connections one client address may hold open at once (503 beyond).",
    ],
    [
        "log-retention",
        None,
        "7d",
        "Prune stored log records older than an age (7d, 12h), beyond a count "
        "(1000000), or both (7d,1000000); 'none' keeps all.",
    ],
    [
        "syslog-max-message",
        None,
        "64KiB",
        "Syslog: bytes of one message; longer ones are cut and marked truncated.",
    ],
    [
        "syslog-max-pending",
        None,
        "20000",
        "Syslog: records on their way to the store; past it UDP drops, TCP readers pause.",
    ],
    ["syslog-max-connections", None, "1024", "Syslog: open connections per TCP listener."],
    ["syslog-idle-timeout", None, "10m", "Syslog: a silent TCP connection is closed after this."],
    ["socketio-ping-interval", None, "25s", "Engine.IO ping interval."],
    ["socketio-ping-timeout", None, "20s", "Engine.IO ping timeout."],
    ["socketio-max-payload", None, "1000000", "Engine.IO largest payload (bytes)."],
    [
        "sse-queue-limit",
        None,
        "1MiB",
        "Bytes an event stream may fall behind before it is closed (it then resumes).",
    ],
    ["event-history", None, "1000", "Events kept per topic for clients that resume."],
    [
        "acme-directory",
        None,
        None,
        "ACME server directory URL for le:/lets: listeners. "
        "[default: Let's Encrypt (le:) or its staging server (lets:)]",
    ],
    [
        "acme-ca-file",
        None,
        None,
        "An extra trust root (PEM) for the ACME server's own HTTPS, e.g. pebble's.",
    ],
    ["acme-email", None, None, "Contact address registered with the ACME account."],
]


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
    optParameters = OPTION_PARAMETERS
    optFlags = [
        ["access-log", None, "Log one line per HTTP request (off: it halves hot-path speed)."],
        [
            "no-fast-path",
            None,
            "Answer every HTTP request through twisted.web (by default plain cached "
            "reads are answered straight from the connection).",
        ],
        [
            "enable-script-checks",
            None,
            "Run script checks (Args) from the HTTP API and --config-dir: whoever may "
            "register a check may run commands here.",
        ],
        ["enable-local-script-checks", None, "Run script checks from --config-dir only."],
        [
            "acl",
            None,
            "Consul's ACL system: tokens, policies and roles decide who may do what "
            "(PUT /v1/acl/bootstrap makes the first token; --token is a management token).",
        ],
    ]
    #: Made by postOptions from what was parsed.
    settings: Settings

    def __init__(self) -> None:
        usage.Options.__init__(self)
        for name in REPEATABLE:
            self[name] = []

    def getSynopsis(self) -> str:
        """``Usage: twist [twist options] homeport [options]``: what a user types (not
        twist's generic ``plugin [plugin_options]`` with ours appended)."""
        if Path(sys.argv[0]).name == "homeport":  # the console command (homeport.cli)
            return "Usage: homeport [--log-format=text|json] [options]"
        return "Usage: twist [--log-format=text|json] homeport [options]"

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

    def opt_allow_host(self, value: str) -> None:
        """Host name HTTP answers to besides the node's, localhost, IPs and single-label
        names ('.example.com': any under it; '*': any; repeatable)."""
        self["allow-host"].append(value)

    def opt_allow_origin(self, value: str) -> None:
        """Browser origin allowed to write besides the daemon's own ('*': any; repeatable)."""
        self["allow-origin"].append(value)

    def opt_http(self, value: str) -> None:
        """HTTP on this Twisted endpoint (repeatable). [default: tcp:8500:interface=127.0.0.1]"""
        self["http"].append(value)

    def opt_config_dir(self, value: str) -> None:
        """Consul-style service definitions, reloaded on SIGHUP (repeatable). [default: none]"""
        self["config-dir"].append(value)

    def opt_empty_file(self, value: str) -> None:
        """Create this file empty unless it exists; with le: asks for its name's certificate."""
        self["empty-file"].append(value)

    def opt_syslog(self, value: str) -> None:
        """Syslog (RFC 5424/3164) on udp:PORT or tcp:PORT[:interface=ADDR] (repeatable)."""
        self["syslog"].append(value)

    def opt_syslog_tls(self, value: str) -> None:
        """Syslog over TLS (RFC 5425) on PORT with --http le:'s certificates, or a TLS endpoint."""
        self["syslog-tls"].append(value)

    def opt_relp(self, value: str) -> None:
        """RELP (rsyslog's omrelp) on this port or tcp: endpoint (repeatable). [default: none]"""
        self["relp"].append(value)

    def opt_json_lines(self, value: str) -> None:
        """syslog-ng JSON lines (format-json) on tcp:PORT (repeatable). [default: none]"""
        self["json-lines"].append(value)

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
            usage.Options.parseOptions(self, from_env + argv)
        except usage.UsageError as e:
            message = str(e)
            for name, variable in used.items():
                if message.startswith(f"--{name} "):
                    message += f" (from {variable})"
            fail(message)

    def postOptions(self) -> None:
        self.settings = make_settings(self)
        twist = getattr(self, "parent", None)
        if twist is not None and "fileLogObserverFactory" in twist:
            # Readable lines everywhere (twist's default off a terminal is its raw JSON),
            # clean JSON when --log-format json asks for it.
            twist["fileLogObserverFactory"] = logformat.choose(sys.argv)


def make_settings(options: Mapping[str, Any]) -> Settings:
    """Every part's settings from parsed *options*; ``usage.UsageError`` naming a bad one."""
    token = _token(options)
    cors = tuple(_origin(o) for o in options["cors-origin"])
    http = tuple(options["http"]) or (DEFAULT_HTTP,)
    for description in http:
        _check_endpoint(description)
    return Settings(
        data_dir=Path(options["data-dir"]),
        http=http,
        access_log=bool(options["access-log"]),
        fast_path=not options["no-fast-path"],
        workers=convert(options, "workers", _workers, "a number of processes (1-64) or 'auto'"),
        max_body=convert(options, "max-body-size", parse_size, "a size like 1MiB or 65536"),
        allow_hosts=tuple(_host(h) for h in options["allow-host"]),
        allow_origins=tuple(_origin(o, "--allow-origin") for o in options["allow-origin"]),
        limits=_limits(options),
        token=token,
        catalog=_catalog(options, token, cors),
        dns=_dns(options),
        logs=_logs(options, token),
        push=_push(options, token, cors),
        tls=_tls(options),
        web=web.Settings(token=token),
    )


def convert(options: Mapping[str, Any], name: str, parse: Callable[[str], T], expected: str) -> T:
    """``parse(options[name])``, or ``--name 'value': expected ...`` when it fails."""
    text = options[name]
    try:
        return parse(text)
    except ValueError:
        raise usage.UsageError(f"--{name} {text!r}: expected {expected}") from None


def _workers(text: str) -> int:
    count = (os.cpu_count() or 1) if text.strip().lower() == "auto" else int(text)
    if not 1 <= count <= 64:
        raise ValueError(text)
    return count


def _limits(options: Mapping[str, Any]) -> Limits:
    seconds = "a duration like 60s or 2m"
    return Limits(
        header_timeout=convert(options, "header-timeout", _positive_seconds, seconds),
        body_timeout=convert(options, "body-timeout", _positive_seconds, seconds),
        max_client_connections=convert(
            options, "max-client-connections", _at_least_one, "a whole number of at least 1"
        ),
    )


def _at_least_one(text: str) -> int:
    if int(text) < 1:
        raise ValueError(text)
    return int(text)


def _host(text: str) -> str:
    """An ``--allow-host`` name (``homeport.example``, ``.example.com``, ``*``)."""
    if re.fullmatch(r"\*|\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?", text):
        return text
    raise usage.UsageError(
        f"--allow-host {text!r}: expected a host name like homeport.example, "
        "'.example.com' (any name under it) or '*'"
    )


def _origin(text: str, option: str = "--cors-origin") -> str:
    """A browser origin (``https://ci.example``, ``http://localhost:8000``) or ``*``."""
    if text == "*" or re.fullmatch(r"https?://[^/\s:]+(:\d{1,5})?/?", text):
        return text
    raise usage.UsageError(
        f"{option} {text!r}: expected an origin like https://ci.example "
        "(scheme, host and port, no path) or '*'"
    )


def _check_endpoint(description: str) -> None:
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, description)
    except Exception as e:  # noqa: BLE001 - endpoint parsers raise every type there is
        raise usage.UsageError(
            f"--http {description!r}: not a valid endpoint ({e or type(e).__name__})"
        ) from None


def _token(options: Mapping[str, Any]) -> str | None:
    token: str | None = options["token"]
    token_file = options["token-file"]
    if token is not None and token_file is not None:
        raise usage.UsageError("--token and --token-file: give one, not both")
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise usage.UsageError(f"--token-file {token_file!r}: {e.strerror}") from None
        if not token:
            raise usage.UsageError(f"--token-file {token_file!r}: the file is empty")
    if token is not None and not token.strip():
        raise usage.UsageError("--token: must not be empty")
    return token


def _catalog(
    options: Mapping[str, Any], token: str | None, cors: tuple[str, ...]
) -> catalog.Settings:
    datacenter = options["datacenter"]
    if not re.fullmatch(r"[A-Za-z0-9_-]+", datacenter):
        raise usage.UsageError(f"--datacenter {datacenter!r}: use letters, digits, '-' and '_'")
    node = options["node"]
    if node is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", node):
        raise usage.UsageError(f"--node {node!r}: use letters, digits, '-', '_', '.'")
    advertise = options["advertise"]
    if advertise is not None:
        try:
            ipaddress.ip_address(advertise)
        except ValueError:
            raise usage.UsageError(f"--advertise {advertise!r}: not an IP address") from None
    for directory in options["config-dir"]:
        if not Path(directory).is_dir():
            raise usage.UsageError(f"--config-dir {directory!r}: not a directory")
    return catalog.Settings(
        datacenter=datacenter,
        node=node,
        advertise=advertise,
        config_dirs=tuple(Path(d) for d in options["config-dir"]),
        token=token,
        cors_origins=cors,
        enable_script_checks=bool(options["enable-script-checks"]),
        enable_local_script_checks=bool(options["enable-local-script-checks"]),
        acl=bool(options["acl"]),
        acl_default_policy=_acl_default(options["acl-default-policy"]),
        **_etcd(options),
    )


def _acl_default(value: str) -> str:
    if value not in ("allow", "deny"):
        raise usage.UsageError(f"--acl-default-policy {value!r}: use 'allow' or 'deny'")
    return value


def _etcd(options: Mapping[str, Any]) -> dict[str, Any]:
    """``--catalog`` and the etcd options, as catalog.Settings fields."""
    where = options["catalog"]
    if where == "sqlite":
        return {}
    scheme, _, hosts = where.partition("://")
    if scheme not in ("etcd", "etcds") or not hosts:
        raise usage.UsageError(
            f"--catalog {where!r}: use 'sqlite' or etcd://HOST:PORT[,HOST:PORT...]"
        )
    files: dict[str, Path | None] = {}
    for name in ("etcd-ca", "etcd-cert", "etcd-key"):
        value = options[name]
        if value is not None and not Path(value).is_file():
            raise usage.UsageError(f"--{name} {value!r}: no such file")
        files[name] = Path(value) if value is not None else None
    if (files["etcd-cert"] is None) != (files["etcd-key"] is None):
        raise usage.UsageError("--etcd-cert and --etcd-key go together")
    secure = scheme == "etcds" or any(files.values())
    endpoints = []
    for host in hosts.split(","):
        if not re.fullmatch(r"[A-Za-z0-9.\-]+:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}", host):
            raise usage.UsageError(f"--catalog {where!r}: {host!r} is not HOST:PORT")
        endpoints.append(("https://" if secure else "http://") + host)
    prefix = options["etcd-prefix"]
    if not prefix.startswith("/") or not prefix.endswith("/") or len(prefix) < 2:
        raise usage.UsageError(f"--etcd-prefix {prefix!r}: a path like /homeport/")
    ttl = convert(options, "agent-ttl", _duration, "a duration like 10s")
    if not 2 <= ttl <= 3600:
        raise usage.UsageError(f"--agent-ttl {options['agent-ttl']!r}: from 2s to 1h")
    return {
        "etcd_endpoints": tuple(endpoints),
        "etcd_prefix": prefix,
        "etcd_ca": files["etcd-ca"],
        "etcd_cert": files["etcd-cert"],
        "etcd_key": files["etcd-key"],
        "agent_ttl": ttl,
        "reap_after": convert(options, "reap-after", _positive_seconds, "a duration like 72h"),
    }


def _seconds_count(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 2**31 - 1:
        raise ValueError(text)
    return value


#: The option each field of the DNS core's Config comes from.
DNS_FLAGS = {"domain": "--domain", "ttl": "--dns-ttl", "soa_min_ttl": "--dns-soa-min-ttl"}


def _dns(options: Mapping[str, Any]) -> dns.Settings | None:
    from .dns.config import Config, InvalidConfig

    seconds = "a whole number of seconds"
    ttl = convert(options, "dns-ttl", _seconds_count, seconds)
    soa_min_ttl = convert(options, "dns-soa-min-ttl", _seconds_count, seconds)
    domain = options["domain"].strip(".").lower()
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*", domain):
        raise usage.UsageError(f"--domain {options['domain']!r}: not a DNS domain name")
    if options["dns"].lower() == "none":
        return None
    host, port = convert(
        options,
        "dns",
        lambda text: parse_hostport(text, 8600),
        "HOST:PORT (e.g. 127.0.0.1:8600) or 'none'",
    )
    try:  # what the DNS core refuses beyond the checks above (a label over 63 bytes)
        Config(domain=domain, ttl=ttl, soa_min_ttl=soa_min_ttl)
    except InvalidConfig as e:
        flag = DNS_FLAGS[e.field]
        raise usage.UsageError(f"{flag} {options[flag[2:]]!r}: {e.reason}") from None
    cache_size = convert(options, "dns-cache-size", parse_size, "a size like 64MiB")
    return dns.Settings(
        host=host,
        port=port,
        domain=domain,
        ttl=ttl,
        soa_min_ttl=soa_min_ttl,
        cache_size=cache_size,
    )


def _logs(options: Mapping[str, Any], token: str | None) -> logs.Settings:
    from .logs.retention import parse_retention

    max_age, max_records = convert(
        options,
        "log-retention",
        parse_retention,
        "an age like 7d, a record count like 1000000, both (7d,1000000), or none",
    )
    syslog, syslog_tls, relp, json_lines = _syslog(options)
    return logs.Settings(
        max_age=max_age,
        max_records=max_records,
        token=token,
        syslog=syslog,
        syslog_tls=syslog_tls,
        relp=relp,
        json_lines=json_lines,
        **_syslog_limits(options),
    )


def _syslog_limits(options: Mapping[str, Any]) -> dict[str, Any]:
    """``--syslog-max-message`` and the other limits of the syslog listeners."""

    def message_size(text: str) -> int:
        size = parse_size(text)
        if not 1024 <= size <= 16 * 1024 * 1024:
            raise ValueError(text)
        return size

    def count(text: str) -> int:
        if int(text) < 1:
            raise ValueError(text)
        return int(text)

    def timeout(text: str) -> float:
        if parse_seconds(text) <= 0:
            raise ValueError(text)
        return parse_seconds(text)

    number = "a whole number of at least 1"
    return {
        "syslog_max_message": convert(
            options, "syslog-max-message", message_size, "a size from 1KiB to 16MiB, like 64KiB"
        ),
        "syslog_max_pending": convert(options, "syslog-max-pending", count, number),
        "syslog_max_connections": convert(options, "syslog-max-connections", count, number),
        "syslog_idle_timeout": convert(
            options, "syslog-idle-timeout", timeout, "a duration like 10m or 30s"
        ),
    }


def _syslog(options: Mapping[str, Any]) -> tuple[tuple[str, ...], ...]:
    """``--syslog``, ``--syslog-tls``, ``--relp`` and ``--json-lines``, each checked."""
    from .logs.syslog.service import check, is_udp

    fields: list[tuple[str, ...]] = []
    for name in ("syslog", "syslog-tls", "relp", "json-lines"):
        if name == "syslog-tls":
            options = {**options, name: [_syslog_tls(d, options["http"]) for d in options[name]]}
        for description in options[name]:
            if name != "syslog" and is_udp(description):
                raise usage.UsageError(f"--{name} {description!r}: takes TCP only, not udp:")
            try:
                check(f"--{name}", description)
            except ValueError as e:
                raise usage.UsageError(f"--{name} {description!r}: {e}") from None
        fields.append(tuple(options[name]))
    return tuple(fields)


def _syslog_tls(description: str, http: Sequence[str]) -> str:
    """``--syslog-tls 6514`` is TLS on tcp:6514 with the certificates of the first
    ``--http le:<certdir>:...`` (or ``lets:``); anything else is a TLS endpoint string."""
    text = description.strip()
    if not text.isdigit():
        if text.startswith(("tcp:", "unix:")):
            raise usage.UsageError(
                f"--syslog-tls {description!r}: not TLS: give a port, le:<certdir>:tcp:PORT "
                "or ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem"
            )
        return text
    for endpoint in http:
        prefix, _, rest = endpoint.partition(":")
        certdir = re.match(r"((?:[^:\\]|\\.)+):", rest)
        if prefix in ("le", "lets") and certdir is not None:
            return f"{prefix}:{certdir.group(1)}:tcp:{text}"
    raise usage.UsageError(
        f"--syslog-tls {description!r}: no certificate to serve: add --http le:<certdir>:..., "
        "or give le:<certdir>:tcp:PORT or ssl:PORT:privateKey=KEY.pem:certKey=CERT.pem"
    )


def _positive_seconds(text: str) -> float:
    seconds = parse_seconds(text)
    if seconds <= 0:
        raise ValueError(text)
    return seconds


def _duration(text: str) -> float:
    seconds = parse_seconds(text)
    if not 0 < seconds <= 3600:
        raise ValueError(text)
    return seconds


def _buffer_size(text: str) -> int:
    size = parse_size(text)
    if size < 1024:
        raise ValueError(text)
    return size


def _push(options: Mapping[str, Any], token: str | None, cors: tuple[str, ...]) -> push.Settings:
    from .push.hub import BadTopic, check_topic
    from .push.zmq import check_address

    duration, size = "a duration like 25s or 500ms", "a size of at least 1024 bytes"
    for name in ("zmq-connect", "zmq-bind"):
        for address in options[name]:
            try:
                check_address(address)
            except ValueError:
                raise usage.UsageError(
                    f"--{name} {address!r}: expected a ZeroMQ address like tcp://127.0.0.1:5556"
                ) from None
    for topic in options["zmq-topic"]:
        try:
            check_topic("zmq/" + topic)
        except BadTopic:
            raise usage.UsageError(f"--zmq-topic {topic!r}: not a usable topic prefix") from None
    if options["zmq-topic"] and not (options["zmq-connect"] or options["zmq-bind"]):
        raise usage.UsageError("--zmq-topic: give --zmq-connect or --zmq-bind too")
    server_key, clients = _zmq_curve(options)
    return push.Settings(
        ping_interval=convert(options, "socketio-ping-interval", _duration, duration),
        ping_timeout=convert(options, "socketio-ping-timeout", _duration, duration),
        max_payload=convert(options, "socketio-max-payload", _buffer_size, size),
        sse_queue_limit=convert(options, "sse-queue-limit", _buffer_size, size),
        event_history=convert(options, "event-history", _whole_number, "a whole number"),
        zmq_connect=tuple(options["zmq-connect"]),
        zmq_bind=tuple(options["zmq-bind"]),
        zmq_topics=tuple(options["zmq-topic"]),
        zmq_curve_server_key=server_key,
        zmq_curve_clients=clients,
        token=token,
        cors_origins=cors,
    )


def _zmq_curve(options: Mapping[str, Any]) -> tuple[Path | None, Path | None]:
    """--zmq-curve-server-key and --zmq-curve-clients: both or neither, each usable."""
    from .push.zmq import check_clients, load_server_key

    key, clients = options["zmq-curve-server-key"], options["zmq-curve-clients"]
    if key is None and clients is None:
        return None, None
    if key is None or clients is None:
        raise usage.UsageError("--zmq-curve-server-key and --zmq-curve-clients: give both")
    if not (options["zmq-connect"] or options["zmq-bind"]):
        raise usage.UsageError("--zmq-curve-server-key: give --zmq-connect or --zmq-bind too")
    try:
        load_server_key(Path(key))
    except ValueError as e:
        raise usage.UsageError(f"--zmq-curve-server-key {key!r}: {e}") from None
    try:
        check_clients(Path(clients))
    except ValueError as e:
        raise usage.UsageError(f"--zmq-curve-clients {clients!r}: {e}") from None
    return Path(key), Path(clients)


def _whole_number(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _tls(options: Mapping[str, Any]) -> tls.Settings:
    directory = options["acme-directory"]
    if directory is not None and not re.match(r"^https?://[^/\s]+", directory):
        raise usage.UsageError(
            f"--acme-directory {directory!r}: expected a URL like "
            "https://acme-v02.api.letsencrypt.org/directory"
        )
    ca_file = options["acme-ca-file"]
    if ca_file is not None:
        try:
            data = Path(ca_file).read_bytes()
        except OSError as e:
            raise usage.UsageError(f"--acme-ca-file {ca_file!r}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise usage.UsageError(f"--acme-ca-file {ca_file!r}: no PEM certificate in it")
    email = options["acme-email"]
    if email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
        raise usage.UsageError(f"--acme-email {email!r}: not an e-mail address")
    return tls.Settings(
        acme_directory=directory,
        ca_file=ca_file,
        email=email,
        empty_files=tuple(options["empty-file"]),
    )
