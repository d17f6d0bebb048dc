"""The promotion gate on classifiers with categorical columns: binary and multiclass, the
probability test, directional checks on a class's probability, and the per-slice comparison."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from selfheal_daemon.config import DirectionalCheck, GateConfig
from selfheal_daemon.errors import TrainingError
from selfheal_daemon.model.gate import (
    TEST_NAMES,
    GateVerdict,
    Predictor,
    ProbeSet,
    check_threshold,
    judge,
    model_tests,
    slice_test,
)
from selfheal_daemon.model.schema import Column, Schema

COLUMNS = (
    Column("age", "numeric"),
    Column("hours", "numeric"),
    Column("sex", "categorical", categories=("Female", "Male")),
    Column("job", "categorical", categories=("a", "b", "c"), missing=True),
)
BINARY = Schema("census", "binary", "income", COLUMNS, classes=("no", "yes"), metric="auto")
MULTI = Schema(
    "tiers", "multiclass", "tier", COLUMNS, classes=("low", "mid", "high"), metric="auto"
)
GATE = GateConfig()
AGE_RAISES = [DirectionalCheck(feature="age", step=10.0, expected="increase", share=0.7)]
CLASSIFIER_TESTS = ("golden", "non_finite", "probabilities", "directional", "latency")


def logit(frame: pd.DataFrame, *, age: float = 1.0, hours: float = 1.0) -> np.ndarray:
    """The generating log-odds: older, longer hours and job a raise them, being Female lowers
    them (a missing number counts as the middle of its range)."""
    odds = (
        age * 3.0 * (frame["age"].fillna(45).to_numpy(dtype="float64") - 45) / 15
        + hours * 1.5 * (frame["hours"].fillna(40).to_numpy(dtype="float64") - 40) / 15
        + 1.0 * (frame["job"] == "a").to_numpy()
        - 0.5 * (frame["sex"] == "Female").to_numpy()
    )
    return np.asarray(odds, dtype="float64")


def census_like(n: int, seed: int, schema: Schema = BINARY) -> pd.DataFrame:
    """Synthetic census rows with text categories and some missing jobs ("?"); the binary label
    follows ``logit``, the three tiers cut a noisy ``logit`` at 50% and 80% (so 50/30/20)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.uniform(18, 80, n),
            "hours": rng.uniform(10, 70, n),
            "sex": rng.choice(["Female", "Male"], n, p=[0.35, 0.65]),
            "job": rng.choice(["a", "b", "c", "?"], n, p=[0.3, 0.4, 0.25, 0.05]),
        }
    )
    noisy = logit(frame) + rng.logistic(size=n)
    if schema.task == "binary":
        frame[schema.target] = np.where(noisy > 0, "yes", "no")
    else:
        cuts = np.quantile(noisy, [0.5, 0.8])
        frame[schema.target] = np.array(["low", "mid", "high"])[np.searchsorted(cuts, noisy)]
    return frame


def fit(frame: pd.DataFrame, schema: Schema, max_iter: int = 40) -> Pipeline:
    """The kind of pipeline a user brings: categories encoded inside it (unseen and missing as
    NaN), then HistGradientBoosting with native categorical splits."""
    categorical = [c.name for c in schema.columns if not c.is_numeric]
    encode = ColumnTransformer(
        [
            (
                "categories",
                OrdinalEncoder(
                    categories=[list(schema.column(c).categories) for c in categorical],
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                ),
                categorical,
            )
        ],
        remainder="passthrough",
    )
    model = HistGradientBoostingClassifier(
        max_iter=max_iter,
        categorical_features=list(range(len(categorical))),
        early_stopping=False,
        random_state=0,
    )
    pipeline = Pipeline([("encode", encode), ("model", model)])
    return pipeline.fit(schema.model_input(schema.encode(frame)), frame[schema.target])


