"""The log sink in the real daemon, fed by real ``logging`` handlers over loopback."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from homeport.logging import FormattedHTTPHandler, HomeportHandler

from .daemon import Daemon

# What the conftest's daemon_factory fixture gives: Daemon's fields but workdir.
DaemonFactory = Callable[..., Daemon]


def search(daemon: Daemon, query: str = "") -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = daemon.get_json("/v1/logs?" + query)["records"]
    return records


def host(daemon: Daemon) -> str:
    return f"127.0.0.1:{daemon.http_port}"


def test_stock_post_and_get_handlers_store_the_rendered_record_with_its_extra_fields(
    daemon: Daemon, logger: logging.Logger
) -> None:
    logger.addHandler(logging.handlers.HTTPHandler(host(daemon), "/log", method="POST"))
    logger.addHandler(logging.handlers.HTTPHandler(host(daemon), "/log", method="GET"))
    logger.warning("job %s took %d ms — größer", "a1", 37, extra={"user": "zoë", "n": 3})
    records = search(daemon, "logger=" + logger.name)
    assert len(records) == 2  # one by POST, one by GET
    for record in records:
        assert record["message"] == "job a1 took 37 ms — größer"
        assert record["msg"] == "job %s took %d ms — größer"
        assert record["levelname"] == "WARNING" and record["levelno"] == 30
        assert record["extra"] == {"user": "zoë", "n": "3"}
        assert record["funcName"].startswith("test_stock_post")
        assert record["pathname"] == __file__
        assert record["process"] > 0 and record["threadName"] == "MainThread"
    assert f"  {logger.name}  WARNING  job a1 took 37 ms — größer" in daemon.output()


def test_an_exception_logged_through_the_formatted_handler_keeps_its_traceback(
    daemon: Daemon, logger: logging.Logger
) -> None:
    logger.addHandler(FormattedHTTPHandler(host(daemon), "/log", method="POST"))
    lookups: dict[str, str] = {}
    try:
        lookups["missing"]
    except KeyError:
        logger.exception("lookup of %r failed", "missing")
    (record,) = search(daemon, "q=lookup&logger=" + logger.name)
    assert record["message"] == "lookup of 'missing' failed"
    assert "Traceback (most recent call last)" in record["exc_text"]
    assert record["exc_text"].endswith("KeyError: 'missing'")
    assert search(daemon, "q=KeyError")[0]["id"] == record["id"]
    assert f"  {logger.name}  ERROR  lookup of 'missing' failed  [KeyError: 'missing']" in (
        daemon.output()
    )


def test_the_homeport_handler_sends_batches_without_blocking_the_caller(
    daemon: Daemon, logger: logging.Logger
) -> None:
    handler = HomeportHandler(daemon.url)
    logger.addHandler(handler)
    started = time.perf_counter()
    for i in range(500):
        logger.info("event %d of %s", i, "batch", extra={"seq": i})
    queued_in = time.perf_counter() - started
    handler.flush()
    assert handler.sent == 500 and handler.dropped == 0
    assert queued_in < 1.0
    records = search(daemon, f"logger={logger.name}&limit=1000&order=asc")
    assert [r["extra"]["seq"] for r in records] == list(range(500))
    assert records[7]["message"] == "event 7 of batch"


def test_search_filters_through_http_and_bad_filters_are_400(
    daemon: Daemon, logger: logging.Logger
) -> None:
    handler = HomeportHandler(daemon.url)
    logger.addHandler(handler)
    logger.debug("cache warm")
    logger.error("disk full on %s", "/var", extra={"host": "web-1"})
    logger.error("disk full on %s", "/srv", extra={"host": "web-2"})
    handler.flush()
    assert [r["message"] for r in search(daemon, "level=ERROR&field.host=web-2")] == [
        "disk full on /srv"
    ]
    assert len(search(daemon, "q=disk&since=5m&logger=" + logger.name)) == 2
    status, _, body = daemon.request("GET", "/v1/logs?since=tomorrowish")
    assert status == 400 and b"since" in body
    # the rest of /v1 is still the Consul API
    assert "consul" in daemon.get_json("/v1/catalog/services")


def test_with_a_token_only_basic_or_bearer_credentials_are_stored(
    daemon_factory: DaemonFactory, logger: logging.Logger
) -> None:
    daemon = daemon_factory(["--token", "s3cret"]).start()
    good = logging.handlers.HTTPHandler(
        host(daemon), "/log", method="POST", credentials=("app", "s3cret")
    )
    logger.addHandler(good)
    logger.info("with credentials")
    logger.removeHandler(good)
    good.close()
    logger.addHandler(
        logging.handlers.HTTPHandler(host(daemon), "/log", method="POST", credentials=("a", "x"))
    )
    logger.info("wrong password")
    status, headers, _ = daemon.request("POST", "/log", "msg=anonymous")
    assert status == 401
    assert "Basic" in headers["WWW-Authenticate"]
    status, _, _ = daemon.request(
        "POST", "/log", {"msg": "bearer"}, {"Authorization": "Bearer s3cret"}
    )
    assert status == 200
    assert sorted(r["message"] for r in search(daemon)) == ["bearer", "with credentials"]


def _post(daemon: Daemon, body: bytes, content_type: str) -> tuple[int, bytes]:
    status, _, answer = daemon.request("POST", "/log", body, {"Content-Type": content_type})
    return status, answer


def test_bad_input_gets_a_clear_4xx_or_is_stored_as_well_as_possible_and_never_a_500(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(["--max-body-size", "4k"]).start()
    form = "application/x-www-form-urlencoded"
    status, answer = _post(daemon, b'{"msg": "x"', "application/json")
    assert status == 400 and b"malformed JSON" in answer
    status, answer = _post(daemon, b"name=x&levelno=20", form)
    assert status == 400 and b"no 'msg'" in answer
    assert _post(daemon, b"msg=" + b"x" * 5000, form)[0] == 413
    assert daemon.request("GET", "/log")[0] == 400
    assert daemon.request("PUT", "/log", "msg=x")[0] == 405
    stored_anyway = [
        b"msg=bad+%zz+escape",
        b"msg=bad+utf8+%FF&levelno=loud&created=later",
        b"msg=%25s+%25s&args=%28%27one%27%2C%29",  # msg % args mismatch
        b"msg=%25s&args=" + quote("(__import__('os').getpid(),)").encode(),
        b"msg=%25999999999d&args=%281%2C%29",
    ]
    for body in stored_anyway:
        status, answer = _post(daemon, body, form)
        assert status == 200, (body, answer)
    records = search(daemon, "order=asc")
    assert [r["message"] for r in records] == [
        "bad %zz escape",
        "bad utf8 \ufffd",
        "%s %s",
        "%s",
        "%999999999d",
    ]
    assert all(r["problems"] for r in records)
    status, _, _ = daemon.request("GET", "/log?" + urlencode({"msg": "still fine"}))
    assert status == 200
    # Lone surrogates no UTF-8 can carry: a JSON escape, and a Python literal in args
    # (how a surrogateescape'd file name arrives from HTTPHandler).  Once these wedged
    # every later commit.
    lone = b'{"msg": "file \\udcff", "extra_\\ud800": "\\udfff"}'
    assert _post(daemon, lone, "application/json")[0] == 200
    args = quote("('\\udcff.txt',)").encode()
    assert _post(daemon, b"msg=open+%25s&args=" + args, form)[0] == 200
    assert _post(daemon, b'{"msg": "and after them"}', "application/json")[0] == 200
    latest = search(daemon, "limit=3")
    assert [r["message"] for r in latest] == [
        "and after them",
        "open \ufffd.txt",
        "file \ufffd",
    ]
    assert latest[2]["extra"] == {"extra_\ufffd": "\ufffd"}
    assert daemon.process is not None and daemon.process.poll() is None
    assert "Traceback" not in daemon.output()


def test_a_record_answered_200_survives_kill_9_right_after(daemon_factory: DaemonFactory) -> None:
    """Clients record every 200; the daemon is killed mid-stream; after a restart every
    acknowledged record is there."""
    daemon = daemon_factory().start()
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", daemon.http_port, timeout=5)
        sequence = 0
        while not stop.is_set():
            marker = f"c{number}-{sequence}"
            sequence += 1
            body = urlencode({"msg": "durable %s", "args": repr((marker,)), "name": "dur"})
            try:
                connection.request(
                    "POST", "/log", body, {"Content-Type": "application/x-www-form-urlencoded"}
                )
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                return
            if response.status == 200:
                with lock:
                    acknowledged.append(f"durable {marker}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while len(acknowledged) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    [writer] = writer_processes(daemon)
    daemon.kill9()
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(acknowledged) >= 300
    # the orphaned writer finishes what it has and exits when its input ends
    deadline = time.monotonic() + 10
    while writer in writer_processes(daemon) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer not in writer_processes(daemon)
    # It exits quietly (its stderr is the daemon's): no BrokenPipeError for the answer
    # no one is left to read.
    assert "Traceback" not in daemon.output(), daemon.output()
    assert "Error" not in daemon.output(), daemon.output()
    daemon.start()
    stored = {r["message"] for r in search(daemon, "logger=dur&limit=10000")}
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} acknowledged records lost"


def writer_processes(daemon: Daemon) -> list[int]:
    """Pids of the log writer children working on *daemon*'s data dir."""
    wanted = f"homeport.logs.writer\0{daemon.data_dir / 'logs.sqlite3'}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                continue
            if wanted in cmdline and state != "Z":
                pids.append(int(entry.name))
    return pids


