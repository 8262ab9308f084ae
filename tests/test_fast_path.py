"""The read fast path (``homeport.http.fastpath``) against the real daemon.

Two daemons start from copies of one data dir, one with the fast path (the default) and
one with ``--no-fast-path``: every request, well-formed or mangled, must get the same
bytes from both (``Date`` aside), and ``homeport_http_fast_answers_total`` shows which
requests the fast path really answered.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .daemon import Daemon

DATE = re.compile(rb"\r\nDate: [^\r\n]*\r\n")

#: Reads the fast path answers once twisted.web has answered them once.
READS = [
    "/v1/catalog/services",
    "/v1/catalog/service/web",
    "/v1/catalog/service/web?tag=blue",
    "/v1/health/service/web?passing",
    "/v1/catalog/nodes",
    "/v1/kv/app/config",
    "/v1/kv/app/?recurse",
    "/v1/kv/missing",
    "/v1/agent/services",
]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    """(fast, slow): two daemons on copies of one data dir."""
    fast = Daemon(workdir=tmp_path_factory.mktemp("fast")).start()
    for port, tag in ((80, "blue"), (81, "green")):
        fast.request(
            "PUT",
            "/v1/agent/service/register",
            {"Name": "web", "ID": f"web-{port}", "Port": port, "Tags": [tag]},
        )
    fast.request("PUT", "/v1/kv/app/config", b"debug=1")
    fast.request("PUT", "/v1/kv/app/name", b"shop")
    fast.stop()
    slow = Daemon(workdir=tmp_path_factory.mktemp("slow"))
    shutil.copytree(fast.data_dir, slow.data_dir)
    fast.start()
    slow.start(["--no-fast-path"])
    for daemon in (fast, slow):
        for path in READS:  # twisted.web answers each once: now they are cached
            exchange(daemon, get(path))
    try:
        yield fast, slow
    finally:
        fast.stop()
        slow.stop()


def get(path: str, method: str = "GET", headers: str = "Host: 127.0.0.1\r\n") -> bytes:
    return f"{method} {path} HTTP/1.1\r\n{headers}\r\n".encode()


def read_answer(sock: socket.socket, head: bool = False) -> bytes:
    """One HTTP answer: the head, then Content-Length bytes (or up to the close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    top, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"\r\ncontent-length: *(\d+)", top, re.IGNORECASE)
    if head or top.startswith((b"HTTP/1.1 1", b"HTTP/1.1 204", b"HTTP/1.1 304")):
        return data
    if length is None:
        while chunk := sock.recv(65536):
            body += chunk
        return top + b"\r\n\r\n" + body
    while len(body) < int(length.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return top + b"\r\n\r\n" + body


def exchange(
    daemon: Daemon, *requests: bytes, together: bool = False, timeout: float = 10
) -> list[bytes]:
    """Send *requests* on one connection (one by one, or all in one write) and read one
    answer each, with ``Date`` taken out (and ``<timeout>`` where none came)."""
    answers: list[bytes] = []
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=timeout) as sock:
        if together:
            sock.sendall(b"".join(requests))
        for request in requests:
            if not together:
                sock.sendall(request)
            try:
                answer = read_answer(sock, request[:4] == b"HEAD")
            except TimeoutError:
                answers.append(b"<timeout>")
                break
            answers.append(DATE.sub(b"\r\nDate: -\r\n", answer))
    return answers


