"""The catalog as a ``--workers`` process holds it: a read-only copy fed by the primary.

The same snapshot-plus-watch shape as the etcd store (:mod:`.replica`): the primary
sends its whole catalog once, then every change as it happens, and the worker's
:class:`~.replica.ReplicatedCatalog` applies them with the primary's indexes, so its
answers (``X-Consul-Index`` and all) are the primary's, and a blocking query parked on
the worker wakes when the change reaches it.  The worker answers reads only: every
other request is handed to the primary whole (``http/splice.py``).

The frames are pickles on the pipe from the primary to the worker it started (a trusted
channel: nothing else can write to it).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .model import Catalog, Change, Stored, StoredKind
from .replica import ReplicatedCatalog, Slot, slot_of

if TYPE_CHECKING:
    from ..http.api import ApiResource
    from ..http.metrics import Metrics
    from ..part import IHomeportReactor
    from . import Settings
    from .api import Agent

#: What a worker copies (ACL records are not: with ``--acl`` workers answer nothing).
KINDS: tuple[StoredKind, ...] = ("node", "service", "check", "kv", "session", "query")


def _everything(catalog: Catalog) -> Iterator[tuple[Slot, Stored]]:
    tables: tuple[tuple[StoredKind, dict[Any, Any]], ...] = (
        ("node", catalog.nodes),
        ("service", catalog.services),
        ("check", catalog.checks),
        ("kv", catalog.kv),
        ("session", catalog.sessions),
        ("query", catalog.queries),
    )
    for kind, table in tables:
        for slot, value in table.items():
            yield (kind, slot), value


def snapshot_frame(catalog: Catalog) -> bytes:
    """The whole catalog now: a worker's first frame (and its frame after a restart)."""
    return pickle.dumps(("reset", catalog.index, list(_everything(catalog))), protocol=5)


def change_frame(changes: Iterable[Change]) -> bytes | None:
    """The changes of one operation, as a frame; None if a worker has nothing to copy."""
    updates = [
        (slot_of(c.kind, c.key), c.value if c.op == "set" else None)
        for c in changes
        if c.kind in KINDS
    ]
    if not updates:
        return None
    index = max(c.index for c in changes)
    return pickle.dumps(("apply", index, updates), protocol=5)


@dataclass
class Reader:
    """A worker's catalog and the API that reads it."""

    catalog: ReplicatedCatalog
    api: ApiResource

    def receive(self, frame: bytes) -> None:
        """Apply one frame from the primary."""
        what, index, items = pickle.loads(frame)
        if what == "reset":
            self.catalog.reset(index, items)
        elif what == "apply":
            self.catalog.apply(index, items)
        else:
            raise ValueError(f"unknown frame {what!r}")


def build_reader(
    settings: Settings, reactor: IHomeportReactor, agent: Agent, metrics: Metrics
) -> Reader:
    """Consul's routes over a copy of the primary's catalog (fed by :meth:`Reader.receive`)."""
    from .api import ConsulAPI, api_resource
    from .checks import ScriptPolicy

    catalog = ReplicatedCatalog(settings.datacenter, clock=reactor.seconds)
    api = api_resource(settings, reactor, catalog, metrics)
    ConsulAPI(api, catalog, agent, reactor, scripts=ScriptPolicy.from_settings(settings))
    return Reader(catalog, api)


def describe(reader: Reader) -> dict[str, Any]:
    """What the copy holds, for a worker's log line."""
    c = reader.catalog
    return {"index": c.index, "nodes": len(c.nodes), "services": len(c.services), "kv": len(c.kv)}
