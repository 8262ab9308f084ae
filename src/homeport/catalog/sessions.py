"""Session TTLs: a session nobody renews is invalidated, on the reactor's clock.

As Consul's leader does, a session with a TTL is invalidated once twice its TTL has
passed without a renewal (``PUT /v1/session/renew/:id``); every renewal, and every
start of the daemon, gives it the full time again.  Invalidation itself (releasing or
deleting the session's keys, the lock delay) is the catalog's.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from .model import Catalog, Change, Session

TTL_MULTIPLIER = 2


class SessionTimers(Service):
    log = Logger()

    def __init__(self, catalog: Catalog, reactor: Any) -> None:
        self.catalog = catalog
        self.reactor = reactor
        self._timers: dict[str, IDelayedCall] = {}
        self._unsubscribe: Any = None

    def startService(self) -> None:
        Service.startService(self)
        self._unsubscribe = self.catalog.subscribe(self._changed)
        self.catalog.renew_listeners.append(self._renewed)
        for session in list(self.catalog.sessions.values()):
            self._arm(session)

    def stopService(self) -> None:
        Service.stopService(self)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._renewed in self.catalog.renew_listeners:
            self.catalog.renew_listeners.remove(self._renewed)
        for session_id in list(self._timers):
            self._disarm(session_id)

    def _changed(self, changes: list[Change]) -> None:
        for change in changes:
            if change.kind != "session":
                continue
            if isinstance(change.value, Session):
                if change.previous is None:
                    self._arm(change.value)
            else:
                self._disarm(change.key[0])

    def _renewed(self, session_id: str) -> None:
        session = self.catalog.sessions.get(session_id)
        if session is not None:
            self._arm(session)

    def _arm(self, session: Session) -> None:
        self._disarm(session.id)
        if session.ttl > 0:
            self._timers[session.id] = self.reactor.callLater(
                session.ttl * TTL_MULTIPLIER, self._expire, session.id
            )

    def _disarm(self, session_id: str) -> None:
        call = self._timers.pop(session_id, None)
        if call is not None and call.active():
            call.cancel()

    def _expire(self, session_id: str) -> None:
        self._timers.pop(session_id, None)
        session = self.catalog.sessions.get(session_id)
        if session is None:
            return
        self.log.info(
            "Session {id} ({name}) was not renewed within twice its TTL: invalidated",
            id=session_id,
            name=session.name or "no name",
        )
        self.catalog.session_destroy(session_id)
