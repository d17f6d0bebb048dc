"""A model's metrics on labelled rows: what training reports, the gate and the monitor compare.

Per task (SPEC "Your model"):

- regression: R2, MAE and RMSE (MAE and RMSE in the target's own unit);
- classification: accuracy, balanced accuracy (the mean of each class's recall), F1 (of the
  positive class ``schema.classes[1]`` for a binary task, macro over the classes for a multiclass
  one), ROC AUC (binary: the probability of ``classes[1]``; multiclass: one-vs-rest, macro; left
  out when a class is absent from the labels, where it is undefined) and log loss.

``METRIC_TABLE`` says of each metric which way is better and its default bars: the gate's (a
candidate must clear it) and the live one (feedback must not fall past it). A bar of None means
no absolute bar: only the comparison with the champion applies (MAE, RMSE and log loss are in units
no default can know). ``choose_metric`` resolves ``model.metric = "auto"`` to one a trivial model
cannot pass on imbalanced data.

Models are called only through the schema (``schema.predict``, ``schema.predict_proba``): labels
``y`` are float64, values for a regression and class indices into ``schema.classes`` otherwise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.metrics import (
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)

from selfheal_daemon.config import METRICS, GateConfig, PerformanceConfig
from selfheal_daemon.errors import ConfigError, TrainingError
from selfheal_daemon.model.schema import Schema

Direction = Literal["higher", "lower"]
PROBA_TOLERANCE = 1e-6
"""How far a row of probabilities may sum from 1 (and stray outside [0, 1]) and still be valid."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its words, which way is better, and its default gate and live bars.

    ``gate_default``/``live_default`` are absolute bars in the metric's own direction (a floor
    when higher is better, a ceiling when lower is); None: no absolute bar. With ``over_chance``
    the bar is added to chance, 1 / number of classes (balanced accuracy 0.6 for a binary task).
    R2's bars are the configured ``min_r2`` keys, not these.
    """

    name: str
    title: str
    direction: Direction
    regression: bool
    gate_default: float | None
    live_default: float | None
    over_chance: bool = False
    needs_proba: bool = False


METRIC_TABLE: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        MetricSpec("r2", "R2", "higher", True, 0.70, 0.5),
        MetricSpec("mae", "MAE", "lower", True, None, None),
        MetricSpec("rmse", "RMSE", "lower", True, None, None),
        MetricSpec("accuracy", "accuracy", "higher", False, 0.1, 0.05, over_chance=True),
        MetricSpec(
            "balanced_accuracy", "balanced accuracy", "higher", False, 0.1, 0.05, over_chance=True
        ),
        MetricSpec("f1", "F1", "higher", False, 0.5, 0.4),
        MetricSpec("roc_auc", "ROC AUC", "higher", False, 0.7, 0.6, needs_proba=True),
        MetricSpec("log_loss", "log loss", "lower", False, None, None, needs_proba=True),
    )
}
METRIC_NAMES: tuple[str, ...] = tuple(METRIC_TABLE)
"""Every metric name, in table order (the config's ``METRICS``)."""
REGRESSION_METRICS: tuple[str, ...] = ("r2", "mae", "rmse")
CLASSIFICATION_METRICS: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "f1",
    "roc_auc",
    "log_loss",
)
FALLBACK_METRIC = "balanced_accuracy"
"""What a classifier is measured by where its metric is undefined or needs absent probabilities."""
if set(METRIC_NAMES) != set(METRICS):  # the config's choices and this table must name the same
    raise RuntimeError(f"metrics table {METRIC_NAMES} differs from the config's {METRICS}")

_AUTO_REASONS = {
    "regression": (
        "r2",
        "R2 (auto for a regression): the share of the target's variance the model explains;"
        " a trivial model predicting the mean scores 0, so it cannot clear the gate's floor",
    ),
    "binary": (
        "roc_auc",
        "ROC AUC (auto for a binary task): how well the model ranks the positive class above the"
        " negative; a trivial model that always answers the majority class scores 0.5 however"
        " imbalanced the data (its accuracy would be the majority's share, 0.9 on 90/10 data),"
        " so it cannot clear the floor of 0.7",
    ),
    "multiclass": (
        "balanced_accuracy",
        "balanced accuracy (auto for a multiclass task): the mean of each class's recall; a"
        " trivial model that always answers the majority class scores 1 / number of classes"
        " however imbalanced the data (its accuracy would be the majority's share), so it"
        " cannot clear the floor of chance + 0.1",
    ),
}


def spec(metric: str) -> MetricSpec:
    """The table entry of ``metric``; ``ConfigError`` for a name it does not have."""
    try:
        return METRIC_TABLE[metric]
    except KeyError:
        raise ConfigError(f"unknown metric {metric!r}: one of {', '.join(METRIC_NAMES)}") from None


def task_metrics(schema: Schema) -> tuple[str, ...]:
    """The metrics ``evaluate`` reports for the schema's task, in order."""
    return CLASSIFICATION_METRICS if schema.is_classifier else REGRESSION_METRICS


