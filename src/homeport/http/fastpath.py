"""The read fast path: a plain GET answered from the channel, before twisted.web.

A Consul watcher, a dashboard or Prometheus polls the same few URLs over keep-alive
connections, and the API already holds each answer encoded (``ApiResource``'s cache).
Building a twisted.web ``Request`` for each poll (headers object, resource traversal,
producers) costs more than the answer; this module lets the channel recognise the
simplest requests and hand back the cached bytes at once, the way DNS cache hits are
answered in the read loop.

Only what is certainly simple takes it: one whole ``GET``/``HEAD`` request in one read,
HTTP/1.1 keep-alive, no body, no header outside a short list of ones the API ignores for
cached reads.  The head is parsed by llhttp (``httptools``), and the request line it
reports must be byte-for-byte the one on the wire.  Everything else, and anything llhttp
refuses, goes to twisted.web exactly as it came, which answers it as it always did.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httptools
from twisted.web import server
from twisted.web.http import datetimeToString

#: Request headers that change nothing in a cached read's answer (the API ignores them
#: for reads; ``Connection`` is checked to be ``keep-alive``).  Any other header, or a
#: second copy of one of these, sends the request to twisted.web.
IGNORED = frozenset(
    {
        b"host",
        b"user-agent",
        b"accept",
        b"accept-encoding",
        b"accept-language",
        b"connection",
        b"cache-control",
        b"pragma",
        b"referer",
        b"x-request-id",
        b"traceparent",
        b"tracestate",
        # the API's answerer resolves it (--acl) or sends the request on
        b"x-consul-token",
    }
)

#: What answers a fast read: (method, URI, headers) -> the answer's bytes before and
#: after the ``Date`` header's value, or None to let twisted.web answer.
Answerer = Callable[[bytes, bytes, dict[bytes, bytes]], "tuple[bytes, bytes] | None"]


class _Head:
    """httptools' callbacks: collect one request head, count messages."""

    __slots__ = ("begun", "complete", "duplicate", "headers", "url")

    def __init__(self) -> None:
        self.begun = 0
        self.complete = 0
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.duplicate = False

    def on_message_begin(self) -> None:
        self.begun += 1

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in self.headers:
            self.duplicate = True
        self.headers[name] = value

    def on_message_complete(self) -> None:
        self.complete += 1


def simple_get(data: bytes) -> tuple[bytes, bytes, dict[bytes, bytes]] | None:
    """``(method, uri, headers)`` if *data* is exactly one plain keep-alive HTTP/1.1
    ``GET`` or ``HEAD`` with no body and only ignorable headers; else None."""
    if not (data.startswith((b"GET /", b"HEAD /")) and data.endswith(b"\r\n\r\n")):
        return None
    head = _Head()
    parser = httptools.HttpRequestParser(head)
    try:
        parser.feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None  # twisted.web gives its own answer
    if head.begun != 1 or head.complete != 1 or head.duplicate:
        return None
    if parser.get_http_version() != "1.1" or not parser.should_keep_alive():
        return None
    method = parser.get_method()
    line = data[: data.index(b"\r\n")]
    if line != method + b" " + head.url + b" HTTP/1.1":
        return None  # llhttp read the line differently from the bytes: not ours
    headers = head.headers
    if not IGNORED.issuperset(headers):
        return None
    connection = headers.get(b"connection")
    if connection is not None and connection.strip().lower() != b"keep-alive":
        return None
    return method, head.url, headers


class Date:
    """The ``Date`` header's value, formatted once a second."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.second = -1
        self.value = b""

    def __call__(self) -> bytes:
        now = int(self.clock())
        if now != self.second:
            self.second = now
            self.value = datetimeToString(now)
        return self.value


def status_line(code: int, reason: bytes) -> bytes:
    """What twisted.web writes before a cached answer's ``Date`` value."""
    return b"HTTP/1.1 %d %s\r\nServer: %s\r\nDate: " % (code, reason, server.version)
