"""Search speed over a million stored log records (the /v1/logs queries, no HTTP).

    python3 bench/search.py [--records 1000000]

Fills a fresh ``logs.sqlite3`` through :class:`LogDatabase` (the daemon's own insert
path), then times typical ``/v1/logs`` queries against the 1 s limit the issue sets.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from homeport.logs.database import LogDatabase
from homeport.logs.query import parse_query
from homeport.logs.record import record_from_fields

WORDS = "mapper reducer shard cache disk network timeout retry commit user order payment".split()
LOGGERS = ["app.web", "app.worker", "app.worker.mapper", "db.pool", "auth", "billing.api"]
LEVELS = [10] * 40 + [20] * 45 + [30] * 10 + [40] * 4 + [50]


def fill(db: LogDatabase, count: int, now: float) -> None:
    rng = random.Random(7)
    batch = []
    for i in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(6))
        fields = {
            "name": rng.choice(LOGGERS),
            "msg": "%s item %d " + words,
            "args": repr((rng.choice(WORDS), i)),
            "levelno": str(rng.choice(LEVELS)),
            "created": str(now - (count - i) * 0.5),
            "user": f"u{rng.randrange(5000)}",
        }
        batch.append(record_from_fields(fields, now))
        if len(batch) == 10_000:
            db.insert(batch)
            batch = []
    if batch:
        db.insert(batch)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    now = time.time()
    db = LogDatabase(Path(tempfile.mkdtemp(prefix="homeport-search-")) / "logs.sqlite3")
    db.db.execute("PRAGMA synchronous=OFF")  # filling only; the daemon commits with FULL
    started = time.perf_counter()
    fill(db, args.records, now)
    print(f"filled {db.count()} records in {time.perf_counter() - started:.1f}s")
    queries = [
        "",
        "level=ERROR",
        "level=CRITICAL&limit=1000",
        "logger=app.worker",
        "q=mapper",
        "q=mapper+payment+timeout&level=WARNING",
        "q=nosuchword",
        "since=1h",
        "since=2d&until=1d&logger=billing",
        "field.user=u42",
        "order=asc&after=500000",
        "q=shard&field.user=u4242&limit=10",
    ]
    worst = 0.0
    for text in queries:
        args_ = {}
        for part in filter(None, text.split("&")):
            k, _, v = part.partition("=")
            args_[k] = [v.replace("+", " ")]
        query = parse_query(args_, now)
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            page = db.search(query)
            runs.append(time.perf_counter() - t)
        best = min(runs)
        worst = max(worst, best)
        print(f"  {best * 1000:8.1f} ms  {len(page['records']):5d} records  ?{text}")
    print(f"slowest query {worst * 1000:.1f} ms: {worst:.3f} of the 1 s limit")


if __name__ == "__main__":
    main()
