"""The wire: query packets read, reply packets written.

The query is read by :func:`parse_query`, a strict scan of the header, the one
question and the additional section, because dnslib's full parse costs more than a
whole cached answer, accepts compression pointers in the question and tells nothing
about where the question's bytes are, which the reply splices back in.  Replies are
made of a :class:`Body` (everything after the question, packed by dnslib with its name
compression, see :func:`render_body`) and the query's own header and question
(:func:`assemble`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from dnslib import DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from ..errors import error
from .codes import AA, CD, FORMERR, NOTIMP, QR, RD, TC, TYPE_OPT
from .config import Config
from .resolve import Resolution

_HEADER = struct.Struct("!6H")
_QUESTION_START = 12  # the header's size


# ---------------------------------------------------------------------------
# Reading queries


class Unanswerable(Exception):
    """A packet that gets no reply at all: no readable header, or itself a reply."""


@error
class Malformed(Exception):
    """A readable header on a query we will not take: answered with *rcode*, no sections."""

    id: int
    flags: int
    rcode: int
    reason: str

    def reply(self) -> bytes:
        flags = QR | (self.flags & (0x7800 | RD | CD)) | self.rcode
        return _HEADER.pack(self.id, flags, 0, 0, 0, 0)


@dataclass(frozen=True)
class Edns:
    udp_size: int
    version: int
    dnssec_ok: bool
    has_options: bool


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    #: The question section exactly as sent (name, type, class): echoed in the reply.
    question: bytes
    #: The question with the name lower-cased: the same for every spelling of a name.
    key: bytes
    labels: tuple[bytes, ...]
    qtype: int
    qclass: int
    edns: Edns | None


def _skip_name(data: bytes, offset: int) -> int:
    """The offset after the (possibly compressed) name at *offset*."""
    while True:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            if offset + 2 > len(data):
                raise IndexError(offset)
            return offset + 2
        if length & 0xC0:
            raise ValueError(f"bad label type at {offset}")
        offset += 1 + length


class _FormatError(Exception):
    """A query we cannot read past its header (FORMERR), and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_query(data: bytes) -> Query:
    """Read a query packet, strictly: one question, no answers, at most one OPT.

    Raises :class:`Unanswerable` or :class:`Malformed`.
    """
    data = bytes(data)
    if len(data) < _QUESTION_START:
        raise Unanswerable()
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & QR:
        raise Unanswerable()
    if (flags >> 11) & 0xF:
        raise Malformed(ident, flags, NOTIMP, f"opcode {(flags >> 11) & 0xF}")
    if qdcount != 1:
        raise Malformed(ident, flags, FORMERR, f"{qdcount} questions")
    if ancount or nscount:
        raise Malformed(ident, flags, FORMERR, "answer or authority records in a query")
    try:
        labels, offset = _read_name(data)
        if offset + 4 > len(data):
            raise _FormatError("question without type and class")
        qtype, qclass = struct.unpack_from("!HH", data, offset)
        edns = _read_additional(data, offset + 4, arcount)
    except _FormatError as error:
        raise Malformed(ident, flags, FORMERR, error.reason) from None
    question = data[_QUESTION_START : offset + 4]
    key = data[_QUESTION_START:offset].lower() + data[offset : offset + 4]
    return Query(ident, flags, question, key, labels, qtype, qclass, edns)


def _read_name(data: bytes) -> tuple[tuple[bytes, ...], int]:
    """The question's name, lower-cased labels (no compression), and the offset after it."""
    offset = _QUESTION_START
    labels: list[bytes] = []
    size = 1
    while True:
        if offset >= len(data):
            raise _FormatError("question name runs off the end")
        length = data[offset]
        if length == 0:
            return tuple(labels), offset + 1
        if length > 63:
            raise _FormatError("compressed or invalid label in the question")
        size += length + 1
        end = offset + 1 + length
        if end > len(data) or size > 255:
            raise _FormatError("question name too long")
        labels.append(data[offset + 1 : end].lower())
        offset = end


