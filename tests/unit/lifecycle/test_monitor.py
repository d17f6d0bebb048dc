"""The monitoring pass with fake workers: joins of feedback with captured requests across workers,
the live metric of the serving version only, the bounded drift window, incoming batches, and the
labelled rows kept for retraining. The registry is real (a trained version with its summary)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.config import Config, parse_config
from selfheal_daemon.daemon.drills import drifted_frame
from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.lifecycle.events import DriftChecked, PerformanceChecked
from selfheal_daemon.lifecycle.monitor import Monitor, QualityChecked
from selfheal_daemon.lifecycle.worker_admin import AdminReply
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.supervision.pool import WorkerHandle

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


class Workers:
    """Fake workers: what each one's /admin/capture answers, honouring ``after``."""

    def __init__(self) -> None:
        self.handles = [self.handle(0, 101), self.handle(1, 102)]
        self.predictions: dict[int, list[dict[str, Any]]] = {101: [], 102: []}
        self.feedback: dict[int, list[dict[str, Any]]] = {101: [], 102: []}
        self.seq = 0
        self.asked: list[tuple[int, int]] = []

    @staticmethod
    def handle(worker: int, pid: int) -> WorkerHandle:
        return WorkerHandle(worker, pid, "v1", Path(f"/nonexistent/{pid}.sock"), 0.0, -1, -1)

    def predict(self, pid: int, request_id: str, x: np.ndarray, y: np.ndarray, v: str) -> None:
        self.seq += 1
        self.predictions[pid].append(
            {
                "seq": self.seq,
                "request_id": request_id,
                "model_version": v,
                "features": x.tolist(),
                "predictions": y.tolist(),
            }
        )

    def give_feedback(self, pid: int, **entry: Any) -> None:
        self.seq += 1
        self.feedback[pid].append({"seq": self.seq, "features": None, **entry})

    def fetch(self, handle: WorkerHandle, after: int) -> AdminReply:
        self.asked.append((handle.pid, after))
        body = {
            "next": self.seq,
            "dropped": 0,
            "predictions": [e for e in self.predictions[handle.pid] if e["seq"] > after],
            "feedback": [e for e in self.feedback[handle.pid] if e["seq"] > after],
        }
        return AdminReply(True, 200, "", body)


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "drift": {"min_rows": 100, "window_rows": 300},
            "performance": {"min_rows": 20, "window_rows": 50},
        }
    )


@pytest.fixture
def setup(
    cfg: Config, registered: tuple[ModelRegistry, str]
) -> tuple[Monitor, Workers, dict[str, str]]:
    registry, version = registered
    workers = Workers()
    serving = {"version": version}
    monitor = Monitor(
        cfg,
        registry,
        fetch=workers.fetch,
        ready_handles=lambda: workers.handles,
        serving=lambda: serving["version"],
        now=lambda: NOW,
    )
    return monitor, workers, serving


