"""Running the agent's health checks: TTL, HTTP, TCP and script checks.

All timing comes from the reactor passed in (``callLater``/``seconds``), so tests drive
TTL expiry with ``twisted.internet.task.Clock``.  Only checks of the local node are run,
as a Consul agent runs only its own; checks registered through the catalog for other
nodes are data.

Script checks (Consul's ``Args``) run only from the sources :class:`ScriptPolicy`
allows, as child processes started and waited for on a thread pool of their own (never
on the reactor thread), each in a process group of its own so that a timeout kills the
script and everything it started.  HTTP checks follow redirects as Go's ``http.Client``
does for Consul.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from ..errors import error
from ..units import format_duration
from .errors import CatalogError
from .model import CRITICAL, PASSING, WARNING, Catalog, Change, Check, CheckDefinition, Source

DEFAULT_TIMEOUT = 10.0
#: Consul's CheckMonitor: a script gets 30 s unless its check says otherwise.
SCRIPT_TIMEOUT = 30.0
#: Consul's checks.DefaultBufSize: the output kept of a check (a script's: the end of it).
OUTPUT_MAX = 4096
#: Go's http.Client: the 10th redirect in a row is refused.
MAX_REDIRECTS = 10
#: Scripts running at once; more wait for a thread (each script still runs alone).
SCRIPT_THREADS = 32


# -- script checks: who may register them ---------------------------------------------


@error
class ScriptChecksDisabled(CatalogError):
    """A script check from a source this agent runs no scripts from, in Consul's words.

    *remote*: it came through the HTTP API (else from ``--config-dir``)."""

    remote: bool

    def __str__(self) -> str:
        if self.remote:
            return (
                "Scripts are disabled on this agent from remote calls; to enable, "
                "configure 'enable_script_checks' to true"
            )
        return (
            "Scripts are disabled on this agent; to enable, configure "
            "'enable_script_checks' or 'enable_local_script_checks' to true"
        )


class ScriptFlags(typing.Protocol):
    """The two settings (``homeport.catalog.Settings``) a :class:`ScriptPolicy` is made of."""

    @property
    def enable_script_checks(self) -> bool: ...

    @property
    def enable_local_script_checks(self) -> bool: ...


@dataclass(frozen=True, kw_only=True)
class ScriptPolicy:
    """Where script checks may come from, as Consul's ``enable_script_checks`` (both)
    and ``enable_local_script_checks`` (the definition files only) decide."""

    #: Registered through the HTTP API (``--enable-script-checks``).
    remote: bool = False
    #: Read from ``--config-dir`` (either flag).
    local: bool = False

    @classmethod
    def from_settings(cls, settings: ScriptFlags) -> ScriptPolicy:
        """The policy of the catalog's ``enable_script_checks`` and
        ``enable_local_script_checks`` settings."""
        remote = settings.enable_script_checks
        return cls(remote=remote, local=remote or settings.enable_local_script_checks)

    def refusal(self, check: Check) -> ScriptChecksDisabled | None:
        """Why *check* may not be registered (or run) here; None if it may."""
        if not check.definition.args:
            return None
        return _refusal(self, check.source)

    def vet(self, checks: Iterable[Check]) -> None:
        """Raise :class:`ScriptChecksDisabled` for the first script check not allowed."""
        for check in checks:
            refusal = self.refusal(check)
            if refusal is not None:
                raise refusal


def _refusal(policy: ScriptPolicy, source: Source) -> ScriptChecksDisabled | None:
    if source == "config":
        return None if policy.local else ScriptChecksDisabled(remote=False)
    return None if policy.remote else ScriptChecksDisabled(remote=True)


@implementer(IPolicyForHTTPS)
class _NoVerify:
    """TLS without certificate checks, for ``TLSSkipVerify``."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        from twisted.internet.ssl import CertificateOptions

        return _Creator(CertificateOptions(verify=False))


class _Creator:
    def __init__(self, options: Any) -> None:
        self.options = options

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        from OpenSSL.SSL import Connection

        return Connection(self.options.getContext(), None)


def http_status(code: int) -> str:
    """Consul's mapping of an HTTP check's status code."""
    if 200 <= code < 300:
        return PASSING
    if code == 429:
        return WARNING
    return CRITICAL


