"""ZeroMQ in: one SUB socket on the reactor, its messages published under ``zmq/``.

No thread: the socket's ``ZMQ_FD`` is added to the reactor as a reader.  That descriptor
is *edge-triggered* — it signals that the socket's state changed, not that a message is
waiting — so:

* every wake-up drains with ``recv_multipart(NOBLOCK)`` while ``EVENTS`` says ``POLLIN``,
  at most ``budget`` messages (and about ``byte_budget`` bytes: :class:`Limits`) per
  reactor turn; if more are waiting, the rest is drained on the next turn
  (``callLater(0)``), so a flood never starves HTTP;
* ``EVENTS`` is checked again after every other socket operation (subscribe, connect,
  bind), which can swallow the edge;
* a slow safety timer drains anyway, in case an edge was missed.

Memory stays bounded under a flood: the socket's receive high-water mark caps what ZeroMQ
queues (a PUB drops beyond it), ``MAXMSGSIZE`` caps one message, and the hub's history
and each client's queue have their own caps.

CURVE: with :class:`Curve` set, the SUB socket is a CURVE server (its secret key from a
``zmq.auth`` certificate file) and pyzmq's ZAP handler (``zmq.auth.thread``, its own
thread and inproc socket on this socket's context) lets in only publishers whose public
key is in the clients directory; that directory is read again when it changes.  Any
other peer (no key, an unknown key) never completes the handshake, so nothing it sends
is delivered.

Message shapes: multipart ``[topic, payload...]``; a single frame ``"topic payload"``
(topic = text before the first space).  A topic that is not UTF-8 text or not a usable
topic, or a payload that is too large, is counted (:attr:`ZmqSubscriber.malformed`) and
logged (the first few, then every thousandth), never raised.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import strictjson
from .hub import ZMQ_PREFIX, BadTopic, Hub, check_topic

# Per reactor turn: at most this many messages and about this many bytes.  A TCP
# transport sends at most 128 KiB per turn (twisted's SEND_LIMIT), so a turn must add
# well under that to a subscriber's buffer, or even a reader that keeps up would see its
# buffer grow under a flood until it is cut off.
DEFAULT_BUDGET = 200
DEFAULT_BYTE_BUDGET = 48 * 1024
DEFAULT_HWM = 10_000
DEFAULT_MAX_MESSAGE = 1024 * 1024
SAFETY_INTERVAL = 1.0
SCHEMES = ("tcp", "ipc", "inproc", "pgm", "epgm", "udp", "ws", "wss", "vmci")


@dataclass(frozen=True)
class Limits:
    """What the SUB socket queues and what one reactor turn drains."""

    budget: int = DEFAULT_BUDGET  # messages per reactor turn, at most
    byte_budget: int = DEFAULT_BYTE_BUDGET  # bytes per reactor turn, about
    hwm: int = DEFAULT_HWM  # ZeroMQ's receive high-water mark (messages)
    max_message: int = DEFAULT_MAX_MESSAGE  # ZeroMQ's MAXMSGSIZE (bytes)


@dataclass(frozen=True)
class Curve:
    """CURVE security: the server's secret-key certificate, the allowed clients' dir."""

    server_key: Path
    clients: Path


def load_server_key(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) from a ``zmq.auth`` certificate; ValueError saying what is wrong."""
    import zmq.auth

    if not path.is_file():
        raise ValueError("no such file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as e:
        raise ValueError(e.strerror or str(e)) from None
    except ValueError:
        raise ValueError("not a zmq.auth certificate") from None
    if secret is None:
        raise ValueError("holds no secret key (give the .key_secret file)")
    if len(public) != 40 or len(secret) != 40:
        raise ValueError("not a CURVE key pair (40 Z85 characters each)")
    return public, secret


def exposed_bind(address: str) -> bool:
    """Whether a ``--zmq-bind`` address accepts peers beyond loopback."""
    scheme, _, rest = address.partition("://")
    if scheme in ("ipc", "inproc"):
        return False
    host = rest.rpartition(":")[0].strip("[]").lower()
    return not (host.startswith("127.") or host in ("localhost", "::1", "lo"))


def check_clients(path: Path) -> Path:
    """The allowed clients' directory; ValueError when it is not one."""
    if not path.is_dir():
        raise ValueError("not a directory")
    return path


def _clients_stamp(path: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        return tuple(
            sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size) for e in path.iterdir())
        )
    except OSError:
        return ()


class BadMessage(Exception):
    """A message whose shape homeport cannot use (counted, logged, dropped)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_address(address: str) -> str:
    """``tcp://host:port`` and the like; ValueError otherwise."""
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in SCHEMES or not rest:
        raise ValueError(address)
    return address


def decode_payload(frame: bytes) -> Any:
    """A payload frame as event data: JSON when it is JSON, else text, else base64."""
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(frame).decode("ascii")}
    stripped = text.strip()
    if stripped[:1] in ("{", "[", '"'):
        try:
            return strictjson.loads(stripped)  # not NaN: browsers and the history refuse it
        except ValueError:
            pass
    return text


def parse_message(frames: Sequence[bytes]) -> tuple[str, Any]:
    """``[topic, payload...]`` or ``[b"topic payload"]`` -> (hub topic, data)."""
    if not frames:
        raise BadMessage("no frames")
    if len(frames) == 1:
        topic_bytes, _, payload = frames[0].partition(b" ")
        payloads = [payload]
    else:
        topic_bytes, payloads = frames[0], list(frames[1:])
    try:
        topic = topic_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise BadMessage("the topic is not UTF-8 text") from None
    try:
        check_topic(ZMQ_PREFIX + topic)
    except BadTopic as e:
        raise BadMessage(e.reason) from None
    if not topic:
        raise BadMessage("the topic is empty")
    data = (
        decode_payload(payloads[0]) if len(payloads) == 1 else [decode_payload(p) for p in payloads]
    )
    return ZMQ_PREFIX + topic, data


