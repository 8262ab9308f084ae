"""The data dir's files are the daemon's alone: the dir 0700, every file in it 0600.

KV values, log records and the event history are in there, so no other account on the
host may read them, whatever the umask the daemon was started with.  A mode given to
``os.open``/``mkdir`` is only ever narrowed by the umask, so creating with 0600/0700 is
enough; SQLite creates a database 0644 (less the umask), which is why
:func:`create_private` makes the file first: SQLite gives its ``-wal`` and ``-shm``
files the database file's own mode, whatever the umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
#: The bits no one but the owner may have.
_OTHERS = 0o077


def private_dir(path: Path) -> int | None:
    """Create *path* (and missing parents) 0700; None when it was made now, else the
    mode of the existing directory (to warn about when wider than 0700)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        os.chmod(path, PRIVATE_DIR)  # the umask may have taken the owner's bits too
        return None
    return mode


def create_private(path: Path) -> None:
    """Make sure *path* exists with no access for others (created 0600 if missing)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    tighten(path)


def open_private(path: Path, mode: str = "w") -> IO[str]:
    """*path* opened to write text (created or truncated), 0600 even if it existed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, mode, encoding="utf-8")


def tighten(path: Path) -> bool:
    """Take group and other access off *path*; True when there was some."""
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    if not mode & _OTHERS or stat.S_ISLNK(st.st_mode):
        return False  # a link's own mode means nothing; chmod would follow it
    os.chmod(path, mode & ~_OTHERS)
    return True


def tighten_tree(root: Path) -> list[Path]:
    """Every file and directory under *root* (not *root* itself, nor through symbolic
    links) without group or other access; the paths that had some."""
    changed: list[Path] = []
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            path = Path(directory, name)
            if tighten(path):
                changed.append(path)
    return changed
