"""User events as Consul's agent keeps them: fired, filtered, buffered, listed.

Consul sends a user event (``PUT /v1/event/fire/:name``) over Serf's gossip; every agent
whose filters it passes keeps it in a ring of the last 256 (in memory: a restart forgets
them) and shows them at ``GET /v1/event/list``.  homeport is the datacenter's one agent,
so firing is receiving: the event is checked, numbered on the agent's Lamport clock and,
if its node, service and tag filters accept this agent, kept and told to the listeners.

The rules, from Consul's ``agent/user_event.go``, ``agent/event_endpoint.go`` and
Serf's ``UserEvent``:

- a tag filter needs a service filter; each filter must be a regular expression;
- the event, as Serf encodes it, must fit Serf's limit of 512 bytes;
- the node filter is matched (unanchored) against the agent's node name, the service
  filter against the ID of each of the agent's services, the tag filter against the
  tags of a service the service filter matched;
- ``_rexec`` (``consul exec``) events are not kept: remote execution is off;
- the list's index is made from the ID of the newest event listed (1 when none), and a
  blocking list waits while that index is the one the client gave.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import base64
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import error
from .errors import CatalogError
from .filter import GoRegexpError, go_regexp

#: Events an agent keeps (Consul's ``eventBuf``).
BUFFER_SIZE = 256
#: Serf's ``UserEventSizeLimit`` (its default, which Consul keeps).
SIZE_LIMIT = 512
#: The prefix Consul's servers give user events on the gossip layer.
SERF_PREFIX = "consul:event:"
#: ``consul exec``'s event, which an agent with remote execution off ignores.
REMOTE_EXEC = "_rexec"
#: The version of the event format Consul's agents write.
VERSION = 1


@error
class MissingEventName(CatalogError):
    """``PUT /v1/event/fire/`` without a name."""

    def __str__(self) -> str:
        return "Missing name"


@error
class TagFilterWithoutService(CatalogError):
    """A ``?tag=`` filter without a ``?service=`` one."""

    def __str__(self) -> str:
        return "Cannot provide tag filter without service filter"


@error
class InvalidEventFilter(CatalogError):
    """A filter that is not a regular expression."""

    which: str  # "node", "service" or "tag"
    pattern: str
    reason: str  # Go's: the code and the part of the pattern it is about

    def __str__(self) -> str:
        return f"Invalid {self.which} filter: error parsing regexp: {self.reason}"


@error
class EventTooLarge(CatalogError):
    """An event over Serf's size limit, before or after Serf encodes it."""

    limit: int
    encoded: bool

    def __str__(self) -> str:
        if self.encoded:
            return (
                f"encoded user event exceeds configured limit of {self.limit} bytes after encoding"
            )
        return f"user event exceeds configured limit of {self.limit} bytes before encoding"


@dataclass(frozen=True)
class UserEvent:
    """One event, with Consul's fields (``ltime`` is 0 until the event is received)."""

    id: str
    name: str
    payload: bytes | None = None
    node_filter: str = ""
    service_filter: str = ""
    tag_filter: str = ""
    version: int = VERSION
    ltime: int = 0

    @property
    def index(self) -> int:
        return uuid_index(self.id)


def uuid_index(event_id: str) -> int:
    """Consul's ``uuidToUint64``: the UUID's two 64-bit halves XORed."""
    digits = event_id.replace("-", "")
    return int(digits[:16], 16) ^ int(digits[16:32], 16)


def event_json(event: UserEvent) -> dict[str, Any]:
    """The event as Consul's API shows it (``Payload`` base64, null when empty)."""
    return {
        "ID": event.id,
        "Name": event.name,
        "Payload": base64.b64encode(event.payload).decode() if event.payload else None,
        "NodeFilter": event.node_filter,
        "ServiceFilter": event.service_filter,
        "TagFilter": event.tag_filter,
        "Version": event.version,
        "LTime": event.ltime,
    }


# ---------------------------------------------------------------------------
# Validation and size


def _compile(which: str, pattern: str) -> Any:
    """Go's ``regexp.Compile``, as Consul compiles the filters (RE2, via google-re2)."""
    if not pattern:
        return None
    try:
        return go_regexp(pattern)
    except GoRegexpError as e:
        raise InvalidEventFilter(which, pattern, str(e)) from None


def validate(event: UserEvent) -> None:
    """Consul's ``validateUserEventParams``."""
    if not event.name:
        raise MissingEventName()
    if event.tag_filter and not event.service_filter:
        raise TagFilterWithoutService()
    _compile("node", event.node_filter)
    _compile("service", event.service_filter)
    _compile("tag", event.tag_filter)


