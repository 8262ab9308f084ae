"""Pure parsing of what log clients send into one structured :class:`Record`.

Stock ``logging.handlers.HTTPHandler`` sends ``urlencode(record.__dict__)``: every value
``str()``-ed, ``msg`` the raw template, ``args`` the ``repr`` of a tuple (or of a dict),
``None`` as ``"None"`` and ``extra=`` keys at top level.  This module turns that (and the
same fields as JSON objects, a JSON list, or NDJSON) back into typed data:

* the message is rendered as ``msg % args`` with ``args`` read by :func:`ast.literal_eval`
  (never ``eval``); when that is impossible ``msg`` and the raw ``args`` are kept and the
  reason goes to ``problems``;
* a field that cannot be read (a non-numeric ``levelno``, bad UTF-8) is stored as well as
  possible and noted in ``problems`` rather than refused;
* only input with no record in it at all (no ``msg``/``message``), malformed JSON, or
  a body of an unknown type is refused, with :class:`BadInput` carrying the reason.

Nothing here touches the network, the disk or the clock: ``now`` is passed in.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from .. import strictjson
from ..errors import error

# Every attribute of a logging.LogRecord (3.11-3.13), plus the ``message`` that a
# Formatter adds.  Anything else a client sends is an ``extra=`` field.
STANDARD_FIELDS = frozenset(
    {
        "name",
        "msg",
        "args",
        "levelname",
        "levelno",
        "pathname",
        "filename",
        "module",
        "exc_info",
        "exc_text",
        "stack_info",
        "lineno",
        "funcName",
        "created",
        "msecs",
        "relativeCreated",
        "thread",
        "threadName",
        "processName",
        "process",
        "taskName",
        "message",
        "asctime",
    }
)
_INT_FIELDS = ("lineno", "thread", "process")
_FLOAT_FIELDS = ("msecs", "relativeCreated")
_TEXT_FIELDS = (
    "pathname",
    "filename",
    "module",
    "funcName",
    "threadName",
    "processName",
    "taskName",
    "exc_info",
    "exc_text",
    "stack_info",
)
LEVEL_NAMES = {
    "NOTSET": 0,
    "DEBUG": 10,
    "INFO": 20,
    "WARN": 30,
    "WARNING": 30,
    "ERROR": 40,
    "FATAL": 50,
    "CRITICAL": 50,
}
MAX_WIDTH = 10_000
# A printf conversion: flags, width, precision, length, type.
_CONVERSION = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.S)
_FORM_SPLIT = re.compile(rb"&")  # as parse_qsl since Python 3.10: ';' is data


@error
class BadInput(Exception):
    """The input holds no record that can be stored; ``reason`` says why (for a 400)."""

    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Record:
    """One log record as stored: typed standard fields, the rest as ``extra``."""

    created: float
    levelno: int
    levelname: str
    logger: str
    message: str
    msg: str
    args: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def exc_text(self) -> str | None:
        value = self.fields.get("exc_text")
        return value if isinstance(value, str) else None

    def to_json(self, id: int | None = None) -> dict[str, Any]:
        """Every field, as the search API and the event feed show it."""
        out: dict[str, Any] = {}
        if id is not None:
            out["id"] = id
        out.update(
            created=self.created,
            levelno=self.levelno,
            levelname=self.levelname,
            name=self.logger,
            message=self.message,
            msg=self.msg,
            args=self.args,
        )
        out.update(self.fields)
        out["extra"] = self.extra
        if self.problems:
            out["problems"] = list(self.problems)
        return out


def record_from_json(data: dict[str, Any]) -> Record:
    """The inverse of :meth:`Record.to_json` (for rows read back from the store)."""
    fields = {
        k: v
        for k, v in data.items()
        if k
        not in (
            "id",
            "created",
            "levelno",
            "levelname",
            "name",
            "message",
            "msg",
            "args",
            "extra",
            "problems",
        )
    }
    return Record(
        created=float(data["created"]),
        levelno=int(data["levelno"]),
        levelname=str(data["levelname"]),
        logger=str(data["name"]),
        message=str(data["message"]),
        msg=str(data["msg"]),
        args=data.get("args"),
        fields=fields,
        extra=dict(data.get("extra") or {}),
        problems=tuple(data.get("problems") or ()),
    )


# -- decoding bodies --------------------------------------------------------------


def _decode_text(raw: bytes, problems: list[str], what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{what}: invalid UTF-8 replaced")
        return raw.decode("utf-8", "replace")


_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _unquote(raw: bytes, problems: list[str], what: str) -> str:
    """``application/x-www-form-urlencoded`` value -> text; bad escapes kept literally."""
    raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        if _BAD_ESCAPE.search(raw):
            problems.append(f"{what}: invalid percent-encoding kept as is")
        raw = unquote_to_bytes(raw)
    return _decode_text(raw, problems, what)


def parse_form(body: bytes) -> tuple[dict[str, str], list[str]]:
    """A form-urlencoded body (or GET query) -> ``{name: value}`` and problems found.

    Repeated names keep the last value, as a dict does.
    """
    if not _BAD_ESCAPE.search(body):
        try:
            # The common case, well-formed UTF-8: the standard library's parser, which
            # skips unquoting values without escapes, is about twice as fast as below.
            pairs = parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, encoding="utf-8", errors="strict"
            )
        except UnicodeDecodeError:
            pass
        else:
            return dict(pairs), []
    problems: list[str] = []
    out: dict[str, str] = {}
    for pair in _FORM_SPLIT.split(body):
        if not pair:
            continue
        name, _, value = pair.partition(b"=")
        key = _unquote(name, problems, "field name")
        out[key] = _unquote(value, problems, key or "field")
    return out, problems


def parse_json_body(body: bytes) -> list[dict[str, Any]]:
    """One JSON object, or a JSON list of objects."""
    try:
        # NaN, Infinity, 1e999 stay text: the stored record must be strict JSON, or
        # SQLite refuses the whole batch it is committed with (other clients' too).
        value = strictjson.loads_keeping_text(body.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise BadInput(f"JSON body is not valid UTF-8: {e.reason} at byte {e.start}") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise BadInput("malformed JSON: nested too deeply") from None
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise BadInput(f"item {i} of the JSON list is not an object")
        return value
    raise BadInput("a JSON body must be an object or a list of objects")


def parse_ndjson_body(body: bytes) -> list[dict[str, Any]]:
    """One JSON object per line (blank lines skipped)."""
    items: list[dict[str, Any]] = []
    for number, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            value = strictjson.loads_keeping_text(
                line.decode("utf-8-sig" if number == 1 else "utf-8")
            )
        except UnicodeDecodeError as e:
            raise BadInput(f"line {number}: not valid UTF-8: {e.reason}") from None
        except json.JSONDecodeError as e:
            raise BadInput(f"line {number}: malformed JSON: {e.msg} at column {e.colno}") from None
        except RecursionError:
            raise BadInput(f"line {number}: malformed JSON: nested too deeply") from None
        if not isinstance(value, dict):
            raise BadInput(f"line {number}: not a JSON object")
        items.append(value)
    return items


def records_from_body(content_type: str, body: bytes, now: float) -> list[Record]:
    """Whatever a POST carried -> records; :class:`BadInput` when nothing can be stored."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded" and body.lstrip()[:1] in (b"{", b"["):
        # ``curl -d`` and urllib label any body a form: a JSON one is JSON all the same
        # (a form body starts with a field name).
        kind = ""
    if not kind:
        stripped = body.lstrip()[:1]
        if stripped == b"[":
            kind = "application/json"
        elif stripped == b"{":
            kind = "application/x-ndjson" if b"}\n{" in body else "application/json"
        else:
            kind = "application/x-www-form-urlencoded"
    if kind == "application/x-www-form-urlencoded":
        form, problems = parse_form(body)
        return [record_from_fields(form, now, problems)]
    if kind in ("application/json", "text/json"):
        items = parse_json_body(body)
    elif kind in (
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
    ):
        items = parse_ndjson_body(body)
    else:
        raise BadInput(
            f"unsupported content type {kind!r}: send application/x-www-form-urlencoded, "
            "application/json or application/x-ndjson"
        )
    if not items:
        raise BadInput("no records in the body")
    out: list[Record] = []
    for i, item in enumerate(items):
        try:
            out.append(record_from_fields(item, now))
        except BadInput as e:
            raise BadInput(f"item {i}: {e.reason}" if len(items) > 1 else e.reason) from None
    return out


