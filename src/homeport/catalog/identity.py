"""Who this agent is from one start to the next: its node name and node ID, chosen once
and kept in the data dir.

Consul keeps its node ID in ``<data-dir>/node-id`` and takes its name from the
hostname at each start.  A container's hostname is new on every run, so homeport keeps
the name too (``<data-dir>/node-name``): the first start picks ``--node`` or the
hostname, and every later start reuses it unless ``--node`` names another, which
renames the node (its ID stays, as Consul's does).

Pure file work, no Twisted.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..files import open_private

ID_FILE = "node-id"
NAME_FILE = "node-name"


@dataclass(frozen=True, kw_only=True)
class Identity:
    name: str
    id: str


def legacy_node_id(name: str, datacenter: str) -> str:
    """The node ID a homeport agent gave its node before the ID was kept in the data
    dir (derived from the name): a node holding it was some earlier run's own node."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.{datacenter}.homeport"))


def load_identity(
    data_dir: Path,
    wanted: str | None,
    hostname: Callable[[], str],
    known: Mapping[str, str],
) -> Identity:
    """The identity kept in *data_dir* (written there on the first start).

    *wanted* is ``--node`` (None: keep the kept name, or on the first start take
    *hostname()*); *known* maps the catalog's node names to their IDs, so a first start
    on a data dir that predates these files keeps its node's ID.  Raises ``OSError``,
    or ``ValueError`` for a ``node-id`` file that does not hold a UUID.
    """
    kept_name = _read(data_dir / NAME_FILE)
    kept_id = _read(data_dir / ID_FILE)
    name = wanted or kept_name or hostname() or "homeport"
    if kept_id is not None:
        try:
            node_id = str(uuid.UUID(kept_id))
        except ValueError:
            raise ValueError(f"{data_dir / ID_FILE} holds {kept_id!r}, not a UUID") from None
    else:
        node_id = known.get(name) or str(uuid.uuid4())
    if kept_id != node_id:
        _write(data_dir / ID_FILE, node_id)
    if kept_name != name:
        _write(data_dir / NAME_FILE, name)
    return Identity(name=name, id=node_id)


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def _write(path: Path, text: str) -> None:
    """Replace *path*'s contents at once (a crash leaves the old file or the new one)."""
    temporary = path.with_name(path.name + ".tmp")
    with open_private(temporary) as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
