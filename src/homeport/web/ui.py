"""The dashboard: a Flask app hosted by twisted.web's WSGIResource at ``/ui/``.

The pages are thin HTML shells: the header facts and a first, server-rendered view come
from *info*; the live parts are small vanilla scripts in ``static/`` that read the
public JSON API (``/v1/internal/ui/nodes``, ``/v1/kv``, ``/v1/logs``) and follow
``/v1/events`` over Server-Sent Events.  Nothing comes from another origin.

Templates and static files are read through the package (Jinja's ``PackageLoader`` and
:mod:`importlib.resources`), never from paths next to ``__file__``, so the dashboard
works the same from a checkout, an installed wheel and a pex.

With a token (``--token``) every page asks for it once: the login form checks it and
keeps it in an HttpOnly, ``SameSite=Strict`` cookie on ``/``.  No page and no script
ever holds the token: the scripts' writes (publishing a test event, the KV editor) are
same-origin requests the browser sends the cookie with, and the daemon takes the
token from that cookie only when the request's ``Origin`` is its own
(:func:`homeport.http.auth.given_token`).  Wrong tokens are throttled per client
address (:mod:`.throttle`).

With ``--acl`` (*check* given) the login form takes an ACL token's SecretID, kept in
the same cookie, and every page needs the ``ui`` rule's read (``ui = "read"``;
without a cookie the anonymous token's, so a deployment may open the dashboard to
all).  What the pages' scripts read and write is the API's business: its own rules.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, redirect, render_template, request, url_for
from jinja2 import PackageLoader
from werkzeug.wrappers.response import Response as BaseResponse

from ..http.auth import COOKIE, Token
from .throttle import Throttle

__all__ = ["COOKIE", "Check", "create_app", "format_uptime", "safe_next"]
#: ``--acl``: (SecretID or None, "METHOD /path") -> None if its token may read the
#: dashboard, else the 403's text (Consul's words).  Safe to call on a WSGI thread.
Check = Callable[[str | None, str], str | None]
COOKIE_MAX_AGE = 400 * 24 * 3600  # Chromium's upper bound for a cookie's lifetime
PAGES = ("services", "logs", "events", "kv")
WRONG = "That is not the token this homeport was started with."


def format_uptime(seconds: float) -> str:
    """``93784`` -> ``1d 2h 3m``; under an hour with seconds (``4m 5s``)."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def safe_next(target: str | None) -> str | None:
    """A same-site path to go back to after the login, or None (no open redirects)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


class Static:
    """Files of ``homeport.web/static``, read once through the package, with ETags."""

    def __init__(self, package: str = "homeport.web", folder: str = "static") -> None:
        self.root = resources.files(package).joinpath(folder)
        self.cache: dict[str, tuple[bytes, str, str]] = {}

    def get(self, name: str) -> tuple[bytes, str, str] | None:
        """(body, content type, etag) of *name*, or None when there is no such file."""
        if name in self.cache:
            return self.cache[name]
        if not name or "/" in name or "\\" in name or name.startswith("."):
            return None
        entry = self.root.joinpath(name)
        if not entry.is_file():
            return None
        body = entry.read_bytes()
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "image/svg+xml"):
            kind += "; charset=utf-8"
        etag = hashlib.sha256(body).hexdigest()[:20]
        self.cache[name] = (body, kind, etag)
        return self.cache[name]


def create_app(
    info: Callable[[], dict[str, Any]], token: str | None = None, check: Check | None = None
) -> Flask:
    """The dashboard app.

    *info* gives the header facts (``node``, ``datacenter``, ``version``,
    ``uptime_seconds``, ``counts``, ``services``); it is called on a WSGI thread, so
    it must be safe there.  *token*, when given, is asked for before any page shows;
    *check* (``--acl``) decides instead, from an ACL token's SecretID.
    """
    app = Flask("homeport.web", static_folder=None)
    app.jinja_loader = PackageLoader("homeport.web", "templates")
    views = Views(info, token, check)
    for name in PAGES:
        app.add_url_rule("/" if name == "services" else f"/{name}", name, views.pager(name))
    app.add_url_rule("/logs/<int:record_id>", "log_record", views.log_record)
    app.add_url_rule("/info.json", "info_json", views.info_json)
    app.add_url_rule("/login", "login", views.login, methods=["GET", "POST"])
    app.add_url_rule("/logout", "logout", views.logout, methods=["POST"])
    app.add_url_rule("/static/<name>", "static_file", views.static_file)
    return app


class Views:
    """The dashboard's views, over the facts function and the token."""

    def __init__(
        self, info: Callable[[], dict[str, Any]], token: str | None, check: Check | None = None
    ) -> None:
        self.info = info
        self.token = token
        self.secret = Token(token)
        self.check = check
        self.static = Static()
        self.throttle = Throttle()

    def authorised(self) -> bool:
        return self.denial() is None

    def given(self) -> str | None:
        """The SecretID the request carries: the cookie, else ``X-Consul-Token``."""
        return request.cookies.get(COOKIE) or request.headers.get("X-Consul-Token") or None

    def denial(self) -> str | None:
        """Why this request may not see the dashboard, or None when it may."""
        if self.check is not None:
            where = f"{request.method} {request.script_root}{request.path}"
            return self.check(self.given(), where)
        if self.secret.matches(request.cookies.get(COOKIE, "")):
            return None
        return "token required"

    def facts(self) -> dict[str, Any]:
        data = dict(self.info())
        seconds = float(data.get("uptime_seconds", 0))
        data["uptime_seconds"] = int(seconds)
        data.setdefault("uptime", format_uptime(seconds))
        data.setdefault("counts", {})
        data.setdefault("services", {})
        return data

    def page(self, name: str, **extra: Any) -> Response | BaseResponse:
        denial = self.denial()
        if denial is not None:
            here = request.script_root + request.full_path.rstrip("?")
            if self.check is not None and self.given() is not None:
                return self.login_form(here, denial, 403)
            return redirect(url_for("login", next=here))
        html = render_template(
            f"{name}.html",
            page=name,
            pages=PAGES,
            info=self.facts(),
            **extra,
        )
        response = Response(html, content_type="text/html; charset=utf-8")
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "same-origin"
        return response

    def pager(self, name: str) -> Callable[[], Response | BaseResponse]:
        return lambda: self.page(name)

    def log_record(self, record_id: int) -> Response | BaseResponse:
        return self.page("record", record_id=record_id)

    def info_json(self) -> Response | BaseResponse:
        denial = self.denial()
        if denial is not None:
            body = json.dumps({"error": denial}) + "\n"
            return Response(body, 403, mimetype="application/json")
        data = self.facts()
        keys = ("node", "datacenter", "version", "uptime_seconds", "counts")
        response = Response(json.dumps({k: data[k] for k in keys}), mimetype="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    def login(self) -> Response | BaseResponse:
        target = safe_next(request.values.get("next")) or url_for("services")
        if not self.secret.required and self.check is None:
            return redirect(target)
        error = None
        status, wait = 200, 0
        if request.method == "POST":
            address = request.remote_addr or "-"
            wait = self.throttle.wait(address)
            if wait:
                status = 429
                error = f"Too many wrong tokens from this address: try again in {wait} s."
            else:
                given = request.form.get("token", "").strip()
                error = self.refused(given)
                if error is None:
                    self.throttle.succeeded(address)
                    return self.logged_in(target, given)
                if error in (WRONG, "ACL not found"):  # a guess; a real token is no guess
                    self.throttle.failed(address)
                status = 403
        response = self.login_form(target, error, status)
        if wait:
            response.headers["Retry-After"] = str(wait)
        return response

    def refused(self, given: str) -> str | None:
        """Why *given* (the login form's) does not open the dashboard; None: it does."""
        if self.check is not None:
            return self.check(given, "POST /ui/login") if given else "ACL not found"
        return None if self.secret.matches(given) else WRONG

    def login_form(self, target: str, error: str | None, status: int) -> Response:
        html = render_template(
            "login.html", next=target, error=error, page="login", pages=(), acl=bool(self.check)
        )
        return Response(html, status, content_type="text/html; charset=utf-8")

    def logged_in(self, target: str, token: str) -> BaseResponse:
        response = redirect(target, code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=COOKIE_MAX_AGE,
            path="/",  # the API's writes (/v1/kv, /v1/events) get it too
            httponly=True,
            samesite="Strict",
            secure=request.scheme == "https",
        )
        return response

    def logout(self) -> BaseResponse:
        response = redirect(url_for("login"), code=303)
        response.delete_cookie(COOKIE, path="/", samesite="Strict")
        return response

    def static_file(self, name: str) -> BaseResponse:
        found = self.static.get(name)
        if found is None:
            abort(404)
        body, kind, etag = found
        response = Response(body, content_type=kind)
        response.set_etag(etag)
        response.headers["Cache-Control"] = "no-cache"  # revalidate: cheap 304s
        return response.make_conditional(request)
