"""The flattened-trees fast path: bit-identical to scikit-learn's predict, or not used at all."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from service.compiled import SMALL_BATCH_ROWS, FastModel, accelerate, flatten


@pytest.mark.parametrize("size", [1, 2, 7, 16, SMALL_BATCH_ROWS])
def test_flattened_trees_equal_predict_bit_for_bit(trained: Any, size: int) -> None:
    """For batches of every small size, with and without missing values, the answers are the
    very same floats as the pipeline's own predict."""
    flat = flatten(trained.model)
    assert flat is not None
    rng = np.random.default_rng(size)
    for _ in range(20):
        rows = trained.features[rng.choice(len(trained.features), size=size, replace=False)].copy()
        rows[rng.random(rows.shape) < 0.1] = np.nan
        np.testing.assert_array_equal(flat.predict(rows), trained.model.predict(rows))


def test_accelerate_uses_the_fast_path_for_the_trainers_model(trained: Any) -> None:
    """The trainer's pipeline is accepted after the check on its reference rows."""
    model, note = accelerate(trained.model, trained.features[:500])
    assert isinstance(model, FastModel)
    assert note.startswith("flattened trees")


def test_other_models_keep_their_own_predict(trained: Any) -> None:
    """A model of another shape is served by its own predict, and the reason is given."""
    rows = np.nan_to_num(trained.features[:200])  # a linear model takes no missing values
    linear = LinearRegression().fit(rows, rows[:, 0])
    model, note = accelerate(linear, rows[:50])
    assert model is linear
    assert "not a model shape" in note


def test_any_disagreement_falls_back_to_predict(trained: Any) -> None:
    """A model whose predict differs from its trees by one ulp is not accelerated."""

    class Nudged:
        steps = trained.model.steps

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.nextafter(trained.model.predict(x), np.inf)

    model, note = accelerate(Nudged(), trained.features[:100])
    assert isinstance(model, Nudged)
    assert "disagreed" in note


def test_large_batches_go_to_the_models_own_predict(trained: Any) -> None:
    """Past SMALL_BATCH_ROWS the model's predict does the work (it is faster there)."""
    calls: list[int] = []

    class Spy:
        steps = trained.model.steps

        def predict(self, x: np.ndarray) -> np.ndarray:
            calls.append(len(x))
            return np.asarray(trained.model.predict(x))

    model, _ = accelerate(Spy(), trained.features[:64])
    calls.clear()
    rows = trained.features[: SMALL_BATCH_ROWS + 1]
    np.testing.assert_array_equal(model.predict(rows), trained.model.predict(rows))
    assert calls == [SMALL_BATCH_ROWS + 1]
    model.predict(rows[:SMALL_BATCH_ROWS])
    assert calls == [SMALL_BATCH_ROWS + 1]
