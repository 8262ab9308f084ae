"""Server-Sent Events from the real daemon, read frame by frame over a plain socket."""

from __future__ import annotations

import http.client
import json
import logging
import logging.handlers
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from .daemon import Daemon, DaemonFactory


@dataclass
class SSE:
    """One parsed event."""

    id: int | None
    event: str | None
    data: str
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class SSEClient:
    """A minimal EventSource: one HTTP/1.1 connection, events parsed as they come."""

    def __init__(
        self,
        daemon: Daemon,
        query: str,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=timeout)
        self.conn.request("GET", "/v1/events?" + query, headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}
        self.retry: int | None = None

    def next(self, timeout: float | None = None) -> SSE:
        """The next event (comments and retry lines are collected on the way)."""
        if timeout is not None and self.conn.sock is not None:
            self.conn.sock.settimeout(timeout)
        event_id: int | None = None
        name: str | None = None
        data: list[str] = []
        comments: list[str] = []
        while True:
            raw = self.response.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode("utf-8").rstrip("\n")
            if line == "":
                if data or name is not None:
                    return SSE(event_id, name, "\n".join(data), comments)
                continue
            if line.startswith(":"):
                comments.append(line[1:].strip())
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "id":
                event_id = int(value)
            elif key == "event":
                name = value
            elif key == "data":
                data.append(value)
            elif key == "retry":
                self.retry = int(value)

    def close(self) -> None:
        self.conn.close()


def publish(daemon: Daemon, topic: str, data: Any, headers: dict[str, str] | None = None) -> int:
    status, _, body = daemon.request("POST", f"/v1/events/{topic}", data, headers)
    assert status == 200, body
    event_id: int = json.loads(body)["id"]
    return event_id


def test_events_stream_with_ids_topics_data_lines_and_no_cache_headers(daemon: Daemon) -> None:
    """A subscriber gets each published event as id/event/data lines, in order."""
    client = SSEClient(daemon, "topic=demo")
    assert client.status == 200
    assert client.headers["content-type"].startswith("text/event-stream")
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["x-accel-buffering"] == "no"
    first = publish(daemon, "demo", {"n": 1})
    publish(daemon, "other", "not for this client")
    second = publish(daemon, "demo", "two\nlines")
    a, b = client.next(5), client.next(5)
    assert client.retry == 2000
    assert (a.id, a.event, a.json()) == (first, "demo", {"n": 1})
    assert (b.id, b.event, b.data) == (second, "demo", "two\nlines")
    client.close()


def test_prefix_subscriptions_and_several_topics_on_one_stream(daemon: Daemon) -> None:
    client = SSEClient(daemon, "topic=jobs/*&topic=alerts")
    publish(daemon, "jobs/build", 1)
    publish(daemon, "other", 2)
    publish(daemon, "alerts", 3)
    assert [client.next(5).event for _ in range(2)] == ["jobs/build", "alerts"]


def test_last_event_id_resumes_from_history_even_after_a_restart(
    daemon_factory: DaemonFactory,
) -> None:
    """A client that reconnects with Last-Event-ID gets what it missed, across restarts."""
    daemon = daemon_factory().start()
    ids = [publish(daemon, "resume", i) for i in range(4)]
    client = SSEClient(daemon, "topic=resume", {"Last-Event-ID": str(ids[1])})
    assert [client.next(5).data for _ in range(2)] == ["2", "3"]
    client.close()
    daemon.stop()
    daemon.start()
    client = SSEClient(daemon, f"topic=resume&last_event_id={ids[0]}")
    assert [client.next(5).id for _ in range(3)] == ids[1:]
    later = publish(daemon, "resume", "after restart")
    assert later > ids[-1]
    assert client.next(5).id == later


def test_bad_requests_are_refused_clearly(daemon: Daemon) -> None:
    """No topic, a bad pattern or a bad Last-Event-ID: 400 with a reason."""
    for path, headers in [
        ("/v1/events", {}),
        ("/v1/events?topic=a*b", {}),
        ("/v1/events?topic=a&last_event_id=abc", {}),
        ("/v1/events?topic=a", {"Last-Event-ID": "-1"}),
        ("/v1/events?topic=logs&level=LOUD", {}),
    ]:
        status, _, body = daemon.request("GET", path, headers=headers)
        assert status == 400, (path, body)
        assert body.strip()
    assert daemon.request("POST", "/v1/events/catalog", "x")[0] == 400
    assert daemon.request("POST", "/v1/events/zmq/x", "x")[0] == 400
    assert daemon.request("PUT", "/v1/events/x", "x")[0] == 405
    assert daemon.request("POST", "/v1/events/x", b"\xff", {"Content-Type": "text/plain"})[0] == 400
    assert (
        daemon.request("POST", "/v1/events/x", "{", {"Content-Type": "application/json"})[0] == 400
    )


def test_a_topic_nobody_published_yet_can_be_subscribed(daemon: Daemon) -> None:
    client = SSEClient(daemon, "topic=not-yet&last_event_id=0")
    assert client.status == 200
    publish(daemon, "not-yet", "now")
    assert client.next(5).data == "now"


