"""The monitoring pass: what the workers saw, what arrived in ``data/incoming/``, drift, metric.

``Monitor.run_once()`` runs on a scheduler thread (every ``monitor.interval_s``) or for ``selfheal
check``; one pass at a time. It observes and returns events; the daemon's loop decides:

1. collect: every ready worker's captured requests and feedback since the last pass (``GET
   /admin/capture`` on its private socket). Requests feed the drift window; feedback is joined by
   request id with the captured request (any worker may have served it), or carries its own
   features and prediction. Labelled rows with features are written to ``data/labelled/``
   (retraining reads them); the (prediction, label) pairs of the serving version feed the live
   metric, whose window starts afresh when the serving version changes.
2. take in incoming batches (``pipeline.take_in``): a ``QualityChecked`` per file; kept rows join
   the drift window too.
3. drift: the last ``drift.window_rows`` rows against the serving version's reference summary
   (read once per version from the registry, checksum-verified): ``DriftChecked``.
4. performance: the model's metric (its schema's: R2 for the bundled model) over the last
   ``performance.window_rows`` labelled predictions of the serving version, with its bar in the
   metric's own direction: ``PerformanceChecked``.

Rows are read through the serving version's schema (``model.schema``): the encoded matrix the
workers capture, the labelled files written back as the model's own columns.

Everything is kept in memory with fixed bounds; a worker's capture is lost when the worker exits
(nothing is written on the request path), which the counts in the details show.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from loguru import logger

from selfheal_daemon.config import Config
from selfheal_daemon.errors import DataError, SelfhealError
from selfheal_daemon.lifecycle.events import DriftChecked, PerformanceChecked
from selfheal_daemon.lifecycle.worker_admin import AdminReply
from selfheal_daemon.model.drift import DRIFT_FILE, ReferenceSummary, check
from selfheal_daemon.model.quality_io import write_table
from selfheal_daemon.model.quality_profile import QualityProfile
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.schema import Schema

if TYPE_CHECKING:
    from selfheal_daemon.model.pipeline import Intake

CAPTURE_TIMEOUT_S = 10.0
SETTLE_S = 1.0  # an incoming file changed more recently than this may still be being written


class CaptureSource(Protocol):
    """What the monitor reads captured requests from: a local worker (``WorkerHandle``), or the
    hub that gathers every Ray replica's. ``pid`` keys its cursor; ``worker`` names it in logs."""

    @property
    def pid(self) -> int: ...

    @property
    def worker(self) -> int: ...


@dataclass(frozen=True)
class QualityChecked:
    """One incoming file was checked and taken in (or quarantined whole)."""

    details: dict[str, Any]
    had_problems: bool


@dataclass
class Pass:
    """What one monitoring pass observed, as events for the loop, plus counts for a person."""

    events: list[Any] = field(default_factory=list)
    collected: dict[str, Any] = field(default_factory=dict)


