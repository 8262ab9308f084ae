"""Issue #21, points 2, 3 and 6, against the real daemon over real sockets: the token in
no page, Host and Origin checks, the login throttle, request deadlines and the cap on
connections per client address."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.parse
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import socketio  # type: ignore[import-untyped]  # python-socketio ships no types
from playwright.sync_api import Playwright, expect, sync_playwright

from homeport.http.limits import Limits

from .browser import CHROMIUM, CHROMIUM_FLAGS
from .daemon import Daemon, DaemonFactory, wait_for
from .test_options import parse as parse_options

TOKEN = "s3cret-w3b-token"


def connect(daemon: Daemon, source: str = "127.0.0.1", timeout: float = 20) -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", daemon.http_port), timeout=timeout, source_address=(source, 0)
    )


def answer(sock: socket.socket) -> bytes:
    """Everything the daemon sends until it closes (or a timeout)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def raw(
    daemon: Daemon,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    source: str = "127.0.0.1",
) -> tuple[int, dict[str, str], bytes]:
    """One request on its own connection, exactly these headers (plus Content-Length and
    Connection: close): status, headers (lower-case names), body."""
    head = f"{method} {path} HTTP/1.1\r\n"
    for name, value in {
        "Host": f"127.0.0.1:{daemon.http_port}",
        **(headers or {}),
        "Content-Length": str(len(body)),
        "Connection": "close",
    }.items():
        head += f"{name}: {value}\r\n"
    with connect(daemon, source) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        return parse(answer(sock))


def keep_alive_get(daemon: Daemon, path: str, host: str) -> int:
    """A plain keep-alive GET (what the fast path answers); its status."""
    with connect(daemon) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        return parse(data)[0]


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}, rest


def fast_answers(daemon: Daemon) -> int:
    text = raw(daemon, "GET", "/metrics")[2]
    found = re.search(rb"^homeport_http_fast_answers_total (\S+)$", text, re.MULTILINE)
    assert found is not None
    return int(float(found.group(1)))


# -- point 3: Host ------------------------------------------------------------------------


def test_a_rebinding_name_is_refused_on_every_path_the_fast_one_included(
    daemon_factory: DaemonFactory,
) -> None:
    """A dotted name that is not the daemon's gets 403 (a cached read too: the fast path
    does not answer it); IP literals, localhost, single-label names, the node's names and
    --allow-host ones are answered."""
    daemon = daemon_factory(["--allow-host", "api.example", "--allow-host", ".lan.example"])
    daemon.start()
    port = daemon.http_port
    own = f"127.0.0.1:{port}"
    for _ in range(2):  # the second is a cached answer the fast path gives
        assert keep_alive_get(daemon, "/v1/catalog/services", own) == 200
    before = fast_answers(daemon)
    assert before >= 1
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io", "api.example.org"):
        for _ in range(2):
            assert keep_alive_get(daemon, "/v1/catalog/services", host) == 403, host
        status, _, body = raw(daemon, "GET", "/v1/catalog/services", {"Host": host})
        assert status == 403, host
        assert b"--allow-host" in body and body.count(b"\n") == 1, body
    assert fast_answers(daemon) == before  # none of those took the fast path
    assert keep_alive_get(daemon, "/v1/catalog/services", own) == 200
    assert fast_answers(daemon) == before + 1  # it still answers allowed ones
    status, _, body = raw(daemon, "PUT", "/v1/kv/rebound", {"Host": "evil.example"}, b"x")
    assert status == 403
    assert raw(daemon, "GET", "/v1/kv/rebound")[0] == 404
    for host in (
        f"127.0.0.1:{port}",
        f"[::1]:{port}",
        f"localhost:{port}",
        "app.localhost",
        "testnode",
        "testnode.node.consul",
        "api.example",
        f"API.example:{port}",
        "box.lan.example",
        "myhost",
    ):
        assert raw(daemon, "GET", "/v1/catalog/services", {"Host": host})[0] == 200, host


