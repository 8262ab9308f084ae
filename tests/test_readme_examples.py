"""The README's event examples, extracted from README.md and run as written.

Each example is the fenced block right after an ``<!-- example: NAME -->`` line in the
"Events" section.  The only changes made to them are the ports, so that a test never
touches a homeport, a ZeroMQ socket or a web server someone else runs on the README's
ports (8500, 5556, 8000); every substitution is listed in :func:`ports`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .browser import CHROMIUM, CHROMIUM_FLAGS
from .daemon import Daemon

README = Path(__file__).resolve().parent.parent / "README.md"


def example(name: str) -> str:
    """The fenced block right after ``<!-- example: NAME -->`` in README.md."""
    text = README.read_text(encoding="utf-8")
    found = re.findall(
        rf"^<!-- example: {re.escape(name)} -->\n```[\w-]*\n(.*?)^```$", text, re.M | re.S
    )
    assert len(found) == 1, f"README.md has {len(found)} examples named {name!r}"
    return str(found[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ports(text: str, http: int, zmq: int | None = None, page: int | None = None) -> str:
    """*text* with the README's ports replaced: the only edit made to an example."""
    substitutions = {"127.0.0.1:8500": f"127.0.0.1:{http}"}
    if zmq is not None:
        substitutions["127.0.0.1:5556"] = f"127.0.0.1:{zmq}"
    if page is not None:
        substitutions["localhost:8000"] = f"localhost:{page}"
    for old, new in substitutions.items():
        text = text.replace(old, new)
    return text


def daemon_options(command: str) -> list[str]:
    """The options after ``twist homeport`` in the README's command line."""
    words = shlex.split(command.strip())
    assert words[:2] == ["twist", "homeport"], command
    return words[2:]


def read_until(stream: socket.socket, wanted: bytes, timeout: float = 15.0) -> bytes:
    stream.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while wanted not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"{wanted!r} did not arrive; got {data!r}")
        chunk = stream.recv(65536)
        if not chunk:
            raise AssertionError(f"the stream ended before {wanted!r}; got {data!r}")
        data += chunk
    return data


@dataclass
class Setup:
    daemon: Daemon
    zmq_port: int
    page_port: int


@pytest.fixture
def events_daemon(daemon_factory: type[Daemon]) -> Iterator[Setup]:
    """homeport started with the README's options, the ZeroMQ port and the page's
    origin (``--cors-origin``) moved to free ports."""
    zmq_port, page_port = free_port(), free_port()
    command = ports(example("events-daemon"), 8500, zmq=zmq_port, page=page_port)
    daemon = daemon_factory().start(daemon_options(command))  # type: ignore[call-arg]
    yield Setup(daemon, zmq_port, page_port)


def subscribe(daemon: Daemon, query: str) -> socket.socket:
    stream = socket.create_connection(("127.0.0.1", daemon.http_port))
    stream.sendall(f"GET /v1/events?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    read_until(stream, b": homeport events\n\n")
    return stream


def run_publisher(setup: Setup) -> None:
    script = ports(example("zmq-publisher"), setup.daemon.http_port, zmq=setup.zmq_port)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)


def test_the_readme_zmq_publisher_reaches_an_sse_subscriber(events_daemon: Setup) -> None:
    """The README's five-line pyzmq publisher, run against homeport started with the
    README's options, delivers its event to a subscriber of ``zmq/builds``."""
    stream = subscribe(events_daemon.daemon, "topic=zmq/builds")
    run_publisher(events_daemon)
    data = read_until(stream, b'data: {"build":42,"status":"green"}\n')
    assert b"event: zmq/builds\n" in data
    stream.close()


def test_the_readme_eventsource_page_shows_an_event_published_after_it_loaded(
    events_daemon: Setup, tmp_path: Path
) -> None:
    """The README's five-line EventSource page, served as the README says (python3 -m
    http.server from its directory, opened on localhost) in headless Chromium, shows the
    event the README's publisher sends after the page has loaded."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    daemon, page_port = events_daemon.daemon, events_daemon.page_port
    site = tmp_path / "site"
    site.mkdir()
    (site / "events.html").write_text(
        ports(example("eventsource-page"), daemon.http_port, page=page_port), encoding="utf-8"
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(page_port)],
        cwd=site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("localhost", page_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_FLAGS,
            )
            try:
                page = browser.new_page()
                page.goto(f"http://localhost:{page_port}/events.html")
                # The page's own EventSource is open (CORS passed): publish only now.
                page.wait_for_function("events.readyState === EventSource.OPEN", timeout=15_000)
                assert page.inner_text("#log") == ""
                run_publisher(events_daemon)
                page.wait_for_function(
                    "document.getElementById('log').textContent.includes('\"build\":42')",
                    timeout=15_000,
                )
                assert page.inner_text("#log").strip() == '{"build":42,"status":"green"}'
            finally:
                browser.close()
    finally:
        server.terminate()
        server.wait(10)


def test_the_readme_curl_commands_publish_and_follow_events(daemon: Daemon) -> None:
    """The README's two curl lines, as written: the ``curl -N`` stream prints the
    event the ``curl -X POST`` publishes on ``ci``."""
    if shutil.which("curl") is None:
        pytest.skip("curl is missing: apt-get install curl")
    follow, post = [
        shlex.split(ports(line, daemon.http_port))
        for line in example("events-curl").splitlines()
        if line.strip()
    ]
    assert follow[:2] == ["curl", "-N"] and post[:3] == ["curl", "-X", "POST"]
    reader = subprocess.Popen(follow, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert reader.stdout is not None
        output = b""
        while b": homeport events\n\n" not in output:  # subscribed: now publish
            output += os.read(reader.stdout.fileno(), 65536)
        published = subprocess.run(post, capture_output=True, check=True, timeout=30)
        assert b'"topic": "ci"' in published.stdout
        while b'data: {"build":42,"status":"green"}\n' not in output:
            chunk = os.read(reader.stdout.fileno(), 65536)
            assert chunk, f"curl's stream ended: {output!r}"
            output += chunk
        assert b"event: ci\n" in output
    finally:
        reader.kill()
        reader.wait()


def test_the_readme_blocking_query_waits_for_a_change_then_returns_it(daemon: Daemon) -> None:
    """The README's two lines, run by sh as written: the second curl does not return
    until ``web`` changes, and then prints the new instance."""
    if shutil.which("curl") is None:
        pytest.skip("curl is missing: apt-get install curl")
    script = ports(example("blocking-query"), daemon.http_port)
    waiting = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE)
    try:
        time.sleep(1.5)  # long enough to have read the index and parked
        assert waiting.poll() is None, "the blocking query returned before any change"
        body = b'{"Name": "web", "ID": "web-1", "Port": 8080}'
        status, _ = daemon.request("PUT", "/v1/agent/service/register", body)[:2]
        assert status == 200
        out, _ = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 0
    assert b'"ID":"web-1"' in out.replace(b" ", b"")
