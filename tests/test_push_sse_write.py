"""How SSE frames reach the socket: written to the transport while it takes them, held
by the connection while it is full, and written again when it drains.

These tests make the socket refuse part of the frames (a reader with a tiny receive
buffer that stops reading) and check that nothing is lost, split wrongly or reordered,
over HTTP/1.1 (chunked) and HTTP/1.0 (raw).
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import time
from pathlib import Path

import pytest

from .daemon import DaemonFactory
from .test_tls_daemon import free_port
from .test_tls_memory import LocalCA

# 120 x 64 KB: over what the kernel buffers for a stalled loopback reader (the sender's
# buffer grows to tcp_wmem's 4 MiB), under the queue limit given to the daemon.
EVENTS = 120
PAYLOAD = "x" * 64_000


def dechunk(body: bytes) -> bytes:
    """The payload of an HTTP/1.1 chunked body (as much as is complete)."""
    out = bytearray()
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end == -1:
            return bytes(out)
        size = int(body[pos:end], 16)
        if size == 0 or end + 2 + size + 2 > len(body):
            return bytes(out)
        assert body[end + 2 + size : end + 4 + size] == b"\r\n", "a chunk is not terminated"
        out += body[end + 2 : end + 2 + size]
        pos = end + 4 + size


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_a_reader_that_stalls_later_gets_every_frame_whole_and_in_order(
    daemon_factory: DaemonFactory, version: str
) -> None:
    """A reader with a 4 KiB receive buffer stops reading while 7.7 MB of events are
    published (so the socket takes some frames whole, some in part, some not at all);
    when it reads again it gets every event once, in order, each frame whole (and, over
    HTTP/1.1, correctly chunked)."""
    daemon = daemon_factory().start(["--sse-queue-limit", "16MiB"])
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", daemon.http_port))
    reader.sendall(f"GET /v1/events?topic=stall {version}\r\nHost: x\r\n\r\n".encode())
    reader.settimeout(10)
    head = b""
    while b"\r\n\r\n" not in head:
        head += reader.recv(4096)
    headers, _, body = head.partition(b"\r\n\r\n")
    assert headers.startswith(version.encode() + b" 200"), headers
    chunked = b"transfer-encoding: chunked" in headers.lower()
    assert chunked == (version == "HTTP/1.1")

    publisher = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=10)
    ids = []
    for n in range(EVENTS):
        publisher.request("POST", "/v1/events/stall", body=f"{n} {PAYLOAD}".encode())
        response = publisher.getresponse()
        assert response.status == 200
        ids.append(int(response.read().split(b'"id": ')[1].split(b",")[0]))
    publisher.close()

    data = bytearray(body)
    deadline = time.monotonic() + 20
    last = f"id: {ids[-1]}\n".encode()  # inside one chunk: chunk headers cannot split it
    end = b"\n\n\r\n" if chunked else b"\n\n"
    while time.monotonic() < deadline:
        if data.find(last, max(0, len(data) - (1 << 17))) != -1 and data.endswith(end):
            break
        data += reader.recv(1 << 16)
    reader.close()
    text = dechunk(bytes(data)) if chunked else bytes(data)
    frames = re.findall(rb"id: (\d+)\nevent: stall\ntime: [\d.]+\ndata: (\d+) (x*)\n\n", text)
    assert [int(f[0]) for f in frames] == ids
    assert [int(f[1]) for f in frames] == list(range(EVENTS))
    assert all(f[2] == PAYLOAD.encode() for f in frames)
    # Nothing but the preamble, the frames and perhaps heartbeats.
    rest = re.sub(rb"id: \d+\nevent: stall\ntime: [\d.]+\ndata: \d+ x*\n\n", b"", text)
    assert rest.replace(b": heartbeat\n\n", b"") == b"retry: 2000\n: homeport events\n\n"


def test_over_tls_a_reader_that_stalls_gets_every_frame_through_the_tls_transport(
    tmp_path: Path, daemon_factory: DaemonFactory
) -> None:
    """An ``ssl:`` listener's stream is never sent on its socket directly (that would
    skip the encryption): a TLS reader that stops reading while 2.5 MB are published
    then reads every event, once, in order, decrypted and correctly chunked."""
    ca = LocalCA()
    (tmp_path / "server.pem").write_bytes(ca.pem_file(["localhost"]))
    port = free_port()
    listener = f"ssl:{port}:privateKey={tmp_path / 'server.pem'}:interface=127.0.0.1"
    daemon_factory(["--http", listener]).start()
    context = ssl.create_default_context(cadata=ca.pem.decode())
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    reader = context.wrap_socket(raw, server_hostname="localhost")
    reader.settimeout(10)
    reader.sendall(b"GET /v1/events?topic=tls HTTP/1.1\r\nHost: localhost\r\n\r\n")
    head = b""
    while b": homeport events\n\n" not in head:
        head += reader.recv(4096)
    publisher = http.client.HTTPSConnection("localhost", port, timeout=10, context=context)
    ids = []
    for n in range(40):
        publisher.request("POST", "/v1/events/tls", body=f"{n} {PAYLOAD}".encode())
        response = publisher.getresponse()
        assert response.status == 200
        ids.append(json.loads(response.read())["id"])
    publisher.close()
    data = bytearray(head.partition(b"\r\n\r\n")[2])
    last = f"id: {ids[-1]}\n".encode()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if data.find(last, max(0, len(data) - (1 << 17))) != -1 and data.endswith(b"\n\n\r\n"):
            break
        data += reader.recv(1 << 16)
    reader.close()
    frames = re.findall(
        rb"id: (\d+)\nevent: tls\ntime: [\d.]+\ndata: (\d+) (x*)\n\n", dechunk(bytes(data))
    )
    assert [int(f[0]) for f in frames] == ids
    assert all(f[2] == PAYLOAD.encode() for f in frames)
