"""A small, fast router for the ``/v1/`` API on native twisted.web.

Reads are served from cached, pre-encoded bodies: each distinct query (route, path
parameters and query arguments) keeps its last answer and the index at which that
answer last *changed*.  A change anywhere only marks the cache stale; the next request
recomputes, and if the bytes came out the same the query keeps its old index.  That is
what makes blocking queries (``?index=N&wait=D``) wake only when *their* result changes,
and it keeps the hot path (a cache hit) down to a dict lookup and a write.

Parked blocking queries are Deferred-free: a request, a timer and an entry in a dict,
so thousands of them cost no threads.
"""

from __future__ import annotations

import json
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..acl import PermissionDenied, Resolver, TokenNotFound
from ..acl.authorizer import Authorizer
from ..units import DurationError, parse_duration
from .args import parse_args
from .auth import Token, given_token
from .cors import CORS
from .errors import ErrorTable, HTTPError
from .fastpath import status_line
from .guard import Guard
from .metrics import Metrics, Slot

DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
CACHE_SIZE = 4096


@dataclass
class Reply:
    """A computed answer: status, encoded body, content type and extra headers.

    *index* is the read's own ``X-Consul-Index`` when the handler knows it (Consul's
    KV reads answer the key's ModifyIndex); None: the index at which this query's
    answer last changed.
    """

    body: bytes
    status: int = 200
    content_type: bytes = b"application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    index: int | None = None


def json_reply(value: Any, status: int = 200, pretty: bool = False) -> Reply:
    if pretty:
        body = json.dumps(value, indent=4, ensure_ascii=False).encode() + b"\n"
    else:
        body = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return Reply(body, status)


TEXT = b"text/plain; charset=utf-8"


