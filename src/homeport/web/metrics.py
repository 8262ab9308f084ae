"""``/metrics`` in Prometheus text format, on prometheus_client.

Each daemon has its own registry (no global state, so tests can run several).  The
per-request cost is kept to a dict lookup and two additions: label children are cached
per (route, code).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.web.resource import Resource
from twisted.web.server import Request

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class _Gauges(Collector):
    def __init__(self, sources: dict[str, tuple[str, Callable[[], float]]]) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        for name, (doc, read) in self.sources.items():
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], read())
            yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "homeport_http_requests",
            "HTTP requests answered, by route and status code",
            ["route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "homeport_http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            ["route"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 60, 600),
        )
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.registry.register(_Gauges(self._gauges))

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A value read when /metrics is scraped (catalog sizes and the like)."""
        self._gauges[name] = (doc, read)

    def observe(self, route: str, code: int | None, seconds: float) -> None:
        key = (route, code or 200)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(route, str(key[1])),
                self.latency.labels(route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE)
        return self.metrics.render()
