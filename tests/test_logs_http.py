"""The log sink's HTTP layer in memory: the daemon's real Site and resources, StubTreq.

Nothing listens on a socket: requests go through the real ``Site`` with treq's
``StubTreq``, and the writer thread's answers come back through the test reactor's
``callFromThread`` queue (``drain``), so these run in milliseconds.
"""

from __future__ import annotations

import base64
import json
import logging
import logging.handlers
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from twisted.application.service import IService, IServiceCollection
from twisted.python.failure import Failure

from homeport.logs.service import LogSink
from homeport.push.hub import Event, HubService

from .memory import InMemoryDaemon

FORM = "application/x-www-form-urlencoded"


def handler_body(msg: str = "job %s took %d ms", args: tuple[Any, ...] = ("a1", 37)) -> bytes:
    """Exactly what a stock ``HTTPHandler(method="POST")`` sends for one record."""
    handler = logging.handlers.HTTPHandler("localhost", "/log", method="POST")
    record = logging.LogRecord(
        "app.worker", logging.ERROR, "/srv/app/worker.py", 42, msg, args, None
    )
    record.user = "alice"
    return urlencode(handler.mapLogRecord(record)).encode()


def services(parent: IService) -> Iterator[IService]:
    yield parent
    if IServiceCollection.providedBy(parent):
        for child in parent:
            yield from services(child)


class Daemon:
    """The in-memory daemon with helpers to answer requests whose 200 waits for a commit."""

    def __init__(self, data: Path, args: list[str] | None = None) -> None:
        self.memory = InMemoryDaemon(data, args)
        found = list(services(self.memory.service))
        self.sink = next(s for s in found if isinstance(s, LogSink))
        self.hub = next(s for s in found if isinstance(s, HubService)).hub
        self.events: list[Event] = []
        self.hub.subscribe(["logs"], self.events.append)

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[Any]:
        """Start a request; the returned list gets its response (or failure) when answered."""
        answer: list[Any] = []
        treq: Any = self.memory.treq  # StubTreq makes its request methods at run time
        treq.request(
            method,
            "http://127.0.0.1" + path,
            data=body,
            headers={k: [v] for k, v in (headers or {}).items()},
        ).addBoth(answer.append)
        return answer

    def settle(self, *requests: list[Any], timeout: float = 10.0) -> list[tuple[int, Any, bytes]]:
        """Pump the site and the writer thread's answers until every request is answered;
        (status, headers, body) of each."""
        deadline = time.monotonic() + timeout
        while True:
            self.memory.treq.flush()
            self.memory.reactor.drain()
            self.memory.treq.flush()
            if all(requests):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("requests were not answered")
            time.sleep(0.001)
        out = []
        for (response,) in requests:
            if isinstance(response, Failure):
                response.raiseException()
            content: list[Any] = []
            response.content().addBoth(content.append)
            self.memory.treq.flush()
            if isinstance(content[0], Failure):
                content[0].raiseException()
            out.append((response.code, response.headers, content[0]))
        return out

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        return self.settle(self.send(method, path, body, headers))[0]

    def stored(self) -> list[dict[str, Any]]:
        status, _, body = self.request("GET", "/v1/logs?limit=1000&order=asc")
        assert status == 200, body
        page = json.loads(body)
        records: list[dict[str, Any]] = page["records"] if isinstance(page, dict) else page
        return records


@pytest.fixture
def daemon_args() -> list[str]:
    return []


@pytest.fixture
def daemon(daemon_args: list[str]) -> Iterator[Daemon]:
    data = Path(tempfile.mkdtemp(prefix="homeport-test-"))
    made = Daemon(data, daemon_args)
    try:
        yield made
    finally:
        made.memory.stop()
        shutil.rmtree(data, ignore_errors=True)


def test_a_stock_handler_post_is_answered_200_with_its_id_only_once_committed(
    daemon: Daemon,
) -> None:
    pending = daemon.send("POST", "/log", handler_body(), {"Content-Type": FORM})
    daemon.memory.treq.flush()
    assert not pending  # nothing is answered before the writer thread commits
    [(status, headers, body)] = daemon.settle(pending)
    assert status == 200
    assert headers.getRawHeaders("content-type") == ["application/json"]
    assert json.loads(body) == {"ids": [1]}
    assert daemon.sink.store.commits == 1
    [record] = daemon.stored()
    assert record["message"] == "job a1 took 37 ms"
    assert record["name"] == "app.worker"
    assert record["extra"] == {"user": "alice"}


def test_each_stored_record_is_printed_as_one_line_and_published_on_logs(
    daemon: Daemon, capfd: pytest.CaptureFixture[str]
) -> None:
    first = daemon.send("POST", "/log", handler_body("first %s", ("x",)), {"Content-Type": FORM})
    second = daemon.send("POST", "/log", handler_body("second\nline", ()), {"Content-Type": FORM})
    assert [s for s, _, _ in daemon.settle(first, second)] == [200, 200]
    lines = [line for line in capfd.readouterr().out.splitlines() if "app.worker" in line]
    assert [line.split("  ", 1)[1] for line in lines] == [
        "app.worker  ERROR  first x",
        "app.worker  ERROR  second\\nline",
    ]
    assert [(e.topic, e.data["id"], e.data["message"]) for e in daemon.events] == [
        ("logs", 1, "first x"),
        ("logs", 2, "second\nline"),
    ]
    # the event's text (what SSE sends) is the record as the search API shows it
    assert json.loads(daemon.events[0].data_text()) == daemon.stored()[0]