class Monitor:
    def __init__(
        self,
        cfg: Config,
        registry: ModelRegistry,
        *,
        fetch: Callable[[Any, int], AdminReply],
        ready_handles: Callable[[], Sequence[CaptureSource]],
        serving: Callable[[], str],
        now: Callable[[], datetime],
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.fetch = fetch
        self.ready_handles = ready_handles
        self.serving = serving
        self.now = now
        self._lock = threading.Lock()
        self._cursors: dict[int, int] = {}
        self._window: collections.deque[np.ndarray] = collections.deque()
        self._window_rows = 0
        # the serving version's own answers to the requests in the window: prediction drift
        self._predicted: collections.deque[np.ndarray] = collections.deque()
        self._predicted_rows = 0
        self._captured: collections.OrderedDict[str, tuple[np.ndarray, np.ndarray, str]] = (
            collections.OrderedDict()
        )
        self._pending: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=cfg.monitor.feedback_rows
        )
        self._scored: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=cfg.performance.window_rows
        )
        self._scored_version = ""
        self._profile: tuple[str, QualityProfile] | None = None
        self._summaries: dict[str, ReferenceSummary] = {}
        self._schemas: dict[str, Schema] = {}

    def schema(self, version: str) -> Schema:
        """The schema of ``version`` (the bundled model's when there is no version yet)."""
        if not version:
            return Schema.california()
        if version not in self._schemas:
            try:
                self._schemas = {version: self.registry.info(version).schema}
            except (SelfhealError, OSError) as exc:
                logger.error("cannot read the schema of {}: {}", version, exc)
                return Schema.california()
        return self._schemas[version]

    # ----- the pass -----------------------------------------------------------------------------
    def run_once(self) -> Pass:
        with self._lock:
            result = Pass()
            serving = self.serving()
            if serving != self._scored_version:
                self._scored.clear()
                self._predicted.clear()
                self._predicted_rows = 0
                self._scored_version = serving
            schema = self.schema(serving)
            result.collected = self._collect(serving, schema)
            for intake in self._take_in(serving, schema):
                result.events.append(QualityChecked(intake.details, intake.had_problems))
                if len(intake.kept):
                    self._add_rows(schema.encode(intake.kept))
            drift = self._drift(serving)
            if drift is not None:
                result.events.append(drift)
            result.events.append(self._performance(serving, schema))
            return result

    # ----- 1. collect -----------------------------------------------------------------------------
    def _collect(self, serving: str, schema: Schema) -> dict[str, Any]:
        counts = {"requests": 0, "rows": 0, "feedback": 0, "joined": 0, "dropped": 0, "errors": 0}
        labelled: list[tuple[np.ndarray, np.ndarray]] = []
        live = set()
        for handle in self.ready_handles():
            live.add(handle.pid)
            reply = self.fetch(handle, self._cursors.get(handle.pid, 0))
            if not reply.ok:
                counts["errors"] += 1
                logger.warning("capture of worker {} failed: {}", handle.worker, reply.detail)
                continue
            body = reply.body
            self._cursors[handle.pid] = int(body.get("next", self._cursors.get(handle.pid, 0)))
            counts["dropped"] += int(body.get("dropped", 0))
            width = len(schema.columns)
            for entry in body.get("predictions", []):
                features = _matrix(entry.get("features"), width)
                predictions = np.asarray(entry.get("predictions", []), dtype="float64")
                if features is None or len(features) != len(predictions):
                    continue
                counts["requests"] += 1
                counts["rows"] += len(features)
                self._add_rows(features)
                if str(entry.get("model_version")) == serving:
                    self._add_predictions(predictions)
                self._remember(str(entry.get("request_id")), features, predictions, entry)
            for entry in body.get("feedback", []):
                counts["feedback"] += 1
                self._pending.append(entry)
        for pid in set(self._cursors) - live:
            del self._cursors[pid]
        for entry in list(self._pending):
            joined = self._join(entry, len(schema.columns))
            if joined is None:
                continue
            self._pending.remove(entry)
            counts["joined"] += 1
            known, predicted, labels, version = joined
            if known is not None:
                labelled.append((known, labels))
            if version == serving and predicted is not None:
                self._scored.extend(zip(predicted.tolist(), labels.tolist(), strict=True))
        self._write_labelled(labelled, schema)
        return counts

    def _remember(
        self, request_id: str, features: np.ndarray, predictions: np.ndarray, entry: dict[str, Any]
    ) -> None:
        self._captured[request_id] = (features, predictions, str(entry.get("model_version")))
        while len(self._captured) > self.cfg.monitor.capture_rows:
            self._captured.popitem(last=False)

    def _join(
        self, entry: dict[str, Any], width: int
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray, str] | None:
        """(features, predictions, labels, version) of one feedback entry, None if not yet known."""
        labels = np.asarray(entry.get("labels", []), dtype="float64")
        features = _matrix(entry.get("features"), width)
        if features is not None:
            predictions = entry.get("predictions")
            preds = np.asarray(predictions, dtype="float64") if predictions is not None else None
            return features, preds, labels, str(entry.get("model_version"))
        captured = self._captured.get(str(entry.get("request_id")))
        if captured is None:
            return None
        features, predictions, version = captured
        if len(labels) != len(predictions):
            return None
        return features, predictions, labels, version

    def _write_labelled(
        self, labelled: list[tuple[np.ndarray, np.ndarray]], schema: Schema
    ) -> None:
        if not labelled:
            return
        x = np.concatenate([f for f, _ in labelled])
        y = np.concatenate([y for _, y in labelled])
        frame = schema.decode(x)
        frame[schema.target] = schema.decode_target(y)
        stamp = self.now().strftime("%Y%m%dT%H%M%S%fZ")
        self.cfg.labelled_dir.mkdir(parents=True, exist_ok=True)
        try:
            write_table(frame, self.cfg.labelled_dir / f"{stamp}-feedback.csv")
        except DataError as exc:
            logger.error("cannot keep {} rows of feedback: {}", len(frame), exc)

    def _add_rows(self, rows: np.ndarray) -> None:
        self._window.append(rows)
        self._window_rows += len(rows)
        limit = self.cfg.drift.window_rows
        while self._window and self._window_rows - len(self._window[0]) >= limit:
            self._window_rows -= len(self._window.popleft())

    def _add_predictions(self, predictions: np.ndarray) -> None:
        self._predicted.append(predictions)
        self._predicted_rows += len(predictions)
        limit = self.cfg.drift.window_rows
        while self._predicted and self._predicted_rows - len(self._predicted[0]) >= limit:
            self._predicted_rows -= len(self._predicted.popleft())

    # ----- 2. incoming ----------------------------------------------------------------------------
    def _take_in(self, serving: str, schema: Schema) -> list[Intake]:
        incoming = self.cfg.incoming_dir
        if not incoming.is_dir() or not any(incoming.iterdir()):
            return []
        # The pipeline brings scikit-learn: imported at the first batch, not at the daemon's start.
        from selfheal_daemon.model.pipeline import base_frame, learn_profile, take_in

        try:
            if self._profile is None or self._profile[0] != serving:
                self._profile = (serving, learn_profile(base_frame(self.cfg), schema))
            return take_in(self.cfg, self._profile[1], self.now(), settle_s=SETTLE_S)
        except (SelfhealError, OSError) as exc:
            logger.error("cannot take in incoming data: {}", exc)
            return []

    # ----- 3. drift -------------------------------------------------------------------------------
    def summary(self, version: str) -> ReferenceSummary:
        if version not in self._summaries:
            path = self.registry.artifact(version, DRIFT_FILE)
            if path is not None:
                summary = ReferenceSummary.load(path)
            else:  # a version from before drift summaries: build one from its reference sample
                summary = ReferenceSummary.build(
                    self.registry.load_reference(version),
                    self.schema(version),
                    bins=self.cfg.drift.bins,
                )
            self._summaries = {version: summary}
        return self._summaries[version]

    def current_window(self) -> np.ndarray:
        """A copy of the current window, safe to read from another thread."""
        with self._lock:
            return self.window()

    def window(self) -> np.ndarray:
        if not self._window:
            return np.empty((0, len(self.schema(self.serving()).columns)))
        rows = np.concatenate(list(self._window))
        return rows[-self.cfg.drift.window_rows :]

    def _drift(self, serving: str) -> DriftChecked | None:
        if not serving:
            return None
        try:
            summary = self.summary(serving)
        except (SelfhealError, OSError) as exc:
            logger.error("no drift reference for {}: {}", serving, exc)
            return None
        predicted = np.concatenate(list(self._predicted)) if self._predicted else None
        result = check(summary, self.window(), self.cfg.drift, predictions=predicted)
        details = {"version": serving, **result.to_details()}
        return DriftChecked(result.judged, result.dataset_drift, details)

    # ----- 4. performance -------------------------------------------------------------------------
    def _performance(self, serving: str, schema: Schema) -> PerformanceChecked:
        rows = len(self._scored)
        if rows < self.cfg.performance.min_rows:
            return PerformanceChecked(serving, rows, None, judged=False, metric=schema.metric)
        # scikit-learn: imported at the first judged window, not at the daemon's start
        from selfheal_daemon.model.live import live_scores

        pairs = np.asarray(self._scored, dtype="float64")
        live = live_scores(schema, pairs[:, 1], pairs[:, 0], self.cfg.performance)
        details: dict[str, Any] = {**live.others, "window_rows": self.cfg.performance.window_rows}
        if live.note:
            details["note"] = live.note
        return PerformanceChecked(
            serving,
            rows,
            round(live.value, 4),
            judged=True,
            details=details,
            metric=live.metric,
            threshold=live.threshold,
            higher_is_better=live.higher_is_better,
        )


def _matrix(value: object, width: int) -> np.ndarray | None:
    if not isinstance(value, list) or not value:
        return None
    try:
        array = np.asarray(value, dtype="float64")
    except (TypeError, ValueError):
        return None
    if array.ndim != 2 or array.shape[1] != width:
        return None
    return array
