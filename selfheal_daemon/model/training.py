"""Training: the built-in pipeline (or the user's own factory) on the schema's features, a fixed
split, holdout metrics per task.

The built-in pipeline handles missing values and categories itself: an all-numeric model imputes
the median and fits gradient-boosted trees (the bundled California model, unchanged); a model with
categorical columns ordinal-encodes them against the schema's categories (an unseen category is
read as missing, never an error) and fits HistGradientBoosting with native categorical splits.
A user's factory (``model.pipeline = "package.module:function"``) gets the schema and returns an
unfitted estimator that takes a DataFrame of the feature columns; a factory that fails to import,
returns no estimator, or yields a model that cannot predict is refused with the reason.

Besides the model, training computes what the drift monitor needs so that no check recomputes it:
each feature's importance to the model (permutation importance on the holdout, normalised to sum
to 1), the reference summary (``model.drift``) and the model's own predictions on the reference.
The reference is the current window the retrain answers (the rows the drift monitor compared),
else the training rows of the recent labelled data when there are enough of them; otherwise all
training rows.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from selfheal_daemon.config import GateConfig, TrainingConfig
from selfheal_daemon.errors import DataError, TrainingError
from selfheal_daemon.model.drift import DRIFT_FILE
from selfheal_daemon.model.features import fingerprint
from selfheal_daemon.model.gate import check_threshold
from selfheal_daemon.model.metrics import evaluate
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.schema import Schema

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    """A fitted model with its holdout metrics and what the registry stores beside it."""

    model: Any
    schema: Schema
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
    reference_predictions: np.ndarray | None = None


def build_pipeline(cfg: TrainingConfig, schema: Schema, factory: str = "") -> Any:
    """The unfitted model for ``schema``: the user's ``factory`` if one is named, else built in.

    Built in, all numeric: median imputation, then gradient-boosted trees (early stopping off).
    With categorical columns: those ordinal-encoded against the schema's categories (unseen and
    missing become NaN), then the trees with native categorical splits on them.
    """
    if factory:
        return _from_factory(factory, schema)
    boost: dict[str, Any] = {
        "max_iter": cfg.max_iter,
        "learning_rate": cfg.learning_rate,
        "early_stopping": False,
        "random_state": cfg.seed,
    }
    estimator = (
        HistGradientBoostingClassifier if schema.is_classifier else HistGradientBoostingRegressor
    )
    step = "classifier" if schema.is_classifier else "regressor"
    if schema.all_numeric:
        return Pipeline([("impute", SimpleImputer(strategy="median")), (step, estimator(**boost))])
    categorical = [c for c in schema.columns if not c.is_numeric]
    numeric = [c.name for c in schema.columns if c.is_numeric]
    encode = ColumnTransformer(
        [
            (
                "categories",
                OrdinalEncoder(
                    categories=[list(c.categories) for c in categorical],
                    handle_unknown="use_encoded_value",
                    unknown_value=np.nan,
                    encoded_missing_value=np.nan,
                    dtype=np.float64,
                ),
                [c.name for c in categorical],
            ),
            ("numbers", "passthrough", numeric),
        ],
        verbose_feature_names_out=False,
    )
    mask = [True] * len(categorical) + [False] * len(numeric)
    return Pipeline([("encode", encode), ("model", estimator(categorical_features=mask, **boost))])


def _from_factory(factory: str, schema: Schema) -> Any:
    """Import ``package.module:function``, call it with the schema, check what it returns."""
    module_name, _, func_name = factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise TrainingError(
            f"model.pipeline {factory!r}: cannot import {module_name}: {exc}"
        ) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise TrainingError(
            f"model.pipeline {factory!r}: {module_name} has no function {func_name}"
        )
    try:
        estimator = func(schema)
    except Exception as exc:
        raise TrainingError(
            f"model.pipeline {factory!r} raised {type(exc).__name__}: {exc}"
        ) from None
    needs = ["fit", "predict", *(["predict_proba"] if schema.is_classifier else [])]
    lacking = [m for m in needs if not callable(getattr(estimator, m, None))]
    if lacking:
        raise TrainingError(
            f"model.pipeline {factory!r} returned {type(estimator).__name__}, not an estimator "
            f"(no {', '.join(lacking)})"
        )
    return estimator


def fit(model: Any, schema: Schema, x: np.ndarray, y: np.ndarray) -> Any:
    """Fit ``model`` on the decoded rows; a classifier learns the class labels themselves."""
    labels: np.ndarray = y
    if schema.is_classifier:
        labels = np.asarray(schema.classes, dtype=object)[y.astype("int64")]
    try:
        model.fit(schema.model_input(x), labels)
    except Exception as exc:
        raise TrainingError(f"the model failed to fit: {type(exc).__name__}: {exc}") from None
    return model


def split(
    frame: pd.DataFrame,
    cfg: TrainingConfig,
    schema: Schema | None = None,
    holdout: np.ndarray | None = None,
) -> tuple[np.ndarray, ...]:
    """Deterministic train/holdout split of the encoded features and target as float64 arrays,
    then the positions in ``frame`` of the training and the holdout rows. ``holdout`` (a boolean
    mask over ``frame``'s rows) chooses the holdout instead of the seeded shuffle. ``schema``
    None is the bundled California model's."""
    schema = schema or Schema.california()
    y_all = schema.encode_target(frame[schema.target].tolist())
    known = np.isfinite(y_all)
    if int(known.sum()) < 50:
        raise DataError(f"too little labelled data to train on: {int(known.sum())} rows (need 50)")
    # An infinity is nothing a model can learn from: encode makes it missing; the model fills it.
    x = schema.encode(frame.loc[known])
    y = y_all[known]
    positions = np.flatnonzero(known)
    if holdout is not None:
        test = np.asarray(holdout, dtype=bool)[positions]
        if not test.any() or test.all():
            raise DataError("the holdout must hold some, but not all, labelled rows")
        return x[~test], x[test], y[~test], y[test], positions[~test], positions[test]
    parts: list[np.ndarray] = train_test_split(
        x, y, positions, test_size=cfg.test_size, random_state=cfg.seed, shuffle=True
    )
    return tuple(parts)


class _OnCodes:
    """A model seen through its schema: predicts encoded rows (what permutation importance
    shuffles), answering values or class indices."""

    def __init__(self, model: Any, schema: Schema) -> None:
        self.model, self.schema = model, schema

    def fit(self, *_args: Any) -> _OnCodes:  # permutation_importance never refits
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.schema.predict(self.model, x)


def _score(estimator: _OnCodes, x: np.ndarray, y: np.ndarray) -> float:
    """R2 for a regression, balanced accuracy for a classifier: defined on any holdout."""
    from sklearn.metrics import balanced_accuracy_score, r2_score

    pred = estimator.predict(x)
    if estimator.schema.is_classifier:
        return float(balanced_accuracy_score(y, np.nan_to_num(pred, nan=-1.0)))
    return float(r2_score(y, pred))


def feature_importance(
    model: Any, schema: Schema, x: np.ndarray, y: np.ndarray, seed: int
) -> np.ndarray:
    """Permutation importance of each feature on (x, y), clipped at 0 and summing to 1."""
    if len(x) > 5000:  # enough to rank the features; keeps a retrain's extra cost bounded
        pick = np.random.default_rng(seed).choice(len(x), size=5000, replace=False)
        x, y = x[pick], y[pick]
    found = permutation_importance(
        _OnCodes(model, schema), x, y, n_repeats=3, random_state=seed, scoring=_score
    )
    weights = np.clip(np.asarray(found.importances_mean, dtype="float64"), 0.0, None)
    total = float(weights.sum())
    n = len(schema.columns)
    if not np.isfinite(total) or total <= 0:
        return np.full(n, 1.0 / n)
    return np.asarray(weights / total)


def train(
    frame: pd.DataFrame,
    cfg: TrainingConfig,
    progress: Progress = lambda _m: None,
    *,
    schema: Schema | None = None,
    factory: str = "",
    recent_from: int | None = None,
    min_recent_reference: int = 500,
    window: np.ndarray | None = None,
    holdout: np.ndarray | None = None,
) -> TrainResult:
    """Fit the pipeline on the training part of ``frame`` and measure it on the holdout
    (``schema`` None: the bundled California model's).

    ``holdout`` (a boolean mask over the rows) fixes the holdout, else the seeded split does.
    The drift reference is drawn from ``window`` (the monitor's current window, the data the
    retrain answers) when it has at least ``min_recent_reference`` rows; else from the rows of
    ``frame`` from position ``recent_from`` on (the recent labelled data) when enough of them are
    training rows; else from all training rows.
    """
    schema = schema or Schema.california()
    started = time.monotonic()
    x_train, x_test, y_train, y_test, at_train, _at_test = split(frame, cfg, schema, holdout)
    model = build_pipeline(cfg, schema, factory)
    how = f"{cfg.max_iter} boosting iterations" if not factory else f"the pipeline of {factory}"
    progress(f"fitting {schema.task} model {schema.name} on {len(x_train):,} rows ({how})")
    fit(model, schema, x_train, y_train)
    progress(f"evaluating on {len(x_test):,} holdout rows")
    try:
        metrics = evaluate(model, schema, x_test, y_test)
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(
            f"the fitted model cannot predict: {type(exc).__name__}: {exc}"
        ) from None
    progress("measuring each feature's importance (permutation, on the holdout)")
    importance = feature_importance(model, schema, x_test, y_test, cfg.seed)
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
        schema=schema,
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
        reference_predictions=schema.predict(model, reference),
    )


