"""The log sink's HTTP edge: ``POST /log``, ``GET /log?<record>`` and ``GET /v1/logs``.

Native twisted.web resources that only decode, call and encode.  The form body is parsed
here, not by twisted (the site is built with ``parsePOSTFormSubmission=False``), because
twisted's ``parse_qs`` would cost as much again and cannot say what was wrong with it.
An ingest request is answered only when its records are committed (see
:mod:`homeport.logs.store`).

With ``--acl`` ingest needs the ``log`` rule's ``write`` and search its ``read``
(``log = "read"``); a token without it gets Consul's 403.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..acl import PermissionDenied, TokenNotFound
from ..http.args import parse_args
from ..http.auth import Access, Token
from .query import BadQuery, LogQuery, parse_query
from .record import BadInput, Record, parse_form, record_from_fields, records_from_body

TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"

Sink = Callable[[Sequence[Record], Callable[[list[int] | BaseException], None]], None]
Searcher = Callable[[LogQuery], Deferred[bytes]]


def _text(request: Request, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", TEXT)
    return text.encode("utf-8") + b"\n"


class LogIngestResource(Resource):
    """``/log``: POST a form (stock HTTPHandler), JSON or NDJSON body; or GET with the
    record in the query string.  200 with the stored ids once committed."""

    isLeaf = True
    log = Logger()
    #: What ``--acl`` asks of the token (tests/test_acl_routes.py lists every face's).
    acl_rule = "log:write"

    def __init__(
        self, sink: Sink, now: Callable[[], float], token: Token | Access | None = None
    ) -> None:
        Resource.__init__(self)
        self.sink = sink
        self.now = now
        self.token = token or Token(None)

    def render(self, request: Request) -> bytes | int:
        if request.postpath not in ([], [b""]):
            return _text(request, 404, "Not Found")
        method = request.method
        if method not in (b"POST", b"GET"):
            request.setHeader(b"allow", b"GET, POST")
            return _text(request, 405, f"method {method.decode('latin-1')} not allowed")
        refused = self._refused(request)
        if refused is not None:
            return refused
        if getattr(request, "too_large", False):
            return _text(request, 413, "Request body too large")
        try:
            if method == b"POST":
                content = request.content
                body = b""
                if content is not None:
                    content.seek(0)
                    body = content.read()
                content_type = (request.getHeader(b"content-type") or b"").decode("latin-1")
                records = records_from_body(content_type, body, self.now())
            else:
                _, _, query = request.uri.partition(b"?")
                if not query:
                    raise BadInput("GET /log needs the record in the query string")
                form, problems = parse_form(query)
                records = [record_from_fields(form, self.now(), problems)]
        except BadInput as e:
            return _text(request, 400, f"Bad log record: {e.reason}")
        except Exception:  # noqa: BLE001, RUF100 - blind on purpose, see below
            # A parser bug must never take the daemon down or 500 silently.
            self.log.failure("Parsing a log record")
            return _text(request, 400, "Bad log record: it could not be read")
        try:
            self.sink(records, lambda result: self._stored(request, result))
        except RuntimeError:
            return _text(request, 503, "The log store is shutting down")
        return NOT_DONE_YET

    def _refused(self, request: Request) -> bytes | None:
        """The answer to a request that may not ingest (None: it may)."""
        if isinstance(self.token, Access) and self.token.acl:
            return _refused(request, self.token, "write")
        if self.token.allows(request):
            return None
        request.responseHeaders.setRawHeaders(
            b"www-authenticate", [b'Basic realm="homeport"', b'Bearer realm="homeport"']
        )
        return _text(request, 401, "Unauthorized: this homeport requires a token")

    def _stored(self, request: Request, result: list[int] | BaseException) -> None:
        if request.channel is None:  # the client went away meanwhile
            return
        if isinstance(result, BaseException):
            body = _text(request, 503, f"Could not store the record: {result}")
        else:
            request.setHeader(b"content-type", JSON)
            body = b'{"ids":' + json.dumps(result).encode() + b"}"
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()


def _refused(request: Request, access: Access, need: str) -> bytes | None:
    """Consul's 403 unless *request*'s token has *need* on ``log`` (``--acl``)."""
    try:
        access.check(request, "log", "", need, _query_token(request))
    except (PermissionDenied, TokenNotFound) as e:
        return _text(request, 403, str(e))
    return None


def _query_token(request: Request) -> str | None:
    given = parse_args(request.uri).get("token")
    return given[-1] if given else None


class LogSearchResource(Resource):
    """``GET /v1/logs``: search stored records (see :mod:`homeport.logs.query`)."""

    isLeaf = True
    log = Logger()
    acl_rule = "log:read"

    def __init__(
        self, search: Searcher, now: Callable[[], float], access: Access | None = None
    ) -> None:
        Resource.__init__(self)
        self.search = search
        self.now = now
        self.access = access

    def render(self, request: Request) -> bytes | int:
        if request.postpath not in ([], [b""]):
            return _text(request, 404, "Invalid URL path: not a recognized HTTP API endpoint")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD, OPTIONS")
            if request.method == b"OPTIONS":
                return b""
            return _text(request, 405, f"method {request.method.decode('latin-1')} not allowed")
        if self.access is not None and self.access.acl:
            refused = _refused(request, self.access, "read")
            if refused is not None:
                return refused
        args = {
            k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
            for k, vs in (request.args or {}).items()
        }
        try:
            query = parse_query(args, self.now())
        except BadQuery as e:
            return _text(request, 400, str(e))
        d = self.search(query)
        d.addCallbacks(lambda body: self._answer(request, body), lambda f: self._failed(request, f))
        return NOT_DONE_YET

    def _answer(self, request: Request, body: bytes) -> None:
        if request.channel is None:
            return
        request.setHeader(b"content-type", JSON)
        request.setHeader(b"content-length", str(len(body)).encode())
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    def _failed(self, request: Request, failure: Failure) -> None:
        self.log.failure("Searching stored logs", failure)
        if request.channel is None:
            return
        request.write(_text(request, 500, "The search failed: see the daemon's log"))
        request.finish()
