"""The rest of Consul's agent routes: reload, leave, metrics and monitor.

``PUT /v1/agent/reload`` runs what SIGHUP runs (the daemon hands its reload over with
:meth:`AgentRoutes.set_reload` once it is built); ``PUT /v1/agent/leave`` answers, then
stops the daemon as SIGTERM does; ``GET /v1/agent/metrics`` is ``/metrics`` in Consul's
JSON shape (or, with ``?format=prometheus``, the text itself); ``GET /v1/agent/monitor``
streams the agent's own log lines from the moment it is asked, as Consul's does.
:class:`AgentStreams`, mounted at ``/v1/agent`` before the API, takes the monitor's
requests (a stream cannot be a cached answer) and hands every other one to the API.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import Metric
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import provider

from ..http.api import TEXT, ApiResource, Call, Reply, json_reply
from ..http.args import parse_args
from ..http.errors import HTTPError
from ..http.metrics import CONTENT_TYPE, Metrics
from ..logformat import format_json, format_text
from ..part import IHomeportReactor

#: Consul's ``logging.ValidateLogLevel`` names (any case) and the level each keeps.
LOG_LEVELS = {
    "TRACE": LogLevel.debug,
    "DEBUG": LogLevel.debug,
    "INFO": LogLevel.info,
    "WARN": LogLevel.warn,
    "ERR": LogLevel.error,
    "ERROR": LogLevel.error,
}


def log_level(value: str | None) -> LogLevel:
    """``?loglevel=`` as Consul reads it: INFO when empty, else one of :data:`LOG_LEVELS`
    in any case; anything else is Consul's 400."""
    name = (value or "INFO").upper()
    if name not in LOG_LEVELS:
        raise HTTPError(400, f"Unknown log level: {value}")
    level: LogLevel = LOG_LEVELS[name]
    return level


def routes(
    api: ApiResource, metrics: Metrics, reactor: IHomeportReactor
) -> tuple[AgentRoutes, AgentStreams]:
    """Add the four routes to *api*; returns them (for :meth:`AgentRoutes.set_reload`)
    and the resource to mount at ``/v1/agent``."""
    face = AgentRoutes(metrics, reactor)
    api.route("PUT", "/v1/agent/reload", face.reload)
    api.route("PUT", "/v1/agent/leave", face.leave)
    api.route("GET", "/v1/agent/metrics", face.agent_metrics, volatile=True)
    api.route("GET", "/v1/agent/monitor", face.monitor_check, volatile=True)
    return face, AgentStreams(api, reactor)


class AgentRoutes:
    def __init__(self, metrics: Metrics, reactor: IHomeportReactor) -> None:
        self.metrics = metrics
        self.reactor = reactor
        #: The start of the one interval the values cover (go-metrics' are 10 s long).
        self.started = reactor.seconds()
        self._reload: Callable[[], None] | None = None

    def set_reload(self, reload: Callable[[], None]) -> None:
        """What ``PUT /v1/agent/reload`` runs: the daemon's SIGHUP actions."""
        self._reload = reload

    def reload(self, call: Call) -> Reply:
        if self._reload is not None:
            self._reload()
        return Reply(b"", content_type=TEXT)

    def leave(self, call: Call) -> Reply:
        """Answer, then stop as SIGTERM does (Consul's agent leaves and shuts down)."""
        call.request.notifyFinish().addBoth(lambda _: self.reactor.callLater(0, self._stop))
        return Reply(b"", content_type=TEXT)

    def _stop(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    def agent_metrics(self, call: Call) -> Reply:
        if call.arg("format") == "prometheus":
            return Reply(self.metrics.render(), content_type=CONTENT_TYPE)
        elapsed = self.reactor.seconds() - self.started
        found = summary(self.metrics.registry.collect(), elapsed=elapsed)
        return json_reply(found, pretty=call.pretty)

    def monitor_check(self, call: Call) -> Reply:
        """Reached only for what :class:`AgentStreams` leaves to the API (a bad level)."""
        log_level(call.args.get("loglevel", [""])[0])
        return Reply(b"", content_type=TEXT)


def _name(name: str) -> str:
    """Prometheus' ``homeport_http_requests`` as go-metrics names it:
    ``homeport.http.requests``."""
    return name.replace("_", ".")


def _labels(labels: dict[str, str]) -> dict[str, str]:
    return dict(labels)


def summary(
    families: Iterable[Metric], now: float | None = None, elapsed: float = 1.0
) -> dict[str, Any]:
    """go-metrics' ``MetricsSummary`` (what Consul's ``/v1/agent/metrics`` answers) of
    the daemon's metrics: gauges as ``Gauges``, counters as ``Counters`` (their count so
    far), request durations as ``Samples`` (in milliseconds, as go-metrics times); the
    interval is the *elapsed* seconds since start (``Rate`` is ``Sum`` over it)."""
    per_second = 1.0 / max(elapsed, 1e-9)
    gauges: list[dict[str, Any]] = []
    counters: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for family in families:
        if family.type == "gauge":
            gauges.extend(
                {"Name": _name(s.name), "Value": s.value, "Labels": _labels(s.labels)}
                for s in family.samples
            )
        elif family.type == "counter":
            counters.extend(
                _aggregate(_name(family.name), s.labels, s.value, s.value, per_second)
                for s in family.samples
                if s.name.endswith("_total")
            )
        elif family.type == "histogram":
            samples.extend(_histograms(family, per_second))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(now))
    return {
        "Timestamp": stamp,
        "Gauges": gauges,
        "Points": [],
        "Counters": counters,
        "Samples": samples,
    }


