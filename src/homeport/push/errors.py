"""What a client of ``/v1/events`` can get wrong, as values; :mod:`.sse` maps each to a status.

Each error's ``str()`` is the plain-text body the client gets.  (A bad topic is
:class:`~.hub.BadTopic`, a bad log filter :class:`~homeport.logs.query.BadQuery`.)
"""

from __future__ import annotations

from ..errors import error


class EventsError(Exception):
    """A request to ``/v1/events`` that cannot be served as asked."""


@error
class MethodNotAllowed(EventsError):
    method: str
    allow: str  # the methods that are, for the Allow header

    def __str__(self) -> str:
        return f"method {self.method} not allowed"


@error
class MissingTopic(EventsError):
    def __str__(self) -> str:
        return "?topic= is required (a topic, or a prefix ending in *)"


@error
class BadLastEventID(EventsError):
    given: str

    def __str__(self) -> str:
        return f"Last-Event-ID {self.given!r}: expected an event id"


@error
class WriteDenied(EventsError):
    def __str__(self) -> str:
        return "Permission denied: a valid token is required for writes"


@error
class ReservedTopic(EventsError):
    """A topic that only homeport publishes on (``catalog``, ``kv``, ``logs``, ``zmq/*``)."""

    topic: str

    def __str__(self) -> str:
        return f"topic {self.topic!r}: published by homeport itself"


@error
class BodyTooLarge(EventsError):
    def __str__(self) -> str:
        return "Request body too large"


@error
class BadBody(EventsError):
    """An event body that is not UTF-8 text, or (declared as JSON) not JSON."""

    json: bool  # True: declared JSON but not; False: not UTF-8

    def __str__(self) -> str:
        if self.json:
            return "The event body is not valid JSON"
        return "The event body must be UTF-8 text or JSON"