@dataclass(frozen=True)
class Task:
    schema: Schema
    train: pd.DataFrame
    x_hold: np.ndarray
    y_hold: np.ndarray
    model: Pipeline
    probes: ProbeSet

    def judge(
        self,
        candidate: Predictor,
        champion: Predictor | None,
        cfg: GateConfig = GATE,
        probes: ProbeSet | None = None,
    ) -> GateVerdict:
        """The gate on the holdout, its clock stepping 1 ms a read: latency is not tested here
        (test_gate.py does), so a busy machine cannot fail these verdicts."""
        probes = probes or self.probes
        ticks = itertools.count(0.0, 0.001)
        return judge(
            candidate,
            champion,
            self.x_hold,
            self.y_hold,
            probes,
            cfg,
            self.schema,
            timer=lambda: next(ticks),
        )


def make_task(schema: Schema) -> Task:
    """Training rows, a fresh holdout of 1,500, a fitted model and probes for ``schema``."""
    train, hold = census_like(3000, 0, schema), census_like(1500, 1, schema)
    return Task(
        schema,
        train,
        schema.encode(hold),
        schema.encode_target(hold[schema.target].tolist()),
        fit(train, schema),
        ProbeSet.from_frame(train, schema, GATE, AGE_RAISES),
    )


@pytest.fixture(scope="module")
def binary() -> Task:
    """The binary task."""
    return make_task(BINARY)


@pytest.fixture(scope="module")
def multi() -> Task:
    """The three-tier multiclass task."""
    return make_task(MULTI)


class Distorted:
    """A classifier around a real one whose probabilities are bent by ``bend`` (rows, proba)."""

    def __init__(self, model: Pipeline, bend: Any) -> None:
        self.model, self.bend = model, bend
        self.classes_ = model.classes_

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.predict(frame))

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.bend(frame, self.model.predict_proba(frame)), dtype="float64")


class Majority:
    """The trivial model: always the first class, with probability 0.9."""

    classes_ = np.array(["no", "yes"])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.full(len(frame), "no")

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.tile([0.9, 0.1], (len(frame), 1))


class Oracle:
    """A binary classifier answering the sigmoid of the generating log-odds, with chosen weights
    for age and hours per sex: how a model that knows more, or less, on one slice behaves."""

    classes_ = np.array(["no", "yes"])

    def __init__(self, male: tuple[float, float], female: tuple[float, float]) -> None:
        self.male, self.female = male, female

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        female = (frame["sex"] == "Female").to_numpy()
        odds = np.where(
            female,
            logit(frame, age=self.female[0], hours=self.female[1]),
            logit(frame, age=self.male[0], hours=self.male[1]),
        )
        p = 1 / (1 + np.exp(-odds))
        return np.column_stack([1 - p, p])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.classes_[(self.predict_proba(frame)[:, 1] >= 0.5).astype(int)])


# --- the verdict per task ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "metric"), [("binary", "roc_auc"), ("multi", "balanced_accuracy")]
)
def test_healthy_classifier_passes_every_test(
    task: str, metric: str, request: pytest.FixtureRequest
) -> None:
    """A real model with categorical columns clears its auto metric and every classifier test,
    against itself as champion; unseen categories in the edge rows do not break it."""
    t: Task = request.getfixturevalue(task)
    verdict = t.judge(t.model, t.model)
    assert verdict.promote, verdict.reasons
    assert verdict.metric == metric
    assert tuple(x.name for x in verdict.tests) == CLASSIFIER_TESTS
    assert set(verdict.candidate) >= {"accuracy", "balanced_accuracy", "f1", "log_loss"}
    assert verdict.candidate[metric] > 0.75
    assert verdict.champion == verdict.candidate
    assert json.loads(json.dumps(verdict.to_details(), allow_nan=False))["metric"] == metric


def test_edge_rows_cover_unseen_and_missing_categories(binary: Task) -> None:
    """The edge rows hold each category's first and last, an unseen and a missing one."""
    sex = binary.schema.position("sex")
    codes = binary.probes.edge_x[:, sex]
    assert {0.0, 1.0, -1.0} <= set(codes[np.isfinite(codes)].tolist())
    assert np.isnan(codes).any()
    assert binary.probes.edge_x.shape == (3 + 1 + 3 + 3 + 4 + 4, 4)


