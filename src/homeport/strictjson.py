"""JSON as RFC 8259 has it, for what clients send.

Python's :func:`json.loads` also reads ``NaN``, ``Infinity``, ``-Infinity`` and numbers
that overflow a float (``1e999`` becomes ``inf``), and :func:`json.dumps` writes those
back out as ``NaN``/``Infinity``: text that SQLite's JSON functions refuse (so a whole
group commit or history flush would fail with it), that browsers' ``JSON.parse`` and
Go clients refuse too.  So what comes in is read here: strictly, or keeping such
numbers as their text.

It refuses arrays and objects nested deeper than :data:`MAX_DEPTH` (:class:`TooDeep`, a
``json.JSONDecodeError``, so every caller's "malformed JSON" answer covers it) instead of
letting Python's decoder run out of stack.

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


#: The deepest nesting of arrays and objects accepted.  Python's decoder gives up a little
#: under 1000 levels with a RecursionError, and what it did decode would then fail later,
#: in an encoder or a walk over it; no client sends more than a few levels.
MAX_DEPTH = 512


class TooDeep(json.JSONDecodeError):
    """Arrays and objects nested deeper than :data:`MAX_DEPTH`: refused, with the reason."""

    def __init__(self, text: str | bytes) -> None:
        doc = text if isinstance(text, str) else text[:64].decode("utf-8", "replace")
        super().__init__(f"nested too deeply (over {MAX_DEPTH} levels)", doc, 0)


def _too_deep(text: str | bytes, value: Any) -> bool:
    """Whether *value* nests deeper than MAX_DEPTH (walked only when *text* has that
    many brackets at all: two C-speed counts for every ordinary body)."""
    opening = ("[", "{") if isinstance(text, str) else (b"[", b"{")
    if text.count(opening[0]) + text.count(opening[1]) <= MAX_DEPTH:  # type: ignore[arg-type]
        return False
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _decoded(text: str | bytes, **hooks: Any) -> Any:
    try:
        value = json.loads(text, **hooks)
    except RecursionError:
        raise TooDeep(text) from None
    if _too_deep(text, value):
        raise TooDeep(text)
    return value


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
    return _scrubbed(text, _decoded(text, parse_constant=_constant, parse_float=_float))


def loads_keeping_text(text: str | bytes) -> Any:
    """:func:`json.loads`, with NaN, Infinity and overflowing numbers kept as text."""
    value = _decoded(text, parse_constant=str, parse_float=_float_or_text)
    return _scrubbed(text, value)
