"""The ``/v1/logs`` filters applied to live ``logs`` events (the SSE live tail).

The query is parsed by :func:`homeport.logs.query.parse_query`, exactly as for a search;
this module only decides whether one record (as :meth:`Record.to_json` publishes it)
passes it, with the same meaning as the SQL that :func:`homeport.logs.query.build_sql`
runs: ``level`` a minimum, ``logger`` a prefix, ``q`` every word a word prefix of the
message or traceback (FTS5's ``unicode61`` tokens: letters and digits, case and accents
folded), ``since``/``until`` bounds on ``created``, ``field.NAME`` equal as text.
Paging arguments (``limit``, ``after``, ``order``) mean nothing for a live tail.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from ..logs.query import COLUMNS, LogQuery

_TOKEN = re.compile(r"\w+")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).replace("_", " ")


def _words(text: str) -> list[str]:
    return _TOKEN.findall(_fold(text))


def _as_text(value: Any) -> str | None:
    """A JSON value as SQLite's ``CAST(... AS TEXT)`` shows it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def is_filtering(query: LogQuery) -> bool:
    return bool(
        query.min_level is not None
        or query.logger
        or query.text
        or query.since is not None
        or query.until is not None
        or query.fields
    )


def record_matches(query: LogQuery, record: Any) -> bool:
    """Does the published record *record* pass the search filters of *query*?"""
    if not isinstance(record, dict):
        return False
    if query.min_level is not None and not (record.get("levelno") or 0) >= query.min_level:
        return False
    if query.logger and not str(record.get("name", "")).startswith(query.logger):
        return False
    return _in_time(query, record) and _has_words(query, record) and _fields_match(query, record)


def _in_time(query: LogQuery, record: dict[str, Any]) -> bool:
    """``since``/``until``: a record without a numeric ``created`` passes neither."""
    created = record.get("created")
    if not isinstance(created, int | float):
        created = None
    if query.since is not None and (created is None or created < query.since):
        return False
    return not (query.until is not None and (created is None or created > query.until))


def _has_words(query: LogQuery, record: dict[str, Any]) -> bool:
    """``q``: every word a word prefix of the message or the traceback."""
    if not query.text:
        return True
    message = str(record.get("message") or "")
    haystack = _words(message + " " + str(record.get("exc_text") or ""))
    return all(any(word.startswith(term) for word in haystack) for term in _words(query.text))


def _fields_match(query: LogQuery, record: dict[str, Any]) -> bool:
    """``field.NAME``: a column, else the record's ``extra`` (or its top level), as text."""
    extra = record.get("extra")
    if not isinstance(extra, dict):
        extra = {}
    for name, value in query.fields:
        if name in COLUMNS:
            actual = _as_text(record.get(name))
        else:
            actual = _as_text(extra[name] if name in extra else record.get(name))
        if actual != value:
            return False
    return True
