"""Helpers the bench scripts share (they run as `python3 bench/NAME.py`, so this file
is importable as `benchlib`)."""

from __future__ import annotations

import socket
import time
import urllib.request


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20) -> bytes:
    """GET *url* until it answers 2xx (a server starting up); its body."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bytes(r.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