@implementer(IReadDescriptor)
class ZmqSubscriber(Service):
    """The SUB socket's lifetime, from ``startService`` to ``stopService``."""

    log = Logger()

    def __init__(
        self,
        hub: Hub,
        reactor: Any,
        connect: Sequence[str] = (),
        bind: Sequence[str] = (),
        topics: Sequence[str] = (),
        limits: Limits = Limits(),
        curve: Curve | None = None,
    ) -> None:
        self.hub = hub
        self.reactor = reactor
        self.connect_to = list(connect)
        self.bind_to = list(bind)
        self.topics = list(topics) or [""]
        self.limits = limits
        self.curve = curve
        self.authenticator: Any = None
        self._clients_stamp: tuple[tuple[str, int, int], ...] = ()
        self.received = 0
        self.malformed = 0
        self.context: Any = None
        self.socket: Any = None
        self._fd: int = -1
        self._pending: Any = None
        self._safety: LoopingCall | None = None

    # -- service ------------------------------------------------------------

    def startService(self) -> None:
        import zmq

        from ..errors import StartupError

        Service.startService(self)
        self.context = zmq.Context()
        socket = self.context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVHWM, self.limits.hwm)
        socket.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message)
        for topic in self.topics:
            socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        self.socket = socket
        if self.curve is not None:
            self._secure(socket, self.curve)
        for option, addresses, method in (
            ("--zmq-bind", self.bind_to, socket.bind),
            ("--zmq-connect", self.connect_to, socket.connect),
        ):
            for address in addresses:
                try:
                    method(address)
                except zmq.ZMQError as e:
                    self._close()
                    failed = "cannot listen" if option == "--zmq-bind" else "cannot connect"
                    reason = e.strerror or str(e)
                    raise StartupError(f"{option} {address!r}: {failed}: {reason}") from None
                self.log.info("ZeroMQ SUB {how} {address}", how=option[6:], address=address)
        self._fd = socket.getsockopt(zmq.FD)
        self.reactor.addReader(self)
        self._safety = LoopingCall(self._tick)
        self._safety.clock = self.reactor
        self._safety.start(SAFETY_INTERVAL, now=False)
        self._schedule()  # the operations above may have consumed the edge

    def _secure(self, socket: Any, curve: Curve) -> None:
        """Make *socket* a CURVE server admitting only the keys in ``curve.clients``."""
        from zmq.auth.thread import ThreadAuthenticator

        public, secret = load_server_key(curve.server_key)
        self.authenticator = ThreadAuthenticator(self.context)
        self.authenticator.start()
        self._reload_clients(force=True)
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True
        self.log.info("ZeroMQ CURVE on: clients from {dir}", dir=str(curve.clients))

    def _reload_clients(self, force: bool = False) -> None:
        if self.curve is None or self.authenticator is None:
            return
        stamp = _clients_stamp(self.curve.clients)
        if force or stamp != self._clients_stamp:
            self._clients_stamp = stamp
            self.authenticator.configure_curve(domain="*", location=str(self.curve.clients))
            if not force:
                self.log.info(
                    "ZeroMQ CURVE clients reloaded from {dir}", dir=str(self.curve.clients)
                )

    def _tick(self) -> None:
        self._reload_clients()
        self.doRead()

    def stopService(self) -> None:
        Service.stopService(self)
        self._close()

    def _close(self) -> None:
        if self._safety is not None and self._safety.running:
            self._safety.stop()
        self._safety = None
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self.socket is not None:
            if self._fd >= 0:
                self.reactor.removeReader(self)
            self.socket.close(linger=0)
            self.socket = None
        self._fd = -1
        if self.authenticator is not None:
            self.authenticator.stop()
            self.authenticator = None
        if self.context is not None:
            self.context.term()
            self.context = None

    # -- IReadDescriptor -----------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "zmq"

    def connectionLost(self, reason: Failure) -> None:
        self.log.error("ZeroMQ descriptor lost: {reason}", reason=reason.getErrorMessage())

    def doRead(self) -> None:
        """Drain at most ``limits.budget`` messages; come back next turn if more wait."""
        import zmq

        socket = self.socket
        if socket is None:
            return
        taken = 0
        for _ in range(self.limits.budget):
            if taken > self.limits.byte_budget:
                break
            try:
                if not socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                    return
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as e:
                self.log.error("ZeroMQ receive failed: {error}", error=str(e))
                return
            self.received += 1
            taken += sum(len(f) for f in frames)
            self.handle(frames)
        self._schedule()

    def _schedule(self) -> None:
        if self._pending is None or not self._pending.active():
            self._pending = self.reactor.callLater(0, self.doRead)

    def handle(self, frames: Sequence[bytes]) -> None:
        try:
            topic, data = parse_message(frames)
        except BadMessage as e:
            self.malformed += 1
            if self.malformed <= 10 or self.malformed % 1000 == 0:
                self.log.warn(
                    "Dropped a ZeroMQ message ({count} so far): {reason}",
                    count=self.malformed,
                    reason=e.reason,
                )
            return
        self.hub.publish(topic, data)
