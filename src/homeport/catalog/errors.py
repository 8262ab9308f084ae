"""What the catalog refuses, as values.

Each error is a frozen dataclass: its fields say what was wrong, and its ``str()`` is
the text Consul answers with (clients match some of these texts).  There are no status
codes here: the HTTP edge (:data:`homeport.catalog.api.ERRORS`) maps each type to
Consul's status.  Pure: no Twisted, no I/O.
"""

from __future__ import annotations

from typing import Literal

from ..errors import error
from ..units import format_duration


class CatalogError(Exception):
    """Base of every error the catalog reports to a client; ``str()`` is its text."""


# ---------------------------------------------------------------------------
# Requests Consul's decoder and handlers refuse, in Consul's own words.


@error
class BadRequest(CatalogError):
    """A request whose content is invalid; *text* is Consul's message for it."""

    text: str

    def __str__(self) -> str:
        return self.text


@error
class ServerRefusal(CatalogError):
    """What Consul refuses as a server error although it is the client's fault."""

    text: str

    def __str__(self) -> str:
        return self.text


class TooLarge(CatalogError):
    """A request over one of Consul's size limits."""


@error
class BodyTooLarge(TooLarge):
    """A KV value (``PUT /v1/kv/...`` body) over Consul's limit."""

    size: int
    limit: int

    def __str__(self) -> str:
        return f"Request body({self.size} bytes) too large, max size: {self.limit} bytes"


@error
class TooManyOps(TooLarge):
    """A transaction with more operations than Consul runs in one."""

    count: int
    limit: int

    def __str__(self) -> str:
        return f"Transaction contains too many operations ({self.count} > {self.limit})"


@error
class TxnValueTooLarge(TooLarge):
    """A value in a transaction over Consul's KV value limit."""

    key: str
    size: int
    limit: int

    def __str__(self) -> str:
        return f'Value for key "{self.key}" is too large ({self.size} > {self.limit} bytes)'


@error
class NoPathToDatacenter(CatalogError):
    """A request for a datacenter other than this agent's."""

    datacenter: str

    def __str__(self) -> str:
        return "No path to datacenter"


# ---------------------------------------------------------------------------
# Nodes, services and checks


@error
class NodeNotRegistered(CatalogError):
    """A service or check for a node the catalog does not have."""

    node: str

    def __str__(self) -> str:
        return f"Node {self.node!r} is not registered"


@error
class UnknownNode(CatalogError):
    """A catalog register that skips the node update, for a node that is not there."""

    node: str

    def __str__(self) -> str:
        return f'Node "{self.node}" does not exist'


@error
class UnknownService(CatalogError):
    """No service with this ID on the agent (deregistering it)."""

    service_id: str

    def __str__(self) -> str:
        return (
            f'Unknown service ID "{self.service_id}". '
            "Ensure that the service ID is passed, not the service name."
        )


@error
class UnknownMaintenanceService(UnknownService):
    """Maintenance mode asked for a service the agent does not have."""

    def __str__(self) -> str:
        return f'Unknown service ID "{self.service_id}"'


@error
class UnknownAgentService(UnknownService):
    """``GET /v1/agent/service/:id`` for a service the agent does not have."""

    def __str__(self) -> str:
        return f"unknown service ID: {self.service_id}"


@error
class ConfigDefinedService(CatalogError):
    """A service from a ``--config-dir`` file, which the API may not change or remove."""

    service_id: str
    action: Literal["change", "remove"]

    def __str__(self) -> str:
        return (
            f'Service "{self.service_id}" is defined in a --config-dir file; {self.action} it there'
        )


@error
class ServiceIDMissing(CatalogError):
    """A check naming a service that is not registered on its node."""

    service_id: str

    def __str__(self) -> str:
        return f'ServiceID "{self.service_id}" does not exist'


@error
class AgentServiceIDMissing(ServiceIDMissing):
    """The same, for a check registered with the agent (Consul answers it differently)."""


@error
class MissingAgentID(CatalogError):
    """An agent route's ID left empty (``PUT /v1/agent/service/deregister/``): Consul's
    agent refuses it before looking it up, as a server error."""

    what: Literal["ServiceID", "CheckID"]

    def __str__(self) -> str:
        return f"{self.what} missing"


@error
class UnknownCheck(CatalogError):
    check_id: str

    def __str__(self) -> str:
        return (
            f'Unknown check ID "{self.check_id}". '
            "Ensure that the check ID is passed, not the check name."
        )


