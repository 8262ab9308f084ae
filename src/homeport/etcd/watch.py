"""One etcd watch kept alive across disconnects and members.

A watch is one streamed POST to ``/v3/watch``: the reply is a line of JSON per
WatchResponse, for as long as the connection lasts.  When it ends (the member died, lost
its leader, the network dropped) the watcher connects to the next member after a backoff
and asks again from the last revision it saw + 1, so no event is missed or repeated,
until :meth:`Watcher.stop`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.iweb import IAgent

from . import wire
from .gateway import Body, call, deliver, post
from .values import Event

log = Logger()

EventsCallback = Callable[[list[Event], int], None]
CompactedCallback = Callable[[int], None]
ConnectedCallback = Callable[[bool], None]

#: Reconnection backoff: first wait, longest wait (seconds).
BACKOFF = (0.05, 2.0)
STATUS = "/v3/maintenance/status"


class _StreamEnded(Exception):
    """The watch stream ended or was refused; *reason* says how."""


class Watcher:
    """A watch on [key, range_end) from *start_revision* (see ``EtcdClient.watch``).

    :attr:`revision` is the last revision this watcher has seen complete: events up to it
    were handed over, and after a reconnect it resumes from ``revision + 1``.
    :attr:`done` fires (with None) once the watcher has stopped: by :meth:`stop`, or
    after ``on_compacted``.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        http: IAgent,
        endpoints: Sequence[str],
        first: int,
        request: tuple[bytes, bytes, int],
        callbacks: tuple[EventsCallback, CompactedCallback, ConnectedCallback | None],
        probe: float = 5.0,
    ) -> None:
        self._reactor = reactor
        self._probe_every = probe
        self._http = http
        self._endpoints = tuple(endpoints)
        self._index = first
        self._key, self._range_end, start_revision = request
        self.revision = max(start_revision - 1, 0)
        self._from_now = start_revision <= 0
        self._on_events, self._on_compacted, self._on_connected = callbacks
        self._connected: bool | None = None
        self._delay = BACKOFF[0]
        self.stopped = False
        self.done: Deferred[None] = Deferred.fromCoroutine(self._run())

    @property
    def endpoint(self) -> str:
        """The member this watcher is (or will next be) connected to."""
        return self._endpoints[self._index % len(self._endpoints)]

    def stop(self) -> None:
        """Stop watching: the stream is closed and no callback is called again."""
        if not self.stopped:
            self.stopped = True
            self.done.cancel()

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self.stopped:
                try:
                    await self._stream(self.endpoint)
                    reason = "the stream ended"
                except _StreamEnded as e:
                    reason = str(e)
                except CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - the network boundary: any failure
                    reason = repr(e)  # of one stream means "try again elsewhere"
                if self.stopped:
                    return
                lost = self.endpoint
                self._index += 1
                self._report(False)
                log.info(
                    "etcd watch on {endpoint} lost ({reason}); again from revision {rev}",
                    endpoint=lost,
                    reason=reason,
                    rev=self.revision + 1,
                )
                await deferLater(self._reactor, self._delay, lambda: None)
                self._delay = min(self._delay * 2, BACKOFF[1])
        except CancelledError:
            if not self.stopped:
                raise

    async def _stream(self, endpoint: str) -> None:
        start = 0 if self._from_now else self.revision + 1
        request = wire.watch_request(self._key, self._range_end, start)
        response = await post(self._http, endpoint + "/v3/watch", request)
        if response.code != 200:
            raise _StreamEnded(f"HTTP {response.code}")
        body = deliver(response, _Lines(self._message).feed)
        probe = Deferred.fromCoroutine(self._probe(endpoint, body))
        probe.addErrback(lambda f: f.trap(CancelledError))
        try:
            await body.done
        finally:
            probe.cancel()

    async def _probe(self, endpoint: str, body: Body) -> None:
        """Ask the watched member for its status every *probe* seconds: a stream whose
        member does not answer in time (hung, or cut off from us with no reset, so the
        stream just goes quiet) or has no leader is dropped, and the watch moves on."""
        while True:
            await deferLater(self._reactor, self._probe_every, lambda: None)
            check = Deferred.fromCoroutine(call(self._http, endpoint + STATUS, {}))
            check.addTimeout(self._probe_every, self._reactor)
            try:
                await check
            except CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure: the member is not there
                body.abort(_StreamEnded(f"status probe: {e.__class__.__name__}: {e}"))
                return

    def _message(self, message: dict[str, Any]) -> None:
        if self.stopped:  # stopped by a callback: the rest of this chunk is not told
            return
        problem = wire.error_of(message)
        if problem is not None:
            raise _StreamEnded(str(problem))
        result = message.get("result") or {}
        revision = wire.header_revision(result)
        if result.get("created"):
            if self._from_now:  # "from now" becomes "after what was current then"
                self._from_now = False
                self.revision = max(revision, self.revision)
            self._delay = BACKOFF[0]
            self._report(True)
        if wire.num(result, "compact_revision"):
            self._compacted(wire.num(result, "compact_revision"))
            return
        if result.get("canceled"):
            raise _StreamEnded(f"canceled: {result.get('cancel_reason') or 'no reason'}")
        events = wire.events(result.get("events") or ())
        if events:
            # Not the header's revision: while catching up, etcd sends its current
            # revision with each batch of history, ahead of the events.
            self.revision = max(self.revision, events[-1].kv.mod_revision)
            self._call(self._on_events, events, self.revision)
        elif not result.get("created"):  # a progress notification: nothing up to revision
            self.revision = max(self.revision, revision)
            self._call(self._on_events, [], self.revision)

    def _compacted(self, compact_revision: int) -> None:
        self.stopped = True
        self._call(self._on_compacted, compact_revision)
        raise _StreamEnded("compacted")

    def _report(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            if self._on_connected is not None:
                self._call(self._on_connected, connected)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - the caller's bug must not end the watch
            log.failure("etcd watch callback {callback!r} failed", callback=callback)


class _Lines:
    """Split a streamed body into lines of JSON, each handed to *on_message*."""

    def __init__(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        self._buffer = b""
        self._on_message = on_message

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.strip():
                message = json.loads(line)
                if isinstance(message, dict):
                    self._on_message(message)
