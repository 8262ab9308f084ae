"""The catalog's story in the daemon's own log: one readable line for each registration,
deregistration, health status change and session invalidation.

:func:`lines` is pure (the changes of one catalog operation -> what to say about them);
:func:`teller` is the catalog listener that logs them, subscribed by :func:`~homeport.
catalog.build`.  KV writes and prepared queries are left out (they are data, not the
catalog's state), as are the agent's builtin ``consul`` service and ``serfHealth``
check coming and going with the agent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.logger import Logger

from .model import CRITICAL, Change, Check, KVEntry, Node, Service, Session

log = Logger(namespace="homeport.catalog")

#: One line: a log format and its fields (the fields go to JSON logs as values).
Line = tuple[str, dict[str, Any]]
#: A batch larger than this (a snapshot restore) is one summary line.
LARGEST_TOLD = 100
#: How much of a check's output a status line quotes.
OUTPUT_CHARS = 200


def teller() -> Callable[[list[Change]], None]:
    """A catalog listener logging :func:`lines` at level info."""

    def tell(changes: list[Change]) -> None:
        for text, fields in lines(changes):
            log.info(text, **fields)

    return tell


def lines(changes: Sequence[Change]) -> list[Line]:
    """What to say about the changes of one catalog operation."""
    if len(changes) > LARGEST_TOLD:
        return [("Catalog replaced: {count} changes at index {index}", _count(changes))]
    said: list[Line] = []
    for change in changes:
        value = change.value if change.value is not None else change.previous
        if isinstance(value, Node):
            said += _node(change, value)
        elif isinstance(value, Service):
            said += _service(change, value)
        elif isinstance(value, Check):
            said += _check(change, value, changes)
        elif isinstance(value, Session) and change.op == "delete":
            said.append(_session(value, changes))
    return said


def _count(changes: Sequence[Change]) -> dict[str, Any]:
    return {"count": len(changes), "index": changes[-1].index}


def _node(change: Change, node: Node) -> list[Line]:
    if change.op == "delete":
        return [("Deregistered node {node}", {"node": node.name})]
    if change.previous is None:
        fields = {"node": node.name, "address": node.address}
        return [("Registered node {node} at {address}", fields)]
    if isinstance(change.previous, Node) and change.previous.address != node.address:
        fields = {"node": node.name, "old": change.previous.address, "address": node.address}
        return [("Node {node} moved from {old} to {address}", fields)]
    return []


def _service(change: Change, service: Service) -> list[Line]:
    if service.source == "builtin":
        return []
    fields: dict[str, Any] = {"service": service.name, "node": service.node}
    named = "{service}" if service.id == service.name else "{service} ({id})"
    if service.id != service.name:
        fields["id"] = service.id
    if change.op == "delete":
        return [(f"Deregistered service {named} from node {{node}}", fields)]
    at = ""
    if service.port:
        fields["port"] = service.port
        at = " port {port}"
    again = "Registered" if change.previous is None else "Re-registered"
    return [(f"{again} service {named} on node {{node}}{at}", fields)]


def _check(change: Change, check: Check, batch: Sequence[Change]) -> list[Line]:
    fields: dict[str, Any] = {"check": check.check_id, "node": check.node}
    of = " on node {node}"
    if check.service_id:
        fields["service"] = check.service_name or check.service_id
        of = " of service {service} on node {node}"
    previous = change.previous
    if change.op == "set" and isinstance(previous, Check):
        if previous.status == check.status:
            return []
        fields.update(old=previous.status, status=check.status)
        text = f"Check {{check}}{of}: {{old}} -> {{status}}"
        if check.output.strip():
            fields["output"] = _quote(check.output)
            text += " ({output})"
        return [(text, fields)]
    if check.source == "builtin" or _with_its_owner(check, change.op, batch):
        return []
    if change.op == "delete":
        return [(f"Deregistered check {{check}}{of}", fields)]
    fields["status"] = check.status
    return [(f"Registered check {{check}}{of} ({{status}})", fields)]


def _with_its_owner(check: Check, op: str, batch: Sequence[Change]) -> bool:
    """Whether *check* comes or goes with its service (or its node) in *batch*, whose
    own line says it."""
    for change in batch:
        if change.op != op or (op == "set" and change.previous is not None):
            continue
        value = change.value if change.value is not None else change.previous
        if isinstance(value, Node) and value.name == check.node and op == "delete":
            return True
        if isinstance(value, Service) and (value.node, value.id) == (check.node, check.service_id):
            return True
    return False


def _session(session: Session, batch: Sequence[Change]) -> Line:
    fields: dict[str, Any] = {"session": session.id, "node": session.node}
    text = "Invalidated session {session}"
    if session.name:
        fields["name"] = session.name
        text += " ({name})"
    text += " of node {node}: {reason}"
    fields["reason"] = _reason(session, batch)
    released = [
        c.key[0]
        for c in batch
        if c.kind == "kv"
        and isinstance(c.previous, KVEntry)
        and c.previous.session == session.id
        and c.previous.session != getattr(c.value, "session", None)
    ]
    if released:
        fields["keys"] = ", ".join(released)
        verb = "deleted" if session.behavior == "delete" else "released"
        text += f"; {verb} {{keys}}"
    return text, fields


def _reason(session: Session, batch: Sequence[Change]) -> str:
    """Why *session* ended, from the rest of its batch."""
    for change in batch:
        value = change.value if change.value is not None else change.previous
        if isinstance(value, Node) and value.name == session.node and change.op == "delete":
            return "its node was deregistered"
        if not isinstance(value, Check) or value.node != session.node:
            continue
        if value.check_id not in session.checks:
            continue
        if change.op == "delete":
            return f"its check {value.check_id} was deregistered"
        if value.status == CRITICAL:
            return f"its check {value.check_id} is critical"
    return "destroyed or expired"


def _quote(output: str) -> str:
    text = " ".join(output.split())
    return text if len(text) <= OUTPUT_CHARS else text[: OUTPUT_CHARS - 1] + "…"