def _str_size(length: int, str8: bool) -> int:
    """Bytes of a msgpack string of *length* bytes (``str8`` only in the newer spec)."""
    if length < 32:
        return 1 + length
    if length < 256 and str8:
        return 2 + length
    return (3 if length < 65536 else 5) + length


def _bin_size(length: int) -> int:
    if length < 256:
        return 2 + length
    return (3 if length < 65536 else 5) + length


def _uint_size(value: int) -> int:
    for limit, size in ((127, 1), (255, 2), (65535, 3), (2**32 - 1, 5)):
        if value <= limit:
            return size
    return 9


def consul_encoded_size(event: UserEvent) -> int:
    """The length of the event as Consul's agent msgpack-encodes it for Serf (a map of
    ``ID n p nf sf tf v``, empty optional fields left out)."""
    optional = (("nf", event.node_filter), ("sf", event.service_filter), ("tf", event.tag_filter))
    strings = [("ID", event.id), ("n", event.name), *((k, v) for k, v in optional if v)]
    size = 1 + sum(_str_size(len(k), True) + _str_size(len(v.encode()), True) for k, v in strings)
    if event.payload:
        size += _str_size(1, True) + _bin_size(len(event.payload))
    return size + _str_size(1, True) + 1  # "v": 1


def check_size(event: UserEvent, ltime: int) -> None:
    """Serf's two checks: name and payload before encoding, the message after."""
    name = len((SERF_PREFIX + event.name).encode())
    payload = consul_encoded_size(event)
    if name + payload > SIZE_LIMIT:
        raise EventTooLarge(SIZE_LIMIT, encoded=False)
    # A type byte, then a map of LTime, Name, Payload (as a string: older msgpack) and CC.
    message = 2 + 22 + _uint_size(ltime) + _str_size(name, False) + _str_size(payload, False) + 1
    if message > SIZE_LIMIT:
        raise EventTooLarge(SIZE_LIMIT, encoded=True)


# ---------------------------------------------------------------------------
# Filters


def accepts(event: UserEvent, node: str, services: Iterable[tuple[str, Iterable[str]]]) -> bool:
    """Consul's ``shouldProcessUserEvent``: do the filters take this agent, named *node*,
    with *services* as ``(service ID, tags)``?"""
    node_re = _compile("node", event.node_filter)
    if node_re is not None and not node_re.search(node):
        return False
    service_re = _compile("service", event.service_filter)
    if service_re is None:
        return True
    tag_re = _compile("tag", event.tag_filter)
    for service_id, tags in services:
        if not service_re.search(service_id):
            continue
        if tag_re is None or any(tag_re.search(tag) for tag in tags):
            return True
    return False


# ---------------------------------------------------------------------------
# The agent's buffer


@dataclass
class EventBuffer:
    """The last :data:`BUFFER_SIZE` events this agent received, and its event clock.

    Serf's event clock starts at 1; each event fired takes the clock's time as its
    ``LTime`` and moves it on by one.
    """

    size: int = BUFFER_SIZE
    clock: int = 1
    #: Told of every event kept (after it is in the buffer).
    listeners: list[Callable[[UserEvent], object]] = field(default_factory=list)
    _events: deque[UserEvent] = field(init=False)

    def __post_init__(self) -> None:
        self._events = deque(maxlen=self.size)

    def fire(
        self,
        event: UserEvent,
        node: str,
        services: Iterable[tuple[str, Iterable[str]]],
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> tuple[UserEvent, bool]:
        """Fire *event* (its ID and version are given here) as this agent's only member
        receives it.  Returns the event as Consul's fire answers it (``LTime`` 0) and
        whether it was kept.  Raises what :func:`validate` and :func:`check_size` raise."""
        validate(event)
        fired = UserEvent(
            id=new_id(),
            name=event.name,
            payload=event.payload or None,
            node_filter=event.node_filter,
            service_filter=event.service_filter,
            tag_filter=event.tag_filter,
        )
        check_size(fired, self.clock)
        received = replace(fired, ltime=self.clock)
        self.clock += 1
        kept = received.name != REMOTE_EXEC and accepts(received, node, services)
        if kept:
            self._events.append(received)
            for listener in list(self.listeners):
                listener(received)
        return fired, kept

    def events(self, name: str = "") -> list[UserEvent]:
        """The kept events, oldest first (only those called *name*, when given)."""
        return [e for e in self._events if not name or e.name == name]

    def index(self, name: str = "") -> int:
        """The list's ``X-Consul-Index``: from the newest event's ID, 1 when none."""
        found = self.events(name)
        return found[-1].index if found else 1
