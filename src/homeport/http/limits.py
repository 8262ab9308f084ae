"""How long a request may take to arrive, and how many connections one client may hold.

Twisted's idle timeout starts again on every byte, so a client sending one byte every
few seconds keeps a connection (and its buffers) forever.  As nginx's
``client_header_timeout`` and ``client_body_timeout``, a request's head must arrive
whole within ``header_timeout`` of its first byte (of the connection, for the first
one), and its body within ``body_timeout`` of the head, plus a second per MiB it
declares (so a 1 GiB snapshot restore may take 17 minutes more, a 1 MiB body one
second); else ``408`` and the connection is closed.  They cover *receiving* a request
only: once it is in, answering it (an event stream, a WebSocket, a blocking query's
wait) takes as long as it takes.

``max_client_connections`` caps the connections one client address holds open at once
(over it: ``503`` and close), so one host cannot take every file descriptor.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bytes per second a declared body is granted beyond ``body_timeout``.
BODY_RATE = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Limits:
    #: Seconds for a request's head to arrive (``--header-timeout``).
    header_timeout: float = 60.0
    #: Seconds for a request's body to arrive after its head (``--body-timeout``).
    body_timeout: float = 60.0
    #: Connections open at once per client address (``--max-client-connections``).
    max_client_connections: int = 256

    def body_deadline(self, length: int | None) -> float:
        """Seconds a body of *length* bytes (None: chunked, unknown) may take."""
        return self.body_timeout + (length or 0) / BODY_RATE


class Clients:
    """Open connections per client address, within a cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        """Count one more connection from *address*; False (not counted) over the cap."""
        count = self.open.get(address, 0)
        if count >= self.cap:
            return False
        self.open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self.open.get(address, 0) - 1
        if count > 0:
            self.open[address] = count
        else:
            self.open.pop(address, None)
