"""The task metrics: their values against hand computation, their directions, bars and choice."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.config import GateConfig, PerformanceConfig
from selfheal_daemon.errors import ConfigError, TrainingError
from selfheal_daemon.model.gate import check_threshold
from selfheal_daemon.model.metrics import (
    METRIC_NAMES,
    METRIC_TABLE,
    choose_metric,
    default_threshold,
    evaluate,
    is_better,
    live_metric,
    live_threshold,
    shortfall,
    threshold_for,
)
from selfheal_daemon.model.schema import Column, Schema

REGRESSION = Schema("echo", "regression", "y", (Column("s", "numeric"),))
BINARY = Schema("coin", "binary", "y", (Column("p1", "numeric"),), classes=("no", "yes"))
MULTI = Schema(
    "dice",
    "multiclass",
    "y",
    tuple(Column(f"p{k}", "numeric") for k in range(3)),
    classes=("a", "b", "c"),
)


class Echo:
    """A regressor whose prediction is its one feature: the test writes the answers as inputs."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(frame.iloc[:, 0], dtype="float64")


class Stated:
    """A classifier whose inputs are its probabilities (one column per class, or the positive
    class's for a binary task); it answers the most probable class."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes_ = np.array(classes)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        p = frame.to_numpy(dtype="float64")
        return np.column_stack([1 - p[:, 0], p[:, 0]]) if p.shape[1] == 1 else p

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(frame).argmax(axis=1)])


@pytest.mark.parametrize(
    ("metric", "direction", "regression"),
    [
        ("r2", "higher", True),
        ("mae", "lower", True),
        ("rmse", "lower", True),
        ("accuracy", "higher", False),
        ("balanced_accuracy", "higher", False),
        ("f1", "higher", False),
        ("roc_auc", "higher", False),
        ("log_loss", "lower", False),
    ],
)
def test_every_metric_has_its_direction(metric: str, direction: str, regression: bool) -> None:
    """Each metric's table entry says which way is better and which task it measures."""
    assert METRIC_TABLE[metric].direction == direction
    assert METRIC_TABLE[metric].regression is regression
    worse, better = (0.4, 0.6) if direction == "higher" else (0.6, 0.4)
    assert is_better(metric, better, worse)
    assert not is_better(metric, worse, better)
    assert shortfall(metric, worse, better) == pytest.approx(0.2)
    assert shortfall(metric, better, worse) == 0.0


def test_metric_names_are_the_table_in_order() -> None:
    """METRIC_NAMES lists every metric of the table, regression ones first."""
    assert tuple(METRIC_TABLE) == METRIC_NAMES
    assert METRIC_NAMES[:3] == ("r2", "mae", "rmse")


def test_lower_mae_is_better_and_shortfall_handles_unmeasured() -> None:
    """A lower MAE wins; an unmeasured candidate falls infinitely short, an unmeasured champion
    not at all."""
    assert is_better("mae", 0.3, 0.5)
    assert shortfall("mae", 0.5, 0.3) == pytest.approx(0.2)
    assert shortfall("mae", math.nan, 0.3) == math.inf
    assert shortfall("r2", 0.8, math.nan) == 0.0


def test_regression_metrics_by_hand() -> None:
    """R2, MAE and RMSE of known predictions match the hand-computed values."""
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.0, 4.0])
    metrics = evaluate(Echo(), REGRESSION, pred[:, None], y)
    assert list(metrics) == ["r2", "mae", "rmse"]
    assert metrics["mae"] == pytest.approx(1.5 / 4)
    assert metrics["rmse"] == pytest.approx(math.sqrt(1.25 / 4))
    assert metrics["r2"] == pytest.approx(1 - 1.25 / 5.0)


def test_binary_metrics_by_hand() -> None:
    """Accuracy, balanced accuracy, F1 of the positive class, ROC AUC and log loss of six rows."""
    p = np.array([0.9, 0.8, 0.4, 0.3, 0.2, 0.6])  # probability of "yes"
    y = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # answers: yes yes no no no yes
    metrics = evaluate(Stated(BINARY.classes), BINARY, p[:, None], y)
    assert list(metrics) == ["accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss"]
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert metrics["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))  # precision = recall
    assert metrics["roc_auc"] == pytest.approx(8 / 9)  # 8 of the 9 (yes, no) pairs ranked right
    truth = np.where(y == 1, p, 1 - p)
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log(truth)))