def test_publishing_needs_the_token_when_one_is_set(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--token", "s3cret"]).start()
    assert daemon.request("POST", "/v1/events/t", "x")[0] == 403
    assert daemon.request("POST", "/v1/events/t", "x", {"X-Consul-Token": "wrong"})[0] == 403
    assert daemon.request("POST", "/v1/events/t?token=s3cret", "x")[0] == 200
    assert publish(daemon, "t", "y", {"Authorization": "Bearer s3cret"}) > 0
    # Reading needs no token.
    assert SSEClient(daemon, "topic=t").status == 200


def test_cors_headers_only_for_allowed_origins(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--cors-origin", "https://dash.example"]).start()
    allowed = SSEClient(daemon, "topic=t", {"Origin": "https://dash.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
    other = SSEClient(daemon, "topic=t", {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    status, headers, _ = daemon.request(
        "OPTIONS",
        "/v1/events/t",
        headers={"Origin": "https://dash.example", "Access-Control-Request-Method": "POST"},
    )
    assert status == 200
    assert "POST" in headers["Access-Control-Allow-Methods"]


def test_a_catalog_registration_and_a_kv_write_become_events(daemon: Daemon) -> None:
    client = SSEClient(daemon, "topic=catalog&topic=kv")
    status, _, _ = daemon.request(
        "PUT", "/v1/agent/service/register", {"Name": "web", "ID": "web1", "Port": 8080}
    )
    assert status == 200
    event = client.next(5)
    assert event.event == "catalog"
    assert event.json() | {"index": 0} == {
        "index": 0,
        "kind": "service",
        "op": "set",
        "node": "testnode",
        "id": "web1",
        "service": "web",
    }
    assert daemon.request("PUT", "/v1/kv/color", "blue")[0] == 200
    while (event := client.next(5)).event != "kv":
        pass
    assert event.json()["key"] == "color"


def test_log_records_from_httphandler_stream_live_with_search_filters(daemon: Daemon) -> None:
    """topic=logs takes /v1/logs's filters: only matching records are streamed."""
    client = SSEClient(daemon, "topic=logs&level=WARNING&logger=app")
    handler = logging.handlers.HTTPHandler(f"127.0.0.1:{daemon.http_port}", "/log", method="POST")
    for name, level, text in [
        ("app.web", logging.INFO, "too quiet"),
        ("other", logging.ERROR, "wrong logger"),
        ("app.db", logging.WARNING, "slow query %s"),
        ("app", logging.ERROR, "the last one"),
    ]:
        logger = logging.getLogger(f"push-test.{name}")
        record = logger.makeRecord(name, level, __file__, 1, text, ("orders",), None)
        handler.emit(record)
    first, second = client.next(5), client.next(5)
    assert (first.event, first.json()["name"], first.json()["message"]) == (
        "logs",
        "app.db",
        "slow query orders",
    )
    assert second.json()["message"] == "the last one"


def test_the_heartbeat_comment_keeps_the_stream_alive(daemon: Daemon) -> None:
    """A stream with nothing to say still gets a comment line within 15 s."""
    conn = socket.create_connection(("127.0.0.1", daemon.http_port), timeout=20)
    conn.sendall(b"GET /v1/events?topic=quiet HTTP/1.0\r\nHost: x\r\n\r\n")
    received = b""
    deadline = time.monotonic() + 17
    while b": heartbeat" not in received and time.monotonic() < deadline:
        received += conn.recv(4096)
    conn.close()
    assert b"\r\n\r\nretry: 2000\n" in received  # HTTP/1.0: no chunked framing
    assert b": heartbeat\n\n" in received


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_follows_the_stream(daemon: Daemon) -> None:
    curl = subprocess.Popen(
        ["curl", "-sN", "--max-time", "5", f"{daemon.url}/v1/events?topic=curl"],
        stdout=subprocess.PIPE,
    )
    time.sleep(0.5)
    event_id = publish(daemon, "curl", {"hello": "curl"})
    assert curl.stdout is not None
    lines = [curl.stdout.readline() for _ in range(7)]
    curl.kill()
    curl.wait()
    assert f"id: {event_id}\n".encode() in lines
    assert b'data: {"hello":"curl"}\n' in lines


def test_a_client_dropping_mid_stream_leaves_the_others_served(daemon: Daemon) -> None:
    dropped = socket.create_connection(("127.0.0.1", daemon.http_port))
    dropped.sendall(b"GET /v1/events?topic=t HTTP/1.1\r\nHost: x\r\n\r\n")
    dropped.recv(100)
    dropped.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    dropped.close()  # RST
    client = SSEClient(daemon, "topic=t")
    for i in range(20):
        publish(daemon, "t", "x" * 1000 + str(i))
    assert [client.next(5).data[-2:] for _ in range(20)][-1] == "19"
    assert daemon.get_json("/v1/catalog/nodes")


def test_nan_is_not_json_so_it_neither_breaks_browsers_nor_the_history(
    daemon_factory: DaemonFactory,
) -> None:
    """Python reads NaN/Infinity as JSON, browsers' JSON.parse and SQLite do not: as
    JSON it is refused; as text it stays text; and the history written with it keeps
    every event across a restart."""
    daemon = daemon_factory().start()
    json_body = {"Content-Type": "application/json"}
    status, _, body = daemon.request("POST", "/v1/events/t", '{"x": NaN}', json_body)
    assert status == 400 and b"not valid JSON" in body
    first = publish(daemon, "t", '{"x": NaN}', {"Content-Type": "text/plain"})
    second = publish(daemon, "t", '{"x": 1e999}')
    third = publish(daemon, "t", {"x": 1})
    client = SSEClient(daemon, "topic=t&last_event_id=0")
    events = [client.next(5) for _ in range(3)]
    assert [e.data for e in events] == ['{"x": NaN}', '{"x": 1e999}', '{"x":1}']
    client.close()
    daemon.stop()  # the history is written at stop (or four times a second)
    daemon.start()
    client = SSEClient(daemon, "topic=t&last_event_id=0")
    assert [client.next(5).id for _ in range(3)] == [first, second, third]
    client.close()