def train_and_register(
    registry: ModelRegistry,
    frame: pd.DataFrame,
    cfg: TrainingConfig,
    gate: GateConfig,
    *,
    schema: Schema | None = None,
    factory: str = "",
    origin: str,
    parent: str | None,
    progress: Progress = lambda _m: None,
    bins: int = 10,
) -> tuple[str, TrainResult]:
    """Train, check the gate, and register the model as a new version (aliases untouched).
    ``schema`` None is the bundled California model's."""
    result = train(frame, cfg, progress, schema=schema, factory=factory)
    check_threshold(result.metrics, gate, result.schema)
    progress("registering the model")
    extra = {"pipeline": factory or "built-in"}
    version = register_result(
        registry, result, cfg, origin=origin, parent=parent, bins=bins, extra=extra
    )
    return version, result


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

    schema = result.schema
    summary = ReferenceSummary.build(
        result.reference,
        schema,
        bins=bins,
        importance=result.importance,
        predictions=result.reference_predictions,
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
            "features": list(schema.features),
            "target": schema.target,
            "schema": schema.to_dict(),
            "train_rows": result.train_rows,
            "holdout_rows": result.holdout_rows,
            "train_seconds": round(result.seconds, 3),
            "params": {
                "max_iter": cfg.max_iter,
                "learning_rate": cfg.learning_rate,
                "seed": cfg.seed,
            },
            "importance": {
                f: round(float(w), 4)
                for f, w in zip(schema.features, result.importance, strict=True)
            },
            **(extra or {}),
        },
        artifacts={DRIFT_FILE: summary.save},
    )
