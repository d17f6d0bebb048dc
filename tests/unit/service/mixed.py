"""Models of a mixed schema (numeric, categorical and boolean columns) for the service tests.

``build_reference_pipeline(schema)`` is the trainer's own built-in pipeline of a mixed schema
(``selfheal_daemon.model.training.build_pipeline``): ordinal codes against the schema's
categories (unseen and missing NaN), then HistGradientBoosting with native categorical splits.
``mixed_schema(task)`` is a small schema of every kind; ``mixed_rows`` draws its encoded rows;
``fit_mixed`` fits the reference pipeline on them, as the trainer does (on ``model_input``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from selfheal_daemon.config import TrainingConfig
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.schema import Column, Schema
from selfheal_daemon.model.training import build_pipeline

COLORS = tuple(f"c{i}" for i in range(12))  # c10 and c11 are never drawn: known, never trained
SEEN_COLORS = 10
CLASSES = {"regression": (), "binary": ("no", "yes"), "multiclass": ("low", "mid", "high")}
# (not sorted: the model's classes_ are, so its probabilities must be reordered for the schema)


def build_reference_pipeline(schema: Schema, max_iter: int = 40) -> Pipeline:
    """The trainer's built-in pipeline for a schema with categorical columns (unfitted)."""
    pipeline: Pipeline = build_pipeline(
        TrainingConfig(max_iter=max_iter, learning_rate=0.1, seed=0), schema
    )
    return pipeline


def mixed_schema(task: str = "regression", *, name: str = "shop") -> Schema:
    """Five columns of every kind, in an order that is not categoricals-first."""
    return Schema(
        name=name,
        task=task,  # type: ignore[arg-type]
        target="spend",
        columns=(
            Column("color", "categorical", categories=COLORS, missing=True),
            Column("age", "numeric", low=18.0, high=90.0, missing=True),
            Column("member", "boolean"),
            Column("size", "categorical", categories=("S", "M", "L", "3")),
            Column("visits", "numeric", low=0.0, high=10.0),
        ),
        classes=CLASSES[task],
        metric="r2" if task == "regression" else "balanced_accuracy",
    )


def mixed_rows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` encoded rows of ``mixed_schema``: some ages and colors missing, no unseen ones."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, 5))
    x[:, 0] = rng.integers(0, SEEN_COLORS, n)
    x[rng.random(n) < 0.05, 0] = np.nan
    x[:, 1] = rng.uniform(18, 90, n)
    x[rng.random(n) < 0.1, 1] = np.nan
    x[:, 2] = rng.integers(0, 2, n)
    x[:, 3] = rng.integers(0, 4, n)
    x[:, 4] = rng.uniform(0, 10, n)
    return x


def mixed_target(schema: Schema, x: np.ndarray) -> np.ndarray:
    """A target that depends on every column (class labels as text for a classifier)."""
    score = (
        x[:, 4]
        + np.where(np.isin(x[:, 0], [1, 3, 5, 7]), 3.0, 0.0)
        + np.where(np.isnan(x[:, 0]), -2.0, 0.0)
        + x[:, 3]
        - 2.0 * x[:, 2]
        + np.nan_to_num((x[:, 1] - 50.0) / 20.0, nan=1.5)
    )
    if schema.task == "regression":
        return np.asarray(score, dtype=np.float64)
    if schema.task == "binary":
        return np.asarray(np.where(score > np.median(score), "yes", "no"), dtype=object)
    bins = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    return np.asarray(np.array(["low", "mid", "high"], dtype=object)[bins])


@dataclass(frozen=True)
class Mixed:
    """A fitted reference pipeline, its schema and the encoded rows it was fitted on."""

    schema: Schema
    model: Any
    rows: np.ndarray


def fit_mixed(task: str = "regression", rows: int = 1500, max_iter: int = 40) -> Mixed:
    """The reference pipeline of ``mixed_schema(task)`` fitted on ``rows`` rows."""
    schema = mixed_schema(task)
    x = mixed_rows(rows)
    model = build_reference_pipeline(schema, max_iter=max_iter)
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(schema.model_input(x), mixed_target(schema, x))
    return Mixed(schema=schema, model=model, rows=x)


def register_mixed(registry: ModelRegistry, mixed: Mixed, schema: Schema | None = None) -> str:
    """Register ``mixed`` (with ``schema`` in its meta.json, its own by default)."""
    return registry.register(
        mixed.model,
        metrics={"balanced_accuracy": 0.8} if mixed.schema.is_classifier else {"r2": 0.8},
        reference=mixed.rows[:300],
        data_fingerprint="mixed",
        data_rows=len(mixed.rows),
        parent=None,
        origin="test",
        extra={"schema": (schema or mixed.schema).to_dict()},
    )
