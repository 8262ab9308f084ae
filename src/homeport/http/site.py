"""The one HTTP site: request size limits, opt-in access logs, and the root resource."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.error import UnsupportedMethod
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.util import Redirect

from .api import ApiResource, all_routes
from .direct import plain_socket, send_now, send_one
from .fastpath import Answerer, Date, simple_get
from .hosts import Names
from .limits import Clients, Limits
from .metrics import Metrics

DEFAULT_MAX_BODY = 1024 * 1024
#: Requests whose body may be larger than the site's limit, and their own: Consul's
#: snapshot restore streams the archive, so ``PUT /v1/snapshot`` takes up to 1 GiB
#: whatever ``--max-body-size`` says (Twisted keeps a body over 100 kB in a temporary
#: file, not in memory, and the route reads it from there).
LARGE_BODIES: dict[tuple[bytes, bytes], int] = {(b"PUT", b"/v1/snapshot"): 1024**3}


class HomeportRequest(Request):
    """A request that refuses bodies over the site's limit with 413, without buffering them.

    A declared ``Content-Length`` over the limit is answered at once (no ``100 Continue``);
    a chunked body is answered when it crosses the limit.  Like nginx's lingering close,
    the rest of the body is then read and thrown away before the connection is closed, so
    a client still sending (urllib, ``requests``) reads the 413 instead of a reset; a
    client that stops sending is closed after ``LINGER`` seconds at most.
    """

    LINGER = 30.0
    too_large = False
    started = 0.0
    measured = False
    _received = 0
    _linger: IDelayedCall | None = None

    def _limit(self) -> int:
        site = getattr(self.channel, "site", None)
        # Before requestReceived only the channel knows the method and the path.
        method = getattr(self.channel, "_command", None) or self.method
        path = (getattr(self.channel, "_path", None) or self.uri or b"").partition(b"?")[0]
        large = LARGE_BODIES.get((method, path))
        return large if large is not None else int(getattr(site, "max_body", DEFAULT_MAX_BODY))

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            # The channel sends "100 Continue" after this call when asked to: a client
            # told 413 first does not send the body at all.
            self.requestHeaders.removeHeader(b"expect")
            self._refuse()
            length = 0
        Request.gotLength(self, length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._refuse()
            return
        Request.handleContentChunk(self, data)

    def _refuse(self) -> None:
        self.too_large = True
        limit = self._limit()
        body = f"Request body too large: the limit is {limit} bytes\n".encode()
        transport = self.channel.transport if self.channel else None
        if transport is None:
            return
        transport.write(
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self._linger = self.channel.callLater(self.LINGER, self._close)

    def _stop_lingering(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None

    def _close(self) -> None:
        self._stop_lingering()
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.loseConnection()

    def process(self) -> None:
        """As Twisted processes a request, unless the site's :class:`~.hosts.Names`
        refuse its ``Host`` (DNS rebinding) or, for a write, its ``Origin``: then a
        plain ``403`` with the reason on one line."""
        site = getattr(self.channel, "site", None)
        names: Names | None = getattr(site, "names", None)
        reason = None
        if names is not None:
            # Over TLS the certificate is the name check: a rebound name fails it.
            host = None if cast(Any, self).isSecure() else self.getHeader(b"host")
            reason = names.refusal(self.method, host, self.getHeader(b"origin"))
        if reason is None:
            Request.process(self)
            return
        self.site = site
        body = (reason + "\n").encode()
        me = cast(Any, self)  # twisted.web's Request is not annotated
        me.setResponseCode(403)
        me.setHeader(b"content-type", b"text/plain; charset=utf-8")
        me.setHeader(b"content-length", str(len(body)).encode())
        me.write(body)
        me.finish()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.started = time.perf_counter()
        if self.too_large:
            # The whole refused body has been read: nothing unread is left to turn the
            # close into a reset.
            self._close()
            return
        Request.requestReceived(self, command, path, version)

    def render(self, resrc: Resource) -> None:
        """As Twisted renders, but a method the resource has no ``render_<METHOD>`` for is
        Consul's plain-text 405 ``method X not allowed`` with ``Allow``, whatever the
        method: Twisted answers a method it does not know (``PATCH``) with an HTML 501."""
        Request.render(self, _MethodCheck(resrc))

    def connectionLost(self, reason: Failure) -> None:
        self._stop_lingering()
        # A client that has read its whole answer may hang up before the end of it is
        # handed back (a WSGI thread's finish comes a reactor turn later): it was
        # answered all the same, so it counts.
        site = getattr(self.channel, "site", None)
        if not self.finished and self.startedWriting and isinstance(site, HomeportSite):
            site.measure(self)
        Request.connectionLost(self, reason)


class _MethodCheck(Resource):
    """*resource*, with its ``UnsupportedMethod`` answered as Consul answers it."""

    isLeaf = True

    def __init__(self, resource: Resource) -> None:
        Resource.__init__(self)
        self.resource = resource

    def render(self, request: Request) -> Any:
        try:
            return self.resource.render(request)
        except UnsupportedMethod as e:
            allowed: list[bytes] = list(e.allowedMethods)
            if request.method == b"HEAD" and b"GET" in allowed:
                raise  # Twisted answers HEAD with the GET's head
            request.setResponseCode(405)
            request.setHeader(b"allow", b",".join(dict.fromkeys([b"OPTIONS", *allowed])))
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            method = (request.method or b"").decode("latin-1")
            return f"method {method} not allowed".encode()


class HomeportChannel(HTTPChannel):
    """Twisted's HTTP/1.1 channel, answering a request line or a head too long for it
    as any HTTP server does (``414 URI Too Long``, ``431 Request Header Fields Too
    Large``) instead of dropping the connection without a word.

    The limits are Go's order of size (net/http takes 1 MB of head): a long ``?filter=``
    gets Consul's answer, not a cut connection.
    """

    #: The longest request line or header line.
    MAX_LENGTH = 64 * 1024
    #: The longest head (request line and headers); Twisted's own limit stays above it.
    HEAD_LIMIT = 256 * 1024
    totalHeadersSize = 2 * HEAD_LIMIT

    head_bytes = 0
    #: The client address counted against ``max_client_connections``, if any.
    client: str | None = None
    refused = False
    _deadline: IDelayedCall | None = None
    #: The plain TCP socket fast answers are sent on at once; None: TLS and the rest.
    sock: socket.socket | None = None
    #: When the last fast answer went (the idle timeout counts from it), if since the
    #: timer was set.
    _active_at: float | None = None
    site: HomeportSite | None = None
    #: Fast answers up to this size are joined before they are sent.
    SMALL = 16 * 1024

    def connectionMade(self) -> None:
        HTTPChannel.connectionMade(self)
        self.head_bytes = 0
        self.sock = plain_socket(self.transport)
        site: HomeportSite | None = getattr(self, "site", None)
        if site is None:
            return
        peer = self.transport.getPeer() if self.transport is not None else None
        address = getattr(peer, "host", None)
        if isinstance(address, str):
            if not site.clients.admit(address):
                self.refused = True
                self._answer_and_close(
                    b"503 Service Unavailable",
                    b"Too many connections from this address: the limit is %d\n"
                    % site.limits.max_client_connections,
                )
                return
            self.client = address
        self._start_deadline("head", site.limits.header_timeout)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_deadline()
        site: HomeportSite | None = getattr(self, "site", None)
        if self.client is not None and site is not None:
            site.clients.release(self.client)
            self.client = None
        HTTPChannel.connectionLost(self, reason)

    def dataReceived(self, data: bytes) -> None:
        """Answer a plain cached read at once (``http.fastpath``); else twisted.web."""
        if self.refused:
            return
        site = self.site
        if site is not None and site.fast is not None and self._idle():
            simple = site.fast_request(data)
            answer = site.fast(*simple) if simple is not None else None
            if answer is not None:
                if self._deadline is not None:
                    self._stop_deadline()
                # The idle timeout runs from now (see timeoutConnection).
                self._active_at = site.seconds()
                self._send(answer[0], site.date(), answer[1])
                site.fast_answers += 1
                return
        if site is not None and self._deadline is None and not self._handlingRequest:
            # The first byte of a request's head: the head deadline runs from here.
            self._start_deadline("head", site.limits.header_timeout)
        HTTPChannel.dataReceived(self, data)

    def _send(self, head: bytes, date: bytes, rest: bytes) -> None:
        """A fast answer: on the socket now if it is plain TCP (:mod:`.direct`)."""
        sock = self.sock
        if sock is None:
            transport = self.transport
            assert transport is not None  # data just came in
            transport.writeSequence((head, date, rest))
        elif len(rest) <= self.SMALL:  # cheaper joined than as three buffers
            send_one(sock, self, head + date + rest)
        else:
            send_now(sock, self, (head, date, rest))

    def timeoutConnection(self) -> None:
        """The idle timeout fired.  A fast answer does not reset its timer (that costs
        as much as the rest of the answer); it notes the time, and the timer, when it
        fires, is set again for what is left since then."""
        active_at, self._active_at = self._active_at, None
        period = self.timeOut
        site = self.site
        if active_at is not None and period is not None and site is not None:
            left = active_at + period - site.seconds()
            if left > 0:
                cast(Any, self).setTimeout(left)
                self.timeOut = period
                return
        HTTPChannel.timeoutConnection(self)

    # What the channel writes, it writes with the transport's ``bufferSize`` at 0: if
    # the transport keeps a byte of it, it pauses us (``_waitingForTransport``) until
    # it has sent them all, so while we are idle it holds nothing and a fast answer may
    # go straight to the socket (:mod:`.direct`).  Only for the write: the transport
    # also reads ``bufferSize`` bytes at a time.

    def write(self, data: bytes) -> None:
        self._watched(HTTPChannel.write, data)

    def writeSequence(self, iovec: Any) -> None:
        self._watched(HTTPChannel.writeSequence, iovec)

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        self._watched(HTTPChannel.writeHeaders, version, code, reason, headers)

    def _watched(self, write: Callable[..., None], *args: Any) -> None:
        if self.sock is None:
            write(self, *args)
            return
        transport: Any = self.transport
        size, transport.bufferSize = transport.bufferSize, 0
        try:
            write(self, *args)
        finally:
            transport.bufferSize = size

    def _start_deadline(self, what: str, seconds: float) -> None:
        self._stop_deadline()
        if seconds > 0:
            self._deadline = cast(Any, self).callLater(seconds, self._expired, what, seconds)

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _expired(self, what: str, seconds: float) -> None:
        """The request's *what* (head or body) did not arrive in time: 408 and close."""
        self._deadline = None
        text = f"Request Timeout: the request's {what} took longer than {seconds:g} s\n"
        self._answer_and_close(b"408 Request Timeout", text.encode())

    def _answer_and_close(self, status: bytes, body: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(
            b"HTTP/1.1 " + status + b"\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        transport.loseConnection()

    def _idle(self) -> bool:
        """Between requests, with nothing buffered and the client reading its answers:
        the only state in which a request may be answered outside twisted.web."""
        return bool(
            not self.requests
            and not self._handlingRequest
            and not self._waitingForTransport
            and self.line_mode
            and not self._buffer
            and self.head_bytes == 0
            and bool(self.persistent)
        )

    def lineReceived(self, line: bytes) -> None:
        first = self.head_bytes == 0
        self.head_bytes += len(line) + 2
        if self.head_bytes > self.HEAD_LIMIT:
            self._too_long(request_line=first)
            return
        HTTPChannel.lineReceived(self, line)

    def allHeadersReceived(self) -> None:
        self.head_bytes = 0
        self._stop_deadline()
        HTTPChannel.allHeadersReceived(self)
        site: HomeportSite | None = getattr(self, "site", None)
        if site is not None and self.length != 0:  # a body follows (None: chunked)
            self._start_deadline("body", site.limits.body_deadline(self.length))

    def allContentReceived(self) -> None:
        # The request is in: answering it (a stream, a blocking query) has no deadline.
        self._stop_deadline()
        HTTPChannel.allContentReceived(self)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._too_long(request_line=self.head_bytes == 0)

    def _too_long(self, request_line: bool) -> None:
        status, text = (
            (b"414", b"URI Too Long")
            if request_line
            else (b"431", b"Request Header Fields Too Large")
        )
        body = text + b"\n"
        transport = self.transport
        assert transport is not None  # connected: a line just came in
        transport.write(
            b"HTTP/1.1 " + status + b" " + text + b"\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n"
            b"Connection: close\r\n\r\n" + body
        )
        transport.loseConnection()  # after what was written has gone


class HomeportSite(Site):
    # Twisted's stubs type it as its HTTP/2-negotiating wrapper; a plain HTTPChannel is
    # what that wrapper makes without the h2 package, which homeport does not ship.
    protocol = cast(Any, HomeportChannel)
    requestFactory = HomeportRequest
    displayTracebacks = False
    access = Logger(namespace="homeport.access")

    def __init__(
        self,
        resource: Resource,
        access_log: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
        metrics: Metrics | None = None,
        names: Names | None = None,
        limits: Limits | None = None,
        **kw: Any,
    ) -> None:
        Site.__init__(self, resource, **kw)
        self.access_log = access_log
        self.max_body = max_body
        self.metrics = metrics
        #: The ``Host``/``Origin`` checks (None: none, as on the redirect-to-HTTPS site).
        self.names = names
        self.limits = limits or Limits()
        self.clients = Clients(self.limits.max_client_connections)
        #: The read fast path's answerer (``ApiResource.fast_answer``), or None.
        self.fast: Answerer | None = None
        self.fast_answers = 0
        self._heads: dict[bytes, tuple[bytes, bytes, dict[bytes, bytes]] | None] = {}
        self.date = Date()
        #: The reactor's clock (the channels' idle timeouts run on it).
        self.seconds: Callable[[], float] = self.reactor.seconds
        if metrics is not None:
            metrics.counter(
                "homeport_http_fast_answers_total",
                "HTTP reads answered by the fast path (also counted on their route).",
                lambda: self.fast_answers,
            )

    #: How many request heads :meth:`fast_request` remembers, and the longest one.
    HEADS = 1024
    HEAD_BYTES = 2048

    def fast_request(self, data: bytes) -> tuple[bytes, bytes, dict[bytes, bytes]] | None:
        """What :func:`simple_get` makes of *data* when its ``Host`` is allowed (None
        otherwise), remembered by the bytes: a poller sends the same head every time,
        and a lookup costs a fiftieth of parsing it again.  Bounded: when full, the
        memory is emptied and refilled by what comes next."""
        try:
            return self._heads[data]
        except KeyError:
            pass
        simple = simple_get(data)
        if simple is not None and not self.may_fast(simple):
            simple = None
        if len(data) <= self.HEAD_BYTES:
            if len(self._heads) >= self.HEADS:
                self._heads.clear()
            self._heads[data] = simple
        return simple

    def may_fast(self, simple: tuple[bytes, bytes, dict[bytes, bytes]]) -> bool:
        """May this plain read take the fast path?  Only when its ``Host`` is allowed:
        else twisted.web answers it (and refuses it)."""
        return self.names is None or self.names.host_allowed(simple[2].get(b"host"))

    def serve_fast(self, answerer: Answerer | None) -> None:
        """Let the channels answer plain cached reads with *answerer* (none with access
        logs on: twisted.web writes those lines)."""
        self.fast = None if self.access_log else answerer

    def route_of(self, path: bytes) -> str | None:
        """The metrics route of a request the Consul API does not measure itself: the
        root child (``/log``, ``/ui``, ``/socket.io``, ``/metrics``) or the ``/v1/``
        child mounted before the API (``/v1/logs``, ``/v1/events``); None for the API's
        own routes; ``/other`` for anything else (so a scan cannot grow the labels)."""
        segments = path.split(b"/", 3)
        first = segments[1] if len(segments) > 1 else b""
        children: dict[bytes, Any] = getattr(self.resource, "children", {})
        if first == b"v1":
            second = segments[2] if len(segments) > 2 else b""
            child = getattr(children.get(b"v1"), "children", {}).get(second)
            if child is not None and not getattr(child, "measured", False):
                return "/v1/" + second.decode("ascii", "replace")
            return None  # the API's own routes, or a child that measures its requests
        if first in children:
            return "/" + first.decode("ascii", "replace")
        return "/other"

    def measure(self, request: HomeportRequest) -> None:
        """Count *request* once on its route (see :meth:`route_of`)."""
        if self.metrics is None or request.measured:
            return
        request.measured = True
        route = self.route_of(request.path)
        if route is not None:
            self.metrics.observe(route, request.code, time.perf_counter() - request.started)

    def log(self, request: Request) -> None:  # type: ignore[override]
        if isinstance(request, HomeportRequest):
            self.measure(request)
        if not self.access_log:
            return
        self.access.info(
            '{client} "{method} {uri} {proto}" {code} {length} "{agent}"',
            client=request.getClientAddress().host
            if hasattr(request.getClientAddress(), "host")
            else "-",
            method=request.method.decode("latin-1"),
            uri=request.uri.decode("latin-1"),
            proto=request.clientproto.decode("latin-1"),
            code=request.code,
            length=request.sentLength or "-",
            agent=(request.getHeader(b"user-agent") or "-"),
        )


class PlainNotFound(Resource):
    """404 as plain text (never twisted's HTML page)."""

    isLeaf = True

    def __init__(self) -> None:
        Resource.__init__(self)

    def render(self, request: Request) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Not Found\n"


class Root(Resource):
    """``/``: redirects to the dashboard; everything else is a registered child."""

    def __init__(self) -> None:
        Resource.__init__(self)

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return Redirect(b"/ui/")
        return PlainNotFound()

    def render(self, request: Request) -> bytes:
        return bytes(Redirect(b"/ui/").render(request))


class V1Dispatch(Resource):
    """``/v1/``: named children (``logs``, ``events``) first, everything else to the API.

    The catalog's ``ApiResource`` is a leaf that owns ``/v1/*`` and caches reads until the
    catalog changes; log searches and event streams must not be cached that way, so they
    are routed here before it.
    """

    def __init__(self, api: Resource) -> None:
        Resource.__init__(self)
        self.api = api

    def getChild(self, path: bytes, request: Request) -> Resource:
        # Hand the segment back: the API resource routes on the whole postpath.
        assert request.prepath is not None and request.postpath is not None
        request.postpath.insert(0, request.prepath.pop())
        return self.api

    def render(self, request: Request) -> Any:
        return self.api.render(request)


@dataclass(frozen=True)
class Face:
    """One path the site serves: a route of the ``/v1/`` API (its pattern, with ``:name``
    and ``*rest`` for parameters, and its methods) or a resource mounted by a part
    (``methods`` empty: the resource answers every method itself)."""

    path: str
    methods: tuple[bytes, ...] = ()
    write: bool = False


def faces(root: Resource) -> list[Face]:
    """Every path mounted on *root* (the site's resource), read from the tree as it is
    wired: each part's resources, each ``/v1/<name>`` child and every API route.  Read
    only; for tests and tools that must walk whatever is served."""
    found: list[Face] = []
    for name, child in sorted(root.children.items()):
        path = "/" + name.decode()
        if not isinstance(child, V1Dispatch):
            found.append(Face(path))
            continue
        found.extend(Face(f"{path}/{sub.decode()}") for sub in sorted(child.children))
        if isinstance(child.api, ApiResource):
            found.extend(
                Face("/v1/" + "/".join(route.pattern), route.methods, route.write)
                for route in all_routes(child.api)
            )
    return found