def _read_additional(data: bytes, offset: int, count: int) -> Edns | None:
    """The *count* records from *offset* to the packet's end: at most one OPT, at the root."""
    edns = None
    try:
        for _ in range(count):
            start = offset
            offset = _skip_name(data, offset)
            rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
            offset += 10 + rdlength
            if offset > len(data):
                raise _FormatError("record runs off the end")
            if rtype == TYPE_OPT:
                if edns is not None or data[start] != 0:
                    raise _FormatError("more than one OPT record, or one not at the root")
                edns = Edns(
                    udp_size=rclass,
                    version=(ttl >> 16) & 0xFF,
                    dnssec_ok=bool(ttl & 0x8000),
                    has_options=rdlength > 0,
                )
    except (IndexError, ValueError, struct.error) as error:
        raise _FormatError(f"additional section: {error}") from None
    if offset != len(data):
        raise _FormatError("bytes after the last record")
    return edns


# ---------------------------------------------------------------------------
# Writing replies


@dataclass(frozen=True)
class Body:
    """Everything of a reply after its question, and what its header must say."""

    rcode: int
    authoritative: bool
    truncated: bool
    answers: int
    authority: int
    additional: int
    data: bytes


def question_size(labels: Sequence[bytes]) -> int:
    return sum(len(label) + 1 for label in labels) + 1 + 4


def render_body(
    labels: Sequence[bytes],
    qtype: int,
    qclass: int,
    resolution: Resolution,
    order: Sequence[int],
    room: int,
) -> Body:
    """Pack the resolution's entries in *order*, as many as fit in *room* bytes.

    Entries go whole (an SRV record with its target's address); when some do not fit
    the reply is marked truncated, so that the client asks again over TCP.
    """
    qname = DNSLabel(tuple(labels))
    entries = [resolution.entries[i] for i in order]

    def pack(count: int) -> tuple[bytes, int, int]:
        record = DNSRecord(DNSHeader(id=0, qr=1), q=DNSQuestion(qname, qtype, qclass))
        for entry in entries[:count]:
            record.rr.extend(entry.answers)
            record.ar.extend(entry.additional)
        record.auth.extend(resolution.authority)
        return record.pack(), len(record.rr), len(record.ar)

    packed = pack(len(entries))
    kept = len(entries)
    if len(packed[0]) > room and entries:
        # Largest prefix that fits: sizes grow with the count, so bisect.
        low, high = 0, len(entries) - 1
        packs = {}
        while low < high:
            middle = (low + high + 1) // 2
            packs[middle] = pack(middle)
            if len(packs[middle][0]) <= room:
                low = middle
            else:
                high = middle - 1
        kept = low
        packed = packs[low] if low in packs else pack(low)
    data, answers, additional = packed
    return Body(
        rcode=resolution.rcode,
        authoritative=resolution.authoritative,
        truncated=kept < len(entries),
        answers=answers,
        authority=len(resolution.authority),
        additional=additional,
        data=data[_QUESTION_START + question_size(labels) :],
    )


def _opt(config: Config, rcode: int) -> bytes:
    return b"\x00" + struct.pack("!HHBBHH", TYPE_OPT, config.max_udp_size, rcode >> 4, 0, 0, 0)


def assemble(query: Query, body: Body, config: Config) -> bytes:
    """The reply to *query*: its ID, its flags echoed, its question as sent, then *body*."""
    flags = QR | (query.flags & (RD | CD)) | (body.rcode & 0xF)
    if body.authoritative:
        flags |= AA
    if body.truncated:
        flags |= TC
    additional = body.additional
    opt = b""
    if query.edns is not None:
        opt = _opt(config, body.rcode)
        additional += 1
    header = _HEADER.pack(query.id, flags, 1, body.answers, body.authority, additional)
    return header + query.question + body.data + opt
