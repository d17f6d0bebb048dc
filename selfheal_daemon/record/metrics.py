"""The daemon's Prometheus metrics, served at ``GET /metrics`` of the control endpoint.

One registry per daemon (no import-time globals), updated from the loop thread as records are
written and events handled; ``render`` may be called from any thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

RESOLUTION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
BOOKKEEPING = frozenset({"availability", "lifecycle"})


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
            "The model version being served (value 1)",
            ["version"],
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
        self._version = ""

    def on_record(self, record: Mapping[str, Any]) -> None:
        issue = str(record.get("issue", ""))
        if issue in BOOKKEEPING:
            return
        outcome = record.get("outcome")
        if outcome is None:
            self.detections.labels(issue).inc()
            return
        self.incidents.labels(issue, str(outcome)).inc()
        ttr = record.get("time_to_resolution_s")
        if outcome == "resolved" and isinstance(ttr, int | float):
            self.resolution.labels(issue).observe(float(ttr))
        drift = record.get("details", {}).get("features") if issue == "data_drift" else None
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
        if serving != self._version:
            if self._version:
                self.model.remove(self._version)
            self._version = serving
            self.model.labels(serving).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
