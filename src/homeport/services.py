"""Small services the wiring uses: SIGHUP's reload, SIGTERM's exit 0, a callback at stop."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from .part import IHomeportReactor

log = Logger(namespace="homeport")


class OnStop(Service):
    """Calls *callback* when stopped."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback

    def stopService(self) -> None:
        Service.stopService(self)
        self.callback()


class HangupService(Service):
    """SIGHUP: read again what lives in files (``--config-dir``, certificate directories).

    As Consul's agent, the daemon always takes SIGHUP as "reload", never as "exit" (the
    default meaning of the signal): with nothing to read again it says so and goes on.
    """

    def __init__(self, reactor: IReactorFromThreads, actions: Sequence[Callable[[], None]]) -> None:
        self.reactor = reactor
        self.actions = list(actions)
        self._previous_handler: Any = None

    def startService(self) -> None:
        Service.startService(self)
        if hasattr(signal, "SIGHUP"):
            try:
                self._previous_handler = signal.signal(signal.SIGHUP, self._hup)
            except ValueError:  # not the main thread (tests)
                self._previous_handler = None

    def stopService(self) -> None:
        Service.stopService(self)
        if self._previous_handler is not None:
            signal.signal(signal.SIGHUP, self._previous_handler)
            self._previous_handler = None

    def _hup(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.run)

    def run(self) -> None:
        log.info("SIGHUP: reloading ({count} source(s) to read again)", count=len(self.actions))
        for action in list(self.actions):
            try:
                action()
            except Exception:  # noqa: BLE001 - one broken reload must not stop the others
                log.failure("Reading files again after SIGHUP")


class TermService(Service):
    """SIGTERM (``docker stop``, systemd): stop, commit what is held, and exit 0.

    Twisted's own handler stops the reactor too but then has ``twist`` end by the signal
    (exit status 143); a stop asked for and done cleanly is a success, as nginx and
    PostgreSQL report theirs.  A failed start still exits 1, SIGINT still ends by signal.
    """

    def __init__(self, reactor: IHomeportReactor) -> None:
        self.reactor = reactor
        self._previous_handler: Any = None

    def startService(self) -> None:
        Service.startService(self)
        # twist starts services before the reactor runs and installs its own handlers.
        self.reactor.callWhenRunning(self._install)

    def _install(self) -> None:
        try:
            self._previous_handler = signal.signal(signal.SIGTERM, self._term)
        except ValueError:  # not the main thread (tests)
            self._previous_handler = None

    def stopService(self) -> None:
        Service.stopService(self)
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def _term(self, signum: int, frame: FrameType | None) -> None:
        log.info("SIGTERM: shutting down")
        self.reactor.callFromThread(self._stop)

    def _stop(self) -> None:
        if self.reactor.running:
            self.reactor.stop()
