"""What the control endpoint reads from a daemon: the model it serves, named by its schema, in
``/status``, ``/series`` and ``/metrics`` (a real registry on disk, fakes for every process)."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import numpy as np

from selfheal_daemon.config import parse_config
from selfheal_daemon.daemon.bridge import DaemonControl, metrics_shown, model_metric
from selfheal_daemon.daemon.loop import Daemon
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.schema import Column, Schema
from selfheal_daemon.record.audit import AuditLog
from selfheal_daemon.record.metrics import DaemonMetrics
from selfheal_daemon.record.recorder import Recorder
from selfheal_daemon.supervision.probe import HealthProbe
from tests.fakes import FakeClock, FakeNotifier, FakePool

CHURN = Schema(
    name="churn",
    task="binary",
    target="left",
    columns=(Column("tenure", "numeric"), Column("plan", "categorical", ("basic", "pro"))),
    classes=("no", "yes"),
    metric="roc_auc",
)
CLASSIFIER_METRICS = {
    "accuracy": 0.86,
    "balanced_accuracy": 0.79,
    "f1": 0.66,
    "log_loss": 0.31,
    "roc_auc": 0.91,
}
REGRESSION_METRICS = {"mae": 0.29, "r2": 0.85, "rmse": 0.44}


def register(registry: ModelRegistry, metrics: dict[str, float], schema: Schema | None) -> str:
    """A version with ``metrics`` and ``schema`` (none: a version from before schemas)."""
    return registry.register(
        {"stand-in": "model"},
        metrics=metrics,
        reference=np.zeros((2, 2)),
        data_fingerprint="f",
        data_rows=10,
        parent=None,
        origin="test",
        extra=None if schema is None else {"schema": schema.to_dict()},
    )


def control(tmp: Path, serving: str, *, last_good: str | None = None) -> DaemonControl:
    """The bridge over a daemon serving ``serving`` from the registry under ``tmp``."""
    cfg = parse_config({"service": {"workers": 1}, "state_dir": str(tmp)})
    registry = ModelRegistry(cfg.state_dir / "models")
    if serving:
        registry.set_alias("current", serving)
    if last_good:
        registry.set_alias("last_good", last_good)
    clock = FakeClock()
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    daemon = Daemon(
        cfg,
        clock=clock,
        recorder=Recorder(AuditLog(cfg.audit_dir, clock=clock), clock, DaemonMetrics()),
        pool=FakePool(version=serving),  # type: ignore[arg-type]
        probe=HealthProbe(0.1),
        registry=registry,
        notifier=FakeNotifier(),  # type: ignore[arg-type]
        events=events,
    )
    return DaemonControl(daemon)


def two_models(tmp: Path) -> ModelRegistry:
    """v1 from before schemas (the bundled regression), v2 a binary classifier."""
    registry = ModelRegistry(tmp / "models")
    assert register(registry, REGRESSION_METRICS, None) == "v1"
    assert register(registry, CLASSIFIER_METRICS, CHURN) == "v2"
    return registry


def test_status_names_a_classifier_with_its_metric_first(tmp_path: Path) -> None:
    """The model section names the serving classifier, its target, metric and classes, and
    lists its metrics with roc_auc first, then accuracy and log loss."""
    two_models(tmp_path)
    model = control(tmp_path, "v2", last_good="v1").status()["model"]
    assert model["serving"] == "v2"
    assert (model["name"], model["task"], model["target"]) == ("churn", "binary", "left")
    assert (model["metric"], model["classes"]) == ("roc_auc", ["no", "yes"])
    assert model["metrics_shown"] == ["roc_auc", "accuracy", "log_loss"]
    assert list(model["current"]["metrics"])[:3] == ["roc_auc", "accuracy", "log_loss"]
    assert model["current"]["metrics"] == CLASSIFIER_METRICS


def test_status_of_a_version_from_before_schemas_is_the_default_regression(
    tmp_path: Path,
) -> None:
    """A version without a stored schema is shown as the bundled regression judged by r2."""
    two_models(tmp_path)
    model = control(tmp_path, "v1").status()["model"]
    default = Schema.california()
    assert (model["name"], model["task"], model["target"]) == (
        default.name,
        "regression",
        default.target,
    )
    assert (model["metric"], model["classes"]) == ("r2", [])
    assert model["metrics_shown"] == ["r2", "mae", "rmse"]
    assert list(model["current"]["metrics"]) == ["r2", "mae", "rmse"]


def test_status_without_any_version_names_no_model(tmp_path: Path) -> None:
    """Before the first version exists the model section says so with None, not a guess."""
    model = control(tmp_path, "").status()["model"]
    assert model["name"] is None
    assert model["metric"] is None
    assert model["metrics_shown"] == []
    assert model["current"] is None


def test_series_points_carry_each_versions_own_metric(tmp_path: Path) -> None:
    """Each point names its version's metric and value; an r2 point keeps its ``r2`` key."""
    two_models(tmp_path)
    points = control(tmp_path, "v2").series()["model_metric"]
    assert [{k: v for k, v in p.items() if k != "ts"} for p in points] == [
        {"version": "v1", "metric": "r2", "value": 0.85, "r2": 0.85},
        {"version": "v2", "metric": "roc_auc", "value": 0.91},
    ]
    assert all(p["ts"] for p in points)


def test_metrics_label_the_model_with_its_name_task_and_metric(tmp_path: Path) -> None:
    """/metrics names the serving version's model, task and metric in selfheal_model_info."""
    two_models(tmp_path)
    bridge = control(tmp_path, "v2")
    bridge.daemon.metrics.on_supervision(
        ready=1, slots=1, paused=False, crash_loop=False, serving="v2"
    )
    info = 'selfheal_model_info{metric="roc_auc",name="churn",task="binary",version="v2"} 1.0'
    assert info in bridge.metrics().decode()


def test_a_stored_metric_that_does_not_fit_the_task_falls_back_to_the_tasks_own() -> None:
    """``auto`` (or a regression metric stored on a classifier) reads as the task's default."""
    three = Schema(
        name="iris",
        task="multiclass",
        target="species",
        columns=(Column("petal", "numeric"),),
        classes=("a", "b", "c"),
        metric="auto",
    )
    assert model_metric(three) == "balanced_accuracy"
    assert metrics_shown(three) == ("balanced_accuracy", "accuracy", "log_loss")
    mae = Schema(
        name="price", task="regression", target="y", columns=(Column("x", "numeric"),), metric="mae"
    )
    assert metrics_shown(mae) == ("mae", "r2", "rmse")