def test_majority_model_fails_the_auto_metric_and_golden(binary: Task) -> None:
    """Always answering the majority class fails ROC AUC's floor, the champion comparison and
    the golden test (its balanced share correct is 0.5)."""
    verdict = binary.judge(Majority(), binary.model)
    assert not verdict.promote
    assert any("ROC AUC 0.500 is below the gate's minimum 0.70" in r for r in verdict.reasons)
    assert any("candidate ROC AUC 0.500 is worse than the champion's" in r for r in verdict.reasons)
    golden = {t.name: t for t in verdict.tests}["golden"]
    assert not golden.passed
    assert golden.value == pytest.approx(0.5)
    assert "of the champion's" in golden.detail


def test_threshold_of_the_first_classifier(binary: Task) -> None:
    """check_threshold holds a first classifier to its metric's bar in words."""
    with pytest.raises(TrainingError, match=r"model ROC AUC 0\.650 is below the gate's minimum"):
        check_threshold({"roc_auc": 0.65}, GATE, binary.schema)
    check_threshold({"roc_auc": 0.75}, GATE, binary.schema)


# --- probabilities -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bend", "says"),
    [
        (lambda _f, p: p * 1.2, "rows of probabilities are not finite, within [0, 1]"),
        (lambda f, p: np.where(f[["job"]].isna().to_numpy(), np.nan, p), "edge rows"),
        (lambda _f, p: p[:, :1], "predict_proba returned shape"),
    ],
    ids=["sum-above-1", "nan-where-missing", "one-column"],
)
def test_invalid_probabilities_fail_the_test_and_the_metrics(
    bend: Any, says: str, binary: Task
) -> None:
    """Probabilities that are no distribution fail the probabilities test and leave the
    candidate unmeasurable; nothing crashes."""
    verdict = binary.judge(Distorted(binary.model, bend), binary.model)
    assert not verdict.promote
    assert "probabilities" in verdict.failed_tests
    assert says in {t.name: t for t in verdict.tests}["probabilities"].detail
    assert any("holdout metrics cannot be measured" in r for r in verdict.reasons)
    assert np.isnan(verdict.candidate["roc_auc"])


# --- directional checks on a class's probability ------------------------------------------------


@pytest.mark.parametrize("task", ["binary", "multi"])
def test_directional_moves_the_last_class_probability(
    task: str, request: pytest.FixtureRequest
) -> None:
    """Raising age raises the probability of the last class; a declared decrease fails."""
    t: Task = request.getfixturevalue(task)
    last = t.schema.classes[-1]
    up = {x.name: x for x in model_tests(t.model, t.probes, GATE, t.schema)}["directional"]
    assert up.passed, up.detail
    assert up.detail.startswith(f"raising age by 10 raised the probability of {last!r} for")
    down = [DirectionalCheck(feature="age", step=10.0, expected="decrease")]
    probes = ProbeSet.from_frame(t.train, t.schema, GATE, down)
    result = {x.name: x for x in model_tests(t.model, probes, GATE, t.schema)}["directional"]
    assert not result.passed
    assert result.value < 0.2


def test_a_check_on_a_categorical_feature_fails_with_the_reason(binary: Task) -> None:
    """A directional check cannot raise a category: it fails naming the feature and its kind."""
    checks = [DirectionalCheck(feature="sex", step=1.0)]
    probes = ProbeSet.from_frame(binary.train, binary.schema, GATE, checks)
    verdict = binary.judge(binary.model, binary.model, probes=probes)
    assert verdict.failed_tests == ("directional",)
    assert verdict.reasons == (
        "directional test failed: check on sex cannot run: 'sex' is categorical: a directional"
        " check needs a numeric feature",
    )


# --- slices --------------------------------------------------------------------------------------


def test_better_overall_but_worse_on_one_slice_is_rejected_naming_it(binary: Task) -> None:
    """A candidate that knows more about men but less about women beats the champion overall
    yet is rejected for the slice sex=Female; without gate.slices it would be promoted."""
    champion = Oracle(male=(1.0, 0.0), female=(1.0, 0.0))  # age only
    candidate = Oracle(male=(1.0, 1.0), female=(0.35, 1.0))  # all for men, less age for women
    sliced = GateConfig(slices=["sex", "job"])
    probes = ProbeSet.from_frame(binary.train, binary.schema, GATE, [])
    verdict = binary.judge(candidate, champion, sliced, probes)
    assert verdict.candidate["roc_auc"] > verdict.champion["roc_auc"]  # type: ignore[index]
    assert not verdict.promote
    assert verdict.failed_tests == ("slices",)
    (reason,) = verdict.reasons
    assert reason.startswith(
        "slices test failed: worse than the champion by more than 0.05 on 1 of 6 slices:"
        " sex=Female: roc_auc 0."
    )
    assert "vs champion 0." in reason
    names = ("golden", "non_finite", "probabilities", "slices", "latency")
    assert tuple(t.name for t in verdict.tests) == names
    assert [n for n in TEST_NAMES if n in names] == list(names)  # the documented order
    assert binary.judge(candidate, champion, GATE, probes).promote


