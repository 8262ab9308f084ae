"""Who a request is, asked the same way by every face (API, log ingest and search,
events, the dashboard, metrics): ``--token`` alone (:class:`Token`: one secret for every
write), or with ``--acl`` Consul's tokens (:class:`Access`: a secret resolves to its
:class:`~homeport.acl.Authorizer`, which each face asks for the rule it enforces)."""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Callable
from http.cookies import SimpleCookie

from twisted.logger import Logger
from twisted.web.server import Request

from ..acl import Authorizer, PermissionDenied, Resolver, TokenNotFound
from .hosts import same_origin

#: The dashboard's HttpOnly, ``SameSite=Strict`` cookie holding the token.
COOKIE = "homeport_token"


class Token:
    """``--token``: the secret a write must carry; with none set, everything passes.

    A request carries it as Consul's clients do: ``?token=`` (where the face allows it),
    ``X-Consul-Token``, ``Authorization: Bearer``, or Basic auth's password (what
    ``HTTPHandler(credentials=(user, TOKEN))`` sends); or, from the dashboard's own
    pages, in its cookie (see :func:`given_token`).
    """

    def __init__(self, secret: str | None) -> None:
        self.secret = secret.encode() if secret else None

    @property
    def required(self) -> bool:
        return self.secret is not None

    def matches(self, given: str | bytes | None) -> bool:
        """Is *given* the secret (compared in constant time)?  True when none is set."""
        if self.secret is None:
            return True
        if isinstance(given, str):
            given = given.encode("utf-8", "surrogateescape")
        return bool(given) and hmac.compare_digest(given or b"", self.secret)

    def allows(self, request: Request, query_token: str | None = None) -> bool:
        """Does *request* carry the secret?  *query_token* is its ``?token=``, if any."""
        if self.secret is None:
            return True
        if query_token:
            return self.matches(query_token)
        return self.matches(given_token(request))


def given_token(request: Request) -> bytes | None:
    """The token *request* carries: ``X-Consul-Token``, else Bearer or Basic, else the
    dashboard's cookie when the request says it comes from a page of this same origin.

    The cookie is ``SameSite=Strict`` (another site's page never sends it) and HttpOnly
    (no script reads it); ``Origin`` must name the ``Host`` the request went to, since
    another port of the same host is the same *site* and does get the cookie.  Browsers
    send ``Origin`` with every ``POST``/``PUT``/``DELETE``, so the dashboard's writes
    carry the token without a page ever holding it."""
    header = request.getHeader(b"x-consul-token")
    if header is not None:
        return header
    auth = request.getHeader(b"authorization")
    if auth is None:
        return cookie_token(request)
    scheme, _, value = auth.strip().partition(b" ")
    scheme = scheme.lower()
    if scheme == b"bearer":
        return value.strip()
    if scheme == b"basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(b":")[2]
    return None


def cookie_token(request: Request) -> bytes | None:
    """The dashboard cookie's token, if *request* comes from a page of this origin: its
    ``Origin`` names the host it was sent to, or (a browser's same-origin ``GET``, which
    carries no ``Origin``) the browser says ``Sec-Fetch-Site: same-origin``, a header no
    page can set; another port of this host is ``same-site`` and is refused."""
    origin = request.getHeader(b"origin")
    if origin is None:
        if request.getHeader(b"sec-fetch-site") != b"same-origin":
            return None
    elif not same_origin(origin, request.getHeader(b"host")):
        return None
    value = request.getCookie(COOKIE.encode())
    if not value:
        return None
    # The dashboard (werkzeug) quotes a value with characters a cookie cannot hold.
    text = SimpleCookie().value_decode(value.decode("latin-1"))[0]
    return text.encode("latin-1", "replace")


#: Seconds a long-lived stream keeps its token's Authorizer before asking again (so an
#: expired token stops reading within about that; a change to any token, policy or role
#: is seen at once).
RECHECK = 1.0
_log = Logger(namespace="homeport.acl")


def log_denial(method: str, path: str, e: PermissionDenied | TokenNotFound) -> None:
    """Every ACL denial is logged: who, where, and the rule it lacked (as the API's)."""
    if isinstance(e, TokenNotFound):
        _log.warn("ACL: {method} {path}: token not found", method=method, path=path)
        return
    rule = f"{e.resource}:{e.need}" + (f' on "{e.name}"' if e.name else "")
    _log.warn(
        "ACL denied {method} {path}: token {accessor} lacks {rule}",
        method=method,
        path=path,
        accessor=e.accessor,
        rule=rule,
    )


