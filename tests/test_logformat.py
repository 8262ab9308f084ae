"""The daemon's own log lines: readable text by default, clean JSON when asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.logger import LogLevel
from twisted.python.failure import Failure

from homeport.logformat import asked_for_json, format_json, format_text, part_of

TWIST = [sys.executable, "-m", "twisted"]
LOOPBACK = "tcp:0:interface=127.0.0.1"
WHEN = 1_780_000_000.25  # 2026-05-28T20:26:40.250Z


def event(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "log_time": WHEN,
        "log_level": LogLevel.info,
        "log_namespace": "homeport.catalog.checks.HealthChecker",
        "log_format": "Check {check} is now {status}",
        "log_logger": object(),  # what twist's JSON shows as {"unpersistable": true}
        "log_source": None,
        "check": "service:web-1",
        "status": "critical",
    }
    base.update(extra)
    return base


def test_a_line_has_time_level_part_message_and_the_other_fields() -> None:
    line = format_text(event(node="n1", output="connection refused"))
    assert line == (
        "2026-05-28T20:26:40.250Z INFO  catalog  Check service:web-1 is now critical"
        '  node=n1 output="connection refused"\n'
    )


def test_json_is_plain_values_without_twisted_bookkeeping() -> None:
    text = format_json(event(node="n1", attempt=3))
    assert text is not None and text.endswith("\n") and text.count("\n") == 1
    record = json.loads(text)
    assert record == {
        "time": "2026-05-28T20:26:40.250Z",
        "level": "info",
        "part": "catalog",
        "namespace": "homeport.catalog.checks.HealthChecker",
        "message": "Check service:web-1 is now critical",
        "node": "n1",
        "attempt": 3,
    }
    assert "unpersistable" not in text


def test_a_failure_brings_its_traceback_indented_and_as_a_json_field() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        failure = Failure()
    e = event(log_failure=failure, log_level=LogLevel.critical, log_format="Check crashed")
    text = format_text(e)
    assert text is not None
    first, *rest = text.rstrip("\n").split("\n")
    assert first.endswith("CRITICAL catalog  Check crashed  check=service:web-1 status=critical")
    assert rest and all(line.startswith("    ") for line in rest)
    assert "ZeroDivisionError" in rest[-1]
    assert "ZeroDivisionError" in json.loads(format_json(e) or "")["traceback"]


def test_legacy_and_twisted_events_are_named_twisted() -> None:
    legacy = {"log_time": WHEN, "log_namespace": "log_legacy", "message": ("Main loop",)}
    assert format_text(legacy) == "2026-05-28T20:26:40.250Z INFO  twisted  Main loop\n"
    assert part_of("twisted.internet.base") == "twisted"
    assert part_of("homeport") == "homeport"
    assert format_text({"log_time": WHEN, "log_format": ""}) is None


def test_only_an_explicit_log_format_json_before_the_plugin_means_json() -> None:
    assert asked_for_json(["twist", "--log-format", "json", "homeport"])
    assert asked_for_json(["twist", "--log-format=JSON", "homeport", "--dns", "none"])
    assert not asked_for_json(["twist", "homeport"])
    assert not asked_for_json(["twist", "--log-format=text", "homeport"])
    assert not asked_for_json(["twist", "homeport", "--log-format=json"])  # not twist's


def test_the_daemon_writes_readable_lines_when_stdout_is_a_file(tmp_path: Path) -> None:
    """twist's own default off a terminal is raw JSON; homeport's is readable text."""
    for fmt, check in (([], _readable), (["--log-format", "json"], _clean_json)):
        out = tmp_path / f"out{len(fmt)}.log"
        with open(out, "wb") as sink:
            process = subprocess.Popen(
                [*TWIST, *fmt, "homeport", "--dns", "none", "--http", LOOPBACK, "--data-dir", "d"],
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                env={"PATH": "/usr/bin:/bin", "HOMEPORT_PRINT_PORTS": "1"},
            )
            try:
                _wait_for(out, "homeport-ports-done")
            finally:
                process.terminate()
                process.wait(20)
        check([line for line in out.read_text().splitlines() if not line.startswith("homeport-")])


def _wait_for(path: Path, text: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.05)


def _readable(lines: list[str]) -> None:
    assert lines and not any(line.startswith("{") for line in lines), lines
    assert any(" INFO  homeport  homeport " in line for line in lines), lines


def _clean_json(lines: list[str]) -> None:
    records = [json.loads(line) for line in lines]
    assert any(r["part"] == "homeport" and r["level"] == "info" for r in records), records
    assert not any("unpersistable" in line or "log_logger" in line for line in lines)


def test_twisted_s_starting_and_stopping_factory_lines_are_left_out() -> None:
    """Each HTTP or TCP check makes a connection, and Twisted logs its factory's start
    and stop: noise, every interval, for every check."""
    for verb in ("Starting", "Stopping"):
        e = event(log_format=verb + " factory {factory!r}", factory=object())
        assert format_text(e) is None and format_json(e) is None
