"""HTTP to etcd's v3 JSON gateway with Twisted's Agent: a POST, its JSON reply, TLS, a stream.

Each call here talks to one endpoint; failing over between members is the client's
(:mod:`homeport.etcd.client`).  Nothing here blocks the reactor or starts a thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from twisted.internet import error as neterror
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IConsumer,
    IOpenSSLClientConnectionCreator,
    IPushProducer,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import (
    IAgent,
    IAgentEndpointFactory,
    IBodyProducer,
    IPolicyForHTTPS,
    IResponse,
)
from zope.interface import implementer

from ..part import IHomeportReactor
from .values import EtcdError
from .wire import Json, error_of

#: What every request carries.  ``Grpc-Metadata-hasleader`` becomes gRPC metadata
#: "hasleader: true": a member without a leader then refuses at once ("etcdserver: no
#: leader"), so the client tries another member instead of waiting, and a watch on a
#: member that loses its leader is ended (etcd's own clients ask the same).
HEADERS = Headers(
    {
        b"Content-Type": [b"application/json"],
        b"Grpc-Metadata-hasleader": [b"true"],
    }
)
#: For a serializable read, which any member answers from its own copy, leader or not.
LOCAL_HEADERS = Headers({b"Content-Type": [b"application/json"]})

#: A failure in these means the request never left: it is safe to send it elsewhere.
NOT_SENT = (
    neterror.ConnectError,  # refused, no route, connect timeout, DNS lookup ...
    neterror.ConnectingCancelledError,
)


class NotSent(Exception):
    """The request could not be sent (its connection failed): nothing happened."""


@implementer(IPolicyForHTTPS)
class TLSPolicy:
    """Verify every member against *ca* (or the system's roots) and, with *cert* and
    *key*, present a client certificate."""

    def __init__(self, ca: Path | None, cert: Path | None, key: Path | None) -> None:
        self._trust = Certificate.loadPEM(ca.read_bytes()) if ca else None
        self._client = None
        if cert is not None:
            pem = cert.read_bytes() + b"\n" + (key.read_bytes() if key else b"")
            self._client = PrivateCertificate.loadPEM(pem)

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        extra: dict[str, Any] = {}
        if self._trust is not None:
            extra["trustRoot"] = self._trust
        if self._client is not None:
            extra["clientCertificate"] = self._client
        creator: IOpenSSLClientConnectionCreator = optionsForClientTLS(
            hostname.decode("ascii"), **extra
        )
        return creator


@implementer(IAgentEndpointFactory)
class _Endpoints:
    """TCP, or TLS over TCP, to a member, on the client's own reactor.  (Agent's own
    factory would time TLS writes with the global reactor.)"""

    def __init__(self, reactor: IHomeportReactor, tls: TLSPolicy) -> None:
        self._reactor = reactor
        self._tls = tls
        self._made: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """The endpoint for *uri*'s member (made once: a request is not worth an IDNA
        check of its host)."""
        where = (uri.scheme, uri.host, uri.port)
        if where not in self._made:
            self._made[where] = self._make(uri)
        return self._made[where]

    def _make(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii")
        tcp = HostnameEndpoint(self._reactor, host, uri.port)
        if uri.scheme != b"https":
            return tcp
        creator = self._tls.creatorForNetloc(uri.host, uri.port)
        endpoint: IStreamClientEndpoint = wrapClientTLS(creator, tcp, clock=self._reactor)
        return endpoint


def http_agent(
    reactor: IHomeportReactor, ca: Path | None, cert: Path | None, key: Path | None
) -> tuple[IAgent, HTTPConnectionPool]:
    """An Agent over a persistent pool (connections kept between calls)."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 16  # idle connections kept per member, for bursts
    pool.retryAutomatically = False  # a write is never sent twice behind our back
    endpoints = _Endpoints(reactor, TLSPolicy(ca, cert, key))
    agent = Agent.usingEndpointFactory(reactor, endpoints, pool=pool)
    return agent, pool


@implementer(IBodyProducer)
class _Bytes:
    """A request body that is all there at once (no cooperator, no global reactor)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class Body(Protocol):
    """A response body, handed chunk by chunk to *on_data*; *done* fires at its end.
    Cancelling *done* (or :meth:`abort`) drops the connection."""

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self.on_data = on_data
        self.done: Deferred[None] = Deferred(self._cancel)

    def _stop(self) -> None:
        """Drop the connection (the response's transport is a producer)."""
        if self.transport is not None:
            cast(IPushProducer, self.transport).stopProducing()

    def _cancel(self, _: Deferred[None]) -> None:
        self._stop()

    def abort(self, reason: Exception) -> None:
        """Drop the connection; *done* fails with *reason*."""
        if not self.done.called:
            self.done.errback(reason)
        self._stop()

    def dataReceived(self, data: bytes) -> None:
        try:
            self.on_data(data)
        except Exception as e:  # noqa: BLE001 - the consumer's failure ends this body
            self.abort(e)

    def connectionLost(self, reason: Failure = neterror.ConnectionDone) -> None:  # type: ignore[assignment]
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)


def deliver(response: IResponse, on_data: Callable[[bytes], None]) -> Body:
    """Stream *response*'s body to *on_data*; its ``done`` fires when it ends."""
    body = Body(on_data)
    response.deliverBody(body)
    return body


async def post(agent: IAgent, url: str, body: Json, leader: bool = True) -> IResponse:
    """POST *body* as JSON (asking for a member with a leader unless *leader* is false);
    a connection that could not be made is :class:`NotSent`."""
    data = _Bytes(json.dumps(body).encode())
    headers = HEADERS if leader else LOCAL_HEADERS
    try:
        response: IResponse = await agent.request(b"POST", url.encode(), headers, data)
    except NOT_SENT as e:
        raise NotSent(f"{url}: {e}") from e
    return response


async def call(agent: IAgent, url: str, body: Json, leader: bool = True) -> Json:
    """POST *body* and return the JSON reply; an etcd error reply raises :class:`EtcdError`."""
    response = await post(agent, url, body, leader)
    chunks: list[bytes] = []
    await deliver(response, chunks.append).done
    data = b"".join(chunks)
    try:
        reply = json.loads(data)
    except ValueError:
        raise EtcdError(2, f"HTTP {response.code}: {data[:200]!r}") from None
    if not isinstance(reply, dict):
        raise EtcdError(2, f"HTTP {response.code}: not a JSON object")
    problem = error_of(reply)
    if problem is not None:
        raise problem
    if response.code != 200:
        raise EtcdError(2, f"HTTP {response.code}")
    return reply