def test_requests_read_in_the_same_turn_share_one_commit(daemon: Daemon) -> None:
    pending = [
        daemon.send("POST", "/log", handler_body("n=%d", (n,)), {"Content-Type": FORM})
        for n in range(10)
    ]
    answers = daemon.settle(*pending)
    assert [status for status, _, _ in answers] == [200] * 10
    ids = [json.loads(body)["ids"][0] for _, _, body in answers]
    assert sorted(ids) == list(range(1, 11))
    assert daemon.sink.store.commits == 1
    assert [r["message"] for r in daemon.stored()] == [f"n={n}" for n in range(10)]


def test_get_with_the_record_in_the_query_string_is_stored(daemon: Daemon) -> None:
    status, _, body = daemon.request("GET", "/log?" + handler_body().decode())
    assert status == 200, body
    assert [r["message"] for r in daemon.stored()] == ["job a1 took 37 ms"]


def test_json_lists_and_ndjson_store_every_record_in_order(daemon: Daemon) -> None:
    listed = json.dumps([{"msg": "one", "levelname": "INFO"}, {"msg": "two"}]).encode()
    status, _, body = daemon.request("POST", "/log", listed, {"Content-Type": "application/json"})
    assert (status, json.loads(body)) == (200, {"ids": [1, 2]})
    lines = b'{"msg": "three"}\n{"msg": "vier \xc3\xa9"}\n'
    status, _, body = daemon.request(
        "POST", "/log", lines, {"Content-Type": "application/x-ndjson"}
    )
    assert (status, json.loads(body)) == (200, {"ids": [3, 4]})
    assert [r["message"] for r in daemon.stored()] == ["one", "two", "three", "vier é"]


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b'{"msg": ', "application/json", "Bad log record: malformed JSON"),
        (b'{"levelname": "INFO"}', "application/json", "has no 'msg'"),
        (b"<xml/>", "application/xml", "unsupported content type 'application/xml'"),
        (b"[1, 2]", "application/json", "item 0 of the JSON list is not an object"),
    ],
)
def test_unreadable_bodies_are_400_with_the_reason_and_nothing_is_stored(
    daemon: Daemon, body: bytes, content_type: str, reason: str
) -> None:
    status, headers, text = daemon.request("POST", "/log", body, {"Content-Type": content_type})
    assert status == 400
    assert headers.getRawHeaders("content-type") == ["text/plain; charset=utf-8"]
    assert reason in text.decode()
    assert daemon.stored() == []
    assert daemon.sink.store.commits == 0


def test_other_methods_are_405_with_allow(daemon: Daemon) -> None:
    status, headers, _ = daemon.request("PUT", "/log", b"msg=x")
    assert status == 405
    assert headers.getRawHeaders("allow") == ["GET, POST"]


@pytest.mark.parametrize("daemon_args", [["--token", "s3cret"]])
def test_with_a_token_only_basic_or_bearer_credentials_store_records(daemon: Daemon) -> None:
    status, headers, _ = daemon.request("POST", "/log", handler_body(), {"Content-Type": FORM})
    assert status == 401
    assert headers.getRawHeaders("www-authenticate") == [
        'Basic realm="homeport"',
        'Bearer realm="homeport"',
    ]
    wrong = base64.b64encode(b"user:nope").decode()
    status, _, _ = daemon.request(
        "POST", "/log", handler_body(), {"Content-Type": FORM, "Authorization": f"Basic {wrong}"}
    )
    assert status == 401
    right = base64.b64encode(b"user:s3cret").decode()
    basic = daemon.request(
        "POST", "/log", handler_body(), {"Content-Type": FORM, "Authorization": f"Basic {right}"}
    )
    bearer = daemon.request(
        "POST", "/log", handler_body(), {"Content-Type": FORM, "Authorization": "Bearer s3cret"}
    )
    assert (basic[0], bearer[0]) == (200, 200)
    status, _, body = daemon.request("GET", "/v1/logs", headers={"Authorization": "Bearer s3cret"})
    assert status == 200, body
    assert daemon.sink.store.stored == 2


def test_search_answers_json_with_filters_and_bad_filters_are_400(daemon: Daemon) -> None:
    records = [
        {"msg": "disk full", "levelname": "ERROR", "name": "app.disk"},
        {"msg": "all good", "levelname": "INFO", "name": "app.web"},
    ]
    status, _, _ = daemon.request(
        "POST", "/log", json.dumps(records).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200
    status, headers, body = daemon.request("GET", "/v1/logs?level=ERROR")
    assert status == 200
    assert headers.getRawHeaders("content-type") == ["application/json"]
    page = json.loads(body)
    found = page["records"] if isinstance(page, dict) else page
    assert [r["message"] for r in found] == ["disk full"]
    status, _, body = daemon.request("GET", "/v1/logs?limit=many")
    assert status == 400, body