def choose_metric(task: str, configured: str) -> tuple[str, str]:
    """The metric to gate and watch a model of ``task`` by, and why, in words.

    ``"auto"`` picks R2 for a regression, ROC AUC for a binary task and balanced accuracy for a
    multiclass one: none of them can be passed by a model that always answers the mean or the
    majority class. A configured metric is kept; ``ConfigError`` when it does not fit the task.
    """
    if task not in _AUTO_REASONS:
        raise ConfigError(f"unknown task {task!r}: one of {', '.join(_AUTO_REASONS)}")
    if configured == "auto":
        return _AUTO_REASONS[task]
    chosen = spec(configured)
    if chosen.regression != (task == "regression"):
        kind = "a regression" if chosen.regression else "a classifier"
        raise ConfigError(f"metric {configured!r} is for {kind}; the task is {task}")
    better = "higher" if chosen.direction == "higher" else "lower"
    return configured, f"{chosen.title} (configured in model.metric; {better} is better)"


def resolve(schema: Schema, metric: str | None = None) -> str:
    """``metric`` (``ConfigError`` when it does not fit the task), else the schema's own (``auto``
    when that does not fit, as in a schema stored before its task had metrics of its own);
    ``"auto"`` resolved for the schema's task."""
    if metric:
        return choose_metric(schema.task, metric)[0]
    try:
        return choose_metric(schema.task, schema.metric or "auto")[0]
    except ConfigError:
        return choose_metric(schema.task, "auto")[0]


# --- directions and bars -------------------------------------------------------------------------


def is_better(metric: str, a: float, b: float) -> bool:
    """True when ``a`` is strictly better than ``b`` in ``metric``'s own direction."""
    return a > b if spec(metric).direction == "higher" else a < b


def shortfall(metric: str, candidate: float, champion: float) -> float:
    """How much worse ``candidate`` is than ``champion`` in the metric's direction (0 when not
    worse); infinite for an unmeasured (non-finite) candidate, 0 for an unmeasured champion."""
    if not math.isfinite(candidate):
        return math.inf
    if not math.isfinite(champion):
        return 0.0
    gap = champion - candidate if spec(metric).direction == "higher" else candidate - champion
    return max(0.0, gap)


def default_threshold(metric: str, n_classes: int = 2, *, live: bool = False) -> float | None:
    """The table's gate (or ``live``) bar of ``metric`` for a task with ``n_classes`` classes."""
    entry = spec(metric)
    bar = entry.live_default if live else entry.gate_default
    if bar is None or not entry.over_chance:
        return bar
    return 1.0 / max(n_classes, 2) + bar


def threshold_for(
    metric: str, cfg: GateConfig, n_classes: int = 2, *, configured_for: str | None = None
) -> float | None:
    """The gate's absolute bar: ``gate.threshold`` when set (and, with ``configured_for``, only
    when ``metric`` is that metric, not a fallback measured in its place), else ``min_r2`` for
    R2, else the table's default (None: only the champion comparison applies)."""
    if cfg.threshold is not None and configured_for in (None, metric):
        return cfg.threshold
    if metric == "r2":
        return cfg.min_r2
    return default_threshold(metric, n_classes)


def live_threshold(
    metric: str, cfg: PerformanceConfig, n_classes: int = 2, *, configured_for: str | None = None
) -> float | None:
    """The live metric's bar: ``performance.threshold`` when set (and, with ``configured_for``,
    only when ``metric`` is that metric, not a fallback ``live_metric`` chose), else
    ``performance.min_r2`` for R2, else the table's live default."""
    if cfg.threshold is not None and configured_for in (None, metric):
        return cfg.threshold
    if metric == "r2":
        return cfg.min_r2
    return default_threshold(metric, n_classes, live=True)


def fails_threshold(metric: str, value: float, threshold: float | None) -> bool:
    """True when ``value`` is on the wrong side of ``threshold`` (a NaN value always is)."""
    if threshold is None:
        return False
    if not math.isfinite(value):
        return True
    return value < threshold if spec(metric).direction == "higher" else value > threshold


# --- measuring -----------------------------------------------------------------------------------


def invalid_proba_rows(proba: np.ndarray) -> np.ndarray:
    """True for each row of ``proba`` that is not a distribution: a non-finite entry, one outside
    [0, 1], or a sum further than ``PROBA_TOLERANCE`` from 1."""
    p = np.asarray(proba, dtype="float64")
    finite = np.isfinite(p).all(axis=1)
    safe = np.where(np.isfinite(p), p, 0.0)
    in_range = ((safe >= -PROBA_TOLERANCE) & (safe <= 1 + PROBA_TOLERANCE)).all(axis=1)
    sums = np.abs(safe.sum(axis=1) - 1.0) <= PROBA_TOLERANCE
    return np.asarray(~(finite & in_range & sums))


