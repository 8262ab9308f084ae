"""``/metrics`` in Prometheus text format, on prometheus_client.

Each daemon has its own registry (no global state, so tests can run several).  With
``--acl`` a scrape needs what Consul's ``/v1/agent/metrics`` needs: agent read on this
agent's node (``agent "NODE" { policy = "read" }``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from twisted.web.resource import Resource
from twisted.web.server import Request

from ..acl import PermissionDenied, TokenNotFound
from .args import parse_args
from .auth import Access

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class _Read(Collector):
    """Values read at scrape time: gauges, and counters (exposed as ``<name>_total``)."""

    def __init__(self) -> None:
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.counters: dict[str, tuple[str, Callable[[], float]]] = {}

    def collect(self) -> Iterable[Metric]:
        for name, (doc, read) in self.gauges.items():
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], read())
            yield gauge
        for name, (doc, read) in self.counters.items():
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], read())
            yield counter


BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 60.0, 600.0)


class Slot:
    """One route and status code's count, and the route's latency row: what a request
    answered from a cache keeps, so that an observation is three additions."""

    __slots__ = ("count", "row")

    def __init__(self, row: list[float]) -> None:
        self.count = 0
        self.row = row

    def observe(self, seconds: float) -> None:
        self.count += 1
        row = self.row
        row[bisect_left(BUCKETS, seconds)] += 1
        row[-1] += seconds


class _Requests(Collector):
    """Request counts and latency histograms kept in plain ints and floats.

    prometheus_client's Counter and Histogram take a lock and walk label lookups on
    every observation (~5 us), a third of a cached catalog read; here an observation is
    a dict lookup, a bisect and three additions, and the library only formats at scrape.
    """

    def __init__(self) -> None:
        #: (route, code) -> its count, sharing the route's latency row
        self.slots: dict[tuple[str, str], Slot] = {}
        #: route -> [bucket counts..., +Inf count, sum]
        self.latency: dict[str, list[float]] = {}

    def slot(self, route: str, code: int) -> Slot:
        key = (route, str(code))
        slot = self.slots.get(key)
        if slot is None:
            row = self.latency.get(route)
            if row is None:
                row = self.latency[route] = [0.0] * (len(BUCKETS) + 2)
            slot = self.slots[key] = Slot(row)
        return slot

    def observe(self, route: str, code: int, seconds: float) -> None:
        self.slot(route, code).observe(seconds)

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "homeport_http_requests",
            "HTTP requests answered, by route and status code",
            labels=["route", "code"],
        )
        for (route, code), slot in sorted(self.slots.items()):
            requests.add_metric([route, code], slot.count)
        yield requests
        latency = HistogramMetricFamily(
            "homeport_http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            labels=["route"],
        )
        for route, row in sorted(self.latency.items()):
            cumulative = 0.0
            buckets = []
            for bound, observed in zip((*BUCKETS, float("inf")), row[:-1], strict=True):
                cumulative += observed
                buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
            latency.add_metric([route], buckets, row[-1])
        yield latency


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = _Requests()
        self.registry.register(self._requests)
        self._read = _Read()
        self.registry.register(self._read)

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A value read when /metrics is scraped (catalog sizes and the like)."""
        self._read.gauges[name] = (doc, read)

    def counter(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A count that only grows, read when scraped; exposed as ``<name>_total``."""
        self._read.counters[name.removesuffix("_total")] = (doc, read)

    def observe(self, route: str, code: int | None, seconds: float) -> None:
        self._requests.observe(route, code or 200, seconds)

    def slot(self, route: str, code: int | None) -> Slot:
        """Where the requests of *route* answered with *code* are counted: kept by a
        cached answer, whose every hit is then ``slot.observe(seconds)``."""
        return self._requests.slot(route, code or 200)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class MetricsResource(Resource):
    isLeaf = True
    #: What ``--acl`` asks of the token (tests/test_acl_routes.py lists every face's).
    acl_rule = "agent:read"

    def __init__(self, metrics: Metrics, access: Access | None = None, node: str = "") -> None:
        Resource.__init__(self)
        self.metrics = metrics
        self.access = access
        self.node = node

    def render_GET(self, request: Request) -> bytes:
        if self.access is not None and self.access.acl:
            given = parse_args(request.uri).get("token")
            try:
                self.access.check(request, "agent", self.node, "read", given[-1] if given else None)
            except (PermissionDenied, TokenNotFound) as e:
                request.setResponseCode(403)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                return str(e).encode()
        request.setHeader(b"content-type", CONTENT_TYPE)
        return self.metrics.render()