def of(events: list[Any], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def test_feedback_on_another_worker_joins_its_request_and_scores_the_serving_version(
    setup: tuple[Monitor, Workers, dict[str, str]], small_frame: pd.DataFrame
) -> None:
    monitor, workers, serving = setup
    rows = small_frame.dropna().head(30)
    x = rows[list(FEATURES)].to_numpy()
    y = rows[TARGET].to_numpy()
    workers.predict(101, "req-a", x, y + 0.1, serving["version"])  # predictions near the truth
    workers.give_feedback(102, request_id="req-a", labels=y.tolist())  # answered elsewhere
    workers.give_feedback(102, request_id="never-seen", labels=[1.0])
    result = monitor.run_once()
    (perf,) = of(result.events, PerformanceChecked)
    assert perf.judged
    assert perf.rows == 30
    assert perf.value is not None
    assert perf.value > 0.9
    assert result.collected["joined"] == 1
    assert result.collected["feedback"] == 2
    labelled = list(monitor.cfg.labelled_dir.glob("*-feedback.csv"))
    assert len(labelled) == 1
    kept = pd.read_csv(labelled[0])
    assert list(kept.columns) == [*FEATURES, TARGET]
    np.testing.assert_allclose(kept[TARGET], y)
    # the cursor moves on: the next pass asks each worker only for what is new
    monitor.run_once()
    assert workers.asked[-2:] == [(101, workers.seq), (102, workers.seq)]


def test_feedback_on_another_version_is_kept_but_not_scored_and_a_new_version_starts_afresh(
    setup: tuple[Monitor, Workers, dict[str, str]], small_frame: pd.DataFrame
) -> None:
    monitor, workers, serving = setup
    rows = small_frame.dropna().head(30)
    x, y = rows[list(FEATURES)].to_numpy(), rows[TARGET].to_numpy()
    workers.predict(101, "old", x, y, "v0")
    workers.give_feedback(101, request_id="old", labels=y.tolist())
    workers.predict(101, "new", x, y, serving["version"])
    workers.give_feedback(101, request_id="new", labels=y.tolist())
    (perf,) = of(monitor.run_once().events, PerformanceChecked)
    assert perf.rows == 30  # only the serving version's rows
    serving["version"] = "v9"
    (perf,) = of(monitor.run_once().events, PerformanceChecked)
    assert perf.rows == 0
    assert not perf.judged


def test_feedback_with_features_needs_no_join(
    setup: tuple[Monitor, Workers, dict[str, str]], small_frame: pd.DataFrame
) -> None:
    monitor, workers, serving = setup
    rows = small_frame.dropna().head(25)
    x, y = rows[list(FEATURES)].to_numpy(), rows[TARGET].to_numpy()
    workers.give_feedback(
        101,
        request_id=None,
        features=x.tolist(),
        labels=y.tolist(),
        predictions=(y * 0 + y.mean()).tolist(),  # a constant prediction: R2 about 0
        model_version=serving["version"],
    )
    (perf,) = of(monitor.run_once().events, PerformanceChecked)
    assert perf.rows == 25
    assert perf.value is not None
    assert abs(perf.value) < 0.05


def test_drift_is_judged_only_with_enough_rows_and_on_a_bounded_window(
    setup: tuple[Monitor, Workers, dict[str, str]], housing: pd.DataFrame
) -> None:
    monitor, workers, serving = setup
    calm = housing.dropna().sample(80, random_state=1)
    workers.predict(101, "a", calm[list(FEATURES)].to_numpy(), np.zeros(80), serving["version"])
    (drift,) = of(monitor.run_once().events, DriftChecked)
    assert not drift.judged
    moved = drifted_frame(housing, 400, seed=2)
    x = moved[list(FEATURES)].to_numpy()
    workers.predict(102, "b", x, np.zeros(400), serving["version"])
    (drift,) = of(monitor.run_once().events, DriftChecked)
    assert drift.judged
    assert drift.dataset_drift
    assert drift.details["rows"] == 300  # window_rows: the latest rows only
    assert len(monitor.window()) == 300


def test_incoming_batches_are_taken_in_and_feed_the_window(
    setup: tuple[Monitor, Workers, dict[str, str]], housing: pd.DataFrame
) -> None:
    monitor, _workers, _serving = setup
    incoming = monitor.cfg.incoming_dir
    incoming.mkdir(parents=True)
    batch = housing.head(150).copy()
    batch.loc[0:4, "MedInc"] = np.nan
    batch.to_csv(incoming / "batch.csv", index=False)
    (incoming / "notes.txt").write_text("not a table")
    (incoming / "copying.csv").write_text("MedInc,HouseAge\n1.0,")  # changed just now
    written_before = NOW.timestamp() - 60
    for name in ("batch.csv", "notes.txt"):
        os.utime(incoming / name, (written_before, written_before))
    os.utime(incoming / "copying.csv", (NOW.timestamp(), NOW.timestamp()))
    events = monitor.run_once().events
    quality = of(events, QualityChecked)
    assert len(quality) == 2
    by_file = {q.details["file"]: q for q in quality}
    assert by_file["batch.csv"].had_problems
    assert any("Filled MedInc with median" in f for f in by_file["batch.csv"].details["fixes"])
    assert by_file["notes.txt"].details["rejected"].startswith("not a CSV")
    assert [p.name for p in incoming.iterdir()] == ["copying.csv"]  # left for the next pass
    assert (monitor.cfg.quarantine_dir / "20261127T100000000000Z-notes.txt").is_file()
    assert len(monitor.window()) == 150
    (drift,) = of(events, DriftChecked)
    assert drift.details["rows"] == 150


def test_a_worker_that_does_not_answer_is_counted_not_fatal(
    setup: tuple[Monitor, Workers, dict[str, str]],
) -> None:
    monitor, _workers, _serving = setup
    monitor.fetch = lambda handle, after: AdminReply(False, None, "refused")
    result = monitor.run_once()
    assert result.collected["errors"] == 2
    assert of(result.events, PerformanceChecked)
