"""The promotion gate: metrics against the threshold and the champion, the model tests, suspects."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from selfheal_daemon.config import GateConfig, TrainingConfig
from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.errors import DataError
from selfheal_daemon.model.gate import (
    TEST_NAMES,
    GateVerdict,
    Predictor,
    ProbeSet,
    judge,
    model_tests,
)
from selfheal_daemon.model.label_repair import suspect_labels
from selfheal_daemon.model.training import build_pipeline

GATE = GateConfig()


@dataclass(frozen=True)
class Data:
    x_train: np.ndarray
    y_train: np.ndarray
    x_hold: np.ndarray
    y_hold: np.ndarray


@pytest.fixture(scope="module")
def data(housing: pd.DataFrame) -> Data:
    """The bundled data split 80/20 with a fixed seed: the holdout is fresh to every model here."""
    x = housing[list(FEATURES)].to_numpy(dtype="float64")
    y = housing[TARGET].to_numpy(dtype="float64")
    x_train, x_hold, y_train, y_hold = train_test_split(x, y, test_size=0.2, random_state=42)
    return Data(x_train, y_train, x_hold, y_hold)


@pytest.fixture(scope="module")
def healthy(data: Data) -> Pipeline:
    """The real pipeline with the default training parameters (holdout R2 about 0.85)."""
    return build_pipeline(TrainingConfig()).fit(data.x_train, data.y_train)


@pytest.fixture(scope="module")
def undertrained(data: Data) -> Pipeline:
    """A sound but weaker model: 30 boosting iterations (holdout R2 about 0.79)."""
    return build_pipeline(TrainingConfig(max_iter=30)).fit(data.x_train, data.y_train)


@pytest.fixture(scope="module")
def poisoned_labels(data: Data) -> Pipeline:
    """The incident: a batch of shuffled labels became the training data."""
    y = np.random.default_rng(0).permutation(data.y_train)
    return build_pipeline(TrainingConfig(max_iter=30)).fit(data.x_train, y)


@pytest.fixture(scope="module")
def probes(housing: pd.DataFrame) -> ProbeSet:
    return ProbeSet.from_frame(housing, GATE, seed=0)


class NaNWhereMissing:
    """The incident: a model that passes a missing feature straight through to a NaN prediction."""

    def __init__(self, model: Pipeline) -> None:
        self.model = model

    def predict(self, x: np.ndarray) -> np.ndarray:
        pred = np.asarray(self.model.predict(x), dtype="float64")
        pred[np.isnan(x).any(axis=1)] = np.nan
        return pred


class IncomeMirrored:
    """The incident: MedInc read upside down, so richer districts look poorer to the model."""

    def __init__(self, model: Pipeline) -> None:
        self.model = model

    def predict(self, x: np.ndarray) -> np.ndarray:
        flipped = np.array(x, copy=True)
        flipped[:, 0] = 15.5 - flipped[:, 0]
        return np.asarray(self.model.predict(flipped))


class Explodes:
    """A model whose predict raises: an unpickled artifact missing a dependency, say."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")


class WrongShape:
    """A model that returns two outputs per row."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), 2))


class AllNaN:
    """A model that predicts NaN for every row."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), np.nan)


class SteppingTimer:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _judge(
    candidate: Predictor,
    champion: Predictor | None,
    data: Data,
    probes: ProbeSet,
    cfg: GateConfig = GATE,
) -> GateVerdict:
    return judge(candidate, champion, data.x_hold, data.y_hold, probes, cfg)


# --- the verdict -----------------------------------------------------------------------------


def test_healthy_model_passes_everything_and_is_promoted(
    healthy: Pipeline, data: Data, probes: ProbeSet
) -> None:
    """The real model on the bundled data clears the threshold and every test by a wide margin."""
    verdict = _judge(healthy, None, data, probes)
    assert verdict.promote, verdict.reasons
    assert verdict.reasons == ()
    assert verdict.champion is None
    assert verdict.candidate["r2"] > 0.8
    assert tuple(t.name for t in verdict.tests) == TEST_NAMES
    assert all(t.passed for t in verdict.tests)
    shares = {t.name: t.value for t in verdict.tests}
    assert shares["golden"] >= 0.9
    assert shares["directional"] >= 0.85
    assert shares["non_finite"] == 0
    assert not verdict.test_failure


def test_equal_to_the_champion_is_not_worse(
    healthy: Pipeline, data: Data, probes: ProbeSet
) -> None:
    """A candidate as good as the champion on the same holdout passes the comparison."""
    verdict = _judge(healthy, healthy, data, probes)
    assert verdict.promote, verdict.reasons
    assert verdict.champion == verdict.candidate


def test_worse_than_the_champion_is_refused_naming_both_r2(
    healthy: Pipeline, undertrained: Pipeline, data: Data, probes: ProbeSet
) -> None:
    """A candidate above the threshold but below the champion is refused, both R2 values named."""
    verdict = _judge(undertrained, healthy, data, probes)
    assert not verdict.promote
    assert verdict.champion is not None
    mine, theirs = verdict.candidate["r2"], verdict.champion["r2"]
    assert GATE.min_r2 < mine < theirs
    (reason,) = verdict.reasons
    assert f"candidate R2 {mine:.3f}" in reason
    assert f"champion's {theirs:.3f}" in reason
    assert f"{len(data.y_hold):,} rows" in reason
    assert not verdict.test_failure


