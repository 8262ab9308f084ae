"""Syslog messages (RFC 5424, RFC 3164 and its loose variants, syslog-ng JSON) -> records."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from homeport.logs.database import record_text
from homeport.logs.record import Record
from homeport.logs.syslog.parse import (
    MAX_MESSAGE,
    parse_json_line,
    parse_structured_data,
    parse_syslog,
)

# 2026-06-15T12:00:00Z: a fixed receive time.
NOW = datetime(2026, 6, 15, 12, tzinfo=UTC).timestamp()


def at(year: int, month: int, day: int, hour: int, minute: int, second: int, **kw: object) -> float:
    """Seconds of a date-time (``tz=``, default UTC; ``micro=`` microseconds)."""
    tz = kw.get("tz", UTC)
    micro = kw.get("micro", 0)
    assert isinstance(tz, timezone) and isinstance(micro, int)
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).timestamp()


def stored(record: Record) -> dict[str, object]:
    """The record as the store keeps it (and so as /v1/logs answers it)."""
    value: dict[str, object] = json.loads(record_text(1, record))
    return value


# -- RFC 5424 -----------------------------------------------------------------------


def test_rfc5424_example_1_with_a_bom_and_no_structured_data() -> None:
    record = parse_syslog(
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
        b"\xef\xbb\xbf'su root' failed for lonvick on /dev/pts/8",
        NOW,
        peer="192.0.2.7",
    )
    assert record.message == "'su root' failed for lonvick on /dev/pts/8"
    assert record.created == pytest.approx(at(2003, 10, 11, 22, 14, 15, micro=3000))
    assert (record.logger, record.levelno, record.levelname) == ("su", 50, "CRITICAL")
    assert record.extra == {
        "hostname": "mymachine.example.com",
        "appname": "su",
        "msgid": "ID47",
        "facility": "auth",
        "severity": "crit",
        "pri": 34,
        "syslog_format": "rfc5424",
        "peer": "192.0.2.7",
    }
    assert record.problems == ()


def test_rfc5424_timestamp_offset_and_microseconds_are_kept() -> None:
    record = parse_syslog(
        b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time",
        NOW,
    )
    minus7 = timezone(timedelta(hours=-7))
    assert record.created == pytest.approx(at(2003, 8, 24, 5, 14, 15, tz=minus7, micro=3))
    assert record.extra["procid"] == "8710"
    assert record.fields == {"process": 8710}
    assert (record.levelname, record.extra["facility"], record.extra["severity"]) == (
        "INFO",
        "local4",
        "notice",
    )
    assert record.message == "%% It's time"


def test_rfc5424_structured_data_becomes_searchable_fields() -> None:
    record = parse_syslog(
        b'<165>1 2003-10-11T22:14:15.003Z host evntslog - ID47 [exampleSDID@32473 iut="3" '
        b'eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]'
        b'[timeQuality tzKnown="1"][noParams] An application event',
        NOW,
    )
    assert record.message == "An application event"
    assert record.extra["exampleSDID@32473.iut"] == "3"
    assert record.extra["exampleSDID@32473.eventSource"] == "Application"
    assert record.extra["examplePriority@32473.class"] == "high"
    assert record.extra["timeQuality.tzKnown"] == "1"
    assert record.extra["noParams"] == ""
    assert "parse_error" not in record.extra


def test_structured_data_escapes_and_repeated_parameters() -> None:
    fields, message = parse_structured_data(r'[a b="x\"y\]z\\" b="2" c="é\n"] rest of it')
    assert fields == {"a.b": ['x"y]z\\', "2"], "a.c": "é\\n"}
    assert message == "rest of it"
    assert parse_structured_data("[a]") == ({"a": ""}, "")
    assert parse_structured_data("- msg") == ({}, "msg")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"<13>1 2003-10-11T22:14:15Z host app", "incomplete"),
        (b'<13>1 2003-10-11T22:14:15Z h a p m [x y="unterminated] msg', "closing quote"),
        (b"<13>1 2003-10-11T22:14:15Z h a p m garbage msg", "structured data"),
        (b"<13>1 2003-13-11T22:14:15Z h a p m - msg", "timestamp"),
        (b"<13>1 yesterday h a p m - msg", "timestamp"),
    ],
)
def test_a_broken_rfc5424_message_is_kept_whole_with_a_parse_error(
    line: bytes, reason: str
) -> None:
    record = parse_syslog(line, NOW)
    assert record.message == line.decode()
    assert reason in str(record.extra["parse_error"])
    assert record.levelno == 20  # notice: the PRI was read all the same


def test_rfc5424_nil_values_are_left_out_and_the_receive_time_used() -> None:
    record = parse_syslog(b"<15>1 - - - - - -", NOW)
    assert record.created == NOW
    assert record.logger == "syslog"
    assert record.message == ""
    assert record.levelname == "DEBUG"
    assert set(record.extra) == {"facility", "severity", "pri", "syslog_format"}


# -- RFC 3164 -----------------------------------------------------------------------


def test_rfc3164_with_hostname_and_tag() -> None:
    record = parse_syslog(b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick", NOW)
    assert record.created == at(2025, 10, 11, 22, 14, 15)  # last October: no future dates
    assert record.extra["hostname"] == "mymachine"
    assert record.logger == "su"
    assert record.message == "'su root' failed for lonvick"
    assert record.extra["syslog_format"] == "rfc3164"


def test_rfc3164_program_pid_space_padded_day_no_hostname() -> None:
    record = parse_syslog(b"<30>Jun  5 08:01:02 sshd[1234]: Accepted publickey", NOW)
    assert record.created == at(2026, 6, 5, 8, 1, 2)
    assert "hostname" not in record.extra
    assert (record.logger, record.extra["procid"], record.fields["process"]) == (
        "sshd",
        "1234",
        1234,
    )
    assert record.message == "Accepted publickey"


def test_rfc3164_odd_dates() -> None:
    with_year = parse_syslog(b"<13>Jun 05 2019 08:01:02 host app: m", NOW)
    assert with_year.created == at(2019, 6, 5, 8, 1, 2)
    fraction = parse_syslog(b"<13>Jun  5 08:01:02.250 host app: m", NOW)
    assert fraction.created == at(2026, 6, 5, 8, 1, 2, micro=250000)
    iso = parse_syslog(b"<13>2024-01-02T03:04:05.123456+01:00 host sshd[99]: Accepted", NOW)
    assert iso.created == pytest.approx(
        at(2024, 1, 2, 3, 4, 5, tz=timezone(timedelta(hours=1)), micro=123456)
    )
    assert (iso.extra["hostname"], iso.logger) == ("host", "sshd")
    plus2 = timezone(timedelta(hours=2))
    local = parse_syslog(b"<13>Jun  5 08:01:02 host app: m", NOW, assume=plus2)
    assert local.created == at(2026, 6, 5, 8, 1, 2, tz=plus2)


def test_rfc3164_without_a_date_python_syslog_handler_style() -> None:
    bare = parse_syslog(b"<14>hello world\x00", NOW)
    assert (bare.message, bare.logger, bare.created, bare.levelname) == (
        "hello world",
        "syslog",
        NOW,
        "INFO",
    )
    tagged = parse_syslog(b"<11>myapp[123]: it broke\n", NOW)
    assert (tagged.logger, tagged.extra["procid"], tagged.message) == ("myapp", "123", "it broke")
    assert tagged.levelname == "ERROR"


def test_rfc3164_without_a_tag_keeps_everything_as_the_message() -> None:
    record = parse_syslog(b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!", NOW)
    assert record.extra["hostname"] == "10.0.0.99"
    assert (record.logger, record.message) == ("syslog", "Use the BFG!")


@pytest.mark.parametrize(
    ("severity", "level"),
    list(enumerate(["CRITICAL"] * 3 + ["ERROR", "WARNING", "INFO", "INFO", "DEBUG"])),
)
def test_every_severity_maps_to_a_python_level(severity: int, level: str) -> None:
    record = parse_syslog(f"<{8 * 3 + severity}>app: m".encode(), NOW)
    assert record.levelname == level
    assert record.extra["facility"] == "daemon"


# -- what does not parse ------------------------------------------------------------


@pytest.mark.parametrize("line", [b"no pri at all", b"<999>too big", b"<013>leading zero", b""])
def test_a_line_without_a_pri_is_stored_as_is_with_a_parse_error(line: bytes) -> None:
    record = parse_syslog(line, NOW)
    assert record.message == line.decode()
    assert record.extra["parse_error"] == "no valid <PRI> at the start"
    assert record.levelname == "INFO"  # user.notice, as RFC 3164 says


def test_invalid_utf8_is_replaced_and_noted() -> None:
    record = parse_syslog(b"<13>app: caf\xe9 \xff", NOW)
    assert record.message == "caf\ufffd \ufffd"
    assert record.problems == ("invalid UTF-8 replaced",)


def test_a_message_over_64_kb_is_cut_and_marked() -> None:
    record = parse_syslog(b"<13>app: " + b"x" * (MAX_MESSAGE + 10), NOW)
    assert record.extra["truncated"] is True
    assert len(record.message.encode()) == MAX_MESSAGE - len(b"<13>app: ")
    cut_by_framer = parse_syslog(b"<13>app: short", NOW, truncated=True)
    assert cut_by_framer.extra["truncated"] is True


def test_a_cut_multibyte_character_becomes_a_replacement() -> None:
    record = parse_syslog(b"<13>app: " + "é".encode() * MAX_MESSAGE, NOW)
    assert record.extra["truncated"] is True
    assert record.message.endswith("é") or record.message.endswith("\ufffd")


# -- syslog-ng JSON -----------------------------------------------------------------


def test_syslog_ng_format_json_fields() -> None:
    line = json.dumps(
        {
            "PROGRAM": "nginx",
            "PRIORITY": "warning",
            "FACILITY": "daemon",
            "PID": "42",
            "MESSAGE": "upstream timed out",
            "HOST": "web1",
            "DATE": "Jun  5 08:01:02",
            "SOURCEIP": "127.0.0.1",
            "HOST_FROM": "localhost",
            ".SDATA": {"meta": {"sequenceId": "4"}},
        }
    ).encode()
    record = parse_json_line(line + b"\n", NOW, peer="127.0.0.1")
    assert (record.message, record.logger, record.levelname) == (
        "upstream timed out",
        "nginx",
        "WARNING",
    )
    assert record.created == at(2026, 6, 5, 8, 1, 2)
    assert record.extra["hostname"] == "web1"
    assert record.extra["procid"] == "42"
    assert record.extra["pri"] == 28
    assert record.extra["facility"] == "daemon"
    assert record.extra["SOURCEIP"] == "127.0.0.1"
    assert record.extra[".SDATA"] == {"meta": {"sequenceId": "4"}}
    assert record.extra["syslog_format"] == "json"


def test_json_iso_dates_numeric_priorities_and_numbers() -> None:
    record = parse_json_line(
        b'{"MESSAGE": "m", "ISODATE": "2026-06-01T10:00:00+02:00", "PRIORITY": 3, "PID": 7}',
        NOW,
    )
    assert record.created == at(2026, 6, 1, 8, 0, 0)
    assert record.levelname == "ERROR"
    assert record.extra["procid"] == "7"
    whole_pri = parse_json_line(b'{"MESSAGE": "m", "PRIORITY": "30"}', NOW)
    assert (whole_pri.extra["facility"], whole_pri.extra["severity"]) == ("daemon", "info")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not a JSON object"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"PROGRAM": "x"}', "no MESSAGE field"),
    ],
)
def test_json_lines_that_do_not_parse_are_kept(line: bytes, reason: str) -> None:
    record = parse_json_line(line, NOW)
    assert record.message == line.decode()
    assert record.extra["parse_error"] == reason


def test_json_bad_date_and_priority_are_problems_not_errors() -> None:
    record = parse_json_line(b'{"MESSAGE": "m", "DATE": "someday", "PRIORITY": "loud"}', NOW)
    assert record.created == NOW
    assert "parse_error" not in record.extra
    assert len(record.problems) == 2
    assert record.extra["DATE"] == "someday"


def test_json_nan_and_lone_surrogates_stay_storable() -> None:
    record = parse_json_line(b'{"MESSAGE": "\\ud800", "x": NaN, "y": 1e999}', NOW)
    stored(record)  # encodes as strict JSON and UTF-8
    assert record.message == "\ufffd"


# -- nothing raises -----------------------------------------------------------------

PIECES = st.sampled_from(
    [
        *(b"<13>", b"<191>", b"<0>", b"1 ", b"2003-10-11T22:14:15.003Z ", b"Oct 11 22:14:15 "),
        *(b"- ", b'[a b="c"]', b"[", b"]", b'"', b"\\", b"host ", b"app[12]: ", b"\xef\xbb\xbf"),
        *(b"\xff", b"Feb 30 25:61:61 ", b"9999-12-31T23:59:59+23:59 ", b"0000-01-01T00:00:00Z "),
        b"\x00",
    ]
)
MESSAGES = st.one_of(st.binary(max_size=300), st.lists(PIECES, max_size=12).map(b"".join))


@settings(max_examples=1500, deadline=None)
@given(MESSAGES)
@example(b"<13>1 0001-01-01T00:00:00-23:59 - - - - -")
@example(b"<13>Jan  1 00:00:00 h a: m")
@example(b"<13>Dec 31 23:59:59 9999 h a: m")
def test_no_syslog_input_raises_and_every_record_is_storable(data: bytes) -> None:
    record = parse_syslog(data, NOW)
    assert isinstance(record.message, str)
    stored(record).get("message")
    parse_syslog(data, NOW, assume=None)  # the host's own time zone: no raise either


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
JSON_KEYS = st.sampled_from(["MESSAGE", "PRIORITY", "FACILITY", "PROGRAM", "PID", "HOST"])
JSON_KEYS |= st.sampled_from(["DATE", "ISODATE", "LEVEL", "MSG", "MSGID"]) | st.text(max_size=8)


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=8) | st.binary(max_size=100))
def test_no_json_line_raises_and_every_record_is_storable(value: object) -> None:
    line = value if isinstance(value, bytes) else json.dumps(value).encode()
    record = parse_json_line(line, NOW)
    stored(record)
