"""Training: a deterministic split, honest metrics, and a gate that refuses weak models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.config import GateConfig
from selfheal_daemon.defaults import TARGET
from selfheal_daemon.errors import DataError, TrainingError
from selfheal_daemon.model.gate import check_threshold
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.schema import Schema
from selfheal_daemon.model.training import split, train, train_and_register
from tests.training import FAST_TRAINING


def test_split_is_deterministic(small_frame: pd.DataFrame) -> None:
    """The same seed gives the same split, row for row."""
    a = split(small_frame, FAST_TRAINING)
    b = split(small_frame, FAST_TRAINING)
    for left, right in zip(a, b, strict=True):
        np.testing.assert_array_equal(left, right)
    assert len(a[1]) == pytest.approx(0.2 * len(small_frame), abs=1)


def test_training_is_reproducible_and_measured(small_frame: pd.DataFrame) -> None:
    """Two trainings on the same data and seed give identical metrics, with R2, MAE and RMSE."""
    first = train(small_frame, FAST_TRAINING)
    second = train(small_frame, FAST_TRAINING)
    assert first.metrics == second.metrics
    assert set(first.metrics) == {"r2", "mae", "rmse"}
    assert 0.5 < first.metrics["r2"] < 1
    assert first.reference.shape == (200, 8)


def test_missing_values_are_imputed_inside_the_pipeline(small_frame: pd.DataFrame) -> None:
    """A model trained on data with gaps predicts finite values for rows with gaps."""
    frame = small_frame.copy()
    frame.loc[::7, "AveBedrms"] = np.nan
    result = train(frame, FAST_TRAINING)
    row = np.full((1, 8), np.nan)
    assert np.isfinite(result.schema.predict(result.model, row)).all()


def test_infinite_feature_values_do_not_break_training(small_frame: pd.DataFrame) -> None:
    """Infinities in features are treated as missing rather than failing the fit."""
    frame = small_frame.copy()
    frame.loc[::11, "AveOccup"] = np.inf
    assert np.isfinite(train(frame, FAST_TRAINING).metrics["r2"])


def test_unlabelled_rows_are_not_trained_on(small_frame: pd.DataFrame) -> None:
    """Too few labelled rows is a clear error, not a crash deep in scikit-learn."""
    frame = small_frame.head(60).copy()
    frame.loc[20:, TARGET] = np.nan
    with pytest.raises(DataError, match="too little labelled data"):
        train(frame, FAST_TRAINING)


def test_gate_refuses_a_model_below_the_threshold() -> None:
    """A holdout R2 under min_r2 raises TrainingError naming both numbers."""
    with pytest.raises(TrainingError, match=r"R2 0\.650 is below the gate's minimum 0\.70"):
        check_threshold({"r2": 0.65}, GateConfig(min_r2=0.70), Schema.california())
    check_threshold({"r2": 0.70}, GateConfig(min_r2=0.70), Schema.california())


def test_poisoned_labels_fail_the_gate_and_register_nothing(
    small_frame: pd.DataFrame, registry: ModelRegistry
) -> None:
    """Labels shuffled at random give a model the gate refuses; the registry stays empty."""
    frame = small_frame.copy()
    frame[TARGET] = np.random.default_rng(0).permutation(frame[TARGET].to_numpy())
    with pytest.raises(TrainingError):
        train_and_register(registry, frame, FAST_TRAINING, GateConfig(), origin="t", parent=None)
    assert registry.versions() == []