# -- one record -------------------------------------------------------------------


def _none(value: Any) -> Any:
    return None if value == "None" else value


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int with hundreds of digits
            return None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(number):
        return None
    return number


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        # SQLite's INTEGER is 64 bits: beyond it levelno would become a REAL inf, which
        # /v1/logs would then answer as "Infinity", which is not JSON.
        return value if -(2**63) <= value < 2**63 else None
    number = _as_float(value)
    if number is None or not number.is_integer() or abs(number) > 2**63:
        return None
    return int(number)


def _level(fields: dict[str, Any], problems: list[str]) -> tuple[int, str]:
    raw_no = fields.get("levelno", fields.get("level"))
    raw_name = fields.get("levelname")
    levelno = _as_int(raw_no) if raw_no is not None else None
    if levelno is None and isinstance(raw_no, str):
        by_name = LEVEL_NAMES.get(raw_no.strip().upper())
        if by_name is not None:  # {"level": "error"} from other languages
            levelno, raw_name = by_name, raw_name or raw_no.strip().upper()
    name = str(raw_name).strip() if raw_name not in (None, "None") else ""
    if levelno is None:
        if raw_no is not None:
            problems.append(f"levelno {str(raw_no)[:40]!r} is not a number")
        levelno = LEVEL_NAMES.get(name.upper(), 0)
    if not name:
        name = logging.getLevelName(levelno) if levelno in LEVEL_NAMES.values() else ""
        name = name or f"Level {levelno}"
    return levelno, name