def test_binary_f1_is_of_the_positive_class_only() -> None:
    """A model that always answers the negative class has F1 0, not the negatives' F1."""
    p = np.full(4, 0.1)
    y = np.array([1.0, 0.0, 0.0, 0.0])
    assert evaluate(Stated(BINARY.classes), BINARY, p[:, None], y)["f1"] == 0.0


def test_multiclass_metrics_macro_and_roc_auc_left_out_without_a_class() -> None:
    """Multiclass F1 is the macro mean; ROC AUC is one-vs-rest, left out when a class is absent."""
    proba = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    y = np.array([0.0, 1.0, 2.0, 1.0])  # the last row is wrong: a for b
    metrics = evaluate(Stated(MULTI.classes), MULTI, proba, y)
    f1_a, f1_b, f1_c = 2 / 3, 2 / 3, 1.0
    assert metrics["f1"] == pytest.approx((f1_a + f1_b + f1_c) / 3)
    assert metrics["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert 0 < metrics["roc_auc"] <= 1
    two_classes = evaluate(Stated(MULTI.classes), MULTI, proba[:2], y[:2])
    assert "roc_auc" not in two_classes
    assert "log_loss" in two_classes


@pytest.mark.parametrize(
    ("schema", "x", "says"),
    [
        (REGRESSION, np.array([[1.0], [np.inf]]), "non-finite predictions"),
        (BINARY, np.array([[0.5], [1.3]]), "invalid probabilities on 1 of 2 rows"),
        (MULTI, np.array([[0.5, 0.5, 0.5], [0.2, 0.3, 0.5]]), "invalid probabilities on 1 of 2"),
        (MULTI, np.array([[np.nan, 0.5, 0.5], [0.2, 0.3, 0.5]]), "invalid probabilities"),
    ],
    ids=["infinite-value", "probability-above-1", "sum-not-1", "nan-probability"],
)
def test_evaluate_refuses_bad_answers(schema: Schema, x: np.ndarray, says: str) -> None:
    """A non-finite prediction or a row of probabilities that is no distribution is an error."""
    model = Echo() if schema is REGRESSION else Stated(schema.classes)
    with pytest.raises(TrainingError, match=says):
        evaluate(model, schema, x, np.zeros(len(x)))


def test_evaluate_refuses_a_label_that_is_none_of_the_classes() -> None:
    """A classifier answering a label the schema does not know cannot be measured."""
    model = Stated(("no", "maybe"))
    with pytest.raises(TrainingError, match="1 labels that are none of the classes"):
        evaluate(model, BINARY, np.array([[0.2], [0.8]]), np.array([0.0, 1.0]))


@pytest.mark.parametrize(
    ("task", "metric", "says"),
    [
        ("regression", "r2", "predicting the mean scores 0"),
        ("binary", "roc_auc", "scores 0.5 however imbalanced"),
        ("multiclass", "balanced_accuracy", "scores 1 / number of classes"),
    ],
)
def test_auto_metric_per_task(task: str, metric: str, says: str) -> None:
    """ "auto" picks the metric a trivial model cannot pass, and says why in words."""
    chosen, reason = choose_metric(task, "auto")
    assert chosen == metric
    assert says in reason


def test_configured_metric_is_kept_or_refused_for_the_wrong_task() -> None:
    """A metric configured for the task is kept with its direction; one for the other task is
    a ConfigError."""
    assert choose_metric("regression", "mae") == (
        "mae",
        "MAE (configured in model.metric; lower is better)",
    )
    with pytest.raises(ConfigError, match="'roc_auc' is for a classifier; the task is regression"):
        choose_metric("regression", "roc_auc")
    with pytest.raises(ConfigError, match="'rmse' is for a regression"):
        choose_metric("binary", "rmse")


def test_a_constant_majority_model_fails_the_auto_metric_on_imbalanced_data() -> None:
    """On 90/10 data always answering the majority scores 0.9 accuracy, which clears the
    accuracy floor, but ROC AUC 0.5, below the auto metric's bar: it is refused."""
    y = np.array([0.0] * 90 + [1.0] * 10)
    x = np.full((100, 1), 0.2)  # "yes" with probability 0.2 on every row: always "no"
    metrics = evaluate(Stated(BINARY.classes), BINARY, x, y)
    assert metrics["accuracy"] == pytest.approx(0.9)
    check_threshold(metrics, GateConfig(), BINARY, "accuracy")  # passes the weak bar
    auto, _ = choose_metric("binary", "auto")
    assert metrics[auto] == pytest.approx(0.5)
    with pytest.raises(TrainingError, match=r"ROC AUC 0\.500 is below the gate's minimum 0\.70"):
        check_threshold(metrics, GateConfig(), BINARY, auto)


def test_a_majority_model_fails_balanced_accuracy_on_imbalanced_multiclass_data() -> None:
    """On 80/10/10 data the majority model's balanced accuracy is 1/3, below chance + 0.1."""
    y = np.array([0.0] * 80 + [1.0] * 10 + [2.0] * 10)
    x = np.tile([0.8, 0.1, 0.1], (100, 1))
    metrics = evaluate(Stated(MULTI.classes), MULTI, x, y)
    assert metrics["balanced_accuracy"] == pytest.approx(1 / 3)
    with pytest.raises(TrainingError, match=r"balanced accuracy 0\.333 is below .* 0\.4333"):
        check_threshold(metrics, GateConfig(), MULTI)  # the schema's "r2" does not fit: auto


def test_gate_thresholds_per_metric() -> None:
    """R2 takes min_r2, gate.threshold overrides any metric, chance-relative bars follow the
    number of classes, and MAE has no default ceiling."""
    assert threshold_for("r2", GateConfig(min_r2=0.6)) == 0.6
    assert threshold_for("r2", GateConfig(min_r2=0.6, threshold=0.8)) == 0.8
    assert threshold_for("roc_auc", GateConfig()) == 0.7
    assert threshold_for("balanced_accuracy", GateConfig(), 2) == pytest.approx(0.6)
    assert threshold_for("balanced_accuracy", GateConfig(), 4) == pytest.approx(0.35)
    assert threshold_for("mae", GateConfig()) is None
    assert threshold_for("mae", GateConfig(threshold=0.4)) == 0.4
    fallback = threshold_for(
        "balanced_accuracy", GateConfig(threshold=0.9), configured_for="roc_auc"
    )
    assert fallback == pytest.approx(0.6)


def test_a_ceiling_for_lower_is_better_metrics() -> None:
    """With gate.threshold set, an MAE above it fails and one below passes."""
    with pytest.raises(TrainingError, match=r"MAE 0\.500 is above the gate's maximum 0\.40"):
        check_threshold({"mae": 0.5}, GateConfig(threshold=0.4), REGRESSION, "mae")
    check_threshold({"mae": 0.3}, GateConfig(threshold=0.4), REGRESSION, "mae")
    check_threshold({"mae": 99.0}, GateConfig(), REGRESSION, "mae")  # no ceiling by default


def test_live_thresholds_per_metric() -> None:
    """The live bar is performance.min_r2 for R2, performance.threshold when set for the metric,
    else the table's live default."""
    assert live_threshold("r2", PerformanceConfig(min_r2=0.4)) == 0.4
    assert live_threshold("roc_auc", PerformanceConfig()) == default_threshold("roc_auc", live=True)
    assert live_threshold("roc_auc", PerformanceConfig(threshold=0.75)) == 0.75
    assert live_threshold(
        "balanced_accuracy", PerformanceConfig(threshold=0.75), configured_for="roc_auc"
    ) == pytest.approx(0.55)
    assert live_threshold("log_loss", PerformanceConfig()) is None


def test_live_metric_from_feedback() -> None:
    """The live metric uses labelled predictions, leaves out unknown pairs, and falls back to
    balanced accuracy for ROC AUC when feedback has no probabilities, saying so in its name."""
    y = np.array([1.0, 0.0, 1.0, 0.0, np.nan])
    pred = np.array([1.0, 0.0, 0.0, 0.0, 1.0])
    name, value = live_metric(BINARY, "roc_auc", y, pred)
    assert name == "balanced_accuracy"
    assert value == pytest.approx((0.5 + 1.0) / 2)
    proba = np.array([[0.1, 0.9], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3], [0.5, 0.5]])
    name, value = live_metric(BINARY, "roc_auc", y, pred, proba)
    assert name == "roc_auc"
    assert value == pytest.approx(1.0)
    name, value = live_metric(BINARY, "accuracy", y, pred)
    assert name == "accuracy"
    assert value == pytest.approx(0.75)
    name, r2 = live_metric(REGRESSION, "r2", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    assert name == "r2"
    assert r2 == pytest.approx(1.0)


def test_live_metric_is_none_when_undefined() -> None:
    """No usable pairs, or ROC AUC on feedback of one class, give None rather than a number."""
    assert live_metric(REGRESSION, "r2", np.array([np.nan]), np.array([1.0])) == ("r2", None)
    one_class = np.array([[0.2, 0.8], [0.4, 0.6]])
    assert live_metric(BINARY, "roc_auc", np.ones(2), np.ones(2), one_class) == ("roc_auc", None)
