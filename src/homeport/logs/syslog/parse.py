"""One syslog message -> one :class:`~homeport.logs.record.Record` (pure: no Twisted).

* RFC 5424 (``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG``) and RFC 3164
  with its real-world looseness: no timestamp (Python's ``SysLogHandler``), no hostname,
  space-padded days, a year or fractions in the date, ISO 8601 dates (rsyslog's
  high-precision forwarding format), ``program[pid]:`` tags;
* syslog-ng's ``format-json`` lines (``MESSAGE``, ``PRIORITY``, ``FACILITY``, ``PROGRAM``,
  ``PID``, ``HOST``, ``DATE``; the rest kept as fields).

The record's logger is the app-name (``syslog`` when there is none), its level the
severity as Python's (emerg/alert/crit -> CRITICAL, err -> ERROR, warning -> WARNING,
notice/info -> INFO, debug -> DEBUG), and its ``extra`` fields (searchable with
``field.NAME=``) hold ``hostname``, ``appname``, ``procid``, ``msgid``, ``facility``,
``severity``, ``syslog_format``, each structured-data parameter as ``SD-ID.NAME``, and
``peer`` (who sent it).  Nothing is ever refused: a message that does not parse is kept
whole with a ``parse_error`` field, one over :data:`MAX_MESSAGE` bytes is cut and
marked ``truncated``, and invalid UTF-8 is replaced (and noted in ``problems``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from ... import strictjson
from ..record import Record

#: The most of one message that is kept, in bytes.
MAX_MESSAGE = 64 * 1024
#: Receive-time fallback logger name when a message names no program.
DEFAULT_LOGGER = "syslog"

FACILITIES = (
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    *(f"local{n}" for n in range(8)),
)
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
#: Python's level for each severity, by its number.
SEVERITY_LEVELS = (50, 50, 50, 40, 30, 20, 20, 10)
LEVEL_NAMES = {50: "CRITICAL", 40: "ERROR", 30: "WARNING", 20: "INFO", 10: "DEBUG"}
# Names senders use besides the canonical ones (syslog-ng's and logger's aliases).
_SEVERITY_ALIASES = {
    "emergency": 0,
    "panic": 0,
    "critical": 2,
    "error": 3,
    "warn": 4,
    "informational": 6,
}
_FACILITY_ALIASES: dict[str, int] = {}
#: RFC 3164: a message without a PRI is user.notice.
DEFAULT_PRI = 13

_PRI = re.compile(r"<(\d{1,3})>")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:?\d{2})?"
)
_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_BSD_DATE = re.compile(
    r"([A-Za-z]{3})\s+(\d{1,2})\s+(?:(\d{4})\s+)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:\s+(\d{4})(?=\s|$))?(?::(?=\s))?"
)
_TAG = re.compile(r"([^\s:\[\]]{1,128})(?:\[([^\]\s]{0,128})\])?(:)?(?:\s|$)")
_SD_NAME = re.compile(r'[^\s="\]]{1,128}')


@dataclass
class Parsed:
    """What one message said, before it becomes a :class:`Record`."""

    message: str
    pri: int | None = None
    severity: int | None = None
    facility: int | None = None
    created: float | None = None
    hostname: str | None = None
    app: str | None = None
    procid: str | None = None
    msgid: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    syslog_format: str = "rfc3164"
    error: str | None = None
    problems: list[str] = field(default_factory=list)


# -- bytes in ---------------------------------------------------------------------


def cut(data: bytes, truncated: bool = False, limit: int = MAX_MESSAGE) -> tuple[bytes, bool]:
    """*data* cut to *limit* bytes; whether it (or the framer) cut it."""
    if len(data) > limit:
        return data[:limit], True
    return data, truncated


def decode(data: bytes, problems: list[str]) -> str:
    """UTF-8, with invalid bytes replaced (and said so in *problems*)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        problems.append("invalid UTF-8 replaced")
        return data.decode("utf-8", "replace")


# -- timestamps -------------------------------------------------------------------


def _fraction(digits: str | None) -> int:
    return int((digits or "0")[:6].ljust(6, "0"))