def test_a_dead_writer_process_is_replaced_and_ingest_goes_on(daemon: Daemon) -> None:
    """kill -9 of the writer child: requests it had get a 503, never a 500 or a hang;
    a new writer starts and every record answered 200 is stored."""
    status, _ = _post(daemon, b"msg=before&name=wr", "application/x-www-form-urlencoded")
    assert status == 200
    [writer] = writer_processes(daemon)
    os.kill(writer, signal.SIGKILL)
    statuses: list[int] = []
    deadline = time.monotonic() + 15
    n = 0
    while time.monotonic() < deadline:
        status, _ = _post(
            daemon, f"msg=after {n}&name=wr".encode(), "application/x-www-form-urlencoded"
        )
        statuses.append(status)
        n += 1
        if status == 200 and statuses.count(200) >= 3:
            break
        time.sleep(0.05)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[-1] == 200
    [replacement] = writer_processes(daemon)
    assert replacement != writer
    stored = {r["message"] for r in search(daemon, "logger=wr&limit=1000")}
    answered = {f"after {i}" for i, status in enumerate(statuses) if status == 200}
    assert answered | {"before"} <= stored
    assert "starting a new one" in daemon.output()


def test_a_bad_retention_value_stops_start_up_with_one_line(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "twisted", "homeport", "--log-retention", "soon"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "homeport: error: --log-retention 'soon': expected an age like 7d, "
        "a record count like 1000000, both (7d,1000000), or none"
    ]


def test_basic_auth_with_a_token_as_the_password_is_accepted_for_json_too(
    daemon_factory: DaemonFactory,
) -> None:
    daemon = daemon_factory(["--token", "t0k"]).start()
    auth = "Basic " + base64.b64encode(b"anyone:t0k").decode()
    status, _, body = daemon.request(
        "POST",
        "/log",
        json.dumps([{"msg": "a"}, {"msg": "b"}]),
        {"Content-Type": "application/json", "Authorization": auth},
    )
    assert status == 200 and json.loads(body) == {"ids": [1, 2]}
