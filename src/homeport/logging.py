"""Logging handlers for sending records to a homeport daemon.

The stock handler works as is::

    import logging, logging.handlers
    logging.getLogger().addHandler(
        logging.handlers.HTTPHandler("hub:8500", "/log", method="POST")
    )

but it sends the raw ``msg`` template and no traceback text (``exc_text`` is only filled
if some other handler's Formatter ran first), opens a new connection per record and makes
the logging call wait for the HTTP round trip.  Two better handlers:

:class:`FormattedHTTPHandler` is the stock handler with a ``mapLogRecord`` override: it
also sends the rendered ``message`` and the formatted traceback (``exc_text``) and stack.
It still blocks and still opens a connection per record::

    from homeport.logging import FormattedHTTPHandler
    handler = FormattedHTTPHandler("hub:8500", "/log", method="POST",
                                   credentials=("app", TOKEN))  # when --token is set

:class:`HomeportHandler` never blocks the application: ``emit`` only captures the record
(message and traceback rendered in the caller's thread) and puts it on a bounded queue; a
background thread sends batches as one JSON list over one keep-alive connection,
reconnecting when needed.  When the queue is full records are dropped and counted
(``handler.dropped``) rather than stalling the program.  ``close()`` (called by
``logging.shutdown`` at exit) sends what is still queued::

    from homeport.logging import HomeportHandler
    logging.getLogger().addHandler(HomeportHandler("http://hub:8500", token=TOKEN))
"""

from __future__ import annotations

import http.client
import json
import logging
import logging.handlers
import queue
import ssl
import threading
import time
import traceback
from typing import Any
from urllib.parse import urlsplit

# Attributes of every LogRecord; the rest of ``record.__dict__`` came from ``extra=``.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def _traceback_text(record: logging.LogRecord) -> str | None:
    if record.exc_text:
        return record.exc_text
    if record.exc_info and record.exc_info[0] is not None:
        return "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
    return None


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception as e:  # noqa: BLE001 - a bad msg % args must not lose the record
        return f"{record.msg!s} (args {record.args!r}: {type(e).__name__}: {e})"


class FormattedHTTPHandler(logging.handlers.HTTPHandler):
    """``HTTPHandler`` that also sends the rendered message and the traceback text."""

    def mapLogRecord(self, record: logging.LogRecord) -> dict[str, Any]:
        fields = dict(record.__dict__)
        fields["message"] = _message(record)
        fields["exc_text"] = _traceback_text(record)
        fields["exc_info"] = None  # only a repr of objects; exc_text has the content
        return fields


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record as JSON-safe fields, the shape homeport's ingest reads."""
    fields: dict[str, Any] = {
        "name": record.name,
        "msg": str(record.msg),
        "args": repr(record.args) if record.args else None,
        "message": _message(record),
        "levelname": record.levelname,
        "levelno": record.levelno,
        "pathname": record.pathname,
        "filename": record.filename,
        "module": record.module,
        "lineno": record.lineno,
        "funcName": record.funcName,
        "created": record.created,
        "msecs": record.msecs,
        "relativeCreated": record.relativeCreated,
        "thread": record.thread,
        "threadName": record.threadName,
        "processName": record.processName,
        "process": record.process,
        "taskName": getattr(record, "taskName", None),
        "exc_text": _traceback_text(record),
        "stack_info": record.stack_info,
    }
    for key, value in record.__dict__.items():
        if key in _STANDARD:
            continue
        if value is None or isinstance(value, str | int | float | bool):
            fields[key] = value
        else:
            try:
                json.dumps(value)
                fields[key] = value
            except (TypeError, ValueError):
                fields[key] = repr(value)
    return fields


_STOP = object()


class HomeportHandler(logging.Handler):
    """Non-blocking handler: a queue, a sender thread, one keep-alive connection, batches.

    *url* is the daemon's base URL (``http://hub:8500`` or ``https://...``); records go to
    ``<url>/log`` as a JSON list.  *token* is sent as ``Authorization: Bearer``.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        level: int = logging.NOTSET,
        max_queue: int = 100_000,
        batch_size: int = 500,
        timeout: float = 10.0,
        retries: int = 3,
        context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(level)
        parts = urlsplit(url if "://" in url else "http://" + url)
        self.secure = parts.scheme == "https"
        self.host = parts.netloc
        self.path = parts.path.rstrip("/") + "/log"
        self.token = token
        self.batch_size = batch_size
        self.timeout = timeout
        self.retries = retries
        self.context = context
        self.queue: queue.Queue[Any] = queue.Queue(max_queue)
        self.dropped = 0
        self.sent = 0
        self._connection: http.client.HTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="homeport-log-sender", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = record_fields(record)
        except Exception:  # noqa: BLE001 - logging's rule: a handler never raises
            self.handleError(record)
            return
        try:
            self.queue.put_nowait(fields)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 10.0) -> None:
        """Wait (up to *timeout*) until everything queued so far was sent or given up."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        if self._thread.is_alive():
            self.flush()
            self.queue.put(_STOP)
            self._thread.join(self.timeout)
        super().close()

    # -- the sender thread ------------------------------------------------------

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is _STOP:
                self.queue.task_done()
                break
            batch = [first]
            stop = False
            while len(batch) < self.batch_size:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    self.queue.task_done()
                    break
                batch.append(item)
            self._send(batch)
            for _ in batch:
                self.queue.task_done()
            if stop:
                break
        if self._connection is not None:
            self._connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            if self.secure:
                self._connection = http.client.HTTPSConnection(
                    self.host, timeout=self.timeout, context=self.context
                )
            else:
                self._connection = http.client.HTTPConnection(self.host, timeout=self.timeout)
        return self._connection

    def _send(self, batch: list[dict[str, Any]]) -> None:
        body = json.dumps(batch, ensure_ascii=False, default=repr).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(self.retries + 1):
            connection = self._connect()
            try:
                connection.request("POST", self.path, body, headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                self._connection = None
                time.sleep(min(0.1 * 2**attempt, 2.0))
                continue
            if response.status == 200:
                self.sent += len(batch)
                return
            if response.status >= 500 and attempt < self.retries:
                time.sleep(min(0.1 * 2**attempt, 2.0))
                continue
            break  # refused (4xx): retrying will not help
        self.dropped += len(batch)
