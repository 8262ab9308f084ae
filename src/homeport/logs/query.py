"""``GET /v1/logs`` searches: parse the query (pure) and run it on the log database.

Filters: ``level`` (minimum, a number or a name), ``logger`` (prefix of the logger name),
``q`` (words of the message or traceback, each matched as a word prefix, all required;
served by an FTS5 index), ``since``/``until`` (ISO 8601, seconds since the epoch, or a
relative age such as ``15m``), ``field.NAME=value`` (an ``extra=`` field, or a standard
one, equal to value as text), ``order`` (``desc``, newest first, the default; or ``asc``),
``limit`` (default 100, at most 10000) and ``after`` (the id of the last record of the
previous page: the next page goes on from there in the chosen order).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import error
from ..units import parse_age
from .record import LEVEL_NAMES

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
_FIELD_NAME = re.compile(r"[^\"\\\x00-\x1f]{1,200}")
# Standard fields that live in their own column rather than in the JSON body.
COLUMNS = {
    "name": "logger",
    "levelno": "levelno",
    "message": "message",
    "exc_text": "exc_text",
    "created": "created",
}


@error
class BadQuery(Exception):
    """A query parameter that cannot be used; turned into a 400 at the edge."""

    name: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"?{self.name}={self.value!r}: {self.reason}"


@dataclass(frozen=True)
class LogQuery:
    min_level: int | None = None
    logger: str | None = None
    text: str | None = None
    since: float | None = None
    until: float | None = None
    fields: tuple[tuple[str, str], ...] = ()
    limit: int = DEFAULT_LIMIT
    after: int | None = None
    newest_first: bool = True
    extra_args: dict[str, str] = field(default_factory=dict)


def parse_time(text: str, now: float) -> float:
    """ISO 8601 (naive means UTC), seconds since the epoch, or an age before *now*."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return now - parse_age(text)
    except ValueError:
        pass
    iso = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    moment = datetime.fromisoformat(iso)  # ValueError when it is none of these
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_level(text: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    level = LEVEL_NAMES.get(text.upper())
    if level is None:
        raise ValueError(text)
    return level


def _min_level(value: str) -> int:
    try:
        return parse_level(value)
    except ValueError:
        raise BadQuery("level", value, "expected a number or DEBUG/INFO/WARNING/...") from None


def _time(name: str, value: str, now: float) -> float:
    try:
        return parse_time(value, now)
    except (ValueError, OverflowError):
        raise BadQuery(
            name, value, "expected ISO 8601, seconds since the epoch, or an age like 15m"
        ) from None


def _limit(value: str) -> int:
    try:
        limit = int(value)
        if limit < 1:
            raise ValueError
    except ValueError:
        raise BadQuery("limit", value, "expected a positive whole number") from None
    return min(limit, MAX_LIMIT)


def _after(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadQuery("after", value, "expected a record id") from None


def _newest_first(value: str) -> bool:
    if value.lower() not in ("asc", "desc", "oldest", "newest"):
        raise BadQuery("order", value, "expected asc (oldest first) or desc (newest first)")
    return value.lower() in ("desc", "newest")


def _fields(args: dict[str, list[str]]) -> tuple[tuple[str, str], ...]:
    """Every ``field.NAME=value`` (all values of a repeated one), in order."""
    fields: list[tuple[str, str]] = []
    for key, values in args.items():
        if key.startswith("field."):
            name = key[len("field.") :]
            if not _FIELD_NAME.fullmatch(name):
                raise BadQuery(key, values[-1], "not a usable field name")
            fields.extend((name, v) for v in values)
    return tuple(fields)


def parse_query(args: dict[str, list[str]], now: float) -> LogQuery:
    """Query arguments (last value wins, except ``field.*``) -> :class:`LogQuery`.

    An empty value is the same as none; the arguments are checked in this order, so a
    query with two bad ones is refused for the first.
    """

    def last(name: str) -> str | None:
        values = args.get(name)
        return values[-1] if values else None

    kw: dict[str, Any] = {}
    if value := last("level"):
        kw["min_level"] = _min_level(value)
    if value := last("logger"):
        kw["logger"] = value
    if (value := last("q")) and value.strip():
        kw["text"] = value.strip()
    for name in ("since", "until"):
        if value := last(name):
            kw[name] = _time(name, value, now)
    if value := last("limit"):
        kw["limit"] = _limit(value)
    if value := last("after"):
        kw["after"] = _after(value)
    if value := last("order"):
        kw["newest_first"] = _newest_first(value)
    kw["fields"] = _fields(args)
    return LogQuery(**kw)


def fts_expression(text: str) -> str:
    """Words -> an FTS5 query where every word must appear, as a word prefix."""
    # NUL ends a string for FTS5's query parser ("unterminated string"); its tokenizer
    # takes control characters as separators anyway, so they mean a space here.
    terms = [t for t in text.replace("\0", " ").split() if t]
    return " ".join('"' + t.replace('"', '""') + '"*' for t in terms)


def build_sql(query: LogQuery) -> tuple[str, list[Any]]:
    """The SELECT (and its parameters) that answers *query*, index-friendly."""
    where: list[str] = []
    params: list[Any] = []
    source = "logs"
    id_column = "logs.id"
    if query.text is not None and fts_expression(query.text):
        source = "logs_fts JOIN logs ON logs.id = logs_fts.rowid"
        id_column = "logs_fts.rowid"
        where.append("logs_fts MATCH ?")
        params.append(fts_expression(query.text))
    if query.min_level is not None:
        where.append("logs.levelno >= ?")
        params.append(query.min_level)
    if query.logger:
        where.append("logs.logger >= ? AND logs.logger < ?")
        params += [query.logger, query.logger + "\U0010ffff"]
    if query.since is not None:
        where.append("logs.created >= ?")
        params.append(query.since)
    if query.until is not None:
        where.append("logs.created <= ?")
        params.append(query.until)
    if query.after is not None:
        where.append(f"{id_column} {'<' if query.newest_first else '>'} ?")
        params.append(query.after)
    for name, value in query.fields:
        column = COLUMNS.get(name)
        if column is not None:
            where.append(f"CAST(logs.{column} AS TEXT) = ?")
            params.append(value)
        else:
            where.append(
                "CAST(coalesce(json_extract(logs.body, ?), json_extract(logs.body, ?)) AS TEXT) = ?"
            )
            params += [f'$.extra."{name}"', f'$."{name}"', value]
    sql = (
        f"SELECT logs.id, logs.created, logs.levelno, logs.logger, logs.message, "
        f"logs.exc_text, logs.body FROM {source}"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {id_column} {'DESC' if query.newest_first else 'ASC'} LIMIT ?"
    params.append(query.limit)
    return sql, params


def row_json(row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored row -> the record's JSON (every field)."""
    id, created, levelno, logger, message, exc_text, body = row
    data: dict[str, Any] = {"id": id, "created": created, "levelno": levelno, "name": logger}
    data["message"] = message
    data.update(json.loads(body))
    if exc_text is not None:
        data["exc_text"] = exc_text
    return data


def search(db: sqlite3.Connection, query: LogQuery) -> list[dict[str, Any]]:
    sql, params = build_sql(query)
    return [row_json(row) for row in db.execute(sql, params)]


def page(db: sqlite3.Connection, query: LogQuery) -> dict[str, Any]:
    """The ``/v1/logs`` answer: the records and the cursor for the next page."""
    records = search(db, query)
    next_after = records[-1]["id"] if len(records) == query.limit else None
    return {"records": records, "next_after": next_after}