def fast_answers(daemon: Daemon) -> int:
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10) as sock:
        sock.sendall(get("/metrics", headers="Host: x\r\nConnection: close\r\n"))
        text = b""
        while chunk := sock.recv(65536):
            text += chunk
    found = re.search(rb"^homeport_http_fast_answers_total (\S+)$", text, re.MULTILINE)
    assert found is not None, text[-500:]
    return int(float(found.group(1)))


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_cached_reads_are_answered_fast_with_the_same_bytes(
    pair: tuple[Daemon, Daemon], path: str, method: str
) -> None:
    fast, slow = pair
    before = fast_answers(fast)
    request = get(path, method, "Host: 127.0.0.1\r\nUser-Agent: test\r\nAccept: */*\r\n")
    quick = exchange(fast, request, request)
    assert fast_answers(fast) == before + 2
    assert quick == exchange(slow, request, request)
    assert fast_answers(slow) == 0
    assert quick[0].startswith((b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 404 Not Found\r\n"))
    assert b"X-Consul-Index: " in quick[0]


@pytest.mark.parametrize(
    ("request_bytes", "together"),
    [
        # pipelined: two requests in one read
        (get("/v1/catalog/services") * 2, True),
        # HTTP/1.0 and an explicit close end the connection: twisted.web answers them
        (b"GET /v1/catalog/services HTTP/1.0\r\n\r\n", False),
        (get("/v1/catalog/services", headers="Host: x\r\nConnection: close\r\n"), False),
        # a header the fast path does not know, a body, a duplicate header, CORS
        (get("/v1/catalog/services", headers="Host: x\r\nX-Consul-Token: t\r\n"), False),
        (get("/v1/catalog/services", headers="Host: x\r\nContent-Length: 0\r\n"), False),
        (get("/v1/catalog/services", headers="Host: x\r\nHost: y\r\n"), False),
        (get("/v1/catalog/services", headers="Host: x\r\nOrigin: http://a\r\n"), False),
        # a blocking query and a never-seen URL
        (get("/v1/catalog/services?index=1"), False),
        (get("/v1/catalog/services?stale"), False),
    ],
)
def test_anything_else_goes_to_twisted_web(
    pair: tuple[Daemon, Daemon], request_bytes: bytes, together: bool
) -> None:
    fast, slow = pair
    before = fast_answers(fast)
    count = request_bytes.count(b" HTTP/1.")
    requests = [request_bytes] if not together else [get("/v1/catalog/services")] * count
    if together:
        assert exchange(fast, *requests, together=True) == exchange(slow, *requests, together=True)
    else:
        assert exchange(fast, request_bytes) == exchange(slow, request_bytes)
    assert fast_answers(fast) == before


def test_a_request_split_over_two_reads_goes_to_twisted_web(pair: tuple[Daemon, Daemon]) -> None:
    fast, _ = pair
    before = fast_answers(fast)
    request = get("/v1/catalog/services")
    with socket.create_connection(("127.0.0.1", fast.http_port), timeout=10) as sock:
        sock.sendall(request[:20])
        time.sleep(0.2)
        sock.sendall(request[20:])
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert fast_answers(fast) == before


def test_a_write_makes_the_cached_answer_stale(tmp_path: Path) -> None:
    daemon = Daemon(workdir=tmp_path).start()
    try:
        request = get("/v1/kv/flag")
        daemon.request("PUT", "/v1/kv/flag", b"one")
        first = exchange(daemon, request, request)
        daemon.request("PUT", "/v1/kv/flag", b"two")
        second = exchange(daemon, request)[0]
        assert first[0] == first[1] != second
        assert b'"Value":"dHdv"' in second  # base64 of "two"
    finally:
        daemon.stop()


#: Bytes that break a request head in the ways parsers disagree about.
NASTY = st.sampled_from(
    [b" ", b"\t", b"\r", b"\n", b"\x00", b"\xff", b"%", b"%00", b"?", b"#", b"/..", b":", b"\r\n "]
)


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A cached read's request with bytes inserted, replaced or headers added."""
    method = draw(st.sampled_from(["GET", "HEAD", "get", "GET ", "HEAD\t"]))
    path = draw(st.sampled_from(READS))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.1 ", "HTTP/2", "http/1.1"]))
    extra = draw(
        st.lists(
            st.sampled_from(
                [
                    b"Host: 127.0.0.1",
                    b"Connection: keep-alive",
                    b"Connection: close",
                    b"Connection: Upgrade",
                    b"Upgrade: websocket",
                    b"Host:",
                    b"Host : x",
                    b" folded",
                    b"Accept: */*",
                    b"X: \x00",
                    b"Bad Header: x",
                ]
            ),
            max_size=4,
        )
    )
    raw = bytearray(
        f"{method} {path} {version}\r\n".encode() + b"".join(h + b"\r\n" for h in extra)
    )
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(raw)))
        raw[at:at] = draw(NASTY)
    return bytes(raw) + b"\r\n"


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(request=mangled())
def test_mangled_requests_get_twisted_web_s_answer(
    pair: tuple[Daemon, Daemon], request: bytes
) -> None:
    fast, slow = pair
    got = exchange(fast, request, timeout=3)
    want = exchange(slow, request, timeout=3)
    assert got == want, (request, got, want)
