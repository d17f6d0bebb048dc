"""The promotion gate on a regression (the bundled schema): metrics against the threshold and the
champion in the metric's own direction, the model tests, the probe set."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from selfheal_daemon.config import DirectionalCheck, GateConfig, load_config
from selfheal_daemon.errors import DataError
from selfheal_daemon.model.gate import (
    GateVerdict,
    Predictor,
    ProbeSet,
    judge,
    model_tests,
)
from selfheal_daemon.model.schema import Schema

SCHEMA = Schema.california()
GATE = GateConfig()
CHECKS = load_config(
    None
).directional_checks  # the bundled default's: MedInc raised by 2, 80% of rows
REGRESSION_TESTS = ("golden", "non_finite", "directional", "latency")
RANGES = {
    "MedInc": (0.5, 15.0),
    "HouseAge": (1.0, 52.0),
    "AveRooms": (2.0, 8.0),
    "AveBedrms": (0.8, 1.5),
    "Population": (100.0, 5000.0),
    "AveOccup": (1.5, 5.0),
    "Latitude": (32.5, 42.0),
    "Longitude": (-124.0, -114.0),
}


def housing_like(n: int, seed: int) -> pd.DataFrame:
    """Synthetic rows with the bundled schema's columns and ranges: the value rises with income
    and age and falls going north, with noise of 0.3."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.uniform(lo, hi, n) for name, (lo, hi) in RANGES.items()})
    frame[SCHEMA.target] = (
        0.3 * frame["MedInc"]
        + 0.02 * frame["HouseAge"]
        - 0.08 * (frame["Latitude"] - 32.5)
        + 0.3 * np.sin(frame["AveRooms"])
        + rng.normal(0, 0.3, n)
    )
    return frame


def fit(frame: pd.DataFrame, max_iter: int, *, shuffle: bool = False) -> Any:
    """A HistGradientBoosting regressor fitted on the schema's model input of ``frame``."""
    y = SCHEMA.encode_target(frame[SCHEMA.target].tolist())
    if shuffle:
        y = np.random.default_rng(0).permutation(y)
    model = HistGradientBoostingRegressor(max_iter=max_iter, early_stopping=False, random_state=0)
    return model.fit(SCHEMA.model_input(SCHEMA.encode(frame)), y)


@dataclass(frozen=True)
class Data:
    train: pd.DataFrame
    x_hold: np.ndarray
    y_hold: np.ndarray


@pytest.fixture(scope="module")
def data() -> Data:
    """3,000 training rows and a fresh holdout of 1,000, as schema-encoded matrices."""
    hold = housing_like(1000, 1)
    return Data(
        housing_like(3000, 0),
        SCHEMA.encode(hold),
        SCHEMA.encode_target(hold[SCHEMA.target].tolist()),
    )


@pytest.fixture(scope="module")
def healthy(data: Data) -> Any:
    """A well-trained model (holdout R2 about 0.93)."""
    return fit(data.train, 50)


@pytest.fixture(scope="module")
def undertrained(data: Data) -> Any:
    """A sound but weaker model: 10 boosting iterations (holdout R2 about 0.80)."""
    return fit(data.train, 10)


@pytest.fixture(scope="module")
def poisoned_labels(data: Data) -> Any:
    """The incident: a batch of shuffled labels became the training data."""
    return fit(data.train, 30, shuffle=True)


@pytest.fixture(scope="module")
def probes(data: Data) -> ProbeSet:
    """The probe set drawn from the training rows with the default's directional check."""
    return ProbeSet.from_frame(data.train, SCHEMA, GATE, CHECKS, seed=0)


class NaNWhereMissing:
    """The incident: a model that passes a missing feature straight through to a NaN prediction."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        pred = np.asarray(self.model.predict(frame), dtype="float64")
        pred[frame.isna().any(axis=1).to_numpy()] = np.nan
        return pred


class IncomeMirrored:
    """The incident: MedInc read upside down, so richer districts look poorer to the model."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        flipped = frame.copy()
        flipped["MedInc"] = 15.5 - flipped["MedInc"]
        return np.asarray(self.model.predict(flipped))


class Explodes:
    """A model whose predict raises: an unpickled artifact missing a dependency, say."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        raise RuntimeError("boom")


class WrongShape:
    """A model that returns two outputs per row."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.zeros((len(frame), 2))


