"""Opening the daemon's SQLite files: one way, so every store has the same guarantees."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

from .files import create_private, private_dir

Synchronous = Literal["FULL", "NORMAL"]


def open_database(
    path: Path, synchronous: Synchronous = "FULL", readonly: bool = False
) -> sqlite3.Connection:
    """A connection usable from any thread (one at a time), in autocommit mode.

    Writable connections use WAL; ``synchronous=FULL`` makes a commit durable when it
    returns (what "200 means stored" rests on), ``NORMAL`` may lose the last commits
    on power loss but never corrupts.  A read-only connection cannot write at all.
    """
    if readonly:
        db = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        db.execute("PRAGMA query_only=1")
    else:
        private_dir(path.parent)
        create_private(path)  # 0600: SQLite gives its -wal and -shm files this mode
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("PRAGMA busy_timeout=5000")
    return db
