"""RELP, rsyslog's acknowledged syslog transport (``omrelp``), server side.

A session is ``open`` (offers answered with ``200 OK``, ``commands=syslog``), then
``syslog`` frames, each answered ``200 OK`` only once its record is committed to the
store (the promise of ``/log``: 200 means stored, and survives ``kill -9``), then
``close``.  Answers go out in the order of the frames they answer, so ``close`` is
answered after every ``syslog`` before it.  A sender whose frames are not answered
(the daemon died) sends them again on its next session: nothing acknowledged is lost.
When the daemon stops, each session is told ``serverclose`` first.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from ..record import Record
from .frames import MAX_RELP_DATA, RelpError, RelpFrame, RelpFramer, relp_frame
from .listen import Connection, StreamFactory
from .parse import parse_syslog

_log = Logger(namespace="homeport")
OK = b"200 OK"
OFFERS = b"200 OK\nrelp_version=0\nrelp_software=homeport\ncommands=syslog"


class _Answer:
    """One frame's answer, in the order frames came; ``body`` None until it is known."""

    __slots__ = ("body", "close", "txnr")

    def __init__(self, txnr: int, body: bytes | None = None, close: bool = False) -> None:
        self.txnr = txnr
        self.body = body
        self.close = close


class RelpConnection(Connection):
    """One RELP session."""

    def __init__(self, factory: StreamFactory) -> None:
        Connection.__init__(self, factory)
        self.framer = RelpFramer(max(MAX_RELP_DATA, self.ingest.limits.max_message))
        self.opened = False
        self.closing = False
        self.stopping = False  # the daemon is stopping: serverclose once answers are out
        self.answers: deque[_Answer] = deque()

    def dataReceived(self, data: bytes) -> None:
        TimeoutMixin.resetTimeout(self)
        if self.closing:
            return
        try:
            frames = self.framer.feed(data)
        except RelpError as e:
            self._broken(str(e))
            return
        records: list[Record] = []
        waiting: list[_Answer] = []
        for frame in frames:
            answer = self._command(frame, records)
            self.answers.append(answer)
            if answer.body is None:
                waiting.append(answer)
            if answer.close:
                self.closing = True
                break
        if records:
            self.submit(records, lambda result: self._stored(waiting, result))
        self._send()

    def _command(self, frame: RelpFrame, records: list[Record]) -> _Answer:
        if frame.command == "syslog":
            if not self.opened:
                return _Answer(frame.txnr, b"500 session not opened")
            now = self.ingest.now()
            records.append(
                parse_syslog(
                    frame.data,
                    now,
                    peer=self.peer,
                    assume=self.ingest.assume,
                    max_size=self.ingest.limits.max_message,
                )
            )
            return _Answer(frame.txnr)
        if frame.command == "open":
            if self.opened:
                return _Answer(frame.txnr, b"200 connection already open - ignored")
            self.opened = True
            return _Answer(frame.txnr, OFFERS)
        if frame.command == "close":
            return _Answer(frame.txnr, b"", close=True)
        return _Answer(frame.txnr, b"500 command not supported")

    def _stored(self, waiting: list[_Answer], result: list[int] | BaseException) -> None:
        body = (
            OK
            if not isinstance(result, BaseException)
            else b"500 not stored: %s" % (str(result).encode("utf-8", "replace")[:200])
        )
        for answer in waiting:
            answer.body = body
        self._send()

    def _send(self) -> None:
        """Write every answer that is ready, in order; close after ``close``'s."""
        out: list[bytes] = []
        close = False
        while self.answers and self.answers[0].body is not None:
            answer = self.answers.popleft()
            assert answer.body is not None
            out.append(relp_frame(answer.txnr, "rsp", answer.body))
            close = close or answer.close
        if self.transport is None:
            return
        if self.stopping and not self.answers and not close:
            out.append(relp_frame(0, "serverclose"))
            close = True
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.loseConnection()

    def _broken(self, reason: str) -> None:
        _log.warn("RELP from {peer}: {reason}; closing the session", peer=self.peer, reason=reason)
        self.closing = True
        if self.transport is not None:
            self.transport.write(relp_frame(0, "serverclose"))
            self.transport.loseConnection()

    def server_close(self) -> None:
        """The daemon is stopping: read nothing more, answer what is being stored, then
        tell the sender (``serverclose``) and close."""
        self.closing = self.stopping = True
        self._send()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.answers.clear()
        Connection.connectionLost(self, reason)


class RelpFactory(StreamFactory):
    def __init__(self, ingest: Any, reactor: Any) -> None:
        StreamFactory.__init__(self, ingest, reactor, parse_syslog, RelpConnection)

    def close_all(self) -> None:
        self.listening = False
        for connection in list(self.connections):
            if isinstance(connection, RelpConnection):
                connection.server_close()
            elif connection.transport is not None:
                connection.transport.loseConnection()
