"""An HTTP listener as a service, and whether an endpoint string reaches beyond loopback."""

from __future__ import annotations

import ipaddress
import re

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import StartupError

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


def url_of(what: str, address: IAddress) -> str | None:
    """``http://127.0.0.1:8500/`` for a listener (*what* names its endpoint string:
    le:/lets:/ssl: ones are https), or None when it is not an IP socket (UNIX)."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    endpoint = what.split("'", 2)[1] if what.count("'") >= 2 else what
    scheme = "https" if endpoint.split(":", 1)[0] in ("le", "lets", "ssl") else "http"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}/"


class Listener(Service):
    """One listening endpoint; a port that cannot be bound stops start-up clearly.

    *what* names it for the operator (``--http 'tcp:8500'``).
    """

    def __init__(
        self,
        what: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        reactor: IReactorCore,
    ) -> None:
        self.what = what
        self.endpoint = endpoint
        self.factory = factory
        self.reactor = reactor
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        Service.startService(self)
        failure: list[Failure] = []
        d = self.endpoint.listen(self.factory)
        d.addCallbacks(self._listening, failure.append)
        if failure:
            raise StartupError(f"{self.what}: cannot listen: {failure[0].getErrorMessage()}")
        if self.port is None:
            d.addErrback(self._failed_later)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        url = url_of(self.what, port.getHost())
        if url is None:
            log.info("HTTP on {address}", address=str(port.getHost()))
        else:
            log.info("HTTP on {url} (dashboard: {url}ui/)", url=url)
        return port

    def _failed_later(self, failure: Failure) -> None:
        log.critical(
            "{what}: cannot listen: {reason}", what=self.what, reason=failure.getErrorMessage()
        )
        self.reactor.stop()

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            stopped: Deferred[None] | None = port.stopListening()
            return stopped
        return None
