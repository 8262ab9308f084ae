"""Durable catalog state in SQLite.

The store listens to the :class:`~homeport.catalog.model.Catalog` and writes every
change in one transaction before the listener returns, so by the time the HTTP API
answers 200 the change is on disk (WAL, ``synchronous=FULL``): a ``kill -9`` right
after the answer loses nothing.  Catalog writes are rare and small (one commit is well
under a millisecond on a local disk), so they run on the reactor thread; the log sink,
which writes a lot, batches its commits instead.

Services and checks loaded from ``--config-dir`` are not stored: the files are their
source of truth.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from twisted.application import service
from twisted.logger import Logger

from ..sqlite import open_database
from .model import Catalog, Change, Check, Service, Source, Stored, entity_to_dict, stored_from_dict

SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

#: Sources whose services and checks are made again at every start, so not stored.
EPHEMERAL_SOURCES: frozenset[Source] = frozenset({"config", "builtin"})


def _persisted(change: Change) -> bool:
    entity = change.value if change.value is not None else change.previous
    return not isinstance(entity, Service | Check) or entity.source not in EPHEMERAL_SOURCES


class CatalogStore(service.Service):
    """Loads the catalog from ``<data-dir>/catalog.sqlite3`` and keeps it up to date."""

    log = Logger()

    def __init__(self, catalog: Catalog, path: Path) -> None:
        self.catalog = catalog
        self.path = path
        self.db: sqlite3.Connection | None = None
        self._unsubscribe = None
        self.load()

    def load(self) -> None:
        """Open the database and put its contents into the catalog (done at construction,
        so that a broken data dir stops start-up with a clear message)."""
        self.db = open_database(self.path)
        self.db.executescript(SCHEMA)
        rows = self.db.execute("SELECT kind, body FROM entities").fetchall()
        entities: list[Stored] = []
        for kind, body in rows:
            entities.append(stored_from_dict(kind, json.loads(body)))
        stored = self.db.execute("SELECT value FROM meta WHERE name='index'").fetchone()
        self.catalog.load(entities, int(stored[0]) if stored else 1)
        self._unsubscribe = self.catalog.subscribe(self.write)  # type: ignore[assignment]

    def write(self, changes: list[Change]) -> None:
        db = self.db
        if db is None:
            raise RuntimeError("the catalog store is closed")
        rows = [c for c in changes if _persisted(c)]
        if not rows:
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            for change in rows:
                key = json.dumps(list(change.key))
                if change.value is None:
                    db.execute("DELETE FROM entities WHERE kind=? AND key=?", (change.kind, key))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO entities (kind, key, body) VALUES (?, ?, ?)",
                        (change.kind, key, json.dumps(entity_to_dict(change.value))),
                    )
            db.execute(
                "INSERT OR REPLACE INTO meta (name, value) VALUES ('index', ?)",
                (str(rows[-1].index),),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def stopService(self) -> None:
        service.Service.stopService(self)
        self.close()

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.db is not None:
            self.db.close()
            self.db = None