def test_champion_tolerance_lets_a_slightly_worse_candidate_through(
    healthy: Pipeline, undertrained: Pipeline, data: Data, probes: ProbeSet
) -> None:
    """With a tolerance wider than the gap, the weaker candidate is promoted."""
    verdict = _judge(undertrained, healthy, data, probes, GateConfig(champion_tolerance=0.1))
    assert verdict.promote, verdict.reasons


def test_below_the_absolute_threshold_is_refused(
    healthy: Pipeline, data: Data, probes: ProbeSet
) -> None:
    """A candidate under min_r2 is refused as a metric failure, not a test failure."""
    verdict = _judge(healthy, None, data, probes, GateConfig(min_r2=0.95))
    assert not verdict.promote
    (reason,) = verdict.reasons
    assert re.fullmatch(r"candidate R2 0\.\d{3} is below the gate's minimum 0\.95", reason)
    assert verdict.failed_tests == ()
    assert not verdict.test_failure


def test_unmeasurable_champion_leaves_the_threshold_only(
    healthy: Pipeline, data: Data, probes: ProbeSet
) -> None:
    """A champion whose predict raises does not block a good candidate; the verdict notes it."""
    verdict = _judge(healthy, Explodes(), data, probes)
    assert verdict.promote, verdict.reasons
    assert verdict.champion is not None
    assert np.isnan(verdict.champion["r2"])
    (note,) = verdict.notes
    assert "champion could not be measured" in note
    assert "RuntimeError: boom" in note


def test_details_are_strict_json(healthy: Pipeline, data: Data, probes: ProbeSet) -> None:
    """to_details survives json.dumps without NaN, even for a model that predicts only NaN."""
    verdict = _judge(AllNaN(), healthy, data, probes)
    details = json.loads(json.dumps(verdict.to_details(), allow_nan=False))
    assert details["promote"] is False
    assert details["candidate"] == {"r2": None, "mae": None, "rmse": None}
    assert details["champion"]["r2"] == pytest.approx(verdict.champion["r2"])  # type: ignore[index]
    assert "non_finite" in details["failed_tests"]
    assert [t["name"] for t in details["tests"]] == list(TEST_NAMES)


# --- the model tests -------------------------------------------------------------------------


def test_nan_on_missing_features_fails_non_finite(
    healthy: Pipeline, data: Data, probes: ProbeSet
) -> None:
    """NaN out for rows with a gap is caught on the edge rows and on the holdout, never a crash."""
    verdict = _judge(NaNWhereMissing(healthy), healthy, data, probes)
    assert not verdict.promote
    assert verdict.failed_tests == ("non_finite",)
    detail = {t.name: t for t in verdict.tests}["non_finite"].detail
    assert "of 27 edge rows" in detail
    assert "holdout rows" in detail
    assert any("cannot be measured: model produced non-finite" in r for r in verdict.reasons)
    assert any(r.startswith("non_finite test failed: ") for r in verdict.reasons)


@pytest.mark.parametrize(
    ("broken", "says"),
    [(Explodes(), "RuntimeError: boom"), (WrongShape(), "predict returned shape (")],
    ids=["raises", "wrong-shape"],
)
def test_broken_predict_fails_every_test_without_crashing(
    broken: Predictor, says: str, healthy: Pipeline, data: Data, probes: ProbeSet
) -> None:
    """An exception or a wrong shape from predict fails each test with the error in its detail."""
    verdict = _judge(broken, healthy, data, probes)
    assert not verdict.promote
    assert verdict.failed_tests == TEST_NAMES
    assert all(says in t.detail for t in verdict.tests)
    assert np.isnan(verdict.candidate["r2"])
    assert len(verdict.reasons) == 1 + len(TEST_NAMES)


def test_income_read_upside_down_fails_directional(healthy: Pipeline, probes: ProbeSet) -> None:
    """A model whose prediction falls as MedInc rises fails the directional test."""
    results = {t.name: t for t in model_tests(IncomeMirrored(healthy), probes, GATE)}
    assert not results["directional"].passed
    assert results["directional"].value < 0.2
    assert results["directional"].detail.startswith("raising MedInc by 2 raised the prediction")


def test_poisoned_labels_fail_golden(
    healthy: Pipeline, poisoned_labels: Pipeline, probes: ProbeSet
) -> None:
    """Trained on shuffled labels, the model misses the trusted labels; the healthy one does not."""
    good = {t.name: t for t in model_tests(healthy, probes, GATE)}["golden"]
    bad = {t.name: t for t in model_tests(poisoned_labels, probes, GATE)}["golden"]
    assert good.passed
    assert good.value >= 0.9
    assert not bad.passed
    assert bad.value < 0.7
    assert re.fullmatch(
        r"\d+ of 200 golden rows within 1\.00 of the label \(\d+%, need 80%\)", bad.detail
    )