class AllNaN:
    """A model that predicts NaN for every row."""

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.full(len(frame), np.nan)


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
    *,
    metric: str | None = None,
) -> GateVerdict:
    return judge(candidate, champion, data.x_hold, data.y_hold, probes, cfg, SCHEMA, metric)


# --- the verdict -----------------------------------------------------------------------------


def test_healthy_model_passes_everything_and_is_promoted(
    healthy: Any, data: Data, probes: ProbeSet
) -> None:
    """A good model clears the R2 threshold and every regression test by a wide margin."""
    verdict = _judge(healthy, None, data, probes)
    assert verdict.promote, verdict.reasons
    assert verdict.reasons == ()
    assert verdict.champion is None
    assert verdict.metric == "r2"
    assert verdict.candidate["r2"] > 0.9
    assert set(verdict.candidate) == {"r2", "mae", "rmse"}
    assert tuple(t.name for t in verdict.tests) == REGRESSION_TESTS
    shares = {t.name: t.value for t in verdict.tests}
    assert shares["golden"] >= 0.9
    assert shares["directional"] >= 0.85
    assert shares["non_finite"] == 0
    assert not verdict.test_failure


def test_equal_to_the_champion_is_not_worse(healthy: Any, data: Data, probes: ProbeSet) -> None:
    """A candidate as good as the champion on the same holdout passes the comparison."""
    verdict = _judge(healthy, healthy, data, probes)
    assert verdict.promote, verdict.reasons
    assert verdict.champion == verdict.candidate


