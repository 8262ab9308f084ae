"""The one HTTP site: request size limits, opt-in access logs, and the root resource."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.util import Redirect

DEFAULT_MAX_BODY = 1024 * 1024


class HomeportRequest(Request):
    """A request that refuses bodies over the site's limit with 413, without buffering them.

    A declared ``Content-Length`` over the limit is answered at once and the connection
    closed (as nginx does); a chunked body is cut off when it crosses the limit.
    """

    too_large = False
    _received = 0

    def _limit(self) -> int:
        site = getattr(self.channel, "site", None)
        return int(getattr(site, "max_body", DEFAULT_MAX_BODY))

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self._limit():
            self._refuse()
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._received += len(data)
        if self._received > self._limit():
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self) -> None:
        self.too_large = True
        limit = self._limit()
        body = f"Request body too large: the limit is {limit} bytes\n".encode()
        transport = self.channel.transport if self.channel else None
        if transport is not None:
            transport.write(
                b"HTTP/1.1 413 Request Entity Too Large\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Connection: close\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            transport.loseConnection()

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self.too_large:
            return
        super().requestReceived(command, path, version)


class HomeportSite(Site):
    requestFactory = HomeportRequest
    displayTracebacks = False
    access = Logger(namespace="homeport.access")

    def __init__(
        self,
        resource: Resource,
        access_log: bool = False,
        max_body: int = DEFAULT_MAX_BODY,
        **kw: Any,
    ) -> None:
        super().__init__(resource, **kw)
        self.access_log = access_log
        self.max_body = max_body

    def log(self, request: Request) -> None:  # type: ignore[override]
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

    def render(self, request: Request) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Not Found\n"


class Root(Resource):
    """``/``: redirects to the dashboard; everything else is a registered child."""

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return Redirect(b"/ui/")
        return PlainNotFound()

    def render(self, request: Request) -> bytes:
        return bytes(Redirect(b"/ui/").render(request))
