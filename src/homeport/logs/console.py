"""Each stored record as one human line on the daemon's own output.

``2026-11-20 16:16:00  app.worker  ERROR  Mapper failed ...`` (local time of the daemon),
as the seed article's ``__print_entry`` did.  Multi-line messages are folded onto the one
line (newlines shown as ``\\n``); a traceback adds its last line in brackets.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from typing import TextIO

from .record import Record
from .store import Stored

MAX_LINE = 2000


@functools.lru_cache(maxsize=64)
def _stamp(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


def format_line(record: Record) -> str:
    stamp = _stamp(math.floor(record.created))  # a busy second's records share one
    message = record.message
    exc_text = record.exc_text
    if exc_text:
        last = exc_text.rstrip().rsplit("\n", 1)[-1].strip()
        if last:
            message = f"{message}  [{last}]"
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    if len(message) > MAX_LINE:
        message = message[:MAX_LINE] + "..."
    return f"{stamp}  {record.logger}  {record.levelname}  {message}"


class ConsolePrinter:
    """A stored-records listener that writes one line per record, one write per batch.

    It writes to the real standard output (``sys.__stdout__``): ``twist`` redirects
    ``sys.stdout`` into its own log, which would wrap every line in a second timestamp.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else (sys.__stdout__ or sys.stdout)

    def __call__(self, stored: Stored) -> None:
        if not stored:
            return
        text = "".join(format_line(record) + "\n" for _, record, _, _ in stored)
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stdout must not stop ingest
            pass