# -- point 3: Origin ----------------------------------------------------------------------


def test_writes_from_another_origin_are_refused_and_requests_without_one_are_not(
    daemon_factory: DaemonFactory,
) -> None:
    """POST /log, PUT /v1/kv and POST /v1/events with a foreign Origin (another site,
    another port of this host, null) are 403 with one line, token or not; the daemon's
    own origin, an --allow-origin one and no Origin at all write; reads are not
    concerned."""
    daemon = daemon_factory(["--allow-origin", "https://ci.example"]).start()
    own = f"http://127.0.0.1:{daemon.http_port}"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    writes = [
        ("POST", "/log", form, b"name=x&msg=hello&levelno=20"),
        ("PUT", "/v1/kv/cross", {}, b"value"),
        ("POST", "/v1/events/cross", {}, b'{"a": 1}'),
    ]
    for origin in ("http://evil.example", "http://127.0.0.1:1", "null", "https://ci.example:8"):
        for method, path, headers, body in writes:
            status, _, text = raw(daemon, method, path, {**headers, "Origin": origin}, body)
            assert status == 403, (origin, path)
            assert text.startswith(b"Origin ") and text.count(b"\n") == 1, text
    assert raw(daemon, "GET", "/v1/kv/cross")[0] == 404  # nothing was written
    assert raw(daemon, "GET", "/v1/kv/cross", {"Origin": "http://evil.example"})[0] == 404
    for allowed in (own, "https://ci.example", None):
        for method, path, headers, body in writes:
            sent = {**headers, "Origin": allowed} if allowed else headers
            status, _, text = raw(daemon, method, path, sent, body)
            assert status in (200, 201, 204), (allowed, path, status, text)
    assert raw(daemon, "GET", "/v1/kv/cross?raw")[2] == b"value"


# -- point 3: the login throttle ----------------------------------------------------------