def test_small_slices_are_skipped_and_no_champion_passes(binary: Task) -> None:
    """Slices below slice_min_rows are not compared; with no champion the test passes saying so."""
    cfg = GateConfig(slices=["job"], slice_min_rows=100)
    champion = Oracle(male=(1.0, 0.0), female=(1.0, 0.0))
    result = {t.name: t for t in binary.judge(champion, champion, cfg).tests}["slices"]
    assert result.passed
    assert result.detail == (
        "no slice worse than the champion by more than 0.05 (3 slices of job with at least 100"
        " rows compared, 1 smaller skipped)"
    )
    alone = {t.name: t for t in binary.judge(champion, None, cfg).tests}["slices"]
    assert (alone.passed, alone.detail) == (True, "no champion measured to compare slices with")


def test_a_numeric_slice_column_fails_with_the_reason(binary: Task) -> None:
    """gate.slices naming a numeric feature fails the slices test and says why."""
    verdict = binary.judge(binary.model, binary.model, GateConfig(slices=["age"]))
    assert verdict.failed_tests == ("slices",)
    assert (
        "slice column 'age': a slice column must be categorical; 'age' is numeric"
        in (verdict.reasons[0])
    )


def test_a_slice_with_one_class_is_compared_by_accuracy() -> None:
    """Where ROC AUC is undefined (one class on the slice) accuracy is compared; missing cells
    form a slice of their own."""
    schema = Schema(
        "g", "binary", "y", (Column("g", "categorical", categories=("a", "b")),), classes=("n", "y")
    )
    codes = np.repeat([0.0, 1.0, np.nan], 40)
    y = np.concatenate([np.tile([0.0, 1.0], 20), np.ones(40), np.tile([0.0, 1.0], 20)])
    right = np.column_stack([1 - y * 0.8 - 0.1, y * 0.8 + 0.1])
    wrong_on_b = right.copy()
    wrong_on_b[40:80] = [0.7, 0.3]
    champion = (right.argmax(axis=1).astype(float), right)
    candidate = (wrong_on_b.argmax(axis=1).astype(float), wrong_on_b)
    cfg = GateConfig(slices=["g"])
    result = slice_test(
        schema, "roc_auc", cfg, codes[:, None], y, candidate=candidate, champion=champion
    )
    assert not result.passed
    assert result.detail == (
        "worse than the champion by more than 0.05 on 1 of 3 slices: g=b: accuracy 0.000 vs"
        " champion 1.000"
    )
    same = slice_test(
        schema, "roc_auc", cfg, codes[:, None], y, candidate=champion, champion=champion
    )
    assert same.passed
    assert "3 slices of g" in same.detail


def test_roc_auc_undefined_on_the_holdout_falls_back_to_balanced_accuracy(binary: Task) -> None:
    """On a holdout of one class ROC AUC is undefined: the gate judges balanced accuracy against
    its own default bar, and notes it, rather than refusing every candidate."""
    ones = binary.y_hold == 1
    verdict = judge(
        binary.model,
        binary.model,
        binary.x_hold[ones],
        binary.y_hold[ones],
        binary.probes,
        GateConfig(threshold=0.99),  # set for ROC AUC: not applied to the fallback
        binary.schema,
        timer=itertools.count(0.0, 0.001).__next__,
    )
    assert verdict.metric == "roc_auc"
    assert "roc_auc" not in verdict.candidate
    (note,) = verdict.notes
    assert note == (
        "ROC AUC is undefined on this holdout (a class is absent from its labels): the gate"
        " measured balanced accuracy instead"
    )
    assert verdict.promote, verdict.reasons