# -- script checks: running them ------------------------------------------------------


def script_status(returncode: int) -> str:
    """Consul's (and Nagios's) reading of a script's exit: 0 passing, 1 warning, else
    critical (a signal too)."""
    if returncode == 0:
        return PASSING
    if returncode == 1:
        return WARNING
    return CRITICAL


class OutputTail:
    """The last *size* bytes written and how many were (Consul's circular buffer)."""

    def __init__(self, size: int = OUTPUT_MAX) -> None:
        self.size = size
        self.total = 0
        self._data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._data += chunk
        del self._data[: max(0, len(self._data) - self.size)]

    def text(self) -> str:
        text = self._data.decode("utf-8", "replace")
        if self.total > self.size:
            return f"Captured {self.size} of {self.total} bytes\n...\n{text}"
        return text


def start_script(args: Sequence[str]) -> subprocess.Popen[bytes] | str:
    """*args* started without a shell, stdout and stderr in one pipe, in a process group
    of its own; or, when it cannot start, Go's words for why (Consul's check output)."""
    executable = args[0]
    if "/" not in executable:
        found = shutil.which(executable)
        if found is None:
            return f'exec: "{executable}": executable file not found in $PATH'
        executable = found
    try:
        return subprocess.Popen(
            list(args),
            executable=executable,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    except OSError as e:
        reason = e.strerror or str(e)
        return f"fork/exec {executable}: {reason[:1].lower()}{reason[1:]}"


def _read_until_end(
    pipe: IO[bytes], output: OutputTail, deadline: float, stop: threading.Event
) -> bool:
    """Copy *pipe* into *output* until it ends (True) or the deadline or *stop* (False)."""
    poller = select.poll()
    poller.register(pipe.fileno(), select.POLLIN)
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if poller.poll(min(left, 0.5) * 1000):
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:
                return True
            output.write(chunk)
    return False


def _exited(process: subprocess.Popen[bytes], deadline: float) -> bool:
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the script and everything it started (its process group)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # every member already gone


class ScriptRunner:
    """Runs scripts on a thread pool of its own; :meth:`stop` kills what still runs."""

    def __init__(self, reactor: Any, threads: int = SCRIPT_THREADS) -> None:
        self.reactor = reactor
        self.threads = threads
        self._pool: ThreadPool | None = None
        self._lock = threading.Lock()
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._stop = threading.Event()

    def run(self, args: Sequence[str], timeout: float) -> defer.Deferred[tuple[str, str]]:
        """The script's (status, output), as Consul's CheckMonitor makes them."""
        if self._pool is None:
            self._stop.clear()
            self._pool = ThreadPool(0, self.threads, "homeport-script-checks")
            self._pool.start()
        return deferToThreadPool(self.reactor, self._pool, self.run_blocking, tuple(args), timeout)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for process in self._processes:
                kill_group(process)
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

    def run_blocking(self, args: Sequence[str], timeout: float) -> tuple[str, str]:
        """:meth:`run` in the calling thread."""
        process = start_script(args)
        if isinstance(process, str):
            return CRITICAL, process
        with self._lock:
            self._processes.add(process)
        try:
            return self._wait(process, timeout)
        finally:
            with self._lock:
                self._processes.discard(process)

    def _wait(self, process: subprocess.Popen[bytes], timeout: float) -> tuple[str, str]:
        assert process.stdout is not None
        output = OutputTail()
        deadline = time.monotonic() + timeout
        with process.stdout as pipe:
            ended = _read_until_end(pipe, output, deadline, self._stop)
        if ended and _exited(process, deadline):
            return script_status(process.returncode), output.text()
        kill_group(process)
        process.wait()
        message = f"Timed out ({format_duration(timeout)}) running check"
        text = output.text()
        return CRITICAL, f"{message}\n\n{text}" if text else message


# -- HTTP checks: redirects as Go's http.Client follows them --------------------------


@error
class TooManyRedirects(Exception):
    """Go's http.Client refusing to follow the 10th redirect (Consul's check output)."""

    method: str
    location: str

    def __str__(self) -> str:
        op = self.method[:1] + self.method[1:].lower()
        return f'{op} "{self.location}": stopped after {MAX_REDIRECTS} redirects'


#: What Go drops on a redirect to another host (one not under the first request's).
_SENSITIVE = (b"authorization", b"www-authenticate", b"cookie", b"cookie2")


@dataclass(frozen=True)
class Hop:
    """One request of an HTTP check's chain of redirects."""

    method: str
    url: str
    #: The check's own headers, copied to every hop as Go copies them.
    headers: Headers
    body: str = ""
    #: Whether the chain left the first request's host (sensitive headers dropped).
    stripped: bool = False


def redirect_method(code: int, method: str) -> str | None:
    """The method Go's http.Client follows a *code* answer with; None: not followed."""
    if code in (301, 302, 303):
        return method if method in ("GET", "HEAD") else "GET"
    if code in (307, 308):
        return method
    return None


def _same_site(first: str, url: str) -> bool:
    """Go's isDomainOrSubdomain on the two URLs' host names."""
    parent, host = urlsplit(first).hostname or "", urlsplit(url).hostname or ""
    return host == parent or host.endswith("." + parent)


def _referer(last: str, url: str) -> str:
    """Go's refererForURL: the last URL (no user info), but never from https to http."""
    before, after = urlsplit(last), urlsplit(url)
    if before.scheme == "https" and after.scheme == "http":
        return ""
    if before.username is not None or before.password is not None:
        before = before._replace(netloc=before.netloc.rpartition("@")[2])
    return before.geturl()


def redirected(hop: Hop, first: Hop, code: int, location: str) -> Hop:
    """The request Go's http.Client sends after *hop* was answered *code* + *location*."""
    method = redirect_method(code, hop.method)
    assert method is not None
    url = urljoin(hop.url, location)
    stripped = hop.stripped or not _same_site(first.url, url)
    headers = first.headers.copy()
    if stripped:
        for name in _SENSITIVE:
            headers.removeHeader(name)
    if urlsplit(location).scheme:
        headers.removeHeader(b"host")  # Go keeps a custom Host for relative redirects only
    referer = _referer(hop.url, url)
    if referer and not first.headers.hasHeader(b"referer"):
        headers.setRawHeaders(b"referer", [referer.encode()])
    body = hop.body if code in (307, 308) else ""
    return Hop(method, url, headers, body, stripped)


class _Discard(Protocol):
    """Reads a redirect's body to its end and forgets it."""

    def __init__(self, finished: defer.Deferred[None]) -> None:
        self.finished = finished

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.finished.callback(None)


def _producer(body: str) -> IBodyProducer | None:
    return FileBodyProducer(BytesIO(body.encode())) if body else None


@dataclass
class _Running:
    definition: CheckDefinition
    call: IDelayedCall | None = None
    critical_since: float | None = None


class HealthChecker(Service):
    """Schedules every check of *node* and writes results into the catalog."""

    log = Logger()

    def __init__(
        self, catalog: Catalog, node: str, reactor: Any, scripts: ScriptPolicy | None = None
    ) -> None:
        self.catalog = catalog
        self.node = node
        self.reactor = reactor
        self.scripts = scripts or ScriptPolicy()
        self._runner = ScriptRunner(reactor)
        self._running: dict[str, _Running] = {}
        self._unsubscribe: Any = None
        self._own_update = False
        self._agents: dict[bool, Agent] = {}
        self._inflight: set[defer.Deferred[Any]] = set()

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        self._unsubscribe = self.catalog.subscribe(self._changed)
        self.catalog.ttl_listeners.append(self._ttl_touched)
        if self.scripts.remote:
            self.log.warn(
                "--enable-script-checks: whoever may register a check through the HTTP API "
                "can run any command here as this user (give --token, or use "
                "--enable-local-script-checks)"
            )
        for check in list(self.catalog.checks.values()):
            refusal = self.scripts.refusal(check) if check.node == self.node else None
            if refusal is not None and check.source == "api":
                # Consul purges a stored check it can no longer add.
                self.log.warn(
                    "Failed to restore check {check}: {reason}",
                    check=check.check_id,
                    reason=str(refusal),
                )
                self.catalog.deregister_check(self.node, check.check_id)
            else:
                self._schedule(check)

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._ttl_touched in self.catalog.ttl_listeners:
            self.catalog.ttl_listeners.remove(self._ttl_touched)
        for running in self._running.values():
            if running.call is not None and running.call.active():
                running.call.cancel()
        self._running.clear()
        for d in list(self._inflight):
            d.cancel()
        self._runner.stop()
        return defer.succeed(None)

    # -- scheduling -------------------------------------------------------------

    def _changed(self, changes: list[Change]) -> None:
        if self._own_update:
            return
        for change in changes:
            if change.kind != "check" or change.key[0] != self.node:
                continue
            check_id = change.key[1]
            if change.value is None:
                self._stop(check_id)
            else:
                assert isinstance(change.value, Check)
                self._schedule(change.value)

    def _ttl_touched(self, node: str, check_id: str) -> None:
        check = self.catalog.checks.get((node, check_id))
        if check is not None:
            self._schedule(check)

    def _stop(self, check_id: str) -> None:
        running = self._running.pop(check_id, None)
        if running is not None and running.call is not None and running.call.active():
            running.call.cancel()

    def _schedule(self, check: Check) -> None:
        if check.node != self.node or not check.type:
            return
        refusal = self.scripts.refusal(check)
        if refusal is not None:
            self.log.error(
                "Not running check {check}: {reason}", check=check.check_id, reason=str(refusal)
            )
            return
        existing = self._running.get(check.check_id)
        d = check.definition
        if d.ttl:
            # Every TTL update (pass, warn or fail) restarts the timer.
            self._stop(check.check_id)
            running = _Running(d)
            running.call = self.reactor.callLater(d.ttl, self._expire, check.check_id)
            self._running[check.check_id] = running
        elif existing is None or existing.definition != d:
            self._stop(check.check_id)
            running = _Running(d)
            running.call = self.reactor.callLater(0, self._run, check.check_id)
            self._running[check.check_id] = running
        self._track_critical(check)

    def _track_critical(self, check: Check) -> None:
        running = self._running.get(check.check_id)
        if running is None:
            return
        if check.status == CRITICAL:
            if running.critical_since is None:
                running.critical_since = self.reactor.seconds()
        else:
            running.critical_since = None

    def _record(self, check_id: str, status: str, output: str) -> None:
        check = self.catalog.checks.get((self.node, check_id))
        if check is None:
            self._stop(check_id)
            return
        self._own_update = True
        try:
            check = self.catalog.update_check(self.node, check_id, status, output)
        finally:
            self._own_update = False
        self._track_critical(check)
        self._reap(check)

    def _reap(self, check: Check) -> None:
        """DeregisterCriticalServiceAfter: drop a service critical for that long."""
        running = self._running.get(check.check_id)
        limit = check.definition.deregister_critical_service_after
        if not (running and limit and running.critical_since is not None and check.service_id):
            return
        if self.reactor.seconds() - running.critical_since >= limit:
            self.log.info(
                "Deregistering service {service} after check {check} was critical for {limit}s",
                service=check.service_id,
                check=check.check_id,
                limit=limit,
            )
            self.catalog.deregister_service(self.node, check.service_id)

    # -- TTL ------------------------------------------------------------------

    def _expire(self, check_id: str) -> None:
        running = self._running.get(check_id)
        if running is None:
            return
        running.call = None
        self._record(check_id, CRITICAL, "TTL expired")
        running = self._running.get(check_id)
        if running is not None and running.definition.deregister_critical_service_after:
            # Keep looking, so DeregisterCriticalServiceAfter can fire.
            running.call = self.reactor.callLater(running.definition.ttl, self._expire, check_id)

    # -- HTTP, TCP and scripts ------------------------------------------------------

    def _run(self, check_id: str) -> None:
        running = self._running.get(check_id)
        if running is None:
            return
        running.call = None
        d = running.definition
        probe = self._probe(d)
        self._inflight.add(probe)

        def done(result: tuple[str, str]) -> None:
            self._inflight.discard(probe)
            if self._running.get(check_id) is not running:
                return
            self._record(check_id, *result)
            if self._running.get(check_id) is running:
                running.call = self.reactor.callLater(d.interval, self._run, check_id)

        def failed(failure: Failure) -> None:
            self._inflight.discard(probe)
            if not failure.check(defer.CancelledError):
                self.log.failure("Running check {check}", failure, check=check_id)

        probe.addCallback(done).addErrback(failed)

    def _probe(self, d: CheckDefinition) -> defer.Deferred[tuple[str, str]]:
        if d.http:
            return self._http(d)
        if d.tcp:
            return self._tcp(d)
        return self._runner.run(d.args, d.timeout or SCRIPT_TIMEOUT)

    def _agent(self, skip_verify: bool) -> Agent:
        if skip_verify not in self._agents:
            policy = _NoVerify() if skip_verify else BrowserLikePolicyForHTTPS()
            self._agents[skip_verify] = Agent(self.reactor, contextFactory=policy)
        return self._agents[skip_verify]

    def _http(self, d: CheckDefinition) -> defer.Deferred[tuple[str, str]]:
        method = (d.method or "GET").upper()
        headers = Headers({k.encode(): [v.encode() for v in vs] for k, vs in d.header.items()})
        if not headers.hasHeader(b"user-agent"):
            headers.setRawHeaders(b"user-agent", [b"Consul Health Check"])
        timeout = d.timeout or DEFAULT_TIMEOUT

        async def probe() -> tuple[str, str]:
            response = await self._follow(Hop(method, d.http, headers, d.body), d.tls_skip_verify)
            content = await readBody(response)
            text = content[:OUTPUT_MAX].decode("utf-8", "replace")
            phrase = response.phrase.decode("latin-1")
            return (
                http_status(response.code),
                f"HTTP {method} {d.http}: {response.code} {phrase} Output: {text}",
            )

        result = defer.ensureDeferred(probe())
        result.addTimeout(timeout, self.reactor)
        return result.addErrback(lambda f: (CRITICAL, _http_failure(f, method, d.http, timeout)))

    async def _follow(self, first: Hop, skip_verify: bool) -> IResponse:
        """The answer to *first*, after the redirects Go's http.Client follows."""
        agent = self._agent(skip_verify)
        hop = first
        sent = 0
        while True:
            response: IResponse = await agent.request(
                hop.method.encode(), hop.url.encode(), hop.headers, _producer(hop.body)
            )
            sent += 1
            location = (response.headers.getRawHeaders(b"location") or [b""])[0]
            if redirect_method(response.code, hop.method) is None or not location:
                return response  # Go answers a 3xx without a Location as it is
            finished: defer.Deferred[None] = defer.Deferred()
            response.deliverBody(_Discard(finished))
            await finished
            target = location.decode("latin-1")
            if sent >= MAX_REDIRECTS:
                raise TooManyRedirects(first.method, target)
            hop = redirected(hop, first, response.code, target)

    def _tcp(self, d: CheckDefinition) -> defer.Deferred[tuple[str, str]]:
        host, _, port = d.tcp.rpartition(":")
        host = host.strip("[]")
        timeout = d.timeout or DEFAULT_TIMEOUT
        endpoint = HostnameEndpoint(self.reactor, host, int(port), timeout=timeout)

        def connected(protocol: Any) -> tuple[str, str]:
            if protocol.transport is not None:
                protocol.transport.loseConnection()
            return PASSING, f"TCP connect {d.tcp}: Success"

        connecting = endpoint.connect(Factory.forProtocol(Protocol))
        connecting.addTimeout(timeout, self.reactor)
        result: defer.Deferred[tuple[str, str]] = connecting.addCallback(connected)
        return result.addErrback(lambda f: (CRITICAL, f"dial tcp {d.tcp}: {_reason(f, timeout)}"))


def _http_failure(failure: Failure, method: str, url: str, timeout: float) -> str:
    if failure.check(TooManyRedirects):
        return str(failure.value)
    return f"HTTP {method} {url}: {_reason(failure, timeout)}"


def _reason(failure: Failure, timeout: float) -> str:
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return f"timed out after {timeout:g}s"
    value = failure.value
    return str(getattr(value, "reasons", None) or value) or failure.getErrorMessage()
