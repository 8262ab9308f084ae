"""Parsing what log clients send into structured records (pure, in memory)."""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from pathlib import Path
from urllib.parse import urlencode

import pytest

from homeport.logs.record import (
    BadInput,
    Record,
    parse_args,
    record_from_fields,
    records_from_body,
    render,
)

FORM = "application/x-www-form-urlencoded"
NOW = 1_800_000_000.0


def handler_body(record: logging.LogRecord) -> bytes:
    """Exactly the body stock HTTPHandler sends for *record*."""
    handler = logging.handlers.HTTPHandler("localhost", "/log", method="POST")
    return urlencode(handler.mapLogRecord(record)).encode()


def make_record(
    msg: str = "job %s took %d ms",
    args: tuple[object, ...] | dict[str, object] = ("a1", 37),
    level: int = logging.ERROR,
    name: str = "app.worker",
    **extra: object,
) -> logging.LogRecord:
    record = logging.LogRecord(name, level, "/srv/app/worker.py", 42, msg, args, None, "run")
    record.__dict__.update(extra)
    return record


def parse_one(body: bytes, content_type: str = FORM) -> Record:
    (record,) = records_from_body(content_type, body, NOW)
    return record


def test_a_stock_handler_body_becomes_a_typed_record_with_the_rendered_message() -> None:
    source = make_record()
    record = parse_one(handler_body(source))
    assert record.message == "job a1 took 37 ms"
    assert record.msg == "job %s took %d ms"
    assert record.args == "('a1', 37)"
    assert record.logger == "app.worker"
    assert (record.levelno, record.levelname) == (40, "ERROR")
    assert record.created == pytest.approx(source.created)
    assert record.fields["lineno"] == 42
    assert record.fields["funcName"] == "run"
    assert record.fields["pathname"] == "/srv/app/worker.py"
    assert record.fields["module"] == "worker"
    assert record.fields["process"] == source.process
    assert record.fields["threadName"] == source.threadName
    assert "exc_text" not in record.fields  # "None" on the wire means absent
    assert record.problems == ()


def test_extra_fields_are_kept_as_data_and_non_ascii_survives() -> None:
    record = parse_one(handler_body(make_record("Grüße %s", ("Zoë ☃",), user="Jürgen", n=3)))
    assert record.message == "Grüße Zoë ☃"
    assert record.extra == {"user": "Jürgen", "n": "3"}


def test_a_single_mapping_argument_renders_named_placeholders() -> None:
    record = parse_one(handler_body(make_record("%(who)s did %(what)s", ({"who": "a"},))))
    # LogRecord unwraps a single dict argument, so args arrive as "{'who': 'a', ...}"
    assert record.message == "%(who)s did %(what)s"  # KeyError: 'what' -> kept raw
    assert record.problems and "KeyError" in record.problems[0]
    ok = parse_one(handler_body(make_record("%(who)s ran", ({"who": "a"},))))
    assert ok.message == "a ran"


def test_a_formatters_message_and_traceback_are_used_when_present() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        source = make_record("failed %s", ("x",))
        source.exc_info = sys.exc_info()
    logging.Formatter().format(source)  # what an earlier console handler would do
    record = parse_one(handler_body(source))
    assert record.message == "failed x"
    assert record.exc_text is not None
    assert "ZeroDivisionError: division by zero" in record.exc_text
    assert "ZeroDivisionError" in record.fields["exc_info"]


