"""Running the agent's health checks: TTL, HTTP and TCP.

All timing comes from the reactor passed in (``callLater``/``seconds``), so tests drive
TTL expiry with ``twisted.internet.task.Clock``.  Only checks of the local node are run,
as a Consul agent runs only its own; checks registered through the catalog for other
nodes are data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from .model import CRITICAL, PASSING, WARNING, Catalog, Change, Check, CheckDefinition

DEFAULT_TIMEOUT = 10.0
OUTPUT_MAX = 4096


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


@dataclass
class _Running:
    definition: CheckDefinition
    call: IDelayedCall | None = None
    critical_since: float | None = None


class HealthChecker(Service):
    """Schedules every check of *node* and writes results into the catalog."""

    log = Logger()

    def __init__(self, catalog: Catalog, node: str, reactor: Any) -> None:
        self.catalog = catalog
        self.node = node
        self.reactor = reactor
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
        for check in list(self.catalog.checks.values()):
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

    # -- HTTP and TCP -------------------------------------------------------------

    def _run(self, check_id: str) -> None:
        running = self._running.get(check_id)
        if running is None:
            return
        running.call = None
        d = running.definition
        probe = self._http(d) if d.http else self._tcp(d)
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
        body = None
        if d.body:
            from io import BytesIO

            from twisted.web.client import FileBodyProducer

            body = FileBodyProducer(BytesIO(d.body.encode()))
        timeout = d.timeout or DEFAULT_TIMEOUT

        async def probe() -> tuple[str, str]:
            response = await self._agent(d.tls_skip_verify).request(
                method.encode(), d.http.encode(), headers, body
            )
            content = await readBody(response)
            text = content[:OUTPUT_MAX].decode("utf-8", "replace")
            phrase = response.phrase.decode("latin-1")
            return (
                http_status(response.code),
                f"HTTP {method} {d.http}: {response.code} {phrase} Output: {text}",
            )

        result = defer.ensureDeferred(probe())
        result.addTimeout(timeout, self.reactor)
        return result.addErrback(
            lambda f: (CRITICAL, f"HTTP {method} {d.http}: {_reason(f, timeout)}")
        )

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


def _reason(failure: Failure, timeout: float) -> str:
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return f"timed out after {timeout:g}s"
    value = failure.value
    return str(getattr(value, "reasons", None) or value) or failure.getErrorMessage()
