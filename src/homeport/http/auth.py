"""The write token: one check for every face (API, log ingest, events, dashboard)."""

from __future__ import annotations

import base64
import binascii
import hmac
from http.cookies import SimpleCookie

from twisted.web.server import Request

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
    """The dashboard cookie's token, if *request* comes from a page of this origin."""
    origin = request.getHeader(b"origin")
    if origin is None or not same_origin(origin, request.getHeader(b"host")):
        return None
    value = request.getCookie(COOKIE.encode())
    if not value:
        return None
    # The dashboard (werkzeug) quotes a value with characters a cookie cannot hold.
    text = SimpleCookie().value_decode(value.decode("latin-1"))[0]
    return text.encode("latin-1", "replace")
