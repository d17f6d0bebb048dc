"""A faster predict for small batches of the trainer's model, bit-identical to scikit-learn's.

``HistGradientBoostingRegressor.predict`` walks its trees one Python call per tree: with 300 trees
that is milliseconds per call however few rows it gets, which is what a served request waits for.
``compile_model`` flattens the fitted ``Pipeline(SimpleImputer, HistGradientBoostingRegressor)``
into arrays and evaluates every tree for every row at once, one tree level per numpy step:

- missing values are replaced by the imputer's fitted statistics, as ``SimpleImputer`` does;
- a split sends a row left when ``x <= threshold``, as scikit-learn's predictor does (after the
  imputer the trees never see NaN); a leaf points to itself, so finished rows stay put;
- leaf values are added to the baseline tree by tree in scikit-learn's order (``cumsum`` along the
  trees is sequential), so the sum rounds exactly as ``predict`` does.

It is only used when it reproduces ``model.predict`` bit for bit on the model's own reference
rows (with missing values injected) when the worker loads the model; any other model, or any
difference, falls back to ``model.predict``. Large batches use scikit-learn's predict too: there
its per-tree cost is spread over many rows, and the numpy walk over trees x rows is slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SMALL_BATCH_ROWS = 32  # at most this many rows go through the flattened trees (measured: 3x
# faster than predict at 16 rows, even at 64, slower beyond)


@dataclass(frozen=True)
class FlatTrees:
    """Every tree of the ensemble in one node table; ``roots[t]`` is tree t's first node."""

    impute: np.ndarray  # per-feature value that replaces NaN
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    depth: int
    baseline: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.where(np.isnan(x), self.impute, x)
        n = x.shape[0]
        node = np.repeat(self.roots[:, None], n, axis=1)  # (trees, rows)
        rows = np.arange(n)[None, :]
        for _ in range(self.depth):
            go_left = x[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        stacked = np.vstack([np.full((1, n), self.baseline), self.value[node]])
        return np.asarray(np.cumsum(stacked, axis=0)[-1])


class FastModel:
    """Predicts small batches with the flattened trees and the rest with the model itself."""

    def __init__(self, model: Any, flat: FlatTrees) -> None:
        self.model = model
        self.flat = flat

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] <= SMALL_BATCH_ROWS:
            return self.flat.predict(np.asarray(x, dtype=np.float64))
        return np.asarray(self.model.predict(x))


def flatten(model: Any) -> FlatTrees | None:
    """The model's trees as arrays, or None when it is not the shape this evaluator knows."""
    steps = getattr(model, "steps", None)
    if not steps or len(steps) != 2:
        return None
    imputer, gbm = steps[0][1], steps[1][1]
    if type(imputer).__name__ != "SimpleImputer" or type(gbm).__name__ != (
        "HistGradientBoostingRegressor"
    ):
        return None
    statistics = getattr(imputer, "statistics_", None)
    if (
        statistics is None
        or getattr(imputer, "add_indicator", True)
        or not np.isnan(imputer.missing_values)
        or not np.all(np.isfinite(statistics))
        or getattr(gbm, "n_trees_per_iteration_", 0) != 1
        or type(gbm._loss.link).__name__ != "IdentityLink"
    ):
        return None
    tables = [iteration[0].nodes for iteration in gbm._predictors]
    if any(t["is_categorical"].any() for t in tables):
        return None
    offsets = np.cumsum([0, *(len(t) for t in tables)])
    nodes = np.concatenate(tables)
    own = np.arange(len(nodes), dtype=np.intp)
    shift = np.repeat(offsets[:-1], [len(t) for t in tables])
    leaf = nodes["is_leaf"].astype(bool)
    left = np.where(leaf, own, nodes["left"].astype(np.intp) + shift)
    right = np.where(leaf, own, nodes["right"].astype(np.intp) + shift)
    return FlatTrees(
        impute=np.asarray(statistics, dtype=np.float64),
        feature=np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp),
        threshold=nodes["num_threshold"].astype(np.float64),
        left=left,
        right=right,
        value=nodes["value"].astype(np.float64),
        roots=offsets[:-1].astype(np.intp),
        depth=int(nodes["depth"].max()),
        baseline=float(np.asarray(gbm._baseline_prediction).ravel()[0]),
    )


def accelerate(model: Any, check_rows: np.ndarray) -> tuple[Any, str]:
    """``FastModel`` when its answers equal ``model.predict``'s exactly on ``check_rows`` (and on
    them with missing values injected), else ``model`` unchanged; with a sentence saying which."""
    try:
        flat = flatten(model)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        return model, f"model.predict (flattening failed: {type(exc).__name__})"
    if flat is None:
        return model, "model.predict (not a model shape the fast path knows)"
    rows = np.asarray(check_rows, dtype=np.float64)
    holed = rows.copy()
    holed[np.arange(len(holed)), np.arange(len(holed)) % holed.shape[1]] = np.nan
    # One call each over all rows: both answer every row on its own, whatever else is in the batch.
    for sample in (rows, holed):
        if not np.array_equal(flat.predict(sample), np.asarray(model.predict(sample))):
            return model, "model.predict (the fast path disagreed on the reference rows)"
    return FastModel(model, flat), f"flattened trees for up to {SMALL_BATCH_ROWS} rows"
