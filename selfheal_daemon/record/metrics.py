"""The daemon's Prometheus metrics, served at ``GET /metrics`` of the control endpoint.

One registry per daemon (no import-time globals), updated from the loop thread as records are
written and events handled; ``render`` may be called from any thread.

The model is named by ``selfheal_model_info{name, task, metric, version}`` (value 1) and judged by
``selfheal_live_metric{metric}``: the model's own metric over the last feedback window, from each
performance check written to the trail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

RESOLUTION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
BOOKKEEPING = frozenset({"availability", "lifecycle"})
LIVE_CHECKS = frozenset(
    {
        ("performance", "ok"),
        ("performance", "drop_while_busy"),
        ("performance_drop", "metric_below_threshold"),
    }
)
"""``(issue, detection)`` of the records a judged performance check writes, with its value."""
_MAX_DESCRIBED = 16

Describe = Callable[[str], tuple[str, str, str] | None]
"""A version's ``(name, task, metric)``, None when unknown."""


class DaemonMetrics:
    """Incidents, resolution times, restarts, the model, drift scores and probe latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.incidents = Counter(
            "selfheal_incidents",
            "Audit records with an outcome, by issue kind and outcome",
            ["issue", "outcome"],
            registry=r,
        )
        self.detections = Counter(
            "selfheal_detections", "Detections recorded, by issue kind", ["issue"], registry=r
        )
        self.resolution = Histogram(
            "selfheal_time_to_resolution_seconds",
            "Time from detection to resolution of an incident",
            ["issue"],
            buckets=RESOLUTION_BUCKETS,
            registry=r,
        )
        self.restarts = Counter(
            "selfheal_worker_restarts", "Worker processes started to replace another", registry=r
        )
        self.model = Gauge(
            "selfheal_model_info",
            "The model being served: its name, task, metric and version (value 1)",
            ["name", "task", "metric", "version"],
            registry=r,
        )
        self.live_metric = Gauge(
            "selfheal_live_metric",
            "The model's own metric over the last window of labelled predictions",
            ["metric"],
            registry=r,
        )
        self.workers_ready = Gauge("selfheal_workers_ready", "Workers ready", registry=r)
        self.workers_total = Gauge("selfheal_workers", "Worker slots", registry=r)
        self.paused = Gauge("selfheal_healing_paused", "1 while healing is paused", registry=r)
        self.crash_loop = Gauge("selfheal_crash_loop", "1 while in a crash loop", registry=r)
        self.probe_latency = Gauge(
            "selfheal_probe_latency_seconds",
            "Latency of the last liveness probe of each worker slot",
            ["worker"],
            registry=r,
        )
        self.probes = Counter(
            "selfheal_probes", "Liveness probes sent, by result", ["result"], registry=r
        )
        self.drift_score = Gauge(
            "selfheal_drift_score",
            "Last drift score per feature (PSI) from the drift monitor",
            ["feature"],
            registry=r,
        )
        self.live_threshold = Gauge(
            "selfheal_live_metric_threshold",
            "The bar the live metric must clear (a floor, or a ceiling for mae, rmse, log_loss)",
            ["metric"],
            registry=r,
        )
        self.audit_errors = Gauge(
            "selfheal_audit_write_errors",
            "Audit records the disk refused since the daemon started (each is retried)",
            registry=r,
        )
        self.audit_pending = Gauge(
            "selfheal_audit_pending_records",
            "Audit records held in memory because the disk refused them, waiting to be written",
            registry=r,
        )
        self._lock = threading.Lock()
        self._serving = ""
        self._model_labels: tuple[str, str, str, str] | None = None
        self._described: dict[str, tuple[str, str, str]] = {}
        self._live_name = ""

    def on_record(self, record: Mapping[str, Any]) -> None:
        issue = str(record.get("issue", ""))
        if issue in BOOKKEEPING:
            return
        details = record.get("details")
        if (issue, record.get("detection")) in LIVE_CHECKS and isinstance(details, Mapping):
            self._on_performance(details)
        outcome = record.get("outcome")
        if outcome is None:
            self.detections.labels(issue).inc()
            return
        self.incidents.labels(issue, str(outcome)).inc()
        ttr = record.get("time_to_resolution_s")
        if outcome == "resolved" and isinstance(ttr, int | float):
            self.resolution.labels(issue).observe(float(ttr))
        drift = record.get("details", {}).get("features") if issue == "data_drift" else None
        if issue == "data_drift" and outcome == "resolved" and not isinstance(drift, Mapping):
            self.drift_score.clear()  # healed: the scores were the old version's, now stale
        if isinstance(drift, Mapping):
            for feature, scores in drift.items():
                if isinstance(scores, Mapping) and isinstance(scores.get("psi"), int | float):
                    self.drift_score.labels(str(feature)).set(float(scores["psi"]))

    def on_probe(self, worker: int, ok: bool, latency_s: float) -> None:
        self.probes.labels("ok" if ok else "failed").inc()
        self.probe_latency.labels(str(worker)).set(latency_s)

    def on_restart(self) -> None:
        self.restarts.inc()

    def on_supervision(
        self, *, ready: int, slots: int, paused: bool, crash_loop: bool, serving: str
    ) -> None:
        """The supervisor's state after a decision: workers ready of ``slots``, the version."""
        self.workers_ready.set(ready)
        self.workers_total.set(slots)
        self.paused.set(1 if paused else 0)
        self.crash_loop.set(1 if crash_loop else 0)
        with self._lock:
            self._serving = serving
            self._show_model()

    def on_model(self, version: str, *, name: str, task: str, metric: str) -> None:
        """What model ``version`` is (its schema's name, task and metric), for the info labels."""
        with self._lock:
            if len(self._described) >= _MAX_DESCRIBED:
                self._described.clear()
            self._described[version] = (name, task, metric)
            self._show_model()

    def on_performance(self, metric: str, value: float | None) -> None:
        """The live metric of the last judged performance check."""
        if value is None:
            return
        with self._lock:
            if metric != self._live_name and self._live_name:
                self.live_metric.remove(self._live_name)
            self._live_name = metric
            self.live_metric.labels(metric).set(float(value))

    def _on_performance(self, details: Mapping[str, Any]) -> None:
        """A performance check's details: ``metric`` names the key its value is under (an older
        record has only ``r2``)."""
        metric = details.get("metric")
        if not isinstance(metric, str) or not metric:
            metric = "r2"
        value = details.get(metric)
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.on_performance(metric, float(value))
        bar = details.get("threshold")
        if isinstance(bar, int | float) and not isinstance(bar, bool):
            with self._lock:
                self.live_threshold.clear()
                self.live_threshold.labels(metric).set(float(bar))

    def on_audit(self, *, write_errors: int, pending: int) -> None:
        """The audit log's health: records the disk refused, and those still held in memory."""
        self.audit_errors.set(write_errors)
        self.audit_pending.set(pending)

    def _show_model(self) -> None:
        """Label ``selfheal_model_info`` with the serving version (under ``_lock``)."""
        if not self._serving:
            return
        name, task, metric = self._described.get(self._serving, ("", "", ""))
        labels = (name, task, metric, self._serving)
        if labels == self._model_labels:
            return
        if self._model_labels is not None:
            self.model.remove(*self._model_labels)
        self._model_labels = labels
        self.model.labels(*labels).set(1)

    def render(self, describe: Describe | None = None) -> bytes:
        """The metrics in the Prometheus text format; ``describe`` tells the serving version's
        name, task and metric when they are not known yet (``on_model``)."""
        with self._lock:
            serving, known = self._serving, self._serving in self._described
        if describe is not None and serving and not known:
            labels = describe(serving)
            if labels is not None:
                name, task, metric = labels
                self.on_model(serving, name=name, task=task, metric=metric)
        return generate_latest(self.registry)