def _aggregate(
    name: str, labels: dict[str, str], count: float, total: float, per_second: float
) -> dict[str, Any]:
    mean = total / count if count else 0.0
    return {
        "Name": name,
        "Count": int(count),
        "Rate": total * per_second,
        "Sum": total,
        "Mean": mean,
        "Labels": _labels(labels),
    }


def _histograms(family: Metric, per_second: float) -> Iterable[dict[str, Any]]:
    """One sample per label set: its count and its sum in milliseconds."""
    counts: dict[tuple[tuple[str, str], ...], float] = {}
    sums: dict[tuple[tuple[str, str], ...], float] = {}
    for sample in family.samples:
        key = tuple(sorted(sample.labels.items()))
        if sample.name.endswith("_count"):
            counts[key] = sample.value
        elif sample.name.endswith("_sum"):
            sums[key] = sample.value * 1000.0
    for key, count in counts.items():
        total = sums.get(key, 0.0)
        if math.isfinite(total):
            yield _aggregate(_name(family.name), dict(key), count, total, per_second)


class AgentStreams(Resource):
    """``/v1/agent/*``: ``GET /v1/agent/monitor`` streams log lines; everything else
    (and a monitor the API must refuse) goes to the API resource."""

    isLeaf = True
    #: The site leaves its requests' metrics to the API (and to :meth:`render`).
    measured = True

    def __init__(self, api: ApiResource, reactor: IHomeportReactor) -> None:
        Resource.__init__(self)
        self.api = api
        self.reactor = reactor
        self.watching: list[Request] = []

    def render(self, request: Request) -> bytes | int:
        assert request.prepath is not None and request.postpath is not None
        request.postpath.insert(0, request.prepath.pop())
        level = self._monitor_level(request)
        if level is None or not self.api.permits(request, "/v1/agent/monitor"):
            return self.api.render(request)
        started = time.perf_counter()
        request.setHeader(b"content-type", TEXT)
        request.write(b"")
        as_json = "logjson" in parse_args(request.uri)  # Consul: one JSON object a line
        observer = _observer(request, level, format_json if as_json else format_text)
        globalLogPublisher.addObserver(observer)
        self.watching.append(request)

        def gone(_: object) -> None:
            globalLogPublisher.removeObserver(observer)
            seconds = time.perf_counter() - started
            self.api.metrics.observe("/v1/agent/monitor", request.code, seconds)
            if request in self.watching:
                self.watching.remove(request)

        request.notifyFinish().addBoth(gone)
        return NOT_DONE_YET

    def _monitor_level(self, request: Request) -> LogLevel | None:
        """The level of a monitor this resource streams; None for anything else."""
        path = [s.decode("utf-8", "replace") for s in request.postpath or ()]
        if request.method != b"GET" or [p for p in path if p] != ["agent", "monitor"]:
            return None
        args = parse_args(request.uri)
        if args.get("dc") and args["dc"][-1] != self.api.datacenter:
            return None
        try:
            # Go's URL.Query().Get: the first value
            return log_level(args["loglevel"][0] if "loglevel" in args else None)
        except HTTPError:
            return None

    def close(self) -> None:
        """End every stream (at shutdown)."""
        for request in list(self.watching):
            if not request.finished:
                request.finish()


def _observer(
    request: Request, level: LogLevel, render: Callable[[dict[str, Any]], str | None]
) -> ILogObserver:
    """Each event at *level* or above, as one text line on *request*; never raises into
    the log publisher, and a line logged while writing one is not written again."""
    writing = False

    def observe(event: dict[str, Any]) -> None:
        nonlocal writing
        if writing or request.finished or event.get("log_level", LogLevel.info) < level:
            return
        line = render(event)
        if line is None:
            return
        writing = True
        try:
            request.write(line.encode("utf-8", "replace"))
        except RuntimeError:  # the client went away; notifyFinish removes this observer
            pass
        finally:
            writing = False

    observer: ILogObserver = provider(ILogObserver)(observe)
    return observer