def parse_args(raw: Any) -> tuple[Any, str | None]:
    """``args`` as sent -> (value to format with, or None; the reason it could not be read).

    Only Python literals are accepted (:func:`ast.literal_eval`); nothing is evaluated.
    """
    if raw is None or raw == "None":
        return None, None
    if isinstance(raw, list):
        return tuple(raw), None
    if isinstance(raw, dict):
        return raw, None
    if not isinstance(raw, str):
        return (raw,), None
    if not raw.strip() or raw.strip() == "()":
        return (), None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None, "args are not a Python literal"
    if not isinstance(value, tuple | dict):
        value = (value,)
    return value, None


def _safe_template(msg: str, args: Any) -> str | None:
    """Why ``msg % args`` must not be tried (huge widths, ``*``), or None."""
    for match in _CONVERSION.finditer(msg):
        for part in (match.group(1), match.group(2)):
            if part == "*":
                return "'*' widths in msg are not rendered"
            if part is not None and (len(part) > 6 or int(part) > MAX_WIDTH):
                return f"a width over {MAX_WIDTH} in msg is not rendered"
    return None


def render(msg: str, args: Any) -> tuple[str, str | None]:
    """``msg % args`` as logging does (only when args are non-empty), or msg and a reason."""
    if not args:
        return msg, None
    if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], dict) and args[0]:
        args = args[0]  # logging's own rule for a single mapping argument
    reason = _safe_template(msg, args)
    if reason is not None:
        return msg, reason
    try:
        return msg % args, None
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, MemoryError) as e:
        return msg, f"msg % args failed: {type(e).__name__}: {e}"[:200]


def _message(fields: dict[str, Any], msg: str, message_field: Any, problems: list[str]) -> str:
    """The record's rendered message: as sent, or ``msg % args`` (reasons to *problems*)."""
    if message_field is not None:
        # A Formatter already rendered it (or homeport's handler sent it): trust that.
        return message_field if isinstance(message_field, str) else str(message_field)
    args, reason = parse_args(fields.get("args"))
    if reason is not None:
        problems.append(reason)
        return msg
    message, reason = render(msg, args)
    if reason is not None:
        problems.append(reason)
    # args are Python literals: '\udcff' (a surrogateescape'd file name) is one,
    # and no UTF-8 can carry it.
    scrubbed: str = strictjson.scrub(message)
    return scrubbed


def _args_text(raw_args: Any) -> str | None:
    """``args`` as stored: the text sent, or JSON of a JSON value."""
    if raw_args is None or raw_args == "None":
        return None
    if isinstance(raw_args, str):
        return raw_args
    return json.dumps(raw_args, ensure_ascii=False, default=str)


def _created(fields: dict[str, Any], now: float, problems: list[str]) -> float:
    """``created`` (or ``time``) as sent, else the receive time *now*."""
    raw_created = fields.get("created", fields.get("time"))
    created = _as_float(raw_created) if raw_created is not None else None
    if created is None:
        if raw_created is not None:
            problems.append(f"created {str(raw_created)[:40]!r} is not a number; receive time used")
        created = float(now)
    return created


def _typed_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The standard fields kept as they are, typed (a number that is not one as text)."""
    typed: dict[str, Any] = {}
    for key in _TEXT_FIELDS:
        value = _none(fields.get(key))
        if value is not None:
            typed[key] = value if isinstance(value, str) else str(value)
    for key in _INT_FIELDS:
        value = _none(fields.get(key))
        if value is not None:
            number = _as_int(value)
            typed[key] = number if number is not None else str(value)
    for key in _FLOAT_FIELDS:
        value = _none(fields.get(key))
        if value is not None:
            fnumber = _as_float(value)
            typed[key] = fnumber if fnumber is not None else str(value)
    return typed


def record_from_fields(
    fields: dict[str, Any], now: float, problems: list[str] | None = None
) -> Record:
    """A dict of LogRecord attributes (strings from HTTPHandler, or JSON values) -> Record."""
    problems = list(problems or ())
    raw_msg = fields.get("msg")
    message_field = _none(fields.get("message"))
    if raw_msg is None and message_field is None:
        raise BadInput("the record has no 'msg' (or 'message') field")
    msg = "" if raw_msg is None else raw_msg if isinstance(raw_msg, str) else str(raw_msg)
    args_text = _args_text(fields.get("args"))
    message = _message(fields, msg, message_field, problems)
    created = _created(fields, now, problems)
    levelno, levelname = _level(fields, problems)
    raw_name = _none(fields.get("name", fields.get("logger")))
    logger = "root" if raw_name in (None, "") else str(raw_name)
    return Record(
        created=created,
        levelno=levelno,
        levelname=levelname,
        logger=logger,
        message=message,
        msg=msg,
        args=args_text,
        fields=_typed_fields(fields),
        extra={k: v for k, v in fields.items() if k not in STANDARD_FIELDS},
        problems=tuple(problems),
    )