class Call:
    """What a handler sees of a request."""

    __slots__ = ("args", "authz", "body", "params", "request")

    def __init__(self, request: Request, params: dict[str, str], args: dict[str, list[str]]):
        self.request = request
        self.params = params
        self.args = args
        self.body = b""
        #: The token's Authorizer (``--acl``); None with ACLs off.
        self.authz: Authorizer | None = None

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.args.get(name)
        return values[-1] if values else default

    def has(self, name: str) -> bool:
        return name in self.args

    def flag(self, name: str) -> bool:
        """A boolean query flag: present without value, or a true value."""
        values = self.args.get(name)
        if values is None:
            return False
        return values[-1].lower() not in ("false", "0", "no")

    def int_arg(self, name: str, default: int | None = None) -> int | None:
        value = self.arg(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise HTTPError(400, f"Invalid value for ?{name}: {value!r}") from None

    @property
    def pretty(self) -> bool:
        return "pretty" in self.args


Handler = Callable[[Call], Reply]


@dataclass
class Route:
    methods: tuple[bytes, ...]
    pattern: tuple[str, ...]
    handler: Handler
    name: str
    write: bool
    rest: bool  # the last parameter takes the rest of the path
    volatile: bool = False  # the answer changes without a catalog change (uptime...)
    #: The handler reads the body itself from ``call.request.content`` (a file: large
    #: bodies are on disk), so it is not read into ``call.body`` first.
    stream: bool = False
    #: The ACL rule it enforces (``--acl``); None: management tokens only.
    guard: Guard | None = None

    @property
    def specificity(self) -> tuple[bool, int]:
        """Which of two routes matching one path wins: a whole path over a prefix (the
        last parameter taking the rest), then the longer literal start."""
        literal = next((i for i, part in enumerate(self.pattern) if part[0] in ":*"), None)
        return not self.rest, len(self.pattern) if literal is None else literal

    def match(self, segments: list[str]) -> dict[str, str] | None:
        pattern = self.pattern
        if not self.rest and len(segments) == len(pattern) + 1 and segments[-1] == "":
            segments = segments[:-1]  # a trailing slash
        if self.rest:
            if len(segments) < len(pattern) - 1:
                return None
        elif len(segments) != len(pattern):
            return None
        params: dict[str, str] = {}
        for i, part in enumerate(pattern):
            if part.startswith("*"):
                params[part[1:]] = "/".join(segments[i:])
                return params
            if i >= len(segments):
                return None
            if part.startswith(":"):
                if not segments[i]:
                    return None
                params[part[1:]] = segments[i]
            elif part != segments[i]:
                return None
        return params


@dataclass
class _Entry:
    reply: Reply
    index: int
    generation: int
    waiters: list[_Waiter] = field(default_factory=list)
    #: The response headers, encoded once (see ApiResource._send_cached).
    headers: dict[bytes, list[bytes]] = field(default_factory=dict)
    #: Whether the store had a leader when this was computed (``X-Consul-KnownLeader``).
    leader: bool = True
    #: The whole answer as twisted.web writes it, for the channel's fast path
    #: (``http.fastpath``): the status line up to the ``Date`` value, then the rest for
    #: a GET and for a HEAD (no body, no ``Content-Length``, as twisted.web answers).
    wire_head: bytes = b""
    wire_get: bytes = b""
    wire_head_only: bytes = b""
    #: Where the fast path counts its answers (the route's, for this status).
    slot: Slot | None = None

    def prepare(self) -> None:
        headers = Headers()
        headers.setRawHeaders(b"content-type", [self.reply.content_type])
        headers.setRawHeaders(b"x-consul-index", [str(self.index).encode()])
        headers.setRawHeaders(b"x-consul-knownleader", [b"true" if self.leader else b"false"])
        headers.setRawHeaders(b"x-consul-lastcontact", [b"0"])
        for name, value in self.reply.headers:
            headers.setRawHeaders(name, [value])
        self.headers = {name: list(values) for name, values in headers.getAllRawHeaders()}
        lines = b"".join(
            name + b": " + value + b"\r\n"
            for name, values in self.headers.items()
            for value in values
        )
        status = self.reply.status
        self.wire_head = status_line(status, RESPONSES.get(status, b"Unknown Status"))
        body = self.reply.body
        self.wire_get = b"\r\n" + lines + b"Content-Length: %d\r\n\r\n" % len(body) + body
        self.wire_head_only = b"\r\n" + lines + b"\r\n"


@dataclass
class _Waiter:
    request: Request
    min_index: int
    timer: IDelayedCall | None = None
    done: bool = False


class ApiResource(Resource):
    """``/v1/``: dispatches to routes; caches reads; parks blocking queries."""

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        reactor: Any,
        index: Callable[[], int],
        metrics: Metrics,
        token: Token | None = None,
        datacenter: str = "dc1",
        cors: CORS | None = None,
        errors: ErrorTable | None = None,
    ) -> None:
        Resource.__init__(self)
        self.cors = cors or CORS()
        self.reactor = reactor
        self.current_index = index
        self.metrics = metrics
        self.token = token or Token(None)
        self.errors = errors or ErrorTable()
        self.datacenter = datacenter
        self.routes: dict[str, list[Route]] = {}
        self.cache: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        self.generation = 0
        self._parked: dict[tuple[Any, ...], tuple[Route, Call]] = {}
        #: How writes run: None, right here; else a runner that commits them elsewhere
        #: (a shared store) and answers later.
        self.writer: Callable[[Callable[[], Reply]], Deferred[Reply]] | None = None
        #: What ``?consistent`` waits for first (a shared store's linearizable read).
        self.barrier: Callable[[], Deferred[None]] | None = None
        #: Whether the store has a leader (``X-Consul-KnownLeader``).
        self.known_leader: Callable[[], bool] = lambda: True
        #: request URI -> (route name, cache key), so a repeated read skips routing.
        self._prepared: dict[bytes, tuple[str, tuple[Any, ...]]] = {}
        #: ``--acl``: (AccessorID, URI) of a GET that carried its token in
        #: ``X-Consul-Token`` -> its cache key (which holds the AccessorID), for the fast
        #: path: the token is resolved on every request, so an answer cached for one
        #: token never reaches another, nor an expired or deleted one.
        self._prepared_tokens: dict[tuple[str, bytes], tuple[str, tuple[Any, ...]]] = {}
        #: ``--acl``: who a token is.  Set, every request is checked against its route's
        #: guard and answers are cached per token; the URI cache and the fast path (which
        #: answer without looking at a token) hold only answers to requests without one,
        #: the anonymous token's.
        self.acl: Resolver | None = None

    # -- routes -----------------------------------------------------------------

    def route(
        self,
        methods: str,
        path: str,
        handler: Handler,
        write: bool | None = None,
        volatile: bool = False,
        stream: bool = False,
    ) -> None:
        """Add ``handler`` for ``METHOD[,METHOD] /v1/a/:param/*rest``."""
        pattern = tuple(path.strip("/").split("/"))
        assert pattern[0] == "v1"
        pattern = pattern[1:]
        method_list = tuple(m.encode() for m in methods.split(","))
        is_write = write if write is not None else method_list[0] != b"GET"
        route = Route(
            methods=method_list,
            pattern=pattern,
            handler=handler,
            name="/v1/" + "/".join(pattern),
            write=is_write,
            rest=pattern[-1].startswith("*"),
            volatile=volatile,
            stream=stream,
        )
        self.routes.setdefault(pattern[0], []).append(route)

    def guard(self, guards: dict[tuple[str, str], Guard]) -> None:
        """Give routes their ACL guards, by (method, route name) as in ``route``."""
        for route in all_routes(self):
            for method in route.methods:
                found = guards.get((method.decode(), route.name))
                if found is not None:
                    route.guard = found

    # -- cache ------------------------------------------------------------------

    def invalidate(self) -> None:
        """Something changed: every cached answer is stale; parked queries re-check."""
        self.generation += 1
        for key in list(self._parked):
            entry = self.cache.get(key)
            if entry is None or not entry.waiters:
                self._parked.pop(key, None)
                continue
            route, call = self._parked[key]
            if self._revoked(entry, route, call):
                self._parked.pop(key, None)
                continue
            try:
                entry = self._fresh(key, route, call)
            except Exception:  # noqa: BLE001 - one broken watcher must not stop the rest
                self.log.failure("Re-computing a blocking query for {route}", route=route.name)
                continue
            ready = [w for w in entry.waiters if entry.index > w.min_index]
            if ready:
                entry.waiters = [w for w in entry.waiters if entry.index <= w.min_index]
                for waiter in ready:
                    self._finish_waiter(waiter, route, call, entry)
            if not entry.waiters:
                self._parked.pop(key, None)

    def _revoked(self, entry: _Entry, route: Route, call: Call) -> bool:
        """With ``--acl``, a parked query is asked again whether its token may still make
        it (its token, policies or roles may have changed); if not, each of its waiters
        is answered the 403 now.  True then."""
        if self.acl is None or call.authz is None:
            return False
        try:
            call.authz = self.acl.resolve(call.arg("token") or given_token(call.request))
            self._guard(route, call)
        except (PermissionDenied, TokenNotFound) as denied:
            waiters, entry.waiters = entry.waiters, []
            for waiter in waiters:
                if waiter.done:
                    continue
                waiter.done = True
                if waiter.timer is not None and waiter.timer.active():
                    waiter.timer.cancel()
                waiter.request.write(self._failed(waiter.request, denied))
                waiter.request.finish()
            return True
        return False

    def _fresh(self, key: tuple[Any, ...], route: Route, call: Call) -> _Entry:
        entry = self.cache.get(key)
        if entry is not None and entry.generation == self.generation and not route.volatile:
            self.cache.move_to_end(key)
            return entry
        reply = self._filter(route, call, route.handler(call))
        if entry is None:
            index = self.current_index() if reply.index is None else max(1, reply.index)
            entry = _Entry(reply, index, self.generation)
            self.cache[key] = entry
            if len(self.cache) > CACHE_SIZE:
                self._evict()
        else:
            if reply.index is not None:
                entry.index = max(1, reply.index)  # Consul sends 0 as 1
            elif reply.body != entry.reply.body or reply.status != entry.reply.status:
                entry.index = self.current_index()
            entry.reply = reply
            entry.generation = self.generation
            self.cache.move_to_end(key)
        entry.leader = self.known_leader()
        entry.prepare()
        return entry

    def _evict(self) -> None:
        for key in list(self.cache):
            if len(self.cache) <= CACHE_SIZE:
                return
            if not self.cache[key].waiters:
                del self.cache[key]

    # -- requests ---------------------------------------------------------------

    def render(self, request: Request) -> bytes | int:
        started = time.perf_counter()
        if self.cors.origins:
            self.cors.apply(request, b"GET, PUT, DELETE, OPTIONS")
        if request.method == b"GET" and (self.acl is None or given_token(request) is None):
            # The hot path (with --acl, only for requests without a token: see _read):
            # a URI seen before whose cached answer is still fresh.
            hit = self._hit(request.uri)
            if hit is not None:
                body = self._send_cached(request, hit[1])
                self.metrics.observe(hit[0], request.code, time.perf_counter() - started)
                return body
        route_name = "unmatched"
        result: bytes | int
        try:
            segments = [unquote(s.decode("utf-8", "replace")) for s in request.postpath or ()]
            route, params = self._match(request.method, segments)
            route_name = route.name
            call = Call(request, params, parse_args(request.uri))
            dc = call.arg("dc")
            if dc and dc != self.datacenter:
                raise HTTPError(500, "No path to datacenter")
            if self.acl is not None:
                call.authz = self.acl.resolve(call.arg("token") or given_token(request))
            if route.write:
                result = self._write(route, call)
            elif self.barrier is not None and "consistent" in call.args:
                result = self._consistent(self.barrier, route, call)
            else:
                result = self._read(route, call)
        except Exception as e:  # noqa: BLE001 - unknown errors become a logged 500
            result = self._failed(request, e)
        if result is not NOT_DONE_YET:
            self.metrics.observe(route_name, request.code, time.perf_counter() - started)
        else:
            request.notifyFinish().addBoth(
                lambda _: self.metrics.observe(
                    route_name, request.code, time.perf_counter() - started
                )
            )
        return result

    def _hit(self, uri: bytes) -> tuple[str, _Entry] | None:
        """The route name and fresh cached answer of a GET of *uri* seen before, if any."""
        return self._current(self._prepared.get(uri))

    def _token_hit(self, secret: bytes, uri: bytes) -> tuple[str, _Entry] | None:
        """As :meth:`_hit` for a GET carrying *secret* in ``X-Consul-Token`` (``--acl``):
        the token resolved now (its cached decision), the answer cached for its
        AccessorID at this generation (any ACL change is a catalog change)."""
        assert self.acl is not None
        try:
            accessor = self.acl.resolve(secret).accessor
        except TokenNotFound:
            return None
        return self._current(self._prepared_tokens.get((accessor, uri)))

    def _current(self, prepared: tuple[str, tuple[Any, ...]] | None) -> tuple[str, _Entry] | None:
        """*prepared*'s route name and its cached answer, if that is of this generation."""
        if prepared is None:
            return None
        entry = self.cache.get(prepared[1])
        if entry is None or entry.generation != self.generation:
            return None
        return prepared[0], entry

    def fast_answer(
        self, method: bytes, uri: bytes, headers: dict[bytes, bytes]
    ) -> tuple[bytes, bytes] | None:
        """The channel's fast path (``http.fastpath``): a plain GET or HEAD of *uri* whose
        answer is cached and fresh, as the bytes twisted.web would write around the
        ``Date`` value; None when anything could make the answer differ (CORS headers
        to add, a miss), so twisted.web answers it."""
        if self.cors.origins or b"authorization" in headers:
            return None
        started = time.perf_counter()
        secret = headers.get(b"x-consul-token")
        if secret is None:
            hit = self._hit(uri)
        elif self.acl is None:
            return None
        else:
            hit = self._token_hit(secret, uri)
        if hit is None:
            return None
        name, entry = hit
        slot = entry.slot
        if slot is None:
            slot = entry.slot = self.metrics.slot(name, entry.reply.status)
        slot.observe(time.perf_counter() - started)
        return entry.wire_head, entry.wire_head_only if method == b"HEAD" else entry.wire_get

    def _match(self, method: bytes, segments: list[str]) -> tuple[Route, dict[str, str]]:
        """The route for the path, as Go's ``ServeMux`` picks Consul's handler: the most
        specific pattern that matches (a whole path over a prefix, a longer prefix
        over a shorter one), then the method; so ``GET /v1/agent/service/register`` is
        405, not the service ``register``, and an ID may hold ``/``."""
        allowed: list[bytes] = []
        best: tuple[bool, int] | None = None
        found: list[tuple[Route, dict[str, str]]] = []
        for route in self.routes.get(segments[0] if segments else "", ()):
            params = route.match(segments)
            if params is None:
                continue
            rank = route.specificity
            if best is None or rank > best:
                best, found = rank, []
            if rank == best:
                found.append((route, params))
        for route, params in found:
            if method in route.methods or (method == b"HEAD" and b"GET" in route.methods):
                return route, params
            allowed.extend(route.methods)
        if allowed:
            # Consul's wrapper: OPTIONS, then the endpoint's methods, joined by ",".
            allow = ",".join(dict.fromkeys(["OPTIONS", *(m.decode() for m in allowed)]))
            if method == b"OPTIONS":
                raise HTTPError(200, "", {"Allow": allow})
            raise HTTPError(405, f"method {method.decode('latin-1')} not allowed", {"Allow": allow})
        # Consul's Index handler: fmt.Fprintln, so the text ends in a newline.
        raise HTTPError(404, "Invalid URL path: not a recognized HTTP API endpoint\n")

    def _failed(self, request: Request, e: Exception) -> bytes:
        if isinstance(e, PermissionDenied | TokenNotFound):
            self._denied(request, e)
            return self._text(request, 403, str(e))
        answer = self.errors.answer(e)
        if answer is None:
            self.log.failure("Unexpected error serving {path}", Failure(e), path=request.path)
            answer = HTTPError(500, str(e) or type(e).__name__)
        for name, value in answer.headers.items():
            request.setHeader(name, value)
        return self._text(request, answer.status, answer.text)

    def _later(self, request: Request, answer: Deferred[Any]) -> int:
        """Finish *request* when *answer* (its body) comes, unless the client went first
        or the answer is itself to come later (a parked blocking query)."""
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def send(body: bytes | int) -> None:
            if not gone and isinstance(body, bytes):
                request.write(body)
                request.finish()

        answer.addCallback(send).addErrback(
            lambda f: self.log.failure("Answering {path}", f, path=request.path)
        )
        return NOT_DONE_YET

    def _text(self, request: Request, status: int, text: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", TEXT)
        return text.encode("utf-8") if text else b""

    def _denied(self, request: Request, e: PermissionDenied | TokenNotFound) -> None:
        """Every ACL denial is logged: who, where, and the rule it lacked."""
        method = request.method.decode("latin-1")
        path = request.path.decode("utf-8", "replace")
        if isinstance(e, TokenNotFound):
            self.log.warn("ACL: {method} {path}: token not found", method=method, path=path)
            return
        rule = f"{e.resource}:{e.need}" + (f' on "{e.name}"' if e.name else "")
        self.log.warn(
            "ACL denied {method} {path}: token {accessor} lacks {rule}",
            method=method,
            path=path,
            accessor=e.accessor,
            rule=rule,
        )

    def check_token(self, call: Call) -> None:
        if self.acl is not None:
            return  # the route's guard decides (the secret of --token is management)
        if not self.token.allows(call.request, call.arg("token")):
            raise HTTPError(403, "Permission denied: a valid token is required for writes")

    def permits(self, request: Request, name: str) -> bool:
        """Would *request*'s token pass the guard of the GET route *name*?  (For a
        resource that answers some of the API's paths itself, as a stream.)  True with
        ``--acl`` off; a False is then answered by the API (its 403, logged)."""
        if self.acl is None:
            return True
        route = next((r for r in all_routes(self) if r.name == name), None)
        call = Call(request, {}, parse_args(request.uri))
        try:
            call.authz = self.acl.resolve(call.arg("token") or given_token(request))
            self._guard(route, call)
        except (PermissionDenied, TokenNotFound):
            return False
        return True

    def _guard(self, route: Route | None, call: Call) -> None:
        """Raise PermissionDenied unless the call's token passes the route's guard."""
        authz = call.authz
        if authz is None:
            return
        if route is None or route.guard is None:
            authz.check("acl", "", "write")
        elif route.guard.check is not None:
            route.guard.check(authz, call)

    def _filter(self, route: Route, call: Call, reply: Reply) -> Reply:
        """The reply without what the call's token may not read (``X-Consul-Results-
        Filtered-By-ACLs: true`` when something was left out)."""
        guard = route.guard
        if call.authz is None or guard is None or guard.filter is None or reply.status != 200:
            return reply
        if not reply.content_type.startswith(b"application/json"):
            return reply
        kept, dropped = guard.filter(call.authz, json.loads(reply.body))
        if not dropped:
            return reply
        if guard.empty_404 and not kept:
            return Reply(b"", 404, reply.content_type, reply.headers, reply.index)
        answer = json_reply(kept, pretty=call.pretty)
        headers = (*reply.headers, (b"x-consul-results-filtered-by-acls", b"true"))
        return Reply(answer.body, reply.status, reply.content_type, headers, reply.index)

    def _write(self, route: Route, call: Call) -> bytes | int:
        self.check_token(call)
        request = call.request
        if getattr(request, "too_large", False):
            raise HTTPError(413, "Request body too large")
        if request.content is not None:
            request.content.seek(0)
            if not route.stream:
                call.body = request.content.read()
        self._guard(route, call)
        if self.writer is None:
            return self._send(request, route.handler(call), None)
        done = self.writer(lambda: route.handler(call))
        return self._later(
            request,
            done.addCallbacks(
                lambda reply: self._send(request, reply, None),
                lambda f: self._failed(request, f.value),
            ),
        )

    def _consistent(self, barrier: Callable[[], Deferred[None]], route: Route, call: Call) -> int:
        """A consistent read: answered once this agent has seen every committed write."""
        request = call.request

        def read(_: None) -> bytes | int:
            return self._read(route, call)

        def failed(failure: Failure) -> bytes:
            return self._failed(request, failure.value)  # type: ignore[arg-type]

        return self._later(request, barrier().addCallback(read).addErrback(failed))

    def _read(self, route: Route, call: Call) -> bytes | int:
        self._guard(route, call)
        args = call.args
        min_index = None
        wait = DEFAULT_WAIT
        if "index" in args:
            try:
                min_index = int(args["index"][-1])
                if min_index < 0:
                    raise ValueError
            except ValueError:
                raise HTTPError(400, "Invalid index") from None
        if "wait" in args:
            try:
                wait = parse_duration(args["wait"][-1])
                if wait < 0:
                    raise DurationError
            except DurationError:
                raise HTTPError(400, "Invalid wait time") from None
            wait = min(wait, MAX_WAIT)
        key = (
            route.name,
            tuple(call.params.values()),
            tuple(
                (k, tuple(v))
                for k, v in sorted(args.items())
                if k not in ("index", "wait", "token", "stale", "consistent", "cached")
            ),
            None if call.authz is None else call.authz.accessor,
        )
        entry = self._fresh(key, route, call)
        if min_index is None:
            self._remember(route, call, key)
        if min_index is None or min_index == 0 or entry.index > min_index or wait <= 0:
            return self._send(call.request, entry.reply, entry.index)
        if min_index > entry.index and min_index > self.current_index():
            # The client's index is from a different history (say, before a restart
            # of a wiped data dir): Consul resets it and answers at once.
            return self._send(call.request, entry.reply, entry.index)
        waiter = _Waiter(call.request, min_index)
        wait += random.uniform(0, wait / 16)
        waiter.timer = self.reactor.callLater(wait, self._timeout, key, waiter, route, call)
        entry.waiters.append(waiter)
        self._parked[key] = (route, call)
        call.request.notifyFinish().addErrback(lambda _: self._gone(key, waiter))
        return NOT_DONE_YET

    def _remember(self, route: Route, call: Call, key: tuple[Any, ...]) -> None:
        """A plain read's URI, for the hot path and the fast path to answer it again:
        by URI alone without a token, by (AccessorID, URI) with one in a header."""
        if (
            call.request.method == b"GET"
            and not route.volatile
            and self._anonymous(call)
            and not (self.barrier is not None and "consistent" in call.args)
        ):
            if len(self._prepared) >= CACHE_SIZE:
                self._prepared.clear()
            self._prepared[call.request.uri] = (route.name, key)
        elif self._by_header(route, call):
            assert call.authz is not None
            if len(self._prepared_tokens) >= CACHE_SIZE:
                self._prepared_tokens.clear()
            self._prepared_tokens[call.authz.accessor, call.request.uri] = (route.name, key)

    def _by_header(self, route: Route, call: Call) -> bool:
        """May the fast path answer *call*'s URI again for its token?  With ``--acl``, a
        plain cacheable GET whose token came in ``X-Consul-Token`` (not ``?token=``)."""
        return (
            call.authz is not None
            and call.request.method == b"GET"
            and not route.volatile
            and "token" not in call.args
            and not (self.barrier is not None and "consistent" in call.args)
            and call.request.getHeader(b"x-consul-token") is not None
        )

    def _anonymous(self, call: Call) -> bool:
        """May *call*'s URI be answered from the cache without looking at a token?  Always
        with ``--acl`` off; with it, only a call that carries none: its answer is the
        anonymous token's, and so is every request's that carries none (one that carries
        a token never takes the URI cache nor the fast path)."""
        if self.acl is None:
            return True
        return "token" not in call.args and given_token(call.request) is None

    def _timeout(self, key: tuple[Any, ...], waiter: _Waiter, route: Route, call: Call) -> None:
        waiter.timer = None
        entry = self._fresh(key, route, call)
        if waiter in entry.waiters:
            entry.waiters.remove(waiter)
        self._finish_waiter(waiter, route, call, entry)

    def _gone(self, key: tuple[Any, ...], waiter: _Waiter) -> None:
        waiter.done = True
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        entry = self.cache.get(key)
        if entry is not None and waiter in entry.waiters:
            entry.waiters.remove(waiter)

    def _finish_waiter(self, waiter: _Waiter, route: Route, call: Call, entry: _Entry) -> None:
        if waiter.done:
            return
        waiter.done = True
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        body = self._send(waiter.request, entry.reply, entry.index)
        waiter.request.write(body)
        waiter.request.finish()

    def _send_cached(self, request: Request, entry: _Entry) -> bytes:
        """A cached read: the headers were encoded when the entry was computed.

        Twisted's ``setRawHeaders`` validates and re-encodes every header on every call
        (~2 us each); a cache hit copies the prepared ones instead.
        """
        if entry.reply.status != 200:
            request.setResponseCode(entry.reply.status)
        raw = getattr(request.responseHeaders, "_rawHeaders", None)
        if raw is None:  # pragma: no cover - a Twisted without the private dict
            return self._send(request, entry.reply, entry.index)
        for name, values in entry.headers.items():
            raw[name] = list(values)
        return b"" if request.method == b"HEAD" else entry.reply.body

    def _send(self, request: Request, reply: Reply, index: int | None) -> bytes:
        if reply.status != 200:
            request.setResponseCode(reply.status)
        headers = request.responseHeaders
        headers.setRawHeaders(b"content-type", [reply.content_type])
        if index is not None:
            headers.setRawHeaders(b"x-consul-index", [str(index).encode()])
            leader = b"true" if self.known_leader() else b"false"
            headers.setRawHeaders(b"x-consul-knownleader", [leader])
            headers.setRawHeaders(b"x-consul-lastcontact", [b"0"])
        for name, value in reply.headers:
            headers.setRawHeaders(name, [value])
        if request.method == b"HEAD":
            return b""
        return reply.body

    def close(self) -> None:
        """Answer every parked blocking query now (at shutdown)."""
        for key, (route, call) in list(self._parked.items()):
            entry = self.cache.get(key)
            if entry is None:
                continue
            waiters, entry.waiters = entry.waiters, []
            for waiter in waiters:
                self._finish_waiter(waiter, route, call, entry)
        self._parked.clear()


def all_routes(api: ApiResource) -> Iterable[Route]:
    for routes in api.routes.values():
        yield from routes
