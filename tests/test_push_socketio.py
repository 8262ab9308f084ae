"""Socket.IO at /socket.io/ against real clients: python-socketio's and the official
JavaScript socket.io-client under node; and raw Engine.IO requests for bad input."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import socketio  # type: ignore[import-untyped]  # python-socketio ships no types

from .daemon import Daemon, DaemonFactory
from .test_push_sse import publish

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / ".build" / "node" / "node_modules"


def connect(daemon: Daemon, transports: list[str]) -> tuple[socketio.Client, list[Any]]:
    client = socketio.Client(reconnection=False)
    received: list[Any] = []
    client.on("demo", received.append)
    client.connect(daemon.url, transports=transports, wait_timeout=5)
    return client, received


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("transports", "final"),
    [
        (["polling"], "polling"),
        (["websocket"], "websocket"),
        (["polling", "websocket"], "websocket"),
    ],
)
def test_python_socketio_client_subscribes_and_receives_events(
    daemon: Daemon, transports: list[str], final: str
) -> None:
    """subscribe (acked) then emit(topic, {id, data}) for each event, on every transport
    and after the polling -> WebSocket upgrade."""
    client, received = connect(daemon, transports)
    try:
        assert client.call("subscribe", ["demo", "other"], timeout=5) == {
            "topics": ["demo", "other"]
        }
        event_id = publish(daemon, "demo", {"n": 1})
        publish(daemon, "unrelated", 0)
        wait_for(lambda: received)
        assert received == [{"id": event_id, "data": {"n": 1}}]
        wait_for(lambda: client.transport() == final)
        second = publish(daemon, "demo", "two")
        wait_for(lambda: len(received) == 2)
        assert received[1] == {"id": second, "data": "two"}
        assert client.call("unsubscribe", "demo", timeout=5) == {"topics": ["other"]}
        assert client.call("bogus", 1, timeout=5)["error"]
    finally:
        client.disconnect()


def test_subscribe_with_last_event_id_replays_history(daemon: Daemon) -> None:
    first = publish(daemon, "demo", "a")
    publish(daemon, "demo", "b")
    client, received = connect(daemon, ["websocket"])
    try:
        client.call("subscribe", {"topics": ["demo"], "last_event_id": first}, timeout=5)
        wait_for(lambda: received)
        assert [r["data"] for r in received] == ["b"]
    finally:
        client.disconnect()


def test_heartbeats_keep_a_session_alive_across_ping_intervals(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(
        ["--socketio-ping-interval", "300ms", "--socketio-ping-timeout", "300ms"]
    ).start()
    for transports in (["polling"], ["websocket"]):
        client, received = connect(daemon, transports)
        try:
            client.call("subscribe", "demo", timeout=5)
            time.sleep(1.5)
            publish(daemon, "demo", "still here")
            wait_for(lambda: received)  # noqa: B023 - called at once, inside the loop
            assert client.connected
        finally:
            client.disconnect()


NODE_SCRIPT = r"""
const { io } = require("socket.io-client");
const [url, mode] = process.argv.slice(2);
const opts = { reconnection: false, timeout: 5000 };
if (mode === "polling") { opts.transports = ["polling"]; opts.upgrade = false; }
if (mode === "websocket") { opts.transports = ["websocket"]; }
if (mode === "upgrade") { opts.transports = ["polling", "websocket"]; }
const socket = io(url, opts);
const out = (o) => console.log(JSON.stringify(o));
socket.io.on("open", () => {
  out({ opened: socket.io.engine.transport.name });
  socket.io.engine.on("upgrade", (t) => out({ upgraded: t.name }));
});
socket.on("connect", () => {
  socket.emit("subscribe", ["demo"], (ack) => {
    out({ ack });
    fetch(url + "/v1/events/demo", { method: "POST", body: JSON.stringify({ n: 7 }) });
  });
});
socket.on("demo", (msg) => {
  setTimeout(() => {
    out({ event: msg, transport: socket.io.engine.transport.name });
    socket.disconnect();
    process.exit(0);
  }, 500);
});
socket.on("connect_error", (e) => { out({ error: String(e) }); process.exit(2); });
setTimeout(() => { out({ error: "timeout" }); process.exit(3); }, 10000);
"""


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_MODULES / "socket.io-client").is_dir(),
    reason="node or socket.io-client is missing (./test installs it under .build/node)",
)
@pytest.mark.parametrize(
    ("mode", "first", "last"),
    [
        ("polling", "polling", "polling"),
        ("websocket", "websocket", "websocket"),
        ("upgrade", "polling", "websocket"),
    ],
)
def test_the_official_javascript_client_works_on_each_transport(
    daemon: Daemon, tmp_path: Path, mode: str, first: str, last: str
) -> None:
    script = tmp_path / "client.js"
    script.write_text(NODE_SCRIPT)
    result = subprocess.run(
        ["node", str(script), daemon.url, mode],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, NODE_PATH=str(NODE_MODULES)),
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert lines[0] == {"opened": first}
    assert ({"upgraded": "websocket"} in lines) == (mode == "upgrade")
    assert {"ack": {"topics": ["demo"]}} in lines
    assert lines[-1]["event"]["data"] == {"n": 7}
    assert lines[-1]["transport"] == last


# -- raw Engine.IO: bad input is an error for that client only ------------------------


def raw(daemon: Daemon, method: str, query: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=10)
    conn.request(method, "/socket.io/?" + query, body=body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def handshake(daemon: Daemon) -> dict[str, Any]:
    status, body = raw(daemon, "GET", "EIO=4&transport=polling")
    assert status == 200 and body.startswith(b"0"), body
    opened: dict[str, Any] = json.loads(body[1:])
    return opened


def test_the_handshake_announces_the_configured_heartbeat_and_payload_limit(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(
        [
            "--socketio-ping-interval",
            "10s",
            "--socketio-ping-timeout",
            "5s",
            "--socketio-max-payload",
            "4096",
        ]
    ).start()
    opened = handshake(daemon)
    assert opened["upgrades"] == ["websocket"]
    assert (opened["pingInterval"], opened["pingTimeout"], opened["maxPayload"]) == (
        10000,
        5000,
        4096,
    )
    sid = opened["sid"]
    assert raw(daemon, "POST", f"EIO=4&transport=polling&sid={sid}", b"40")[1] == b"ok"
    assert raw(daemon, "POST", f"EIO=4&transport=polling&sid={sid}", b"4" * 5000)[0] == 413
    # The oversized payload ended that session.
    assert raw(daemon, "GET", f"EIO=4&transport=polling&sid={sid}")[0] == 400


def test_bad_engineio_requests_get_400_and_other_sessions_carry_on(daemon: Daemon) -> None:
    good = handshake(daemon)["sid"]
    assert raw(daemon, "GET", "EIO=3&transport=polling")[0] == 400
    assert raw(daemon, "GET", "EIO=4&transport=carrier-pigeon")[0] == 400
    status, body = raw(daemon, "GET", "EIO=4&transport=polling&sid=nope")
    assert (status, json.loads(body)["code"]) == (400, 1)
    assert raw(daemon, "POST", "EIO=4&transport=polling", b"40")[0] == 400
    bad = handshake(daemon)["sid"]
    assert raw(daemon, "POST", f"EIO=4&transport=polling&sid={bad}", b"9garbage")[0] == 400
    assert raw(daemon, "GET", f"EIO=4&transport=polling&sid={bad}")[0] == 400
    before_connect = handshake(daemon)["sid"]
    assert (
        raw(daemon, "POST", f"EIO=4&transport=polling&sid={before_connect}", b'42["x"]')[0] == 400
    )
    # The first session is untouched.
    assert raw(daemon, "POST", f"EIO=4&transport=polling&sid={good}", b"40")[1] == b"ok"
    status, body = raw(daemon, "GET", f"EIO=4&transport=polling&sid={good}")
    assert status == 200 and body.startswith(b'40{"sid":')


def test_a_second_concurrent_poll_closes_the_session(daemon: Daemon) -> None:
    sid = handshake(daemon)["sid"]
    first: list[tuple[int, bytes]] = []
    parked = threading.Thread(
        target=lambda: first.append(raw(daemon, "GET", f"EIO=4&transport=polling&sid={sid}"))
    )
    parked.start()
    time.sleep(0.3)
    assert raw(daemon, "GET", f"EIO=4&transport=polling&sid={sid}")[0] == 400
    parked.join(10)
    assert first and first[0] == (200, b"1")  # the parked poll is told the session closed
    assert raw(daemon, "GET", f"EIO=4&transport=polling&sid={sid}")[0] == 400


def test_a_session_that_never_answers_pings_is_closed(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(
        ["--socketio-ping-interval", "200ms", "--socketio-ping-timeout", "200ms"]
    ).start()
    sid = handshake(daemon)["sid"]
    time.sleep(1.0)
    assert raw(daemon, "GET", f"EIO=4&transport=polling&sid={sid}")[0] == 400


@pytest.mark.parametrize("transports", [["polling"], ["websocket"]])
def test_an_event_with_binary_data_is_answered_not_dropped(
    daemon: Daemon, transports: list[str]
) -> None:
    """A BINARY_EVENT is put back together with its attachments and answered like any
    other: bytes are no topic, so the ack says why; the session carries on."""
    client, received = connect(daemon, transports)
    try:
        answer = client.call("subscribe", b"\x00demo\xff", timeout=5)
        assert "give a topic or a list of topics" in answer["error"]
        answer = client.call("subscribe", {"topics": ["demo"], "note": b"\x01\x02"}, timeout=5)
        assert answer == {"topics": ["demo"]}  # the attachment sat where nothing looks
        event_id = publish(daemon, "demo", "after binary")
        wait_for(lambda: received)
        assert received == [{"id": event_id, "data": "after binary"}]
    finally:
        client.disconnect()