@error
class CheckNotManaged(CatalogError):
    """A check the API may not replace (from a ``--config-dir`` file, or built in)."""

    check_id: str

    def __str__(self) -> str:
        return f'Check "{self.check_id}" is not managed through the API'


@error
class InvalidCheckStatus(CatalogError):
    """A check status other than passing, warning and critical."""

    status: str

    def __str__(self) -> str:
        return f"Invalid check status: {self.status!r}"


@error
class NoTTL(CatalogError):
    """A TTL update for a check that has no TTL (clients match this text)."""

    check_id: str

    def __str__(self) -> str:
        return f'CheckID "{self.check_id}" does not have associated TTL'


# ---------------------------------------------------------------------------
# Sessions


@error
class MissingSession(CatalogError):
    """A lock asked for with no session."""

    def __str__(self) -> str:
        return "Missing session"


@error
class InvalidSession(CatalogError):
    """A lock asked for by a session that does not exist."""

    session_id: str

    def __str__(self) -> str:
        return f'invalid session "{self.session_id}"'


@error
class InvalidBehavior(CatalogError):
    behavior: str

    def __str__(self) -> str:
        return f"Invalid Behavior setting '{self.behavior}'"


@error
class MissingNodeRegistration(CatalogError):
    """A session for a node the catalog does not have."""

    node: str

    def __str__(self) -> str:
        return "Missing node registration"


@error
class MissingCheckRegistration(CatalogError):
    """A session naming a check its node does not have."""

    check_id: str

    def __str__(self) -> str:
        return f"Missing check '{self.check_id}' registration"


@error
class CheckCritical(CatalogError):
    """A session naming a check that is critical now."""

    check_id: str

    def __str__(self) -> str:
        return f"Check '{self.check_id}' is in critical state"


@error
class BadSessionTTL(CatalogError):
    """A session TTL that is not a duration."""

    given: str
    reason: str

    def __str__(self) -> str:
        return f"Session TTL '{self.given}' invalid: {self.reason}"


@error
class SessionTTLOutOfRange(CatalogError):
    """A session TTL outside Consul's bounds (all in seconds)."""

    ttl: float
    low: float
    high: float

    def __str__(self) -> str:
        return (
            f"Invalid Session TTL '{round(self.ttl * 1e9)}', must be between "
            f"[{format_duration(self.low)}={format_duration(self.high)}]"
        )


# ---------------------------------------------------------------------------
# Transactions: each fails one op; :meth:`Catalog.kv_txn` reports it with the op's index
# (Consul's 409 body).  A lock op also fails with MissingSession or InvalidSession.


class TxnFailure(CatalogError):
    """Why one operation of a transaction failed (the whole transaction is undone)."""


@error
class KeyExists(TxnFailure):
    key: str

    def __str__(self) -> str:
        return f'key "{self.key}" exists'


@error
class KeyMissing(TxnFailure):
    key: str

    def __str__(self) -> str:
        return f'key "{self.key}" doesn\'t exist'


@error
class IndexMismatch(TxnFailure):
    current: int
    wanted: int

    def __str__(self) -> str:
        return f"current modify index {self.current} != {self.wanted}"


@error
class SessionMismatch(TxnFailure):
    current: str
    wanted: str

    def __str__(self) -> str:
        return f'current session "{self.current}" != "{self.wanted}"'


@error
class StaleDelete(TxnFailure):
    key: str

    def __str__(self) -> str:
        return f'failed to delete key "{self.key}", index is stale'


@error
class StaleSet(TxnFailure):
    key: str

    def __str__(self) -> str:
        return f'failed to set key "{self.key}", index is stale'


@error
class LockDelayed(TxnFailure):
    key: str

    def __str__(self) -> str:
        return f'key "{self.key}" is in a lock delay'


@error
class LockHeld(TxnFailure):
    key: str

    def __str__(self) -> str:
        return f'failed to lock key "{self.key}", lock is already held'


@error
class NotLockHolder(TxnFailure):
    key: str

    def __str__(self) -> str:
        return f'failed to unlock key "{self.key}", lock isn\'t held, or is held by another session'


@error
class UnknownKVVerb(TxnFailure):
    verb: str

    def __str__(self) -> str:
        return f'unknown KV verb "{self.verb}"'
