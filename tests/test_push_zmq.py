"""A real pyzmq publisher feeding the real daemon, read back over Server-Sent Events."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from homeport.push.zmq import decode_payload

from .daemon import Daemon, DaemonFactory
from .test_push_sse import SSE, SSEClient, publish


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def metric(daemon: Daemon, name: str) -> float:
    _, _, body = daemon.request("GET", "/metrics")
    match = re.search(rf"^{name} (\S+)$", body.decode(), re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def rss_kib(daemon: Daemon) -> int:
    assert daemon.process is not None
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1))


def send_until_received(pub: zmq.Socket[bytes], frames: list[bytes], daemon: Daemon) -> None:
    """PUB/SUB drops messages until the subscription has propagated: resend a warm-up
    message until the daemon counts one."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pub.send_multipart(frames)
        if metric(daemon, "homeport_zmq_received_total") > 0:
            return
        time.sleep(0.1)
    raise AssertionError("the daemon never received the ZeroMQ message")


def next_real(client: SSEClient) -> SSE:
    """The next event that is not a warm-up message."""
    while (event := client.next(5)).event and event.event.endswith("warmup"):
        pass
    return event


def test_multipart_single_frame_and_malformed_messages_with_connect(
    daemon_factory: DaemonFactory, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """The daemon connects to a PUB; good shapes become zmq/ events, bad ones are counted."""
    port = free_port()
    pub = context.socket(zmq.PUB)
    pub.bind(f"tcp://127.0.0.1:{port}")
    daemon = daemon_factory(["--zmq-connect", f"tcp://127.0.0.1:{port}"]).start()
    client = SSEClient(daemon, "topic=zmq/*")
    send_until_received(pub, [b"warmup", b"1"], daemon)
    pub.send_multipart([b"build", b'{"status": "green", "n": 42}'])
    pub.send_multipart([b"\xff\xfe-not-utf8", b"payload"])
    pub.send(b" no topic before the space")
    pub.send_multipart([b"ctl\x01char", b"x"])
    pub.send(b"sensor temp=21.5")
    pub.send_multipart([b"job", b"step 1", b"step 2"])
    events = [next_real(client) for _ in range(3)]
    assert [(e.event, e.data) for e in events] == [
        ("zmq/build", '{"status":"green","n":42}'),
        ("zmq/sensor", "temp=21.5"),
        ("zmq/job", '["step 1","step 2"]'),
    ]
    assert metric(daemon, "homeport_zmq_malformed_total") == 3
    assert metric(daemon, "homeport_zmq_received_total") >= 6
    assert "Dropped a ZeroMQ message" in daemon.output()
    assert daemon.process is not None and daemon.process.poll() is None


def test_bind_mode_and_topic_prefixes(
    daemon_factory: DaemonFactory, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """With --zmq-bind the publisher connects; --zmq-topic filters by prefix."""
    port = free_port()
    daemon = daemon_factory(
        ["--zmq-bind", f"tcp://127.0.0.1:{port}", "--zmq-topic", "keep"]
    ).start()
    pub = context.socket(zmq.PUB)
    pub.connect(f"tcp://127.0.0.1:{port}")
    client = SSEClient(daemon, "topic=zmq/*")
    send_until_received(pub, [b"keep/warmup", b""], daemon)
    pub.send_multipart([b"drop/this", b"no"])
    pub.send_multipart([b"keep/this", b"yes"])
    event = next_real(client)
    assert (event.event, event.data) == ("zmq/keep/this", "yes")


def test_a_bad_zmq_address_stops_start_up_with_one_line(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory(["--zmq-connect", "not-an-address"])
    with pytest.raises(RuntimeError, match="--zmq-connect 'not-an-address'"):
        daemon.start()
    assert "Traceback" not in daemon.output()


def open_stream(daemon: Daemon, query: str, receive_buffer: int, version: str) -> socket.socket:
    """A raw event stream with a receive buffer of *receive_buffer* bytes."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", daemon.http_port))
    sock.sendall(f"GET /v1/events?{query} {version}\r\nHost: x\r\n\r\n".encode())
    return sock


def read_until_marker(sock: socket.socket, received: bytearray, done: threading.Event) -> None:
    """Read *sock* into *received* until the ``marker`` event (or EOF); then set *done*."""
    sock.settimeout(20)
    while not done.is_set():
        try:
            data = sock.recv(1 << 20)
        except OSError:
            break
        if not data:
            break
        start = max(0, len(received) - 20)
        received.extend(data)
        if received.find(b"event: marker", start) != -1:
            break
    done.set()


def flood(pub: zmq.Socket[bytes], seconds: float) -> int:
    """Publish 2000-byte messages as fast as the loop goes for *seconds*; how many."""
    payload = b"x" * 2000
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(100):
            pub.send_multipart([b"flood", payload])
        sent += 100
        time.sleep(0.01)
    return sent


def read_to_the_end(sock: socket.socket) -> None:
    """Read what *sock* still has buffered until EOF or a reset, then close it."""
    sock.settimeout(10)
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        pass
    sock.close()


def test_a_flood_cuts_off_the_slow_reader_and_keeps_memory_bounded(
    daemon_factory: DaemonFactory, context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """A publisher outrunning a reader that never reads: that stream is closed at its
    queue limit, a reader that keeps up gets everything, and the daemon's memory stays
    bounded."""
    port = free_port()
    daemon = daemon_factory(
        ["--zmq-bind", f"tcp://127.0.0.1:{port}", "--sse-queue-limit", "4MiB"]
    ).start()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 10_000)
    pub.connect(f"tcp://127.0.0.1:{port}")
    fast = open_stream(daemon, "topic=zmq/*&topic=marker", 4 << 20, "HTTP/1.0")
    send_until_received(pub, [b"warmup", b""], daemon)
    slow = open_stream(daemon, "topic=zmq/*", 4096, "HTTP/1.1")

    received = bytearray()
    done = threading.Event()
    reader = threading.Thread(target=read_until_marker, args=(fast, received, done), daemon=True)
    reader.start()
    before = rss_kib(daemon)
    sent, trace = 0, []
    for _ in range(6):
        sent += flood(pub, 1.5)
        trace.append(rss_kib(daemon))
    publish(daemon, "marker", "the end")
    reader.join(30)
    assert done.is_set(), "the fast reader did not get to the end"
    assert b"event: marker" in received, "the fast reader was cut off"
    assert received.count(b"event: zmq/flood") > sent // 4
    # The slow reader was cut off: reading what was buffered ends in EOF or a reset.
    read_to_the_end(slow)
    assert metric(daemon, "homeport_sse_cut_off_total") >= 1
    # Bounded: the history's caps, ZeroMQ's high-water mark and the per-connection limit,
    # not the flood's size (sent * 2000 bytes, over 100 MB), decide what the daemon
    # holds.  RSS is a coarse gauge (freed memory is not always given back, and on a busy
    # box the queues fill to their caps first), so the test asks for a plateau: the last
    # half of the flood adds little to what the first third had grown to, and the whole
    # stays under a cap well below what was sent.
    assert max(trace[3:]) - trace[1] < 32 * 1024, (before, trace, sent)
    assert max(trace) - before < 128 * 1024, (before, trace, sent)
    assert daemon.get_json("/v1/catalog/services")


def test_a_payload_with_nan_is_text_not_json() -> None:
    """NaN and 1e999 parse in Python but are not JSON: the payload stays as it came."""
    assert decode_payload(b'{"load": NaN}') == '{"load": NaN}'
    assert decode_payload(b"[1e999]") == "[1e999]"
    assert decode_payload(b'{"load": 0.5}') == {"load": 0.5}
