"""The daemon's own log: one readable line per event, or clean JSON for log shippers.

``twist`` writes Twisted's JSON whenever its output is not a terminal (so in every
container), with fields such as ``"log_logger": {"unpersistable": true}`` that mean
nothing to a reader.  homeport writes, by default and everywhere::

    2026-12-03T07:01:02.345Z INFO  catalog  Registered service web (web-1) node=n1

(time in UTC, level, the part that logged, the message, then the event's other fields
as ``key=value``; a traceback follows on indented lines), and with
``twist --log-format json homeport`` one JSON object per line with the same facts as
plain values (``time``, ``level``, ``part``, ``namespace``, ``message``, the fields,
``traceback``).
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, LogLevel, formatEvent
from twisted.python.failure import Failure

#: Keys of Twisted's own bookkeeping (and of legacy ``twisted.python.log`` events).
_LEGACY = frozenset({"message", "isError", "system", "format", "time", "why", "failure"})
_IDENTIFIER_SAFE = frozenset(string.ascii_letters + string.digits + "-_.:/@")
#: Twisted's per-connection bookkeeping: a line for every outgoing HTTP or TCP check
#: says nothing an operator wants to read.
_NOISE = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})


def part_of(namespace: str) -> str:
    """``homeport.catalog.store.CatalogStore`` -> ``catalog``; ``homeport`` -> ``homeport``;
    Twisted's own (``twisted.internet.base``, legacy ``log.msg``) -> ``twisted``."""
    if namespace.startswith("homeport."):
        return namespace.split(".")[1]
    if namespace == "log_legacy" or namespace.startswith("twisted"):
        return "twisted"
    return namespace or "-"


def _placeholders(log_format: str | None) -> set[str]:
    """The top-level field names a format string uses (``{route.name}`` -> ``route``)."""
    if not log_format:
        return set()
    names: set[str] = set()
    try:
        for _, field, _, _ in string.Formatter().parse(log_format):
            if field:
                names.add(field.split(".")[0].split("[")[0])
    except ValueError:  # a malformed format: formatEvent says so in the message
        pass
    return names


def fields(event: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """The event's own fields: not Twisted's, not already in the message."""
    used = _placeholders(event.get("log_format"))
    for key in sorted(event):
        if key.startswith("log_") or key in _LEGACY or key in used:
            continue
        yield key, event[key]


def _level(event: dict[str, Any]) -> str:
    level = event.get("log_level")
    if isinstance(level, type(LogLevel.info)):
        return str(level.name)
    return "error" if event.get("isError") else "info"


def _message(event: dict[str, Any]) -> str:
    if "log_format" in event or "log_failure" not in event:
        text = formatEvent(event)
    else:
        text = ""
    if not text and "message" in event:  # legacy twisted.python.log.msg("...")
        text = " ".join(str(m) for m in event["message"])
    if not text and isinstance(event.get("why"), str):
        text = event["why"]
    return text


def _traceback(event: dict[str, Any]) -> str | None:
    failure = event.get("log_failure")
    if not isinstance(failure, Failure):
        return None
    try:
        return failure.getTraceback().rstrip("\n")
    except Exception as e:  # noqa: BLE001 - a log line must come out whatever the failure holds
        return f"(the traceback could not be formatted: {e!r})"


def _timestamp(event: dict[str, Any]) -> str:
    when = float(event.get("log_time") or time.time())
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
    return f"{whole}.{int(when % 1 * 1000):03d}Z"


def _value_text(value: Any) -> str:
    text = value if isinstance(value, str) else _plain(value)
    if isinstance(text, str) and text and set(text) <= _IDENTIFIER_SAFE:
        return text
    return json.dumps(text, ensure_ascii=False, default=str)


def _plain(value: Any) -> Any:
    """*value* as JSON can hold it: numbers, text, lists and objects; anything else as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _said(event: dict[str, Any]) -> tuple[str, str | None] | None:
    """The event's message and traceback; None when there is nothing worth a line."""
    if event.get("log_format") in _NOISE:
        return None
    message = _message(event)
    traceback = _traceback(event)
    if not message and traceback is None:
        return None
    return message, traceback


def format_text(event: dict[str, Any]) -> str | None:
    """One line (plus an indented traceback) for *event*; None for an empty event."""
    said = _said(event)
    if said is None:
        return None
    message, traceback = said
    extra = " ".join(f"{k}={_value_text(v)}" for k, v in fields(event))
    part = part_of(str(event.get("log_namespace", "-")))
    line = f"{_timestamp(event)} {_level(event).upper():<5} {part}  {message}"
    if extra:
        line += f"  {extra}"
    if traceback is not None:
        line += "\n" + "\n".join("    " + t for t in traceback.splitlines())
    return line + "\n"


def format_json(event: dict[str, Any]) -> str | None:
    """One JSON object per line: the same facts as :func:`format_text`, as values."""
    said = _said(event)
    if said is None:
        return None
    message, traceback = said
    namespace = str(event.get("log_namespace", "-"))
    record: dict[str, Any] = {
        "time": _timestamp(event),
        "level": _level(event),
        "part": part_of(namespace),
        "namespace": namespace,
        "message": message,
    }
    for key, value in fields(event):
        record.setdefault(key, _plain(value))
    if traceback is not None:
        record["traceback"] = traceback
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


def text_observer(out: IO[Any]) -> ILogObserver:
    """A ``fileLogObserverFactory`` for ``twist``: readable lines."""
    return FileLogObserver(out, format_text)


def json_observer(out: IO[Any]) -> ILogObserver:
    """A ``fileLogObserverFactory`` for ``twist``: clean JSON lines."""
    return FileLogObserver(out, format_json)


def asked_for_json(argv: Sequence[str], command: str = "homeport") -> bool:
    """Did the twist command line (before *command*) say ``--log-format json``?"""
    before = list(argv[: argv.index(command)]) if command in argv else list(argv)
    for i, word in enumerate(before):
        if word.startswith("--log-format="):
            return word.split("=", 1)[1].lower() == "json"
        if word == "--log-format" and i + 1 < len(before):
            return before[i + 1].lower() == "json"
    return False


def choose(argv: Sequence[str]) -> Callable[[IO[Any]], ILogObserver]:
    """The observer factory for this command line: JSON only when asked for."""
    return json_observer if asked_for_json(argv) else text_observer
