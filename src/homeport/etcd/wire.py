"""etcd's v3 JSON gateway format: requests as dicts, replies into values.

The gateway is gRPC-gateway over etcd's protobuf API: bytes are base64, 64-bit integers
are decimal strings, and fields at their zero value are left out of replies (a missing
``version`` is 0, a missing event ``type`` is PUT).  Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from .values import (
    OUT_OF_RANGE,
    Compare,
    Delete,
    DeleteResult,
    EtcdCompacted,
    EtcdError,
    Event,
    KeyValue,
    Member,
    Op,
    Put,
    PutResult,
    RangeResult,
    Status,
    TxnResponse,
    TxnResult,
)

Json = dict[str, Any]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object) -> bytes:
    return base64.b64decode(text) if isinstance(text, str) else b""


def num(reply: Mapping[str, Any], name: str) -> int:
    """A 64-bit field (a string on the wire, absent when 0)."""
    return int(reply.get(name) or 0)


def header_revision(reply: Mapping[str, Any]) -> int:
    header = reply.get("header")
    return num(header, "revision") if isinstance(header, Mapping) else 0


def error_of(reply: Mapping[str, Any]) -> EtcdError | None:
    """The error a reply (or a stream's message) carries, if it is one."""
    error = reply.get("error")
    if error is None:
        return None
    if isinstance(error, Mapping):  # a stream's error: {"error": {"grpc_code": ...}}
        code = int(error.get("grpc_code") or error.get("code") or 2)
        message = str(error.get("message") or "")
    else:
        code = int(reply.get("code") or 2)
        message = str(reply.get("message") or error)
    if code == OUT_OF_RANGE and "compacted" in message:
        return EtcdCompacted(code, message)
    return EtcdError(code, message)


# -- requests ----------------------------------------------------------------------------


def range_request(
    key: bytes, range_end: bytes, revision: int, serializable: bool, limit: int
) -> Json:
    body: Json = {"key": b64(key)}
    if range_end:
        body["range_end"] = b64(range_end)
    if revision:
        body["revision"] = str(revision)
    if serializable:
        body["serializable"] = True
    if limit:
        body["limit"] = str(limit)
    return body


def put_request(key: bytes, value: bytes, lease: int, prev_kv: bool = False) -> Json:
    body: Json = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    if prev_kv:
        body["prev_kv"] = True
    return body


def delete_request(key: bytes, range_end: bytes, prev_kv: bool = False) -> Json:
    body: Json = {"key": b64(key)}
    if range_end:
        body["range_end"] = b64(range_end)
    if prev_kv:
        body["prev_kv"] = True
    return body


_COMPARE_FIELD = {
    "VERSION": "version",
    "CREATE": "create_revision",
    "MOD": "mod_revision",
    "VALUE": "value",
    "LEASE": "lease",
}


def compare_json(compare: Compare) -> Json:
    body: Json = {"key": b64(compare.key), "target": compare.target, "result": compare.result}
    field = _COMPARE_FIELD[compare.target]
    if compare.target == "VALUE":
        if not isinstance(compare.value, bytes):
            raise TypeError("a VALUE compare takes bytes")
        body[field] = b64(compare.value)
    else:
        if not isinstance(compare.value, int):
            raise TypeError(f"a {compare.target} compare takes an int")
        body[field] = str(compare.value)
    if compare.range_end:
        body["range_end"] = b64(compare.range_end)
    return body


def op_json(op: Op) -> Json:
    if isinstance(op, Put):
        return {"request_put": put_request(op.key, op.value, op.lease, op.prev_kv)}
    if isinstance(op, Delete):
        return {"request_delete_range": delete_request(op.key, op.range_end, op.prev_kv)}
    return {"request_range": range_request(op.key, op.range_end, 0, False, op.limit)}


def txn_request(compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> Json:
    return {
        "compare": [compare_json(c) for c in compare],
        "success": [op_json(o) for o in success],
        "failure": [op_json(o) for o in failure],
    }


def watch_request(key: bytes, range_end: bytes, start_revision: int) -> Json:
    create: Json = {"key": b64(key), "prev_kv": True, "progress_notify": True}
    if range_end:
        create["range_end"] = b64(range_end)
    if start_revision:
        create["start_revision"] = str(start_revision)
    return {"create_request": create}


# -- replies -----------------------------------------------------------------------------


def key_value(kv: Mapping[str, Any]) -> KeyValue:
    return KeyValue(
        key=unb64(kv.get("key")),
        value=unb64(kv.get("value")),
        create_revision=num(kv, "create_revision"),
        mod_revision=num(kv, "mod_revision"),
        version=num(kv, "version"),
        lease=num(kv, "lease"),
    )


def maybe_key_value(kv: object) -> KeyValue | None:
    return key_value(kv) if isinstance(kv, Mapping) else None


def range_result(reply: Mapping[str, Any], revision: int | None = None) -> RangeResult:
    return RangeResult(
        kvs=tuple(key_value(kv) for kv in reply.get("kvs") or ()),
        revision=header_revision(reply) if revision is None else revision,
        more=bool(reply.get("more")),
        count=num(reply, "count"),
    )


def _txn_response(item: Mapping[str, Any], revision: int) -> TxnResponse:
    if "response_range" in item:
        return range_result(item["response_range"], revision)
    if "response_put" in item:
        return PutResult(revision, maybe_key_value(item["response_put"].get("prev_kv")))
    reply = item.get("response_delete_range") or {}
    return DeleteResult(
        deleted=num(reply, "deleted"),
        revision=revision,
        prev_kvs=tuple(key_value(kv) for kv in reply.get("prev_kvs") or ()),
    )


def txn_result(reply: Mapping[str, Any]) -> TxnResult:
    revision = header_revision(reply)
    return TxnResult(
        succeeded=bool(reply.get("succeeded")),
        revision=revision,
        responses=tuple(_txn_response(r, revision) for r in reply.get("responses") or ()),
    )


def events(items: Sequence[Mapping[str, Any]]) -> list[Event]:
    return [
        Event(
            type="DELETE" if item.get("type") == "DELETE" else "PUT",
            kv=key_value(item.get("kv") or {}),
            prev_kv=maybe_key_value(item.get("prev_kv")),
        )
        for item in items
    ]


def members(reply: Mapping[str, Any]) -> list[Member]:
    return [
        Member(
            name=str(m.get("name") or ""),
            id=num(m, "ID"),
            client_urls=tuple(m.get("clientURLs") or ()),
            peer_urls=tuple(m.get("peerURLs") or ()),
        )
        for m in reply.get("members") or ()
    ]


def status(reply: Mapping[str, Any]) -> Status:
    header = reply.get("header") or {}
    return Status(
        member_id=num(header, "member_id"),
        leader=num(reply, "leader"),
        revision=num(header, "revision"),
        raft_term=num(reply, "raftTerm"),
        version=str(reply.get("version") or ""),
    )
