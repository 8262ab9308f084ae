"""The log database: ``<data-dir>/logs.sqlite3``, its schema, and its connections.

One table of records (``logs``) with an FTS5 index over message and traceback
(``logs_fts``), kept by triggers.  The schema is created on open with ``IF NOT EXISTS``
and has never changed, so there is nothing to migrate.

:class:`LogDatabase` is the write side on one connection (the writer's, see
:mod:`homeport.logs.writer`; tests use it directly); :func:`open_reader` opens the
read-only connections searches run on.  Both open the file with
:func:`homeport.sqlite.open_database`: WAL, and ``synchronous=FULL`` so a commit is on
disk when it returns.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..sqlite import open_database
from . import query as query_module
from .record import Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    levelno INTEGER NOT NULL,
    logger TEXT NOT NULL,
    message TEXT NOT NULL,
    exc_text TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_created ON logs(created);
CREATE INDEX IF NOT EXISTS logs_logger ON logs(logger);
CREATE INDEX IF NOT EXISTS logs_levelno ON logs(levelno);
CREATE VIRTUAL TABLE IF NOT EXISTS logs_fts USING fts5(
    message, exc_text, content='logs', content_rowid='id'
);
CREATE TRIGGER IF NOT EXISTS logs_fts_insert AFTER INSERT ON logs BEGIN
    INSERT INTO logs_fts(rowid, message, exc_text) VALUES (new.id, new.message, new.exc_text);
END;
CREATE TRIGGER IF NOT EXISTS logs_fts_delete AFTER DELETE ON logs BEGIN
    INSERT INTO logs_fts(logs_fts, rowid, message, exc_text)
        VALUES ('delete', old.id, old.message, old.exc_text);
END;
"""
# A whole batch is one statement with one parameter, a JSON list of the records' JSON
# texts, run in autocommit mode: the insert and its commit are a single sqlite3 step, and
# SQLite picks the columns out of the text itself, so the writer does no per-row work.
#
# ``body`` is the record's whole JSON text, the same text the event feed sends for it:
# each record is encoded once, on the reactor thread (:meth:`LogDatabase.prepare`), and
# not again for the row, the ``logs`` event, its SSE frame or the event history.
INSERT = (
    "INSERT INTO logs (id, created, levelno, logger, message, exc_text, body) "
    "SELECT value->>'id', value->>'created', value->>'levelno', value->>'name', "
    "value->>'message', CASE WHEN json_type(value, '$.exc_text') = 'text' "
    "THEN value->>'exc_text' END, value FROM json_each(?)"
)
PRUNE_CHUNK = 5000

# The fallback encoder, for what orjson declines; one for every record: json.dumps with
# options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
# Only JSON's own types are written natively; anything else (datetimes, dataclasses,
# enums) goes through ``default=str``, as with the standard encoder.
_ORJSON_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)


def encode_value(value: dict[str, Any]) -> bytes:
    """A record's JSON value as compact UTF-8 JSON: what is stored, searched and sent.

    orjson writes it (a third of the standard encoder's time, and the encoding is on the
    ingest path of every record); the standard library's encoder takes what orjson
    declines (integers beyond 64 bits, nesting past 254 levels), with the same result a
    record had before.  Text that is not valid Unicode (lone surrogates) is an error
    either way: the record is refused, never stored half-encoded.
    """
    try:
        return orjson.dumps(value, default=str, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return _encode(value).encode("utf-8")


def record_text(id: int, record: Record) -> str:
    """*record*'s JSON with its *id*, as stored, searched and sent on the event feed."""
    return encode_value(record.to_json(id)).decode("utf-8")


@dataclass
class Batch:
    """Records with their ids and JSON texts, ready to be written in one transaction."""

    first_id: int
    texts: list[str]

    @property
    def ids(self) -> list[int]:
        return list(range(self.first_id, self.first_id + len(self.texts)))

    def param(self) -> str:
        """The INSERT's one parameter: a JSON list of the texts."""
        return "[" + ",".join(self.texts) + "]"


class LogDatabase:
    """The log table on one connection; every method runs synchronously."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = open_database(path)
        self.db.executescript(SCHEMA)
        (last,) = self.db.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name='logs'), 0), "
            "coalesce((SELECT max(id) FROM logs), 0))"
        ).fetchone()
        self.next_id = int(last) + 1

    def prepare(self, records: Iterable[Record]) -> Batch:
        """Give *records* the next ids and encode them: a batch for :meth:`write`.

        The ids are taken even if the batch is never written (ids may have gaps; they are
        never reused).
        """
        first = n = self.next_id
        texts: list[str] = []
        for record in records:
            texts.append(record_text(n, record))
            n += 1
        self.next_id = n
        return Batch(first, texts)

    def write(self, batch: Batch) -> None:
        """Store *batch* in one transaction (one statement in autocommit mode)."""
        self.write_param(batch.param())

    def write_param(self, param: str) -> None:
        """Store the records of a :meth:`Batch.param` in one transaction."""
        self.db.execute(INSERT, (param,))

    def insert(self, records: Sequence[Record]) -> list[int]:
        """Store *records* in one transaction; their ids once committed."""
        batch = self.prepare(records)
        self.write(batch)
        return batch.ids

    def prune(self, cutoff: float | None, max_records: int | None, chunk: int = PRUNE_CHUNK) -> int:
        """Delete up to *chunk* records older than *cutoff* or beyond the newest
        *max_records*, oldest first; the number deleted (call again while it is *chunk*)."""
        bound: int | None = None
        if max_records is not None:
            row = self.db.execute(
                "SELECT id FROM logs ORDER BY id DESC LIMIT 1 OFFSET ?", (max_records,)
            ).fetchone()
            if row is not None:
                bound = int(row[0])
        conditions: list[str] = []
        params: list[Any] = []
        if cutoff is not None:
            conditions.append("created < ?")
            params.append(cutoff)
        if bound is not None:
            conditions.append("id <= ?")
            params.append(bound)
        if not conditions:
            return 0
        self.db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self.db.execute(
                "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE "
                + " OR ".join(conditions)
                + " ORDER BY id LIMIT ?)",
                (*params, chunk),
            )
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        return int(cursor.rowcount)

    def prune_all(self, cutoff: float | None, max_records: int | None) -> int:
        total = 0
        while (deleted := self.prune(cutoff, max_records)) > 0:
            total += deleted
            if deleted < PRUNE_CHUNK:
                break
        return total

    def search(self, query: query_module.LogQuery) -> dict[str, Any]:
        return query_module.page(self.db, query)

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM logs").fetchone()[0])

    def close(self) -> None:
        self.db.close()


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to the log database at *path* (WAL: it reads while the
    writer writes)."""
    return open_database(path, readonly=True)