def login(daemon: Daemon, token: str, source: str = "127.0.0.1") -> tuple[int, dict[str, str]]:
    form = urllib.parse.urlencode({"token": token, "next": "/ui/kv"}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, fields, _ = raw(daemon, "POST", "/ui/login", headers, form, source)
    return status, fields


def test_login_guesses_from_one_address_are_throttled_with_429(
    daemon_factory: DaemonFactory,
) -> None:
    """Five wrong tokens are 403; then the address gets 429 with Retry-After, the right
    token included; another address still logs in."""
    daemon = daemon_factory(["--token", TOKEN]).start()
    for _ in range(5):
        assert login(daemon, "guess")[0] == 403
    for token in ("guess", TOKEN):
        status, fields = login(daemon, token)
        assert status == 429
        assert int(fields["retry-after"]) >= 1
    status, fields = login(daemon, TOKEN, source="127.0.0.2")
    assert status == 303
    assert fields["set-cookie"].startswith(f"homeport_token={TOKEN};")


# -- point 2: the token in no page --------------------------------------------------------


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: ./test installs it"
    with sync_playwright() as p:
        context = launch(p, tmp_path)
        try:
            yield context
        finally:
            context.close()


def launch(p: Playwright, tmp_path: Path) -> Any:
    return p.chromium.launch_persistent_context(
        str(tmp_path / "chromium"), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
    )


def test_no_page_or_script_holds_the_token_yet_the_dashboard_writes_with_its_cookie(
    daemon_factory: DaemonFactory, chromium: Any
) -> None:
    """After the login, every page, script and JSON the dashboard serves is free of the
    token, no script can read the cookie, and the KV editor and the publish form still
    write (with the cookie alone). The cookie from another origin, or with no Origin,
    does not stand for the token."""
    daemon = daemon_factory(["--token", TOKEN]).start()
    chromium.set_default_timeout(20_000)
    expect.set_options(timeout=20_000)
    page = chromium.new_page()
    page.goto(daemon.url + "/ui/kv")
    page.fill("#token", TOKEN)
    page.click("#login button")
    page.wait_for_url("**/ui/kv")
    assert page.evaluate("document.cookie") == ""  # HttpOnly
    page.click("#kv-new")
    page.fill("#kv-form-key", "from/ui")
    page.fill("#kv-form-value", "cookie only")
    page.click("#kv-save")
    expect(page.locator("#kv-text")).to_have_text("cookie only")
    assert daemon.request("GET", "/v1/kv/from/ui?raw")[2] == b"cookie only"
    events = chromium.new_page()
    events.goto(daemon.url + "/ui/events?topic=notes")
    expect(events.locator("#event-status")).to_have_text("live: notes")
    events.locator("details.publish summary").click()
    events.fill("#p-topic", "notes")
    events.fill("#p-data", '{"from": "the dashboard"}')
    events.click("#publish button")
    expect(events.locator("#publish-status")).to_contain_text("published as id")
    # Everything the dashboard serves, asked for with the login's cookie.
    cookie = f"homeport_token={TOKEN}"
    (stored,) = [c for c in chromium.cookies() if c["name"] == "homeport_token"]
    assert stored["httpOnly"] and stored["value"] == TOKEN
    statics = [f.name for f in resources.files("homeport.web").joinpath("static").iterdir()]
    paths = ["/ui/", "/ui/logs", "/ui/events", "/ui/kv", "/ui/logs/1", "/ui/info.json"]
    paths += ["/ui/login"] + [f"/ui/static/{name}" for name in statics]
    assert any(name.endswith(".js") for name in statics)
    for path in paths:
        status, _, body = raw(daemon, "GET", path, {"Cookie": cookie})
        assert status == 200, path
        assert TOKEN.encode() not in body, path
    for headers in ({"Cookie": cookie}, {"Cookie": cookie, "Origin": "http://127.0.0.1:1"}):
        status, _, _ = raw(daemon, "PUT", "/v1/kv/forged", headers, b"x")
        assert status in (401, 403), headers
    assert raw(daemon, "GET", "/v1/kv/forged")[0] == 404


# -- point 6: deadlines and the connection cap --------------------------------------------


def drip(sock: socket.socket, byte: bytes, seconds: float = 30) -> bytes:
    """Send *byte* every 0.2 s until the daemon closes the connection (then its answer),
    or *seconds* pass (then b"")."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sock.sendall(byte)
        except (BrokenPipeError, ConnectionResetError):
            break
        time.sleep(0.2)
        sock.setblocking(False)
        try:
            if sock.recv(1, socket.MSG_PEEK):
                break
        except BlockingIOError:
            pass
        finally:
            sock.setblocking(True)
    else:
        return b""
    return answer(sock)


def test_a_dripping_head_or_body_is_cut_at_its_deadline(daemon_factory: DaemonFactory) -> None:
    """One byte at a time keeps Twisted's idle timeout fresh, but the head and the body
    each have a total deadline: 408 and the connection is closed; the half-sent write
    is not applied."""
    daemon = daemon_factory(["--header-timeout", "2s", "--body-timeout", "2s"]).start()
    with connect(daemon) as sock:
        sock.sendall(b"GET /v1/agent/self HTTP/1.1\r\nX-Slow: ")
        got = drip(sock, b"a")
    assert got.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), got
    assert b"head" in got
    with connect(daemon) as sock:
        sock.sendall(
            f"PUT /v1/kv/slow HTTP/1.1\r\nHost: 127.0.0.1:{daemon.http_port}\r\n"
            "Content-Length: 100000\r\n\r\n".encode()
        )
        got = drip(sock, b"b")
    assert got.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), got
    assert b"body" in got
    assert raw(daemon, "GET", "/v1/kv/slow")[0] == 404
    # A connection that sends nothing at all is closed too.
    with connect(daemon) as sock:
        assert answer(sock).startswith(b"HTTP/1.1 408 ")


def test_streams_and_blocking_queries_outlive_the_deadlines(daemon_factory: DaemonFactory) -> None:
    """The deadlines cover receiving a request: an SSE stream, a Socket.IO WebSocket and
    a blocking query opened under them keep going long after them."""
    daemon = daemon_factory(["--header-timeout", "1s", "--body-timeout", "1s"]).start()
    sse = connect(daemon)
    sse.sendall(b"GET /v1/events?topic=late HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    sse.settimeout(20)
    assert b"200 OK" in sse.recv(65536)
    index = raw(daemon, "GET", "/v1/kv/wait?index=0")[1].get("x-consul-index", "1")
    blocking = connect(daemon)
    blocking.sendall(
        f"GET /v1/kv/wait?index={index}&wait=6s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    received: list[Any] = []
    client = socketio.Client(reconnection=False)
    client.on("late", received.append)
    client.connect(daemon.url, transports=["websocket"], wait_timeout=10)
    try:
        assert client.call("subscribe", ["late"], timeout=10) == {"topics": ["late"]}
        time.sleep(3)  # well past both deadlines
        status, _, _ = raw(daemon, "POST", "/v1/events/late", body=b'"still here"')
        assert status == 200
        wait_for(lambda: received, 15, "the Socket.IO event")
        assert received[0]["data"] == "still here"
        data = b""
        while b"still here" not in data:
            chunk = sse.recv(65536)
            assert chunk, data
            data += chunk
        got = answer(blocking)
        assert got.startswith(b"HTTP/1.1 404 "), got  # the wait ran out, answered
    finally:
        client.disconnect()
        sse.close()
        blocking.close()


def test_connections_per_client_address_are_capped(daemon_factory: DaemonFactory) -> None:
    """Over --max-client-connections one more connection from the address gets 503 and
    is closed; another address is not concerned; a closed one frees its place."""
    daemon = daemon_factory(["--max-client-connections", "3"]).start()
    held = [connect(daemon) for _ in range(3)]
    try:
        for sock in held:  # each is in: it is answered
            sock.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        with connect(daemon) as extra:
            got = answer(extra)
        assert got.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), got
        assert b"Too many connections" in got
        assert raw(daemon, "GET", "/v1/status/leader", source="127.0.0.2")[0] == 200
        held.pop().close()

        def admitted() -> bool:
            status, _, body = raw(daemon, "GET", "/v1/status/leader")
            return status == 200 and json.loads(body) is not None

        wait_for(admitted, 15, "a freed place")
    finally:
        for sock in held:
            sock.close()


# -- the options ---------------------------------------------------------------------------


def test_the_hardening_options_become_settings_from_argv_and_environment() -> None:
    options = parse_options(
        ["--allow-origin", "https://ci.example", "--header-timeout", "5s"],
        {"HOMEPORT_ALLOW_HOST": "api.example .lan.example", "HOMEPORT_BODY_TIMEOUT": "2m"},
    )
    settings = options.settings
    assert settings.allow_hosts == ("api.example", ".lan.example")
    assert settings.allow_origins == ("https://ci.example",)
    assert settings.limits == Limits(header_timeout=5.0, body_timeout=120.0)
    assert parse_options([], {}).settings.limits == Limits()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--allow-host", "a b"], "--allow-host 'a b': expected a host name"),
        (["--allow-host", "http://a.example"], "--allow-host 'http://a.example'"),
        (["--allow-origin", "ftp://x"], "--allow-origin 'ftp://x': expected an origin"),
        (["--header-timeout", "0"], "--header-timeout '0': expected a duration"),
        (["--body-timeout", "soon"], "--body-timeout 'soon': expected a duration"),
        (["--max-client-connections", "0"], "--max-client-connections '0': expected"),
    ],
)
def test_bad_hardening_options_are_one_line_naming_the_option(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_options(argv, {})
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("homeport: error: ") and message in line