@pytest.mark.parametrize(
    ("step_s", "gate", "passed", "says"),
    [
        (0.2, GATE, False, "median 1-row predict 200.0 ms (budget 50 ms)"),
        (0.2, GateConfig(latency_budget_ms=500, batch_latency_budget_ms=100), False, "batch 200.0"),
        (0.001, GATE, True, "median 1-row predict 1.0 ms"),
    ],
    ids=["slow-single-row", "slow-batch", "fast"],
)
def test_latency_budget_with_an_injected_timer(
    *, step_s: float, gate: GateConfig, passed: bool, says: str, healthy: Pipeline, probes: ProbeSet
) -> None:
    """The latency test reads only the injected timer and compares both medians to their budgets."""
    results = {t.name: t for t in model_tests(healthy, probes, gate, timer=SteppingTimer(step_s))}
    assert results["latency"].passed is passed
    assert says in results["latency"].detail
    assert results["latency"].value == pytest.approx(step_s * 1000)


# --- the probe set ---------------------------------------------------------------------------


def test_probe_set_is_deterministic_and_trusted(housing: pd.DataFrame) -> None:
    """The same seed draws the same rows; the rows are clean, in range and read-only."""
    first, again = ProbeSet.from_frame(housing, GATE, 0), ProbeSet.from_frame(housing, GATE, 0)
    other = ProbeSet.from_frame(housing, GATE, 1)
    for name in ("golden_x", "golden_y", "direction_x", "edge_x"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
        assert not getattr(first, name).flags.writeable
    assert not np.array_equal(first.golden_x, other.golden_x)
    assert first.golden_x.shape == (200, 8)
    assert first.direction_x.shape == (200, 8)
    assert first.edge_x.shape == (27, 8)
    assert np.isfinite(first.golden_x).all()
    assert np.isfinite(first.golden_y).all()
    assert (first.direction_x[:, 0] + GATE.direction_step <= housing["MedInc"].max()).all()
    assert np.isnan(first.edge_x).all(axis=1).sum() == 1
    assert np.nanmax(first.edge_x, axis=0) == pytest.approx(housing[list(FEATURES)].max())


def test_probe_set_refuses_base_data_without_the_target(housing: pd.DataFrame) -> None:
    """Golden rows need trusted labels: a base without the target column is a DataError."""
    with pytest.raises(DataError, match="MedHouseVal"):
        ProbeSet.from_frame(housing.drop(columns=[TARGET]), GATE)


# --- suspect labels --------------------------------------------------------------------------


@pytest.fixture
def recent(data: Data) -> tuple[pd.DataFrame, np.ndarray]:
    """The incident: 1,000 recent rows, 40 with labels in $10,000 instead of $100,000, one NaN."""
    frame = pd.DataFrame(data.x_hold[:1000], columns=list(FEATURES))
    frame[TARGET] = data.y_hold[:1000]
    frame.index = frame.index + 5000  # the caller's index must survive the split
    planted = frame.index[np.random.default_rng(3).choice(1000, size=41, replace=False)]
    frame.loc[planted[:40], TARGET] *= 10
    frame.loc[planted[40], TARGET] = np.nan
    return frame, np.asarray(planted)


def test_suspect_labels_quarantines_planted_bad_labels(
    recent: tuple[pd.DataFrame, np.ndarray], healthy: Pipeline
) -> None:
    """Every planted label is quarantined with a reason, few honest ones are, and no row is lost."""
    frame, planted = recent
    kept, quarantined = suspect_labels(frame, healthy, GATE)
    assert set(planted) <= set(quarantined.index)
    assert len(quarantined) <= 41 + 0.06 * 1000
    assert sorted([*kept.index, *quarantined.index]) == sorted(frame.index)
    assert set(kept.index).isdisjoint(quarantined.index)
    assert list(kept.columns) == list(frame.columns)
    assert quarantined.loc[planted[40], "reason"] == "label nan is not a finite number"
    assert "from the champion's prediction" in quarantined.loc[planted[0], "reason"]


def test_suspect_labels_respects_the_share_cap_worst_first(
    recent: tuple[pd.DataFrame, np.ndarray], healthy: Pipeline
) -> None:
    """With a 2% cap exactly 20 rows go, the missing label and the 19 furthest from the champion."""
    frame, planted = recent
    kept, quarantined = suspect_labels(frame, healthy, GateConfig(suspect_max_share=0.02))
    assert len(quarantined) == 20
    assert len(kept) == 980
    distance = np.abs(frame[TARGET] - healthy.predict(frame[list(FEATURES)].to_numpy()))
    worst = distance.dropna().sort_values(ascending=False).index[:19]
    assert list(quarantined.index) == [planted[40], *worst]


def test_suspect_labels_with_a_zero_cap_keeps_everything(
    recent: tuple[pd.DataFrame, np.ndarray], healthy: Pipeline
) -> None:
    """A share cap of 0 turns the repair off: nothing is quarantined."""
    frame, _ = recent
    kept, quarantined = suspect_labels(frame, healthy, GateConfig(suspect_max_share=0.0))
    assert len(kept) == len(frame)
    assert quarantined.empty
    assert "reason" in quarantined.columns