def answers(model: Any, schema: Schema, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's predictions on ``x`` and, for a classifier, its probabilities (None for a
    regression). ``TrainingError`` for a wrong shape, a non-finite prediction or a label that is
    none of the classes, or probabilities that are not a distribution on every row."""
    n = len(x)
    pred = schema.predict(model, x)
    if pred.shape != (n,):
        raise TrainingError(f"predict returned {pred.shape[0]} values for {n} rows")
    if (bad := int(np.sum(~np.isfinite(pred)))) > 0:
        if schema.is_classifier:
            raise TrainingError(f"model predicted {bad:,} labels that are none of the classes")
        raise TrainingError("model produced non-finite predictions on the holdout")
    if not schema.is_classifier:
        return pred, None
    if not hasattr(model, "predict_proba"):
        raise TrainingError("the classifier has no predict_proba: selfheal needs probabilities")
    proba = schema.predict_proba(model, x)
    if proba.shape != (n, len(schema.classes)):
        raise TrainingError(f"predict_proba returned shape {proba.shape} for {n} rows")
    if (invalid := int(invalid_proba_rows(proba).sum())) > 0:
        raise TrainingError(
            f"model produced invalid probabilities on {invalid:,} of {n:,} rows (each row must"
            " be finite, within [0, 1] and sum to 1)"
        )
    return pred, proba


def scores(
    schema: Schema, y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None = None
) -> dict[str, float]:
    """Every metric of the task that is defined on (y, pred, proba); see the module docstring."""
    out: dict[str, float] = {}
    for name in task_metrics(schema):
        value = score(schema, name, y, pred, proba)
        if value is not None:
            out[name] = value
    return out


def evaluate(model: Any, schema: Schema, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The task's metrics of ``model`` on (x, y); ``TrainingError`` on a non-finite prediction or
    invalid probabilities (``answers``)."""
    y = np.asarray(y, dtype="float64")
    if not np.isfinite(y).all():
        raise TrainingError("labels to evaluate on must all be known (finite values or classes)")
    pred, proba = answers(model, schema, x)
    return scores(schema, y, pred, proba)


def score(
    schema: Schema,
    metric: str,
    y: np.ndarray,
    pred: np.ndarray,
    proba: np.ndarray | None = None,
) -> float | None:
    """One metric on labels and answers; None where it is undefined (no rows, ROC AUC with a
    class absent from ``y``, a probability metric without probabilities)."""
    entry = spec(metric)
    y, pred = np.asarray(y, dtype="float64"), np.asarray(pred, dtype="float64")
    if len(y) == 0 or entry.regression == schema.is_classifier:
        return None
    if entry.needs_proba and proba is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined cases are answered None below, not warned
        value = _compute(schema, metric, y, pred, proba)
    return value if value is not None and math.isfinite(value) else None


def _compute(  # noqa: PLR0911 - one return per metric reads as the table it is
    schema: Schema, metric: str, y: np.ndarray, pred: np.ndarray, proba: np.ndarray | None
) -> float | None:
    if metric == "r2":
        return float(r2_score(y, pred)) if len(y) >= 2 else None
    if metric == "mae":
        return float(mean_absolute_error(y, pred))
    if metric == "rmse":
        return float(np.sqrt(mean_squared_error(y, pred)))
    k = len(schema.classes)
    labels, guess = y.astype("int64"), pred.astype("int64")
    if metric == "accuracy":
        return float(np.mean(labels == guess))
    if metric == "balanced_accuracy":
        present = np.unique(labels)
        return float(np.mean([np.mean(guess[labels == c] == c) for c in present]))
    if metric == "f1":
        if schema.task == "binary":
            return float(f1_score(labels, guess, pos_label=1, average="binary", zero_division=0))
        return float(f1_score(labels, guess, average="macro", zero_division=0))
    assert proba is not None  # noqa: S101 - score() returned None before for a missing proba
    if metric == "roc_auc":
        if len(np.unique(labels)) < k:
            return None
        if schema.task == "binary":
            return float(roc_auc_score(labels, proba[:, 1]))
        return float(
            roc_auc_score(labels, proba, multi_class="ovr", average="macro", labels=list(range(k)))
        )
    return float(log_loss(labels, proba, labels=list(range(k))))


def live_metric(
    schema: Schema,
    metric: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None = None,
) -> tuple[str, float | None]:
    """The live metric from feedback: (the metric measured, its value or None when undefined).

    Pairs with an unknown label or prediction (NaN) are left out. Feedback carries predictions,
    not probabilities: for ROC AUC or log loss without ``proba`` the live metric is balanced
    accuracy instead, and the name returned says so.
    """
    name = resolve(schema, metric)
    if spec(name).needs_proba and proba is None:
        name = FALLBACK_METRIC
    y_true = np.asarray(y_true, dtype="float64").reshape(-1)
    y_pred = np.asarray(y_pred, dtype="float64").reshape(-1)
    keep = np.isfinite(y_true) & np.isfinite(y_pred)
    kept_proba = None if proba is None else np.asarray(proba, dtype="float64")[keep]
    return name, score(schema, name, y_true[keep], y_pred[keep], kept_proba)


def nan_metrics(schema: Schema) -> dict[str, float]:
    """The task's metrics all NaN: what a model that could not be measured has."""
    return dict.fromkeys(task_metrics(schema), math.nan)


def as_json(metrics: Mapping[str, float]) -> dict[str, float | None]:
    """Metrics ready for strict JSON: non-finite values become None."""
    return {k: (float(v) if math.isfinite(v) else None) for k, v in metrics.items()}
