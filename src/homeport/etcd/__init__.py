"""A Twisted client for etcd's v3 API over its JSON gateway (shared, part-free).

``values`` (what etcd says, pure), ``wire`` (the gateway's JSON, pure), ``gateway`` (one
POST with treq), ``client`` (:class:`EtcdClient`: failover between members), ``watch``
(:class:`Watcher`: one watch kept alive across disconnects).  See docs/DESIGN.md,
"Talking to etcd", for why the gateway and treq.
"""

from __future__ import annotations

from .client import EtcdClient
from .values import (
    Compare,
    CompareResult,
    CompareTarget,
    Delete,
    DeleteResult,
    EtcdCompacted,
    EtcdError,
    EtcdUnavailable,
    Event,
    KeyValue,
    Member,
    Op,
    Put,
    PutResult,
    Range,
    RangeResult,
    Status,
    TxnResponse,
    TxnResult,
    prefix_end,
)
from .watch import Watcher

__all__ = [
    "Compare",
    "CompareResult",
    "CompareTarget",
    "Delete",
    "DeleteResult",
    "EtcdClient",
    "EtcdCompacted",
    "EtcdError",
    "EtcdUnavailable",
    "Event",
    "KeyValue",
    "Member",
    "Op",
    "Put",
    "PutResult",
    "Range",
    "RangeResult",
    "Status",
    "TxnResponse",
    "TxnResult",
    "Watcher",
    "prefix_end",
]