def test_worse_than_the_champion_is_refused_naming_both_r2(
    healthy: Any, undertrained: Any, data: Data, probes: ProbeSet
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


def test_mae_gate_compares_lower_as_better(
    healthy: Any, undertrained: Any, data: Data, probes: ProbeSet
) -> None:
    """Judged by MAE, the weaker model's higher MAE loses to the champion and the healthy one's
    lower MAE beats the weaker champion."""
    refused = _judge(undertrained, healthy, data, probes, metric="mae")
    assert refused.metric == "mae"
    (reason,) = refused.reasons
    assert re.fullmatch(
        r"candidate MAE 0\.\d{3} is worse than the champion's 0\.\d{3} on the same holdout of"
        r" 1,000 rows \(tolerance 0; lower is better\)",
        reason,
    )
    promoted = _judge(healthy, undertrained, data, probes, metric="mae")
    assert promoted.promote, promoted.reasons


def test_mae_ceiling_from_gate_threshold(healthy: Any, data: Data, probes: ProbeSet) -> None:
    """gate.threshold is a ceiling for MAE: a candidate above it is refused as a metric failure."""
    verdict = _judge(healthy, None, data, probes, GateConfig(threshold=0.05), metric="mae")
    (reason,) = verdict.reasons
    assert re.fullmatch(r"candidate MAE 0\.\d{3} is above the gate's maximum 0\.05", reason)
    assert not verdict.test_failure


def test_champion_tolerance_lets_a_slightly_worse_candidate_through(
    healthy: Any, undertrained: Any, data: Data, probes: ProbeSet
) -> None:
    """With a tolerance wider than the gap, the weaker candidate is promoted."""
    verdict = _judge(undertrained, healthy, data, probes, GateConfig(champion_tolerance=0.2))
    assert verdict.promote, verdict.reasons


def test_below_the_absolute_threshold_is_refused(
    healthy: Any, data: Data, probes: ProbeSet
) -> None:
    """A candidate under min_r2 is refused as a metric failure, not a test failure."""
    verdict = _judge(healthy, None, data, probes, GateConfig(min_r2=0.99))
    assert not verdict.promote
    (reason,) = verdict.reasons
    assert re.fullmatch(r"candidate R2 0\.\d{3} is below the gate's minimum 0\.99", reason)
    assert verdict.failed_tests == ()
    assert not verdict.test_failure


def test_unmeasurable_champion_leaves_the_threshold_only(
    healthy: Any, data: Data, probes: ProbeSet
) -> None:
    """A champion whose predict raises does not block a good candidate; the verdict notes it."""
    verdict = _judge(healthy, Explodes(), data, probes)
    assert verdict.promote, verdict.reasons
    assert verdict.champion is not None
    assert np.isnan(verdict.champion["r2"])
    (note,) = verdict.notes
    assert "champion could not be measured" in note
    assert "RuntimeError: boom" in note


def test_details_are_strict_json(healthy: Any, data: Data, probes: ProbeSet) -> None:
    """to_details survives json.dumps without NaN, even for a model that predicts only NaN."""
    verdict = _judge(AllNaN(), healthy, data, probes)
    details = json.loads(json.dumps(verdict.to_details(), allow_nan=False))
    assert details["promote"] is False
    assert details["metric"] == "r2"
    assert details["candidate"] == {"r2": None, "mae": None, "rmse": None}
    assert details["champion"]["r2"] == pytest.approx(verdict.champion["r2"])  # type: ignore[index]
    assert "non_finite" in details["failed_tests"]
    assert [t["name"] for t in details["tests"]] == list(REGRESSION_TESTS)


# --- the model tests -------------------------------------------------------------------------


def test_nan_on_missing_features_fails_non_finite(
    healthy: Any, data: Data, probes: ProbeSet
) -> None:
    """NaN out for rows with a gap is caught on the edge rows and on the holdout, never a crash."""
    x_hold = np.array(data.x_hold, copy=True)
    x_hold[:5, 2] = np.nan
    verdict = judge(NaNWhereMissing(healthy), healthy, x_hold, data.y_hold, probes, GATE, SCHEMA)
    assert not verdict.promote
    assert verdict.failed_tests == ("non_finite",)
    detail = {t.name: t for t in verdict.tests}["non_finite"].detail
    assert "of 27 edge rows" in detail
    assert "5 of 1,000 holdout rows" in detail
    assert any("cannot be measured: model produced non-finite" in r for r in verdict.reasons)
    assert any(r.startswith("non_finite test failed: ") for r in verdict.reasons)


@pytest.mark.parametrize(
    ("broken", "says"),
    [(Explodes(), "RuntimeError: boom"), (WrongShape(), "predict returned shape (")],
    ids=["raises", "wrong-shape"],
)
def test_broken_predict_fails_every_test_without_crashing(
    broken: Predictor, says: str, healthy: Any, data: Data, probes: ProbeSet
) -> None:
    """An exception or a wrong shape from predict fails each test with the error in its detail."""
    verdict = _judge(broken, healthy, data, probes)
    assert not verdict.promote
    assert verdict.failed_tests == REGRESSION_TESTS
    assert all(says in t.detail for t in verdict.tests)
    assert np.isnan(verdict.candidate["r2"])
    assert len(verdict.reasons) == 1 + len(REGRESSION_TESTS)


def test_income_read_upside_down_fails_directional(healthy: Any, probes: ProbeSet) -> None:
    """A model whose prediction falls as MedInc rises fails the default's directional check."""
    results = {t.name: t for t in model_tests(IncomeMirrored(healthy), probes, GATE, SCHEMA)}
    assert not results["directional"].passed
    assert results["directional"].value < 0.2
    assert results["directional"].detail.startswith("raising MedInc by 2 raised the prediction")


def test_declared_checks_increase_and_decrease(healthy: Any, data: Data) -> None:
    """A declared decrease holds where the value falls (going north) and fails where it rises
    (income); each check is reported in the detail."""
    checks = [
        DirectionalCheck(feature="Latitude", step=3.0, expected="decrease", share=0.7),
        DirectionalCheck(feature="MedInc", step=2.0, expected="decrease"),
    ]
    probes = ProbeSet.from_frame(data.train, SCHEMA, GATE, checks)
    (result,) = [t for t in model_tests(healthy, probes, GATE, SCHEMA) if t.name == "directional"]
    assert not result.passed
    first, second = result.detail.split("; ")
    assert first.startswith("raising Latitude by 3 lowered the prediction for")
    assert second.startswith("raising MedInc by 2 lowered the prediction for")
    assert result.value < 0.2  # the lowest share: MedInc's
    only_latitude = ProbeSet.from_frame(data.train, SCHEMA, GATE, checks[:1])
    tests = {t.name: t for t in model_tests(healthy, only_latitude, GATE, SCHEMA)}
    assert tests["directional"].passed, tests["directional"].detail


def test_a_check_on_an_unknown_feature_fails_with_the_reason(healthy: Any, data: Data) -> None:
    """A directional check naming no feature of the model fails, saying so, and nothing crashes."""
    checks = [DirectionalCheck(feature="Rooms", step=1.0)]
    probes = ProbeSet.from_frame(data.train, SCHEMA, GATE, checks)
    (result,) = [t for t in model_tests(healthy, probes, GATE, SCHEMA) if t.name == "directional"]
    assert not result.passed
    assert result.detail == (
        "check on Rooms cannot run: 'Rooms' is not a feature of model 'california-housing'"
    )


def test_no_declared_checks_means_no_directional_test(healthy: Any, data: Data) -> None:
    """With no directional checks (a model of your own without any), the test is not run."""
    probes = ProbeSet.from_frame(data.train, SCHEMA, GATE, [])
    names = [t.name for t in model_tests(healthy, probes, GATE, SCHEMA)]
    assert names == ["golden", "non_finite", "latency"]


def test_poisoned_labels_fail_golden(healthy: Any, poisoned_labels: Any, probes: ProbeSet) -> None:
    """Trained on shuffled labels, the model misses the trusted labels; the healthy one does not."""
    good = {t.name: t for t in model_tests(healthy, probes, GATE, SCHEMA)}["golden"]
    bad = {t.name: t for t in model_tests(poisoned_labels, probes, GATE, SCHEMA)}["golden"]
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
    *, step_s: float, gate: GateConfig, passed: bool, says: str, healthy: Any, probes: ProbeSet
) -> None:
    """The latency test reads only the injected timer and compares both medians to their budgets."""
    timer = SteppingTimer(step_s)
    results = {t.name: t for t in model_tests(healthy, probes, gate, SCHEMA, timer=timer)}
    assert results["latency"].passed is passed
    assert says in results["latency"].detail
    assert results["latency"].value == pytest.approx(step_s * 1000)


