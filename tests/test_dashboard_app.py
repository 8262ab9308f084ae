"""The dashboard's Flask app on its own (Flask's test client), and its package data."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from homeport.web.ui import COOKIE, create_app, format_uptime, safe_next

ROOT = Path(__file__).resolve().parent.parent
STATIC = ["app.css", "common.js", "events.js", "favicon.svg", "kv.js", "logs.js", "services.js"]
TEMPLATES = [
    "base.html",
    "events.html",
    "kv.html",
    "login.html",
    "logs.html",
    "record.html",
    "services.html",
]


def facts() -> dict[str, Any]:
    return {
        "node": "n1",
        "datacenter": "dc9",
        "version": "9.9.9",
        "uptime_seconds": 3725.4,
        "counts": {"services": 2, "instances": 3, "passing": 2, "warning": 0, "critical": 1},
        "services": {"web": {"instances": 2, "tags": ["a", "b"]}, "consul": {"instances": 1}},
    }


def client(token: str | None = None) -> FlaskClient:
    return create_app(facts, token).test_client()


def test_every_page_renders_the_header_facts_and_a_no_script_view() -> None:
    """Each page shows node, datacenter, version, uptime and counts from the server."""
    c = client()
    for path in ("/", "/logs", "/logs/7", "/events", "/kv"):
        response = c.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store"
        html = response.get_data(as_text=True)
        for text in ("n1", "dc9", "9.9.9", "1h 2m"):
            assert text in html, (path, text)
        assert 'id="fact-services">2<' in html
    services = c.get("/").get_data(as_text=True)
    assert "<td>web</td><td>2</td><td>a, b</td>" in services


def test_no_page_refers_to_another_origin() -> None:
    """Scripts, styles and icons all come from the dashboard itself (works offline)."""
    html = "".join(client().get(p).get_data(as_text=True) for p in ("/", "/logs", "/kv"))
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert src.startswith("/"), src
        assert not src.startswith("//"), src


def test_info_json_gives_the_header_facts() -> None:
    """``info.json`` carries what the header refreshes, and nothing else."""
    data = client().get("/info.json").get_json()
    assert set(data) == {"node", "datacenter", "version", "uptime_seconds", "counts"}
    assert data["uptime_seconds"] == 3725


def test_static_files_come_from_the_package_with_etags() -> None:
    """Static files are served with their type and an ETag, and revalidate to a 304."""
    c = client()
    for name in STATIC:
        response = c.get(f"/static/{name}")
        assert response.status_code == 200, name
    css = c.get("/static/app.css")
    assert css.headers["Content-Type"] == "text/css; charset=utf-8"
    etag = css.headers["ETag"]
    assert c.get("/static/app.css", headers={"If-None-Match": etag}).status_code == 304
    assert c.get("/static/common.js").headers["Content-Type"].startswith("text/javascript")


@pytest.mark.parametrize("name", ["nope.js", ".hidden", "..%2Fui.py", "../ui.py", "%2e%2e"])
def test_static_refuses_unknown_and_outside_files(name: str) -> None:
    """Only files of the static folder itself are served."""
    assert client().get(f"/static/{name}").status_code == 404


def test_with_a_token_pages_ask_for_it_first() -> None:
    """Without the cookie every page and info.json send the browser to the login form,
    with the page to come back to."""
    c = client("t0ken")
    response = c.get("/logs?level=ERROR")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/logs?level%3DERROR"
    assert c.get("/info.json").status_code == 403
    assert "needs its token" in c.get("/login").get_data(as_text=True)


def test_a_wrong_token_is_refused_and_the_right_one_kept_in_a_strict_cookie() -> None:
    """The right token sets an HttpOnly, SameSite=Strict cookie on / and goes back."""
    c = client("t0ken")
    wrong = c.post("/login", data={"token": "nope", "next": "/kv"})
    assert wrong.status_code == 403
    assert "not the token" in wrong.get_data(as_text=True)
    right = c.post("/login", data={"token": "t0ken", "next": "/kv"})
    assert right.status_code == 303 and right.headers["Location"] == "/kv"
    cookie = right.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=t0ken;")
    for part in ("HttpOnly", "SameSite=Strict", "Path=/"):
        assert part in cookie
    page = c.get("/kv")
    assert page.status_code == 200
    assert "t0ken" not in page.get_data(as_text=True)  # the page never holds it (#21)
    assert c.post("/logout").status_code == 303
    assert c.get("/kv").status_code == 302


def test_without_a_token_the_page_carries_none() -> None:
    """Without --token there is no login and no token in the page."""
    c = client()
    assert "data-token" not in c.get("/").get_data(as_text=True)
    assert c.get("/login?next=/kv").headers["Location"] == "/kv"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/ui/logs?level=ERROR", "/ui/logs?level=ERROR"),
        ("//evil.example/x", None),
        ("https://evil.example/", None),
        ("javascript:alert(1)", None),
        ("logs", None),
        ("", None),
        (None, None),
    ],
)
def test_login_goes_back_only_to_a_path_of_this_site(given: str | None, expected: str) -> None:
    """The ``next`` of the login form is never another site."""
    assert safe_next(given) == expected


def test_uptime_reads_as_days_hours_minutes() -> None:
    """Short uptimes show seconds; long ones days, hours and minutes."""
    assert format_uptime(65) == "1m 5s"
    assert format_uptime(3725) == "1h 2m"
    assert format_uptime(93784) == "1d 2h 3m"
    assert format_uptime(-3) == "0m 0s"


@pytest.mark.slow
def test_the_wheel_carries_every_template_and_static_file(tmp_path: Path) -> None:
    """``package_data`` puts the templates and static files into the wheel, so an
    installed homeport (and the pex built from wheels) serves the dashboard."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("homeport-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in TEMPLATES:
        assert f"homeport/web/templates/{name}" in names
    for name in STATIC:
        assert f"homeport/web/static/{name}" in names
    on_disk = {p.name for p in (ROOT / "src/homeport/web/static").iterdir()}
    assert on_disk == set(STATIC), "a new static file: add it to STATIC here"