def _where(request: Request) -> tuple[str, str]:
    return request.method.decode("latin-1"), request.path.decode("utf-8", "replace")


class Access:
    """The one question every face asks: ``--token``'s :class:`Token` and, with
    ``--acl``, the :class:`~homeport.acl.Resolver` (made by the catalog, so the wiring
    binds it (:meth:`bind`) once every part is built, before anything listens).

    It answers :class:`Token`'s questions too (``allows``, ``matches``, ``required``),
    so a face written for ``--token`` alone keeps working with ACLs off, unchanged."""

    def __init__(self, token: Token, resolver: Resolver | None = None) -> None:
        self.token = token
        self.resolver = resolver

    def bind(self, resolver: Resolver | None) -> None:
        """``--acl``: decide with *resolver* from now on (None: ``--token`` alone)."""
        self.resolver = resolver

    @property
    def acl(self) -> bool:
        return self.resolver is not None

    @property
    def required(self) -> bool:
        return self.token.required

    def matches(self, given: str | bytes | None) -> bool:
        return self.token.matches(given)

    def allows(self, request: Request, query_token: str | None = None) -> bool:
        return self.token.allows(request, query_token)

    def resolve(self, secret: str | bytes | None) -> Authorizer:
        """The Authorizer of *secret* (none: the anonymous token); raises
        :class:`~homeport.acl.TokenNotFound`.  Only with ``--acl``."""
        assert self.resolver is not None, "Access.resolve without --acl"
        return self.resolver.resolve(secret)

    def authorizer(self, request: Request, query_token: str | None = None) -> Authorizer:
        """The Authorizer of the token *request* carries (*query_token*, its ``?token=``,
        first, as Consul); raises :class:`~homeport.acl.TokenNotFound`, logged."""
        try:
            return self.resolve(query_token or given_token(request))
        except TokenNotFound as e:
            log_denial(*_where(request), e)
            raise

    def check(
        self,
        request: Request,
        resource: str,
        name: str,
        need: str,
        query_token: str | None = None,
    ) -> Authorizer:
        """*request*'s Authorizer if its token has *need* on *resource* called *name*;
        else :class:`~homeport.acl.PermissionDenied` (or TokenNotFound), logged."""
        authz = self.authorizer(request, query_token)
        try:
            authz.check(resource, name, need)
        except PermissionDenied as e:
            log_denial(*_where(request), e)
            raise
        return authz

    def check_secret(
        self, secret: str | bytes | None, resource: str, name: str, need: str, where: str
    ) -> str | None:
        """None if *secret*'s token has *need* on *resource* called *name*, else the
        403's text (Consul's words); the denial logged against *where* ("GET /ui/")."""
        method, _, path = where.partition(" ")
        try:
            self.resolve(secret).check(resource, name, need)
        except (PermissionDenied, TokenNotFound) as e:
            log_denial(method, path, e)
            return str(e)
        return None

    def grant(self, secret: str | bytes | None, where: str) -> Grant:
        """What a long-lived stream (an event stream, a Socket.IO connection) holds for
        *secret*; raises :class:`~homeport.acl.TokenNotFound`, logged against *where*."""
        method, _, path = where.partition(" ")
        try:
            authz = self.resolve(secret)
        except TokenNotFound as e:
            log_denial(method, path, e)
            raise
        assert self.resolver is not None
        return Grant(self.resolver, secret, authz)

    @staticmethod
    def check_grant(grant: Grant, resource: str, name: str, need: str, where: str) -> None:
        """Raise PermissionDenied (logged against *where*) unless *grant*'s token has
        *need* on *resource* called *name*."""
        try:
            grant.current().check(resource, name, need)
        except (PermissionDenied, TokenNotFound) as e:
            method, _, path = where.partition(" ")
            log_denial(method, path, e)
            raise


class Grant:
    """A stream's token: its Authorizer, asked again when any ACL record changed or
    :data:`RECHECK` seconds went by, so a deleted, narrowed or expired token stops
    reading (:meth:`current` raises :class:`~homeport.acl.TokenNotFound` then)."""

    __slots__ = ("_authz", "_checked", "_generation", "clock", "resolver", "secret")

    def __init__(
        self,
        resolver: Resolver,
        secret: str | bytes | None,
        authz: Authorizer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self.secret = secret
        self.clock = clock
        self._authz = authz
        self._generation = resolver.cache.generation
        self._checked = clock()

    def current(self) -> Authorizer:
        now = self.clock()
        generation = self.resolver.cache.generation
        if generation != self._generation or now - self._checked >= RECHECK:
            self._authz = self.resolver.resolve(self.secret)
            self._generation, self._checked = generation, now
        return self._authz
