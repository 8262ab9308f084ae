"""Consul's snapshot routes: ``GET /v1/snapshot`` saves, ``PUT /v1/snapshot`` restores.

As in Consul, both need the token (a snapshot holds everything, a restore replaces
everything); a save answers the archive with ``X-Consul-Index`` (the catalog's index it
was taken at), a restore answers 200 with an empty body once the restored catalog is on
disk.  The archive's format is :mod:`.snapshot`'s.  A restore's body may be larger than
``--max-body-size`` (up to 1 GiB, :data:`homeport.http.site.LARGE_BODIES`), as Consul's
restore streams it: Twisted keeps a large body in a temporary file, and the restore reads
and inflates it from there in chunks, holding only its three files in memory.  The catalog
changes only on the reactor thread, so an archive taken there is one consistent state
however many writes are waiting.
"""

from __future__ import annotations

from collections.abc import Callable

from ..http.api import TEXT, ApiResource, Call, Reply
from ..http.errors import ErrorTable
from . import snapshot
from .model import Catalog

#: A restore refuses a broken, changed or foreign archive with 400 (Consul answers 500
#: with the same kind of text; nothing a client matches).
ERRORS = ErrorTable({snapshot.InvalidSnapshot: (400, str), snapshot.ConsulSnapshot: (400, str)})

GZIP = b"application/x-gzip"


def routes(api: ApiResource, catalog: Catalog, node: str, now: Callable[[], float]) -> None:
    """Add the two routes to *api*; *now* is Unix time (the archive's date)."""
    face = SnapshotRoutes(catalog, node, now)
    api.errors.rows.update(ERRORS.rows)
    # A write as far as the token goes, and never cached: every save is taken anew.
    api.route("GET", "/v1/snapshot", face.save, write=True)
    api.route("PUT", "/v1/snapshot", face.restore, stream=True)


class SnapshotRoutes:
    def __init__(self, catalog: Catalog, node: str, now: Callable[[], float]) -> None:
        self.catalog = catalog
        self.node = node
        self.now = now

    def save(self, call: Call) -> Reply:
        index = str(max(1, self.catalog.index)).encode()
        archive = snapshot.take(self.catalog, self.node, self.now())
        headers = (
            (b"x-consul-index", index),
            (b"x-consul-knownleader", b"true"),
            (b"x-consul-lastcontact", b"0"),
        )
        return Reply(archive, content_type=GZIP, headers=headers)

    def restore(self, call: Call) -> Reply:
        content = call.request.content  # at its start: the API resource put it there
        snapshot.restore(self.catalog, content if content is not None else b"", self.node)
        return Reply(b"", content_type=TEXT)
