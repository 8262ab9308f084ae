"""Start-up errors: what stops the daemon before it serves, said in one line."""

from __future__ import annotations

import sys
from typing import NoReturn


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the operator."""


def fail(message: str) -> NoReturn:
    """Print ``homeport: error: <message>`` and exit with status 1 (no traceback)."""
    sys.stderr.write(f"homeport: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(1)
