"""Cutting TCP streams into messages (pure: no Twisted).

* :class:`SyslogFramer`: RFC 6587 both ways, decided frame by frame: octet counting
  (``LEN SP MSG``) when a frame starts with a digit, else non-transparent framing, the
  message ending at LF (or at NUL, for senders such as Python's ``SysLogHandler`` that
  end each message with one: the first delimiter a connection uses decides).  With
  ``octet_counting=False`` it reads one line per message (JSON lines).
* :class:`RelpFramer`: RELP frames, ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``.

Memory is bounded: a message over *max_size* bytes yields its first *max_size* bytes,
marked truncated, and the rest of it is skipped as it arrives, never buffered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .parse import MAX_MESSAGE

_OCTET_COUNT = re.compile(rb"([1-9][0-9]{0,8}) ")
_ALL_DIGITS = re.compile(rb"[0-9]{1,9}\Z")
#: Bytes between frames that make no message (a sender's stray line ends).
_BETWEEN = b"\r\n\x00"


class SyslogFramer:
    """Bytes of one connection in, ``(message, truncated)`` pairs out."""

    def __init__(self, max_size: int = MAX_MESSAGE, octet_counting: bool = True) -> None:
        self.max_size = max_size
        self.octet_counting = octet_counting
        self.delimiter: bytes | None = None if octet_counting else b"\n"
        self.buffer = bytearray()
        self._skip = 0  # bytes of a cut octet-counted message still to come
        self._discard_line = False  # the rest of a cut line is still to come

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """The messages *data* completes, in order."""
        self.buffer += data
        out: list[tuple[bytes, bool]] = []
        pos = 0
        while True:
            if self._skip or self._discard_line:
                pos = self._skipping(pos)
                if self._skip or self._discard_line:
                    break
                continue
            while pos < len(self.buffer) and self.buffer[pos] in _BETWEEN:
                pos += 1
            if pos >= len(self.buffer):
                break
            if self.octet_counting and self.buffer[pos] in b"0123456789":
                end = self._counted(pos, out)
            else:
                end = self._delimited(pos, out)
            if end is None:
                break
            pos = end
        del self.buffer[:pos]
        return out

    def _skipping(self, pos: int) -> int:
        """Drop what is left of a cut message from ``buffer[pos:]``; the new position."""
        if self._skip:
            taken = min(self._skip, len(self.buffer) - pos)
            self._skip -= taken
            return pos + taken
        end = self._find_delimiter(pos)
        if end < 0:
            return len(self.buffer)
        self._discard_line = False
        return end + 1

    def _counted(self, pos: int, out: list[tuple[bytes, bool]]) -> int | None:
        """An octet-counted message at *pos*: where it ends, or None to wait for more."""
        match = _OCTET_COUNT.match(self.buffer, pos)
        if match is None:
            if _ALL_DIGITS.match(self.buffer, pos) and len(self.buffer) - pos < 10:
                return None  # the length is still arriving
            return self._delimited(pos, out)  # digits, but no length: a plain line
        length = int(match.group(1))
        start = match.end()
        wanted = min(length, self.max_size)
        if len(self.buffer) - start < wanted:
            return None
        out.append((bytes(self.buffer[start : start + wanted]), length > wanted))
        self._skip = length - wanted
        return start + wanted

    def _choose_delimiter(self, pos: int) -> bytes | None:
        """LF or NUL, from the first message that ends; None while none has."""
        lf = self.buffer.find(b"\n", pos)
        nul = self.buffer.find(b"\x00", pos)
        if nul >= 0 and (lf < 0 or nul < lf):
            return b"\x00"
        if lf < 0:
            return None
        if nul >= 0 and self.buffer.find(b"\n<", pos, nul) < 0:
            return b"\x00"  # a first message of several lines, NUL-terminated
        return b"\n"

    def _find_delimiter(self, pos: int) -> int:
        return self.buffer.find(self.delimiter or b"\n", pos)

    def _delimited(self, pos: int, out: list[tuple[bytes, bool]]) -> int | None:
        """A delimited message at *pos*: where the next one starts, or None to wait."""
        if self.delimiter is None:
            self.delimiter = self._choose_delimiter(pos)
        end = self._find_delimiter(pos) if self.delimiter is not None else -1
        if 0 <= end <= pos + self.max_size:
            out.append((bytes(self.buffer[pos:end]), False))
            return end + 1
        if len(self.buffer) - pos > self.max_size:
            out.append((bytes(self.buffer[pos : pos + self.max_size]), True))
            self._discard_line = True
            return pos + self.max_size
        return None

    def pending(self) -> bytes:
        """What a message still being received has so far (for the end of a stream)."""
        return bytes(self.buffer)


# -- RELP -------------------------------------------------------------------------

#: The largest DATA a RELP frame may have (librelp's own default is 128 KiB).
MAX_RELP_DATA = 256 * 1024
_RELP_HEADER = re.compile(rb"([0-9]{1,9}) ([A-Za-z]{1,32}) ([0-9]{1,9})")
_RELP_HEADER_START = re.compile(rb"[0-9]{0,9}(?: [A-Za-z]{0,32}(?: [0-9]{0,9})?)?\Z")


@dataclass(frozen=True)
class RelpFrame:
    txnr: int
    command: str
    data: bytes


class RelpError(Exception):
    """The peer broke the RELP framing: the session cannot go on."""


def relp_frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    """A RELP frame's bytes."""
    head = b"%d %s %d" % (txnr, command.encode("ascii"), len(data))
    return head + (b" " + data if data else b"") + b"\n"


class RelpFramer:
    """Bytes of one RELP session in, :class:`RelpFrame` out (:class:`RelpError` when
    the framing is broken)."""

    def __init__(self, max_data: int = MAX_RELP_DATA) -> None:
        self.max_data = max_data
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[RelpFrame]:
        self.buffer += data
        out: list[RelpFrame] = []
        pos = 0
        while pos < len(self.buffer):
            end = self._frame(pos, out)
            if end is None:
                break
            pos = end
        del self.buffer[:pos]
        return out

    def _frame(self, pos: int, out: list[RelpFrame]) -> int | None:
        match = _RELP_HEADER.match(self.buffer, pos)
        if match is None or match.end() == len(self.buffer):
            if _RELP_HEADER_START.match(self.buffer, pos):
                return None  # a header still arriving
            raise RelpError("invalid RELP frame header")
        txnr, command, length = int(match.group(1)), match.group(2), int(match.group(3))
        if length > self.max_data:
            raise RelpError(f"RELP frame data of {length} bytes is over {self.max_data}")
        start = match.end()
        if length == 0:
            if self.buffer[start : start + 1] != b"\n":
                raise RelpError("RELP frame has no trailer")
            out.append(RelpFrame(txnr, command.decode("ascii").lower(), b""))
            return start + 1
        if len(self.buffer) < start + 1 + length + 1:
            return None
        if self.buffer[start : start + 1] != b" " or self.buffer[start + 1 + length] != 0x0A:
            raise RelpError("RELP frame data is not where its length says")
        data = bytes(self.buffer[start + 1 : start + 1 + length])
        out.append(RelpFrame(txnr, command.decode("ascii").lower(), data))
        return start + 1 + length + 1
