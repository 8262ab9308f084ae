"""The log writer child: ``python -m homeport.logs.writer LOGS.sqlite3``.

:class:`~homeport.logs.store.LogStore` prepares each batch on the reactor thread and a
writer (see :mod:`homeport.logs.writers`) runs its INSERT.  The daemon's writer is this
program: it owns the write connection, reads frames on its standard input, runs each
and answers on its standard output, in order.  It imports no Twisted (only SQLite, JSON
and the log database), so that it starts fast (``python -X importtime``).

It ignores SIGINT and SIGTERM and ends when its input does: the daemon decides when
writing stops.  A daemon killed with ``kill -9`` leaves a child that finishes the
commit it has (or refuses a frame it got only part of) and exits quietly: an answer no
one is left to read is not an error.

The pipe protocol: each frame is a kind byte, a 4-byte big-endian length and a payload.
To the child: ``I`` + the INSERT's JSON parameter, or ``J`` + ``[operation, args]``
(``prune``).  From the child, one answer per frame, in order: ``K`` + the result as
JSON, or ``E`` + an error message.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .database import LogDatabase

HEADER = struct.Struct("!cI")
# The jobs a writer runs besides inserts, by name (a child cannot be sent a function).
JOBS: dict[str, Callable[..., Any]] = {"prune": LogDatabase.prune}
# Room in the input pipe for a whole batch (Linux's default is 64 KiB): the reactor then
# hands a batch over in one write, not in pieces between its other work.
PIPE_SIZE = 1 << 20


def insert_frame(param: str) -> bytes:
    payload = param.encode("utf-8")
    return HEADER.pack(b"I", len(payload)) + payload


def job_frame(operation: str, args: list[Any]) -> bytes:
    payload = json.dumps([operation, args]).encode()
    return HEADER.pack(b"J", len(payload)) + payload


def run_frame(database: LogDatabase, kind: bytes, payload: bytes) -> bytes:
    """Do what one frame asks of *database*; the answer frame."""
    try:
        if kind == b"I":
            database.write_param(payload.decode("utf-8"))
            result: Any = None
        elif kind == b"J":
            operation, args = json.loads(payload)
            result = JOBS[operation](database, *args)
        else:
            raise ValueError(f"unknown frame kind {kind!r}")
        answer = json.dumps(result).encode()
        return HEADER.pack(b"K", len(answer)) + answer
    except Exception as e:  # noqa: BLE001, RUF100 - blind on purpose, see below
        # Every frame gets an answer, the error as an E frame, or the store waits for ever.
        message = f"{type(e).__name__}: {e}".encode()
        return HEADER.pack(b"E", len(message)) + message


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def serve(path: Path, inp: BinaryIO, out: BinaryIO) -> bool:
    """The child's loop: frames in, answers out, until the input ends.  False if it
    ended because no one reads the answers any more (the daemon is gone)."""
    database = LogDatabase(path)
    try:
        while (header := _read_exactly(inp, HEADER.size)) is not None:
            kind, length = HEADER.unpack(header)
            payload = _read_exactly(inp, length)
            if payload is None:
                break  # the sender died mid-frame: none of it is written
            answer = run_frame(database, kind, payload)
            try:
                out.write(answer)
                out.flush()
            except BrokenPipeError:
                return False  # the frame is done (committed, or refused); no one asks
    finally:
        database.close()
    return True


def _widen(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except OSError:  # not a pipe, not Linux, or above the system's limit: as it is
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m homeport.logs.writer LOGS.sqlite3\n")
        return 2
    # The daemon ends the child by closing its input, after the last commit it wants.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _widen(sys.stdin.fileno())
    if not serve(Path(argv[1]), sys.stdin.buffer, sys.stdout.buffer):
        # What could not be written stays in stdout's buffer: send it nowhere, or the
        # interpreter's last flush prints the BrokenPipeError after all.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
