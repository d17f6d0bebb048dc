"""Training: a scikit-learn pipeline on the eight standard features, a fixed split, holdout metrics.

The pipeline imputes missing values itself (median), so a model can be fed data with gaps; the
regressor is a HistGradientBoostingRegressor. The split is a deterministic function of the seed.

Besides the model, training computes what the drift monitor needs so that no check recomputes it:
each feature's importance to the model (permutation importance on the holdout, normalised to sum
to 1) and the reference summary (quantile bins, frequencies, sorted sample; ``model.drift``), stored
with the version. The reference is the current window the retrain answers (the rows the drift
monitor compared), else the training rows of the recent labelled data when there are enough of
them: after a retrain on drifted data the next question is whether the data moved since *that*;
otherwise all training rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from selfheal_daemon.config import GateConfig, TrainingConfig
from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.errors import DataError
from selfheal_daemon.model.drift import DRIFT_FILE
from selfheal_daemon.model.features import fingerprint
from selfheal_daemon.model.gate import check_threshold
from selfheal_daemon.model.metrics import evaluate
from selfheal_daemon.model.registry import ModelRegistry

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    """A fitted model with its holdout metrics and what the registry stores beside it."""

    model: Pipeline
    metrics: dict[str, float]
    reference: np.ndarray
    data_fingerprint: str
    data_rows: int
    train_rows: int
    holdout_rows: int
    seconds: float
    importance: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def build_pipeline(cfg: TrainingConfig) -> Pipeline:
    """The model: median imputation, then gradient-boosted trees with early stopping off."""
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            (
                "regressor",
                HistGradientBoostingRegressor(
                    max_iter=cfg.max_iter,
                    learning_rate=cfg.learning_rate,
                    early_stopping=False,
                    random_state=cfg.seed,
                ),
            ),
        ]
    )


def split(
    frame: pd.DataFrame, cfg: TrainingConfig, holdout: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    """Deterministic train/holdout split of FEATURES and TARGET as float64 arrays, then the
    positions in ``frame`` of the training and the holdout rows. ``holdout`` (a boolean mask over
    ``frame``'s rows) chooses the holdout instead of the seeded shuffle."""
    labelled = frame[frame[TARGET].notna()]
    if len(labelled) < 50:
        raise DataError(f"too little labelled data to train on: {len(labelled)} rows (need 50)")
    x = np.array(labelled[list(FEATURES)].to_numpy(dtype="float64"), copy=True)
    # An infinity is nothing a model can learn from: treat it as missing; the imputer fills it.
    x[~np.isfinite(x)] = np.nan
    y = labelled[TARGET].to_numpy(dtype="float64")
    positions = np.flatnonzero(frame[TARGET].notna().to_numpy())
    if holdout is not None:
        test = np.asarray(holdout, dtype=bool)[positions]
        if not test.any() or test.all():
            raise DataError("the holdout must hold some, but not all, labelled rows")
        return x[~test], x[test], y[~test], y[test], positions[~test], positions[test]
    parts: list[np.ndarray] = train_test_split(
        x, y, positions, test_size=cfg.test_size, random_state=cfg.seed, shuffle=True
    )
    return tuple(parts)


def feature_importance(model: Any, x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Permutation importance of each feature on (x, y), clipped at 0 and summing to 1."""
    if len(x) > 5000:  # enough to rank eight features; keeps a retrain's extra cost bounded
        pick = np.random.default_rng(seed).choice(len(x), size=5000, replace=False)
        x, y = x[pick], y[pick]
    found = permutation_importance(model, x, y, n_repeats=3, random_state=seed, scoring="r2")
    weights = np.clip(np.asarray(found.importances_mean, dtype="float64"), 0.0, None)
    total = float(weights.sum())
    if not np.isfinite(total) or total <= 0:
        return np.full(len(FEATURES), 1.0 / len(FEATURES))
    return np.asarray(weights / total)


def train(
    frame: pd.DataFrame,
    cfg: TrainingConfig,
    progress: Progress = lambda _m: None,
    *,
    recent_from: int | None = None,
    min_recent_reference: int = 500,
    window: np.ndarray | None = None,
    holdout: np.ndarray | None = None,
) -> TrainResult:
    """Fit the pipeline on the training part of ``frame`` and measure it on the holdout.

    ``holdout`` (a boolean mask over the rows) fixes the holdout, else the seeded split does.
    The drift reference is drawn from ``window`` (the monitor's current window, the data the
    retrain answers) when it has at least ``min_recent_reference`` rows; else from the rows of
    ``frame`` from position ``recent_from`` on (the recent labelled data) when enough of them are
    training rows; else from all training rows.
    """
    started = time.monotonic()
    x_train, x_test, y_train, y_test, at_train, _at_test = split(frame, cfg, holdout)
    progress(f"fitting on {len(x_train):,} rows ({cfg.max_iter} boosting iterations)")
    model = build_pipeline(cfg)
    model.fit(x_train, y_train)
    progress(f"evaluating on {len(x_test):,} holdout rows")
    metrics = evaluate(model, x_test, y_test)
    progress("measuring each feature's importance (permutation, on the holdout)")
    importance = feature_importance(model, x_test, y_test, cfg.seed)
    pool = x_train
    if recent_from is not None:
        recent = x_train[at_train >= recent_from]
        if len(recent) >= min_recent_reference:
            pool = recent
    if window is not None and len(window) >= min_recent_reference:
        pool = np.asarray(window, dtype="float64")
    rng = np.random.default_rng(cfg.seed)
    take = min(cfg.reference_rows, len(pool))
    reference = pool[np.sort(rng.choice(len(pool), size=take, replace=False))]
    return TrainResult(
        model=model,
        metrics=metrics,
        reference=reference,
        data_fingerprint=fingerprint(frame),
        data_rows=len(frame),
        train_rows=len(x_train),
        holdout_rows=len(x_test),
        seconds=time.monotonic() - started,
        importance=importance,
        x_test=x_test,
        y_test=y_test,
    )


def train_and_register(
    registry: ModelRegistry,
    frame: pd.DataFrame,
    cfg: TrainingConfig,
    gate: GateConfig,
    *,
    origin: str,
    parent: str | None,
    progress: Progress = lambda _m: None,
    bins: int = 10,
) -> tuple[str, TrainResult]:
    """Train, check the gate, and register the model as a new version (aliases untouched)."""
    result = train(frame, cfg, progress)
    check_threshold(result.metrics, gate)
    progress("registering the model")
    return register_result(registry, result, cfg, origin=origin, parent=parent, bins=bins), result


def register_result(
    registry: ModelRegistry,
    result: TrainResult,
    cfg: TrainingConfig,
    *,
    origin: str,
    parent: str | None,
    bins: int = 10,
    extra: dict[str, Any] | None = None,
) -> str:
    """Register a trained model with its drift summary; returns the new version's name."""
    from selfheal_daemon.model.drift import ReferenceSummary

    summary = ReferenceSummary.build(
        result.reference, FEATURES, bins=bins, importance=result.importance
    )
    return registry.register(
        result.model,
        metrics=result.metrics,
        reference=result.reference,
        data_fingerprint=result.data_fingerprint,
        data_rows=result.data_rows,
        parent=parent,
        origin=origin,
        extra={
            "features": list(FEATURES),
            "target": TARGET,
            "train_rows": result.train_rows,
            "holdout_rows": result.holdout_rows,
            "train_seconds": round(result.seconds, 3),
            "params": {
                "max_iter": cfg.max_iter,
                "learning_rate": cfg.learning_rate,
                "seed": cfg.seed,
            },
            "importance": {
                f: round(float(w), 4) for f, w in zip(FEATURES, result.importance, strict=True)
            },
            **(extra or {}),
        },
        artifacts={DRIFT_FILE: summary.save},
    )
