"""The dashboard end to end: a real daemon, real headless Chromium driven by Playwright.

Chromium is Debian's (``/usr/bin/chromium``, installed by ``./test``); Playwright only
drives it (``executable_path``), it never downloads a browser of its own.  Every page
is checked to load nothing from another origin and to log no script errors.

Screenshots go to ``test-artifacts/dashboard/`` (git-ignored); with
``HOMEPORT_UPDATE_SCREENSHOTS=1`` the README's two (``docs/img/services.png`` and
``docs/img/logs.png``) are written too.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright

from homeport.logging import FormattedHTTPHandler

from .browser import CHROMIUM, CHROMIUM_FLAGS
from .daemon import Daemon

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
README_IMAGES = ROOT / "docs" / "img"
TIMEOUT_MS = 15_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: ./test installs it"
    with sync_playwright() as p:
        yield p


class Browser:
    """Opens pages in one fresh Chromium profile; remembers what they did wrong."""

    def __init__(self, context: BrowserContext, origin: str) -> None:
        self.context = context
        self.origin = origin
        self.problems: list[str] = []
        self.foreign: list[str] = []
        self.streams: list[Any] = []  # requests for /v1/events
        self.api: list[str] = []  # every /v1/ URL the pages asked for
        context.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)

    def page(self, path: str = "/ui/", width: int = 1280, height: int = 860) -> Page:
        page = self.context.new_page()
        page.set_viewport_size({"width": width, "height": height})
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("request", self._request)
        page.on("response", self._response)
        page.goto(self.origin + path)
        return page

    def _console(self, message: Any) -> None:
        text = message.text
        if message.type == "error" and not text.startswith("Failed to load resource"):
            self.problems.append(f"console: {text}")

    def _response(self, response: Any) -> None:
        if response.status == 404 and "/v1/kv/" in response.url:
            return  # Consul's answer for "no such keys": the page says the store is empty
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def _request(self, request: Any) -> None:
        url = request.url
        if url.startswith(self.origin + "/v1/"):
            self.api.append(url[len(self.origin) :])
        if url.startswith(self.origin + "/v1/events?"):
            self.streams.append(request)
        if not (url.startswith(self.origin + "/") or url.startswith(("data:", "blob:"))):
            self.foreign.append(url)


@pytest.fixture
def open_browser(playwright: Playwright, tmp_path: Path) -> Iterator[Callable[[Daemon], Browser]]:
    """A fresh Chromium profile (a new --user-data-dir) per browser opened."""
    opened: list[Browser] = []

    def open_for(daemon: Daemon) -> Browser:
        profile = tmp_path / f"chromium-{len(opened)}"
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
        )
        browser = Browser(context, daemon.url)
        opened.append(browser)
        return browser

    yield open_for
    for browser in opened:
        browser.context.close()
    for browser in opened:
        assert not browser.foreign, f"requests to other origins: {browser.foreign}"
        assert not browser.problems, "\n".join(browser.problems)


def screenshot(page: Page, name: str, readme: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    if readme and os.environ.get("HOMEPORT_UPDATE_SCREENSHOTS"):
        README_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_IMAGES / f"{name}.png")


def register(daemon: Daemon, body: dict[str, Any], token: str | None = None) -> None:
    headers = {"X-Consul-Token": token} if token else {}
    status, _, text = daemon.request("PUT", "/v1/agent/service/register", body, headers)
    assert status == 200, text


def http_handler(daemon: Daemon, formatted: bool = False) -> logging.Handler:
    kind = FormattedHTTPHandler if formatted else logging.handlers.HTTPHandler
    return kind(f"127.0.0.1:{daemon.http_port}", "/log", method="POST")


def send_log(
    daemon: Daemon,
    logger: str,
    level: int,
    message: str,
    *args: Any,
    formatted: bool = False,
    exc: bool = False,
    extra: dict[str, Any] | None = None,
) -> None:
    """One record through a real ``logging.handlers.HTTPHandler`` (or the formatted one)."""
    log = logging.getLogger(logger)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    handler = http_handler(daemon, formatted)
    log.addHandler(handler)
    try:
        if exc:
            empty: dict[str, int] = {}
            try:
                empty["missing"]
            except KeyError:
                log.log(level, message, *args, exc_info=True, extra=extra)
        else:
            log.log(level, message, *args, extra=extra)
    finally:
        log.removeHandler(handler)
        handler.close()


def sample_services(daemon: Daemon) -> None:
    register(
        daemon,
        {
            "Name": "web",
            "ID": "web-1",
            "Address": "10.0.0.11",
            "Port": 8080,
            "Tags": ["v2", "primary"],
            "Check": {"TTL": "60s"},
        },
    )
    register(
        daemon,
        {"Name": "web", "ID": "web-2", "Address": "10.0.0.12", "Port": 8080, "Tags": ["v2"]},
    )
    register(
        daemon,
        {"Name": "db", "ID": "db-1", "Address": "10.0.0.20", "Port": 5432, "Tags": ["postgres"]},
    )
    register(
        daemon,
        {"Name": "cache", "ID": "cache-1", "Port": 6379, "Check": {"TTL": "60s"}},
    )
    daemon.request("PUT", "/v1/agent/check/pass/service:web-1?note=200%20OK%20in%203%20ms")
    daemon.request("PUT", "/v1/agent/check/warn/service:cache-1?note=memory%20at%2091%25")


def test_services_page_shows_a_new_service_live_without_a_reload(
    daemon: Daemon, open_browser: Callable[[Daemon], Browser]
) -> None:
    """A service registered over the API appears with its address, port, tags and health
    while the page stays open; a TTL pass turns it green, its check output shows on
    demand, the filter box narrows the list, and a deregistration removes it."""
    browser = open_browser(daemon)
    page = browser.page("/ui/")
    expect(page.locator("#services[data-ready]")).to_be_attached()
    expect(page.locator('[data-service="consul"]')).to_be_visible()
    expect(page.locator("#fact-node")).to_have_text("testnode")
    expect(page.locator("#fact-dc")).to_have_text("dc1")
    page.evaluate("window.__sameDocument = true")

    register(
        daemon,
        {
            "Name": "web",
            "ID": "web-1",
            "Address": "10.0.0.11",
            "Port": 8080,
            "Tags": ["v2", "primary"],
            "Check": {"TTL": "60s"},
        },
    )
    card = page.locator('[data-service="web"]')
    expect(card).to_be_visible()
    row = card.locator('tr.instance[data-id="web-1"]')
    expect(row.locator(".address")).to_have_text("10.0.0.11:8080")
    expect(row).to_contain_text("primary")
    expect(row.locator(".badge").first).to_have_text("critical")  # new checks start critical
    expect(page.locator("#fact-services")).to_have_text("2")

    daemon.request("PUT", "/v1/agent/check/pass/service:web-1?note=all%20good%20here")
    expect(row.locator(".badge").first).to_have_text("passing")
    output = row.locator(".check").filter(has_text="service:web-1").locator("pre")
    expect(output).to_be_hidden()  # check output on demand
    row.locator("details.checks summary").click()
    expect(output).to_have_text("all good here")
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    # The whole catalog comes in one request, not one per service.
    assert any(u.startswith("/v1/internal/ui/nodes") for u in browser.api)
    assert not [u for u in browser.api if u.startswith("/v1/health/service/")]

    page.fill("#filter", "primary")
    expect(page.locator('[data-service="consul"]')).to_be_hidden()
    expect(card).to_be_visible()
    page.fill("#filter", "no-such-thing")
    expect(page.locator("#no-match")).to_be_visible()
    page.fill("#filter", "")

    daemon.request("PUT", "/v1/agent/service/deregister/web-1")
    expect(card).to_have_count(0)
    assert page.evaluate("window.__sameDocument") is True

    sample_services(daemon)
    expect(page.locator('[data-service="cache"] .badge.warning').first).to_be_visible()
    expect(page.locator('[data-service="web"] tr.instance')).to_have_count(2)
    page.locator('[data-service="web"] tr[data-id="web-1"] details.checks summary').click()
    expect(page.locator("#fact-services")).to_have_text("4")
    expect(page.locator("#fact-instances")).to_have_text("5")
    screenshot(page, "services", readme=True)


def test_logs_tail_shows_a_stock_httphandler_record_with_its_link_and_traceback(
    daemon: Daemon, open_browser: Callable[[Daemon], Browser]
) -> None:
    """A record sent by the stock HTTPHandler appears in the live tail, coloured by
    level; a traceback (from homeport's formatted handler) expands on click, and each
    record links to a page of its own with every field."""
    browser = open_browser(daemon)
    page = browser.page("/ui/logs")
    expect(page.locator("#tail-status")).to_have_text("live")

    send_log(daemon, "shop.orders", logging.WARNING, "order %s is late by %d min", "A-17", 12)
    record = page.locator("#records li.rec").filter(has_text="order A-17 is late by 12 min")
    expect(record).to_be_visible()
    expect(record).to_have_class("rec warning fresh")
    expect(record.locator(".logger")).to_have_text("shop.orders")

    send_log(
        daemon,
        "shop.payments",
        logging.ERROR,
        "charge failed for %s",
        "alice",
        formatted=True,
        exc=True,
        extra={"request_id": "r-42"},
    )
    failed = page.locator("#records li.rec").filter(has_text="charge failed for alice")
    expect(failed).to_have_class("rec error fresh")
    expect(failed.locator(".fields")).to_contain_text("request_id=r-42")
    trace = failed.locator("details.traceback pre")
    expect(trace).to_be_hidden()
    failed.locator("details.traceback summary").click()
    expect(trace).to_contain_text("KeyError: 'missing'")
    expect(failed).to_be_visible()

    send_log(daemon, "shop.http", logging.INFO, "GET /cart 200 in %d ms", 14)
    send_log(daemon, "shop.db", logging.DEBUG, "pool size %d, %d idle", 10, 7)
    send_log(daemon, "shop.http", logging.INFO, "POST /checkout 302 in %d ms", 88)
    send_log(daemon, "shop.jobs", logging.CRITICAL, "queue worker died; restarting")
    expect(page.locator("#records li.rec")).to_have_count(6)
    page.wait_for_timeout(1600)  # the highlight of new rows fades
    screenshot(page, "logs", readme=True)
    failed.locator("button.toggle").click()
    expect(failed.locator("table.fieldtable")).to_contain_text("funcName")

    link = failed.locator("a.link")
    record_id = link.inner_text().lstrip("#")
    link.click()
    page.wait_for_url(f"**/ui/logs/{record_id}")
    expect(page.locator("table.fieldtable")).to_contain_text("extra.request_id")
    expect(page.locator("details.traceback pre")).to_contain_text("KeyError")


def test_level_filter_keeps_lower_records_out_of_history_and_tail(
    daemon: Daemon, open_browser: Callable[[Daemon], Browser]
) -> None:
    """With level WARNING chosen, INFO records stay out of the page, both those already
    stored and those arriving live, while WARNING ones still arrive; logger prefix,
    fields and time range narrow it the same way; the filter is in the URL, so a
    reload keeps it."""
    send_log(daemon, "app", logging.INFO, "stored info before")
    send_log(daemon, "app", logging.ERROR, "stored error before")
    browser = open_browser(daemon)
    page = browser.page("/ui/logs")
    expect(page.locator("#records")).to_contain_text("stored info before")

    page.select_option("#f-level", "WARNING")
    expect(page.locator("#records")).to_contain_text("stored error before")
    expect(page.locator("#records")).not_to_contain_text("stored info before")
    expect(page.locator("#tail-status")).to_have_text("live")
    assert "level=WARNING" in page.url

    send_log(daemon, "app", logging.INFO, "live info must not show")
    send_log(daemon, "app", logging.WARNING, "live warning shows")
    expect(page.locator("#records")).to_contain_text("live warning shows")
    # The INFO record was stored first: had the tail let it through, it would be here.
    stored = daemon.get_json("/v1/logs?q=live+info")["records"]
    assert [r["message"] for r in stored] == ["live info must not show"]
    expect(page.locator("#records")).not_to_contain_text("live info must not show")
    assert page.locator("#records li.rec").count() == 2

    # logger prefix and text filters, and fields, applied the same way
    page.fill("#f-logger", "billing")
    page.fill("#f-fields", "tenant=acme")
    page.click("#apply")
    expect(page.locator("#no-records")).to_be_visible()
    send_log(daemon, "billing.invoices", logging.ERROR, "wrong tenant", extra={"tenant": "other"})
    send_log(daemon, "billing.invoices", logging.ERROR, "right tenant", extra={"tenant": "acme"})
    expect(page.locator("#records")).to_contain_text("right tenant")
    expect(page.locator("#records")).not_to_contain_text("wrong tenant")

    # a time range: nothing was logged before 2001
    page.fill("#f-until", "2000-12-31T23:59:59Z")
    page.click("#apply")
    expect(page.locator("#no-records")).to_be_visible()
    page.fill("#f-until", "")
    page.fill("#f-since", "1h")
    page.click("#apply")
    expect(page.locator("#records li.rec")).to_have_count(1)

    page.reload()
    expect(page.locator("#f-since")).to_have_value("1h")
    expect(page.locator("#f-level")).to_have_value("WARNING")
    expect(page.locator("#f-fields")).to_have_value("tenant=acme")
    expect(page.locator("#records li.rec")).to_have_count(1)


def test_pause_holds_new_records_and_resume_shows_them(
    daemon: Daemon, open_browser: Callable[[Daemon], Browser]
) -> None:
    """While paused, arriving records are counted but not shown; resuming shows them."""
    browser = open_browser(daemon)
    page = browser.page("/ui/logs")
    expect(page.locator("#tail-status")).to_have_text("live")
    page.click("#pause")
    send_log(daemon, "app", logging.INFO, "arrived while paused")
    expect(page.locator("#tail-status")).to_have_text("paused · 1 new")
    expect(page.locator("#records")).not_to_contain_text("arrived while paused")
    page.click("#pause")
    expect(page.locator("#records")).to_contain_text("arrived while paused")
    expect(page.locator("#tail-status")).to_have_text("live")


def test_older_records_page_back_through_history_without_duplicates(
    daemon: Daemon, open_browser: Callable[[Daemon], Browser]
) -> None:
    """The page shows the newest 100 records; "Older records" fetches the rest, once."""
    now = time.time()
    batch = [
        {"name": "batch", "levelname": "INFO", "levelno": 20, "msg": f"line {i}", "created": now}
        for i in range(150)
    ]
    status, _, body = daemon.request(
        "POST", "/log", json.dumps(batch), {"Content-Type": "application/json"}
    )
    assert status == 200, body
    browser = open_browser(daemon)
    page = browser.page("/ui/logs")
    records = page.locator("#records li.rec")
    expect(records).to_have_count(100)
    expect(records.first).to_contain_text("line 149")
    page.click("#older")
    expect(records).to_have_count(150)
    expect(records.last).to_contain_text("line 0")
    expect(page.locator("#older")).to_be_hidden()
    ids = page.eval_on_selector_all("#records li.rec", "els => els.map(e => +e.dataset.id)")
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 150


def test_events_page_shows_a_zeromq_message_with_its_id(
    daemon_factory: Any, open_browser: Callable[[Daemon], Browser]
) -> None:
    """A message from a real pyzmq PUB socket shows up under zmq/<topic> with its id."""
    port = free_port()
    daemon = daemon_factory().start(["--zmq-bind", f"tcp://127.0.0.1:{port}"])
    browser = open_browser(daemon)
    page = browser.page("/ui/events")
    expect(page.locator("#event-status")).to_have_text("live: catalog, kv, zmq/*")
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.connect(f"tcp://127.0.0.1:{port}")
    rows = page.locator('#event-list tr.ev[data-topic="zmq/builds"]')
    try:
        deadline = time.monotonic() + 15
        while rows.count() == 0 and time.monotonic() < deadline:
            pub.send_multipart([b"builds", b'{"job": "homeport", "status": "green"}'])
            page.wait_for_timeout(200)  # ZeroMQ's slow joiner: send until one gets through
    finally:
        pub.close()
        context.term()
    expect(rows.first).to_contain_text('"status":"green"')
    event_id = int(rows.first.get_attribute("data-id") or 0)
    assert event_id > 0
    expect(rows.first.locator(".time")).to_have_text(re.compile(r"\d\d:\d\d:\d\d\.\d{3}"))

    register(daemon, {"Name": "api", "Port": 9000})
    expect(page.locator('#event-list tr.ev[data-topic="catalog"]').first).to_contain_text("api")
    screenshot(page, "events")


def test_events_resume_after_a_daemon_restart_without_gaps(
    daemon: Daemon, open_browser: Callable[[Daemon], Browser]
) -> None:
    """Events published while the browser was cut off arrive after it reconnects, each
    once and in id order: the stream resumes from the last id it saw."""
    browser = open_browser(daemon)
    page = browser.page("/ui/events?topic=deploys")
    expect(page.locator("#event-status")).to_have_text("live: deploys")
    first = json.loads(daemon.request("POST", "/v1/events/deploys", {"n": 1})[2])["id"]
    rows = page.locator("#event-list tr.ev")
    expect(rows).to_have_count(1)

    daemon.stop()
    daemon.start()
    ids = [first]
    for n in (2, 3, 4):  # published before the browser is back
        ids.append(json.loads(daemon.request("POST", "/v1/events/deploys", {"n": n})[2])["id"])
    expect(rows).to_have_count(4)
    shown = page.eval_on_selector_all("#event-list tr.ev", "els => els.map(e => +e.dataset.id)")
    assert sorted(shown) == ids and shown == sorted(shown, reverse=True)
    expect(page.locator("#event-list tr.gap")).to_contain_text("resumed after id")
    expect(page.locator("#event-status")).to_have_text("live: deploys")


def test_kv_page_shows_keys_as_a_tree_and_values_on_click(
    daemon: Daemon, open_browser: Callable[[Daemon], Browser]
) -> None:
    """Keys show as folders and leaves; clicking a key shows its value; a key written
    while the page is open appears without a reload."""
    daemon.request("PUT", "/v1/kv/app/config/db", '{"host": "db.internal", "port": 5432}')
    daemon.request("PUT", "/v1/kv/app/feature/dark-mode", "on")
    browser = open_browser(daemon)
    page = browser.page("/ui/kv")
    tree = page.locator("#kv-tree")
    expect(tree.locator("summary", has_text="app/")).to_be_visible()
    tree.locator("summary", has_text="app/").click()
    tree.locator("summary", has_text="config/").click()
    tree.locator('a[data-key="app/config/db"]').click()
    expect(page.locator("#kv-key")).to_have_text("app/config/db")
    expect(page.locator("#kv-text")).to_contain_text('"host": "db.internal"')

    daemon.request("PUT", "/v1/kv/app/feature/beta", "no")
    tree.locator("summary", has_text="feature/").click()
    expect(tree.locator('a[data-key="app/feature/beta"]')).to_be_visible()
    expect(page.locator("#fact-keys")).to_have_text("3")

    page.goto(daemon.url + "/ui/kv#app%2Ffeature%2Fdark-mode")  # a link to a key
    expect(page.locator("#kv-text")).to_have_text("on")
    screenshot(page, "kv")


def kv_delete_honours_a_change_made_meanwhile(daemon: Daemon, page: Any) -> None:
    """Delete asks first; a change made while it asks is reported, then a second
    Delete goes through."""

    def change_then_accept(dialog: Any) -> None:
        # While "Delete app/cache?" is asked, someone else changes it.
        daemon.request("PUT", "/v1/kv/app/cache", '{"ttl": 60}')
        dialog.accept()

    page.once("dialog", change_then_accept)
    page.click("#kv-delete")
    expect(page.locator("#kv-status")).to_have_text(
        "Not deleted: app/cache was changed since you opened it."
    )
    expect(page.locator("#kv-text")).to_contain_text('"ttl": 60')
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#kv-delete")
    expect(page.locator("#kv-value")).to_contain_text("Deleted app/cache.")
    expect(page.locator("#kv-tree a[data-key='app/cache']")).to_have_count(0)
    assert daemon.request("GET", "/v1/kv/app/cache")[0] == 404


def test_kv_page_creates_edits_and_deletes_keys_without_overwriting_anyone(
    daemon: Daemon, open_browser: Callable[[Daemon], Browser]
) -> None:
    """Edit, New key and Delete write through the API with ?cas= of the index the page
    showed: a change made elsewhere meanwhile is reported, never overwritten, and what
    was typed stays in the form."""

    def raw(key: str) -> bytes:
        status, _, body = daemon.request("GET", f"/v1/kv/{key}?raw")
        assert status == 200, (key, status)
        return body

    daemon.request("PUT", "/v1/kv/app/db?flags=42", "postgres://old")
    browser = open_browser(daemon)
    page = browser.page("/ui/kv#app%2Fdb")
    expect(page.locator("#kv-text")).to_have_text("postgres://old")

    page.click("#kv-edit")
    expect(page.locator("#kv-form-value")).to_have_value("postgres://old")
    page.fill("#kv-form-value", "postgres://new")
    page.click("#kv-save")
    expect(page.locator("#kv-text")).to_have_text("postgres://new")
    assert raw("app/db") == b"postgres://new"
    assert daemon.get_json("/v1/kv/app/db")[0]["Flags"] == 42  # kept

    page.click("#kv-edit")
    page.fill("#kv-form-value", "mine")
    daemon.request("PUT", "/v1/kv/app/db", "theirs")  # while the form is open
    page.click("#kv-save")
    expect(page.locator("#kv-status")).to_contain_text("was changed since you opened it")
    expect(page.locator("#kv-form-value")).to_have_value("mine")
    screenshot(page, "kv-edit")
    assert raw("app/db") == b"theirs"
    page.click("#kv-cancel")
    expect(page.locator("#kv-text")).to_have_text("theirs")

    page.click("#kv-new")
    expect(page.locator("#kv-form-key")).to_have_value("app/")  # the open key's folder
    page.fill("#kv-form-key", "app/cache")
    page.fill("#kv-form-value", '{"ttl": 30}')
    page.click("#kv-save")
    expect(page.locator("#kv-key")).to_have_text("app/cache")
    expect(page.locator("#kv-tree a[data-key='app/cache']")).to_be_visible()
    assert json.loads(raw("app/cache")) == {"ttl": 30}

    page.click("#kv-new")
    page.fill("#kv-form-key", "app/cache")
    page.fill("#kv-form-value", "clobber")
    page.click("#kv-save")
    expect(page.locator("#kv-status")).to_have_text("Not created: app/cache already exists.")
    assert json.loads(raw("app/cache")) == {"ttl": 30}
    page.click("#kv-cancel")

    kv_delete_honours_a_change_made_meanwhile(daemon, page)


def test_every_page_fits_a_phone_width_screen(
    daemon: Daemon, open_browser: Callable[[Daemon], Browser]
) -> None:
    """At 390 px wide no page scrolls sideways."""
    sample_services(daemon)
    send_log(daemon, "a.rather.long.logger.name.for.phones", logging.ERROR, "x" * 300)
    browser = open_browser(daemon)
    for path, ready in [
        ("/ui/", "#services[data-ready]"),
        ("/ui/logs", "#records li.rec"),
        ("/ui/events", "#event-status"),
        ("/ui/kv", "#kv-tree[data-ready]"),
    ]:
        page = browser.page(path, width=390, height=844)
        expect(page.locator(ready).first).to_be_attached()
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} is {overflow}px too wide at 390px"
        name = "phone-" + (path.strip("/").split("/")[-1] or "services")
        screenshot(page, name.replace("ui", "services"))
        page.close()


def test_with_a_token_the_dashboard_asks_once_and_the_stream_uses_it(
    daemon_factory: Any, open_browser: Callable[[Daemon], Browser]
) -> None:
    """With --token every page first asks for the token; a wrong one is refused; the
    right one is kept in an HttpOnly SameSite=Strict cookie, later pages don't ask
    again, the live stream runs and a write from the page (publish) is accepted."""
    daemon = daemon_factory().start(["--token", "s3cret-token"])
    browser = open_browser(daemon)
    page = browser.page("/ui/logs")
    expect(page.locator("#login")).to_be_visible()
    assert "/ui/login" in page.url
    page.fill("#token", "wrong")
    page.click("#login button")
    expect(page.locator("#login-error")).to_be_visible()
    browser.problems.clear()  # the 403 of the wrong try is logged by Chromium

    page.fill("#token", "s3cret-token")
    page.click("#login button")
    page.wait_for_url("**/ui/logs")
    expect(page.locator("#tail-status")).to_have_text("live")
    cookie = next(c for c in browser.context.cookies() if c["name"] == "homeport_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"

    # The live tail's stream carries the token's cookie (EventSource cannot set headers).
    (stream,) = [r for r in browser.streams if "topic=logs" in r.url]
    assert "homeport_token=s3cret-token" in stream.all_headers().get("cookie", "")

    status, _, _ = daemon.request("POST", "/log", "name=x&msg=no+token&levelno=20")
    assert status == 401  # writes without the token are refused ...
    handler = FormattedHTTPHandler(
        f"127.0.0.1:{daemon.http_port}", "/log", method="POST", credentials=("app", "s3cret-token")
    )
    logging.getLogger("tokened").addHandler(handler)
    logging.getLogger("tokened").error("sent with the token")
    logging.getLogger("tokened").removeHandler(handler)
    expect(page.locator("#records")).to_contain_text("sent with the token")

    events = browser.page("/ui/events?topic=notes")  # no second prompt
    expect(events.locator("#event-status")).to_have_text("live: notes")
    events.locator("details.publish summary").click()
    events.fill("#p-topic", "notes")
    events.fill("#p-data", '{"from": "the dashboard"}')
    events.click("#publish button")
    expect(events.locator("#publish-status")).to_contain_text("published as id")
    expect(events.locator('#event-list tr.ev[data-topic="notes"]')).to_contain_text("the dashboard")

    kv = browser.page("/ui/kv")  # the KV editor writes with the token too
    kv.click("#kv-new")
    kv.fill("#kv-form-key", "from/ui")
    kv.fill("#kv-form-value", "with the token")
    kv.click("#kv-save")
    expect(kv.locator("#kv-text")).to_have_text("with the token")
    assert daemon.request("GET", "/v1/kv/from/ui?raw")[2] == b"with the token"
    # Done with the KV page: its reload on the kv event of that write would otherwise
    # ask /ui/info.json after the cookies are cleared below (a 403 of the test's own).
    kv.close()

    events.goto(daemon.url + "/ui/info.json")
    assert json.loads(events.inner_text("body"))["node"] == "testnode"
    events.context.clear_cookies()
    events.goto(daemon.url + "/ui/")
    expect(events.locator("#login")).to_be_visible()
