"""The shared parsers of sizes, ages and durations, for options and query arguments."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_AGE_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_AGE_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_size(text: str) -> int:
    """``1MiB``, ``512k``, ``1048576`` -> bytes; ValueError otherwise."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(text)
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * _SIZE_UNITS[unit]


def parse_age(text: str) -> float:
    """``15m``, ``1h30m``, ``7d``, ``2w``, ``500ms`` -> seconds; ValueError otherwise."""
    text = text.strip().lower()
    pos, total = 0, 0.0
    while pos < len(text):
        match = _AGE_PART.match(text, pos)
        if match is None:
            raise ValueError(text)
        total += float(match.group(1)) * _AGE_UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(text)
    return total


def parse_seconds(text: str) -> float:
    """A plain number of seconds (``2.5``) or an age (``25s``, ``500ms``)."""
    try:
        return float(text)
    except ValueError:
        return parse_age(text)


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT``; ValueError otherwise."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, str(default_port)
    host = host or "0.0.0.0"
    ipaddress.ip_address(host)
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(port)
    return host, port


# Go's durations, as Consul's API writes them (``?wait=1m30s``, ``"Interval": "10s"``).

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class DurationError(ValueError):
    pass


def parse_duration(value: Any) -> float:
    """Go's ``time.ParseDuration`` (``"1m30s"``), or a number of nanoseconds; in seconds."""
    if isinstance(value, bool):
        raise DurationError(repr(value))
    if isinstance(value, int | float):
        return float(value) / 1e9
    if not isinstance(value, str):
        raise DurationError(repr(value))
    text = value.strip()
    if text in ("", "0"):
        return 0.0
    sign = 1.0
    if text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    pos = 0
    total = 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise DurationError(f'time: invalid duration "{value}"')
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise DurationError(f'time: invalid duration "{value}"')
    return sign * total


def format_duration(seconds: float) -> str:
    """Go's ``Duration.String()``: ``10s``, ``1m30s``, ``1h0m0s``, ``500ms``, ``0s``."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        ns = round(seconds * 1e9)
        if ns < 1000:
            return f"{sign}{ns}ns"
        if ns < 1_000_000:
            return f"{sign}{_trim(ns / 1e3)}µs"
        return f"{sign}{_trim(ns / 1e6)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{_trim(secs)}s"
    if hours:
        return f"{sign}{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{sign}{int(minutes)}m{text}"
    return f"{sign}{text}"


def _trim(number: float) -> str:
    text = f"{number:.9f}".rstrip("0").rstrip(".")
    return text or "0"
