"""Prometheus metrics of one service worker, on a registry owned by its app (never the global one).

Exposed series (``endpoint`` is the route template, e.g. ``/predict``, or ``unmatched`` for a path
no route knows, so random URLs cannot blow up the label set; a request refused before routing,
such as a 413 by Content-Length, is labelled with its path when that path is a known route):

    selfheal_service_requests_total{endpoint, status}     requests answered, by HTTP status
    selfheal_service_request_duration_seconds{endpoint}   time to the last response byte, seconds
    selfheal_service_predicted_rows_total                 rows predicted by successful requests
    selfheal_service_model_info{version, sha256, name, task, metric}
                                                          the served model (empty when none)
    selfheal_service_model_ready                          1 when a smoke-tested model is served
    selfheal_service_model_swaps_total{outcome}           in-process swaps, "ok" or "failed"
    selfheal_service_captured_rows_total                  /predict rows put in the capture buffer
    selfheal_service_feedback_rows_total                  /feedback rows put in the feedback buffer
    selfheal_service_capture_dropped_entries_total{buffer}
                                                          entries lost to overflow before a read
                                                          ("predictions" or "feedback")
    selfheal_service_unseen_categories_total{feature}     request cells of a categorical feature
                                                          whose category the model never saw (they
                                                          are answered, encoded as unseen)

The capture series cost nothing on the request path: they are read from the capture's own
counters when scraped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.capture import CaptureCounters
from service.model_store import Served

UNMATCHED = "unmatched"
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """The metric objects of one app and their private ``CollectorRegistry``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "selfheal_service_requests",
            "HTTP requests answered, by route template and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "selfheal_service_request_duration_seconds",
            "Time from request start to the last response byte, in seconds.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.predicted_rows = Counter(
            "selfheal_service_predicted_rows",
            "Rows predicted by successful /predict requests.",
            registry=self.registry,
        )
        self.model_info = Info(
            "selfheal_service_model",
            "The model this worker serves: version, artifact sha256, the schema's model name, task"
            " and metric (empty labels when none).",
            registry=self.registry,
        )
        self.unseen_categories = Counter(
            "selfheal_service_unseen_categories",
            "Request cells of a categorical feature whose category the served model never saw.",
            ["feature"],
            registry=self.registry,
        )
        self._unseen: dict[str, Any] = {}  # labelled children, looked up once per feature
        # prometheus_client's labels() takes a lock and builds a key on every call (about 2 us,
        # twice per request): the labelled children are looked up once per endpoint and status.
        self._answered: dict[tuple[str, int], tuple[Any, Any]] = {}
        self.model_ready = Gauge(
            "selfheal_service_model_ready",
            "1 when a loaded, smoke-tested model is served, else 0.",
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "selfheal_service_model_swaps",
            "In-process model swaps the daemon asked for, by outcome (ok, failed).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("ok", "failed"):
            self.model_swaps.labels(outcome=outcome)  # both series exist from the start, at 0
        self.set_model(None)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its time to the last byte."""
        children = self._answered.get((endpoint, status))
        if children is None:
            children = (
                self.requests.labels(endpoint=endpoint, status=str(status)),
                self.latency.labels(endpoint=endpoint),
            )
            self._answered[(endpoint, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def watch_capture(self, counters: Callable[[], CaptureCounters]) -> None:
        """Expose the capture buffers' totals, read from ``counters()`` at each scrape."""
        self.registry.register(_CaptureCollector(counters))

    def set_model(self, served: Served | None) -> None:
        """Point the model info and readiness series at ``served`` (None: no model); every
        categorical feature of its schema gets its unseen-category series (at 0 until one)."""
        if served is None:
            self.model_info.info(
                {"version": "", "sha256": "", "name": "", "task": "", "metric": ""}
            )
            self.model_ready.set(0)
            return
        schema = served.schema
        self.model_info.info(
            {
                "version": served.version,
                "sha256": served.sha256,
                "name": schema.name,
                "task": schema.task,
                "metric": schema.metric,
            }
        )
        self.model_ready.set(1)
        for name in served.rows.categorical_names:
            self._unseen_child(name)

    def count_unseen(self, counts: list[tuple[str, int]]) -> None:
        """Add a request's unseen categories, ``(feature, cells)`` pairs."""
        for name, cells in counts:
            self._unseen_child(name).inc(cells)

    def _unseen_child(self, name: str) -> Any:
        child = self._unseen.get(name)
        if child is None:
            child = self._unseen[name] = self.unseen_categories.labels(feature=name)
        return child

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its Content-Type, in the format the ``Accept`` header asks for.

        Prometheus text format by default; OpenMetrics when the scraper asks for it.
        """
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class MetricsMiddleware:
    """ASGI middleware counting every HTTP request and timing it with ``time.perf_counter``.

    A request that raises before any response counts as status 500 (the server error handler
    outside this middleware answers it so).
    """

    def __init__(
        self, app: ASGIApp, metrics: ServiceMetrics, known_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(_endpoint(scope, self.known_paths), status, elapsed)


def _endpoint(scope: Scope, known_paths: frozenset[str]) -> str:
    """The route template the router matched (set on the shared scope), else the request path
    if it is one of ``known_paths`` (refused before routing), else ``unmatched``."""
    route: Any = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return template
    path = scope.get("path")
    return path if path in known_paths else UNMATCHED


class _CaptureCollector(Collector):
    """Counter families built from the capture's totals when scraped (no cost per request)."""

    def __init__(self, counters: Callable[[], CaptureCounters]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        now = self.counters()
        yield CounterMetricFamily(
            "selfheal_service_captured_rows",
            "Rows of successful /predict requests put in the capture buffer.",
            value=now.prediction_rows,
        )
        yield CounterMetricFamily(
            "selfheal_service_feedback_rows",
            "Labelled rows of /feedback requests put in the feedback buffer.",
            value=now.feedback_rows,
        )
        dropped = CounterMetricFamily(
            "selfheal_service_capture_dropped_entries",
            "Capture entries lost to overflow (the oldest make room), by buffer.",
            labels=["buffer"],
        )
        dropped.add_metric(["predictions"], now.dropped_predictions)
        dropped.add_metric(["feedback"], now.dropped_feedback)
        yield dropped