def _offset(text: str | None, assume: tzinfo | None) -> tzinfo | None:
    if text is None:
        return assume if assume is not None else None
    if text in ("Z", "z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:])
    if minutes >= 24 * 60:
        raise ValueError(f"offset {text}")
    return timezone(sign * timedelta(minutes=minutes))


# What building a datetime out of a message's numbers (and reading it back) can raise.
_DATE_ERRORS = (ValueError, OverflowError, OSError)


def _epoch(moment: datetime) -> float:
    """Seconds since the epoch; a naive *moment* is the host's local time."""
    return moment.timestamp()


def parse_rfc3339(text: str, assume: tzinfo | None = UTC) -> float:
    """An RFC 3339 / ISO 8601 date-time -> seconds; without an offset, in *assume*
    (None: the host's local time).  ValueError when it is not one."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    moment = datetime(
        year,
        month,
        day,
        hour,
        minute,
        min(second, 59),  # a leap second is the last second of its minute
        _fraction(match.group(7)),
        tzinfo=_offset(match.group(8), assume),
    )
    return _epoch(moment)


#: How far ahead a year-less RFC 3164 date may be before it is taken as last year's.
_FUTURE_SLACK = 31 * 86400.0


def _this_year(now: float, assume: tzinfo | None) -> int:
    return (datetime.fromtimestamp(now, assume) if assume else datetime.fromtimestamp(now)).year


def parse_bsd_date(text: str, now: float, assume: tzinfo | None) -> tuple[float, int]:
    """``Mmm dd hh:mm:ss`` (and its variants) at the start of *text* -> (seconds, length
    of the date).  ValueError when *text* does not start with one."""
    match = _BSD_DATE.match(text)
    month = _MONTHS.get(match.group(1).lower()) if match else None
    if match is None or month is None:
        raise ValueError("no date")
    day, hour, minute, second = (int(match.group(i)) for i in (2, 4, 5, 6))
    year_text = match.group(3) or match.group(8)
    year = int(year_text) if year_text else _this_year(now, assume)
    clock = (hour, minute, min(second, 59), _fraction(match.group(7)))
    seconds = _epoch(datetime(year, month, day, *clock, tzinfo=assume))
    if not year_text and seconds > now + _FUTURE_SLACK:
        # RFC 3164 dates have no year: December's message read in January is last year's.
        seconds = _epoch(datetime(year - 1, month, day, *clock, tzinfo=assume))
    return seconds, match.end()


def parse_any_date(text: str, now: float, assume: tzinfo | None) -> float:
    """A date as syslog daemons write them: RFC 3339, or RFC 3164's (whole text)."""
    text = text.strip()
    try:
        return parse_rfc3339(text, assume)
    except _DATE_ERRORS:
        pass
    try:
        seconds, length = parse_bsd_date(text, now, assume)
    except _DATE_ERRORS:
        raise ValueError(f"not a date: {text[:40]!r}") from None
    if text[length:].strip():
        raise ValueError(f"not a date: {text[:40]!r}")
    return seconds


# -- PRI --------------------------------------------------------------------------


def _set_pri(parsed: Parsed, pri: int) -> None:
    parsed.pri = pri
    parsed.facility, parsed.severity = divmod(pri, 8)


def _split_pri(text: str, parsed: Parsed) -> str | None:
    """The text after a valid ``<PRI>`` (setting it in *parsed*), or None."""
    match = _PRI.match(text)
    if match is None:
        return None
    pri = int(match.group(1))
    if pri > 191 or (len(match.group(1)) > 1 and match.group(1)[0] == "0"):
        return None
    _set_pri(parsed, pri)
    return text[match.end() :]


# -- RFC 5424 ---------------------------------------------------------------------


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def _sd_value(text: str, start: int) -> tuple[str, int]:
    """A quoted PARAM-VALUE from ``text[start]`` (the opening quote): (value, end)."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\]':
            out.append(text[i + 1])
            i += 2
        elif char == '"':
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise ValueError("a structured-data value has no closing quote")


def _sd_element(text: str, start: int, into: dict[str, Any]) -> int:
    """One ``[SD-ID param="value" ...]`` at ``text[start]``; where it ends."""
    match = _SD_NAME.match(text, start + 1)
    if match is None:
        raise ValueError("a structured-data element has no SD-ID")
    sd_id, i = match.group(), match.end()
    into.setdefault(sd_id, "")
    while i < len(text) and text[i] == " ":
        name = _SD_NAME.match(text, i + 1)
        if name is None or text[name.end() : name.end() + 2] != '="':
            raise ValueError(f'structured data [{sd_id}]: expected name="value"')
        value, i = _sd_value(text, name.end() + 1)
        key = f"{sd_id}.{name.group()}"
        if key in into:  # a repeated parameter keeps every value
            old = into[key]
            into[key] = [*old, value] if isinstance(old, list) else [old, value]
        else:
            into[key] = value
    if i >= len(text) or text[i] != "]":
        raise ValueError(f"structured data [{sd_id}]: expected ']'")
    if into[sd_id] == "" and any(k.startswith(sd_id + ".") for k in into):
        del into[sd_id]
    return i + 1


def parse_structured_data(text: str) -> tuple[dict[str, Any], str]:
    """``-`` or ``[...][...]`` at the start of *text* -> (fields, the message after it)."""
    if text == "-" or text.startswith("- "):
        return {}, text[2:]
    if not text.startswith("["):
        raise ValueError("structured data must be '-' or start with '['")
    fields: dict[str, Any] = {}
    i = 0
    while i < len(text) and text[i] == "[":
        i = _sd_element(text, i, fields)
    if i < len(text) and text[i] != " ":
        raise ValueError("structured data must be followed by a space")
    return fields, text[i + 1 :]


def _rfc5424(rest: str, parsed: Parsed, now: float) -> None:
    """``1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`` (after the PRI)."""
    parsed.syslog_format = "rfc5424"
    parts = rest[2:].split(" ", 5)
    if len(parts) < 5:
        parsed.error = "RFC 5424 header is incomplete"
        return
    timestamp, host, app, procid, msgid = parts[:5]
    parsed.hostname, parsed.app, parsed.procid, parsed.msgid = (
        _nil(host),
        _nil(app),
        _nil(procid),
        _nil(msgid),
    )
    if timestamp != "-":
        try:
            parsed.created = parse_rfc3339(timestamp, UTC)
        except _DATE_ERRORS as e:
            parsed.error = f"timestamp: {e}"
    sd_and_message = parts[5] if len(parts) > 5 else "-"
    try:
        parsed.fields, message = parse_structured_data(sd_and_message)
    except ValueError as e:
        parsed.error = str(e)
        message = sd_and_message
    # The BOM says UTF-8; the space is rsyslog's (its msg property keeps the one that
    # followed an RFC 3164 tag).
    parsed.message = message.removeprefix("\ufeff").removeprefix(" ")


# -- RFC 3164 ---------------------------------------------------------------------


def _bsd_timestamp(rest: str, parsed: Parsed, now: float, assume: tzinfo | None) -> str:
    """The date at the start of *rest* into *parsed*; the text after it."""
    first = rest.split(" ", 1)[0]
    if first[:4].isdigit() and first[4:5] == "-":
        try:
            parsed.created = parse_rfc3339(first, assume)
        except _DATE_ERRORS as e:
            parsed.error = f"timestamp: {e}"
        return rest[len(first) :]
    if rest[:3].lower() in _MONTHS:
        try:
            parsed.created, length = parse_bsd_date(rest, now, assume)
        except _DATE_ERRORS:
            return rest  # "Mar..." that is no date: part of the message
        return rest[length:]
    return rest


def _tag_match(text: str) -> re.Match[str] | None:
    """``program[pid]:``, ``program:`` or ``program[pid]`` at the start of *text*."""
    match = _TAG.match(text)
    if match is None or not (match.group(2) is not None or match.group(3)):
        return None
    return match


def _tag(text: str, parsed: Parsed) -> str:
    """``program[pid]:`` at the start of *text* into *parsed*; the text after it."""
    match = _tag_match(text)
    if match is None:
        return text
    parsed.app = match.group(1)
    if match.group(2):
        parsed.procid = match.group(2)
    return text[match.end() :]


def _rfc3164(rest: str, parsed: Parsed, now: float, assume: tzinfo | None) -> None:
    """``TIMESTAMP HOSTNAME TAG: MSG``, each part optional (after the PRI)."""
    rest = rest.lstrip(" ")
    after = _bsd_timestamp(rest, parsed, now, assume)
    dated = after is not rest
    rest = after.lstrip(" ")
    if dated:
        # After a date comes the hostname, unless the next word is already the tag.
        word, _, tail = rest.partition(" ")
        if word and tail and _tag_match(rest) is None:
            parsed.hostname = word
            rest = tail
    parsed.message = _tag(rest, parsed)


# -- JSON lines -------------------------------------------------------------------


def _number_or_name(value: Any, names: tuple[str, ...], aliases: dict[str, int]) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text.isdigit():
        return int(text)
    if text in names:
        return names.index(text)
    return aliases.get(text)


def _json_priority(obj: dict[str, Any], parsed: Parsed) -> None:
    """``PRIORITY``/``LEVEL`` (a severity, or a whole PRI) and ``FACILITY``."""
    raw = obj.pop("PRIORITY", obj.pop("LEVEL", None))
    severity = _number_or_name(raw, SEVERITIES, _SEVERITY_ALIASES)
    facility = _number_or_name(obj.pop("FACILITY", None), FACILITIES, _FACILITY_ALIASES)
    if severity is not None and severity > 7 and 0 <= severity <= 191:
        _set_pri(parsed, severity)  # a whole PRI (syslog-ng's $PRI)
        return
    if raw is not None and (severity is None or not 0 <= severity <= 7):
        parsed.problems.append(f"PRIORITY {str(raw)[:40]!r} is not a severity")
        severity = None
    parsed.severity = severity
    if facility is not None and 0 <= facility < len(FACILITIES):
        parsed.facility = facility
    if parsed.severity is not None and parsed.facility is not None:
        parsed.pri = parsed.facility * 8 + parsed.severity


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _json_date(obj: dict[str, Any], parsed: Parsed, now: float, assume: tzinfo | None) -> None:
    for key in ("ISODATE", "DATE", "R_ISODATE", "S_ISODATE"):
        raw = obj.get(key)
        if isinstance(raw, str) and raw.strip():
            try:
                parsed.created = parse_any_date(raw, now, assume)
            except _DATE_ERRORS as e:
                parsed.problems.append(f"{key}: {e}; receive time used")
                continue
            obj.pop(key)
            return


def _json_object(obj: dict[str, Any], parsed: Parsed, now: float, assume: tzinfo | None) -> None:
    """syslog-ng's ``format-json`` fields into *parsed* (the rest kept as fields)."""
    message = obj.pop("MESSAGE", obj.pop("MSG", None))
    if message is None:
        parsed.error = "no MESSAGE field"
    else:
        parsed.message = _text(message) or ""
    _json_priority(obj, parsed)
    _json_date(obj, parsed, now, assume)
    parsed.app = _text(obj.pop("PROGRAM", None))
    parsed.procid = _text(obj.pop("PID", None))
    parsed.hostname = _text(obj.pop("HOST", None))
    parsed.msgid = _text(obj.pop("MSGID", None))
    parsed.fields = obj


# -- records ----------------------------------------------------------------------


def to_record(parsed: Parsed, now: float, peer: str | None, truncated: bool) -> Record:
    """*parsed* as the log store keeps it."""
    severity = parsed.severity
    levelno = SEVERITY_LEVELS[severity] if severity is not None and 0 <= severity <= 7 else 20
    extra: dict[str, Any] = dict(parsed.fields)
    named = {
        "hostname": parsed.hostname,
        "appname": parsed.app,
        "procid": parsed.procid,
        "msgid": parsed.msgid,
        "facility": FACILITIES[parsed.facility] if parsed.facility is not None else None,
        "severity": SEVERITIES[severity] if severity is not None else None,
        "pri": parsed.pri,
        "syslog_format": parsed.syslog_format,
        "peer": peer,
        "parse_error": parsed.error,
        "truncated": True if truncated else None,
    }
    extra.update((k, v) for k, v in named.items() if v is not None)
    fields: dict[str, Any] = {}
    if parsed.procid is not None and parsed.procid.isdigit() and len(parsed.procid) < 19:
        fields["process"] = int(parsed.procid)
    return Record(
        created=parsed.created if parsed.created is not None else float(now),
        levelno=levelno,
        levelname=LEVEL_NAMES[levelno],
        logger=parsed.app or DEFAULT_LOGGER,
        message=parsed.message,
        msg=parsed.message,
        fields=fields,
        extra=extra,
        problems=tuple(parsed.problems),
    )


def parse_syslog(
    data: bytes,
    now: float,
    *,
    peer: str | None = None,
    truncated: bool = False,
    assume: tzinfo | None = UTC,
    max_size: int = MAX_MESSAGE,
) -> Record:
    """One RFC 5424 or RFC 3164 message (a datagram, or one frame of a stream).

    *now* is the receive time (used when the message has no usable date); a date with
    no offset is in *assume* (None: the host's local time).  Beyond *max_size* bytes it
    is cut (and marked ``truncated``).  Never raises.
    """
    data, truncated = cut(data, truncated, max_size)
    problems: list[str] = []
    text = decode(data, problems).rstrip("\r\n\x00")
    parsed = Parsed(message=text, problems=problems)
    rest = _split_pri(text, parsed)
    if rest is None:
        _set_pri(parsed, DEFAULT_PRI)
        parsed.pri = None
        parsed.syslog_format = "unknown"
        parsed.error = "no valid <PRI> at the start"
    elif rest.startswith("1 "):
        _rfc5424(rest, parsed, now)
    else:
        _rfc3164(rest, parsed, now, assume)
    if parsed.error is not None:
        parsed.message = text  # kept whole, as it came
    return to_record(parsed, now, peer, truncated)


def parse_json_line(
    data: bytes,
    now: float,
    *,
    peer: str | None = None,
    truncated: bool = False,
    assume: tzinfo | None = UTC,
    max_size: int = MAX_MESSAGE,
) -> Record:
    """One line of syslog-ng's ``format-json`` output (cut beyond *max_size* bytes).
    Never raises."""
    data, truncated = cut(data, truncated, max_size)
    problems: list[str] = []
    text = decode(data, problems).strip()
    parsed = Parsed(message=text, syslog_format="json", problems=problems)
    try:
        obj = strictjson.loads_keeping_text(text) if not truncated else None
    except (ValueError, RecursionError):
        obj = None
    if isinstance(obj, dict):
        _json_object(obj, parsed, now, assume)
    else:
        parsed.error = "not a JSON object" if not truncated else "cut: too long to read as JSON"
    if parsed.error is not None:
        parsed.message = text
    return to_record(parsed, now, peer, truncated)
