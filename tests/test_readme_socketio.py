"""The README's Socket.IO client, run as written (only the port changed) against homeport
started with the README's options, receives what the README's ZeroMQ publisher sends."""

from __future__ import annotations

import ast
import selectors
import subprocess
import sys
import time
from typing import IO

from .daemon import DaemonFactory
from .test_readme_examples import daemon_options, example, free_port, ports


def readline(stream: IO[bytes], timeout: float = 20.0) -> str:
    """One line of *stream* (a child's stdout), or fail after *timeout* seconds."""
    line = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise AssertionError(f"no line within {timeout}s; got {line!r}")
            byte = stream.read(1)
            if not byte:
                raise AssertionError(f"the client exited; got {line!r}")
            line += byte
    return line.decode()


def test_the_readme_socketio_client_receives_the_published_event(
    daemon_factory: DaemonFactory,
) -> None:
    """It prints its subscription's ack, then ``<id> <data>`` for the publisher's event:
    the event named after its topic, its argument ``{"id": ..., "data": ...}``."""
    zmq_port = free_port()
    command = ports(example("events-daemon"), 8500, zmq=zmq_port, page=free_port())
    daemon = daemon_factory().start(daemon_options(command))
    client = ports(example("socketio-client"), daemon.http_port)
    publisher = ports(example("zmq-publisher"), daemon.http_port, zmq=zmq_port)
    process = subprocess.Popen(
        [sys.executable, "-u", "-c", client],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: what select() says is there is what read() gets
    )
    try:
        assert process.stdout is not None
        ack = readline(process.stdout)
        assert ast.literal_eval(ack) == {"topics": ["zmq/builds"]}, ack
        subprocess.run([sys.executable, "-c", publisher], check=True, timeout=30)
        line = readline(process.stdout)
        event_id, _, data = line.strip().partition(" ")
        assert int(event_id) > 0, line
        assert ast.literal_eval(data) == {"build": 42, "status": "green"}
    finally:
        process.kill()
        process.communicate(timeout=10)