def test_args_that_are_not_literals_are_kept_raw_and_never_evaluated(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = f"(__import__('pathlib').Path({str(marker)!r}).touch(),)"
    record = parse_one(urlencode({"msg": "x %s", "args": evil}).encode())
    assert not marker.exists()
    assert record.message == "x %s"
    assert record.args == evil
    assert record.problems == ("args are not a Python literal",)
    objects = parse_one(handler_body(make_record("obj %s", (object(),))))
    assert objects.message == "obj %s"
    assert objects.args is not None and "object object at" in objects.args


def test_a_msg_args_mismatch_keeps_the_template_and_says_why() -> None:
    record = parse_one(handler_body(make_record("%s and %s", ("only one",))))
    assert record.message == "%s and %s"
    assert "not enough arguments" in record.problems[0]
    assert render("%d", ("x",))[1] is not None


def test_huge_or_star_widths_are_not_rendered_so_memory_stays_bounded() -> None:
    assert render("%999999999d", (1,)) == ("%999999999d", render("%999999999d", (1,))[1])
    assert render("%.999999999f", (1.0,))[0] == "%.999999999f"
    assert render("%*d", (10**9, 1))[0] == "%*d"
    assert render("%5d|", (1,)) == ("    1|", None)


def test_empty_and_missing_args_leave_the_message_alone_like_logging_does() -> None:
    assert parse_args("()") == ((), None)
    assert parse_args("None") == (None, None)
    record = parse_one(urlencode({"msg": "100% sure", "args": "()"}).encode())
    assert record.message == "100% sure"


def test_non_numeric_levelno_and_created_are_stored_as_well_as_possible() -> None:
    record = parse_one(
        urlencode(
            {"msg": "m", "levelno": "high", "levelname": "WARNING", "created": "soon"}
        ).encode()
    )
    assert (record.levelno, record.levelname) == (30, "WARNING")
    assert record.created == NOW
    assert any("levelno" in p for p in record.problems)
    assert any("created" in p for p in record.problems)
    bare = parse_one(b"msg=hello")
    assert (bare.levelno, bare.logger, bare.message) == (0, "root", "hello")


def test_numbers_beyond_what_sqlite_and_json_hold_are_noted_not_stored() -> None:
    """A 400-digit levelno would be a REAL inf in SQLite, answered as "Infinity" (not
    JSON) by /v1/logs; a 400-digit created does not fit a float at all."""
    huge = "9" * 400
    body = f'{{"msg": "m", "levelno": {huge}, "created": {huge}, "lineno": {huge}}}'
    record = parse_one(body.encode(), "application/json")
    assert (record.levelno, record.created) == (0, NOW)
    assert any("levelno" in p for p in record.problems)
    assert any("created" in p for p in record.problems)
    assert record.fields["lineno"] == huge  # kept, as text
    assert parse_one(b'{"msg": "m", "levelno": 9223372036854775807}', "application/json").levelno


def test_bad_percent_encoding_and_bad_utf8_are_replaced_and_noted() -> None:
    record = parse_one(b"msg=50%zz+off+%FF%FE&name=shop")
    assert record.message == "50%zz off \ufffd\ufffd"
    assert record.logger == "shop"
    assert "msg: invalid percent-encoding kept as is" in record.problems
    assert "msg: invalid UTF-8 replaced" in record.problems


def test_a_body_without_any_message_is_refused() -> None:
    with pytest.raises(BadInput, match="no 'msg'"):
        parse_one(b"name=app&levelno=20")
    with pytest.raises(BadInput):
        parse_one(b"")


def test_json_objects_lists_and_ndjson_carry_typed_values() -> None:
    one = parse_one(
        json.dumps(
            {"name": "svc", "level": "warning", "msg": "%s items", "args": [3], "order": 7}
        ).encode(),
        "application/json",
    )
    assert (one.message, one.levelno, one.levelname) == ("3 items", 30, "WARNING")
    assert one.extra == {"level": "warning", "order": 7}
    many = records_from_body(
        "application/json; charset=utf-8",
        json.dumps([{"message": "a"}, {"message": "b", "created": 5}]).encode(),
        NOW,
    )
    assert [(r.message, r.created) for r in many] == [("a", NOW), ("b", 5.0)]
    lines = records_from_body("application/x-ndjson", b'{"msg": "one"}\n\n{"msg": "two"}\n', NOW)
    assert [r.message for r in lines] == ["one", "two"]


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("application/json", b'{"msg": "x"', "malformed JSON"),
        ("application/json", b"[1, 2]", "item 0 of the JSON list is not an object"),
        ("application/json", b'"text"', "must be an object or a list"),
        ("application/json", b"[]", "no records"),
        ("application/json", b"\xff\xfe", "UTF-8"),
        ("application/json", b"[" * 100_000, "nested too deeply"),
        ("application/x-ndjson", b'{"msg": "ok"}\n{oops}\n', "line 2: malformed JSON"),
        ("application/json", b'[{"msg": "ok"}, {"name": "x"}]', "item 1: the record has no"),
        ("text/csv", b"a,b", "unsupported content type"),
    ],
)
def test_malformed_bodies_are_refused_with_the_reason(
    content_type: str, body: bytes, reason: str
) -> None:
    with pytest.raises(BadInput) as caught:
        records_from_body(content_type, body, NOW)
    assert reason in caught.value.reason


def test_a_record_without_content_type_is_sniffed() -> None:
    assert parse_one(b'{"msg": "j"}', "").message == "j"
    assert parse_one(b"msg=f", "").message == "f"


def test_a_record_round_trips_through_its_json() -> None:
    from homeport.logs.record import record_from_json

    record = record_from_fields({"msg": "a %s", "args": "('b',)", "x": "1"}, NOW)
    assert record_from_json(record.to_json(7)) == record


def test_a_json_body_labelled_as_a_form_is_read_as_json() -> None:
    assert parse_one(b'{"msg": "from curl -d"}').message == "from curl -d"
    assert [r.message for r in records_from_body(FORM, b'{"msg":"a"}\n{"msg":"b"}', NOW)] == [
        "a",
        "b",
    ]


def test_raw_utf8_bytes_in_a_form_body_are_read_as_utf8() -> None:
    record = parse_one("msg=Grüße+%C3%BC&user=é;x".encode())
    assert record.message == "Grüße ü"
    assert record.extra == {"user": "é;x"}
