"""Training: a scikit-learn pipeline on the eight standard features, a fixed split, holdout metrics.

The pipeline imputes missing values itself (median), so a model can be fed data with gaps; the
regressor is a HistGradientBoostingRegressor. The split is a deterministic function of the seed.
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
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from selfheal_daemon.config import GateConfig, TrainingConfig
from selfheal_daemon.errors import DataError, TrainingError
from selfheal_daemon.features import FEATURES, TARGET, fingerprint
from selfheal_daemon.registry import ModelRegistry

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


def evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """R2, MAE and RMSE of ``model`` on (x, y); MAE and RMSE are in the target's unit ($100,000)."""
    pred = model.predict(x)
    if not np.all(np.isfinite(pred)):
        raise TrainingError("model produced non-finite predictions on the holdout")
    return {
        "r2": float(r2_score(y, pred)),
        "mae": float(mean_absolute_error(y, pred)),
        "rmse": float(np.sqrt(mean_squared_error(y, pred))),
    }


def split(frame: pd.DataFrame, cfg: TrainingConfig) -> tuple[np.ndarray, ...]:
    """Deterministic train/holdout split of FEATURES and TARGET as float64 arrays."""
    labelled = frame[frame[TARGET].notna()]
    if len(labelled) < 50:
        raise DataError(f"too little labelled data to train on: {len(labelled)} rows (need 50)")
    x = np.array(labelled[list(FEATURES)].to_numpy(dtype="float64"), copy=True)
    # An infinity is nothing a model can learn from: treat it as missing; the imputer fills it.
    x[~np.isfinite(x)] = np.nan
    y = labelled[TARGET].to_numpy(dtype="float64")
    parts: list[np.ndarray] = train_test_split(
        x, y, test_size=cfg.test_size, random_state=cfg.seed, shuffle=True
    )
    return tuple(parts)


def train(
    frame: pd.DataFrame, cfg: TrainingConfig, progress: Progress = lambda _m: None
) -> TrainResult:
    """Fit the pipeline on the training part of ``frame`` and measure it on the holdout."""
    started = time.monotonic()
    x_train, x_test, y_train, y_test = split(frame, cfg)
    progress(f"fitting on {len(x_train):,} rows ({cfg.max_iter} boosting iterations)")
    model = build_pipeline(cfg)
    model.fit(x_train, y_train)
    progress(f"evaluating on {len(x_test):,} holdout rows")
    metrics = evaluate(model, x_test, y_test)
    rng = np.random.default_rng(cfg.seed)
    take = min(cfg.reference_rows, len(x_train))
    reference = x_train[np.sort(rng.choice(len(x_train), size=take, replace=False))]
    return TrainResult(
        model=model,
        metrics=metrics,
        reference=reference,
        data_fingerprint=fingerprint(frame),
        data_rows=len(frame),
        train_rows=len(x_train),
        holdout_rows=len(x_test),
        seconds=time.monotonic() - started,
    )


def check_gate(metrics: dict[str, float], gate: GateConfig) -> None:
    """Raise TrainingError unless the holdout R2 clears the absolute threshold."""
    if metrics["r2"] < gate.min_r2:
        raise TrainingError(
            f"model R2 {metrics['r2']:.3f} is below the gate's minimum {gate.min_r2:.2f}"
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
) -> tuple[str, TrainResult]:
    """Train, check the gate, and register the model as a new version (aliases untouched)."""
    result = train(frame, cfg, progress)
    check_gate(result.metrics, gate)
    progress("registering the model")
    version = registry.register(
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
        },
    )
    return version, result