# --- the probe set ---------------------------------------------------------------------------


def test_probe_set_is_deterministic_and_trusted(data: Data) -> None:
    """The same seed draws the same rows; the rows are clean, in range and read-only."""
    base = data.train
    first = ProbeSet.from_frame(base, SCHEMA, GATE, CHECKS, 0)
    again = ProbeSet.from_frame(base, SCHEMA, GATE, CHECKS, 0)
    other = ProbeSet.from_frame(base, SCHEMA, GATE, CHECKS, 1)
    for name in ("golden_x", "golden_y", "edge_x"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
        assert not getattr(first, name).flags.writeable
    np.testing.assert_array_equal(first.direction_x[0], again.direction_x[0])
    assert not first.direction_x[0].flags.writeable
    assert not np.array_equal(first.golden_x, other.golden_x)
    assert first.golden_x.shape == (200, 8)
    (direction,) = first.direction_x
    assert direction.shape == (200, 8)
    assert first.direction_problems == (None,)
    assert first.edge_x.shape == (27, 8)
    assert np.isfinite(first.golden_x).all()
    assert np.isfinite(first.golden_y).all()
    assert (direction[:, 0] + CHECKS[0].step <= base["MedInc"].max()).all()
    assert np.isnan(first.edge_x).all(axis=1).sum() == 1
    assert np.nanmax(first.edge_x, axis=0) == pytest.approx(base[list(SCHEMA.features)].max())


def test_probe_set_refuses_base_data_without_the_target(data: Data) -> None:
    """Golden rows need trusted labels: a base without the target column is a DataError."""
    with pytest.raises(DataError, match="MedHouseVal"):
        ProbeSet.from_frame(data.train.drop(columns=[SCHEMA.target]), SCHEMA, GATE, CHECKS)


def test_a_step_beyond_the_data_fails_its_check_not_the_probe_set(data: Data) -> None:
    """A check whose step leaves the data's range for every row is reported, not raised."""
    checks = [DirectionalCheck(feature="MedInc", step=100.0)]
    probes = ProbeSet.from_frame(data.train, SCHEMA, GATE, checks)
    (problem,) = probes.direction_problems
    assert problem is not None
    assert problem.startswith("no base row can have MedInc raised by 100 and stay within 0.5")
    assert probes.direction_x[0].shape == (0, 8)
