"""JSON as RFC 8259 has it, for what clients send.

Python's :func:`json.loads` also reads ``NaN``, ``Infinity``, ``-Infinity`` and numbers
that overflow a float (``1e999`` becomes ``inf``), and :func:`json.dumps` writes those
back out as ``NaN``/``Infinity``: text that SQLite's JSON functions refuse (so a whole
group commit or history flush would fail with it), that browsers' ``JSON.parse`` and
Go clients refuse too.  So what comes in is read here: strictly, or keeping such
numbers as their text.

It also turns a lone UTF-16 surrogate escape (``"\\ud800"``) into U+FFFD, as Go's
decoder does: Python keeps it as a character no UTF-8 can encode, and the first write
of it (an HTTP answer, a log commit, an SSE frame) would raise.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class NotJSON(ValueError):
    """NaN, Infinity or a number out of a float's range: valid for Python, not JSON."""

    def __init__(self, text: str) -> None:
        super().__init__(f"{text} is not a JSON number")
        self.text = text


def _constant(name: str) -> Any:
    raise NotJSON(name)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotJSON(text)
    return value


def _float_or_text(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text


def scrub(value: Any) -> Any:
    """*value* with every lone surrogate in its strings (keys too) made U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if not value.isascii() else value
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    return value


def _scrubbed(text: str | bytes, value: Any) -> Any:
    escape = _SURROGATE_ESCAPE if isinstance(text, str) else _SURROGATE_ESCAPE_BYTES
    return scrub(value) if escape.search(text) else value  # type: ignore[arg-type]


def loads(text: str | bytes) -> Any:
    """:func:`json.loads`, refusing (:class:`NotJSON`) what JSON does not have."""
    return _scrubbed(text, json.loads(text, parse_constant=_constant, parse_float=_float))


def loads_keeping_text(text: str | bytes) -> Any:
    """:func:`json.loads`, with NaN, Infinity and overflowing numbers kept as text."""
    value = json.loads(text, parse_constant=str, parse_float=_float_or_text)
    return _scrubbed(text, value)
