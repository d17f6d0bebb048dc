"""The flattened-trees fast path: equal to the model's own answers, or not used at all."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from selfheal_daemon.model.schema import UNSEEN, Schema
from service.compiled import (
    MIXED_BATCH_ROWS,
    SMALL_BATCH_ROWS,
    FastPredictor,
    accelerate,
    check_rows,
    flatten,
)
from service.predictor import ModelPredictor
from tests.unit.service.conftest import Trained, predict_rows
from tests.unit.service.mixed import COLORS, SEEN_COLORS, Mixed, fit_mixed, mixed_rows


@pytest.fixture(scope="module", params=["regression", "binary", "multiclass"])
def mixed(request: pytest.FixtureRequest) -> Mixed:
    """The trainer's pipeline of a mixed schema, fitted for each task."""
    return fit_mixed(request.param)


def random_rows(n: int, seed: int) -> np.ndarray:
    """Rows of the mixed schema with unseen colors and sizes, colors training never drew,
    missing colors and ages."""
    rng = np.random.default_rng(seed)
    x = mixed_rows(n, seed=seed + 100)
    x[rng.random(n) < 0.15, 0] = UNSEEN
    x[rng.random(n) < 0.1, 0] = rng.integers(SEEN_COLORS, len(COLORS))  # known, never trained
    x[rng.random(n) < 0.1, 0] = np.nan
    x[rng.random(n) < 0.1, 3] = UNSEEN
    x[rng.random(n) < 0.2, 1] = np.nan
    return x


# ----- the California pipeline (SimpleImputer, regressor) ---------------------------------------


@pytest.mark.parametrize("size", [1, 2, 7, 16, SMALL_BATCH_ROWS])
def test_flattened_trees_equal_predict_bit_for_bit(trained: Trained, size: int) -> None:
    """For batches of every small size, with and without missing values, the answers are the
    very same floats as the pipeline's own predict."""
    flat = flatten(trained.model, trained.schema)
    assert flat is not None
    rng = np.random.default_rng(size)
    for _ in range(20):
        rows = trained.features[rng.choice(len(trained.features), size=size, replace=False)].copy()
        rows[rng.random(rows.shape) < 0.1] = np.nan
        np.testing.assert_array_equal(flat.answer(rows).values, predict_rows(trained, rows))


def test_accelerate_uses_the_fast_path_for_the_trainers_model(trained: Trained) -> None:
    """The trainer's pipeline is accepted after the check on its reference rows."""
    predictor, note = accelerate(trained.model, trained.schema, trained.features[:500])
    assert isinstance(predictor, FastPredictor)
    assert note == f"flattened trees for up to {SMALL_BATCH_ROWS} rows"


def test_a_model_fitted_on_a_bare_array_is_flattened_too(trained: Trained) -> None:
    """A version from before schemas (fitted on a plain array) gets the fast path, equal to its
    own predict on that array."""
    legacy = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("model", HistGradientBoostingRegressor(max_iter=20, random_state=0)),
        ]
    )
    with threadpool_limits(limits=1, user_api="openmp"):
        legacy.fit(trained.features, trained.target)
    schema = Schema.california()
    predictor, _ = accelerate(legacy, schema, trained.features[:200])
    assert isinstance(predictor, FastPredictor)
    rows = trained.features[:9]
    np.testing.assert_array_equal(predictor.answer(rows).values, legacy.predict(rows))


def test_other_models_keep_their_own_predict(trained: Trained) -> None:
    """A model of another shape is served by its own predict, and the reason is given."""
    rows = np.nan_to_num(trained.features[:200])  # a linear model takes no missing values
    linear = LinearRegression().fit(trained.schema.model_input(rows), rows[:, 0])
    predictor, note = accelerate(linear, trained.schema, rows[:50])
    assert isinstance(predictor, ModelPredictor)
    assert "not a model shape" in note


def test_any_disagreement_falls_back_to_predict(trained: Trained) -> None:
    """A model whose predict differs from its trees by more than the tolerance is not
    accelerated."""

    class Nudged:
        steps = trained.model.steps
        feature_names_in_ = trained.model.feature_names_in_

        def predict(self, x: Any) -> np.ndarray:
            return np.asarray(trained.model.predict(x)) * (1 + 1e-6)

    predictor, note = accelerate(Nudged(), trained.schema, trained.features[:100])
    assert isinstance(predictor, ModelPredictor)
    assert "disagreed" in note


def test_large_batches_go_to_the_models_own_predict(trained: Trained) -> None:
    """Past SMALL_BATCH_ROWS the model's predict does the work (it is faster there)."""
    calls: list[int] = []

    class Spy:
        steps = trained.model.steps
        feature_names_in_ = trained.model.feature_names_in_

        def predict(self, x: Any) -> np.ndarray:
            calls.append(len(x))
            return np.asarray(trained.model.predict(x))

    predictor, _ = accelerate(Spy(), trained.schema, trained.features[:64])
    calls.clear()
    rows = trained.features[: SMALL_BATCH_ROWS + 1]
    np.testing.assert_array_equal(predictor.answer(rows).values, predict_rows(trained, rows))
    assert calls == [SMALL_BATCH_ROWS + 1]
    predictor.answer(rows[:SMALL_BATCH_ROWS])
    assert calls == [SMALL_BATCH_ROWS + 1]


# ----- the mixed pipeline (ColumnTransformer, native categorical splits) -----------------------


@pytest.mark.parametrize("size", [1, 5, 32, MIXED_BATCH_ROWS])
def test_mixed_trees_equal_the_model_on_random_rows(mixed: Mixed, size: int) -> None:
    """For a regressor, a binary and a multiclass classifier with categorical columns, the fast
    path answers random rows (unseen, never-trained and missing categories, missing numbers)
    with the model's own values or classes, and its probabilities."""
    flat = flatten(mixed.model, mixed.schema)
    assert flat is not None
    assert flat.cat_feature.size > 0  # it really has categorical splits to get right
    real = ModelPredictor(mixed.model, mixed.schema)
    for seed in range(5):
        rows = random_rows(size, seed=size * 10 + seed)
        fast, own = flat.answer(rows), real.answer(rows)
        if mixed.schema.is_classifier:
            np.testing.assert_array_equal(fast.values, own.values)
            assert fast.proba is not None
            assert own.proba is not None
            np.testing.assert_allclose(fast.proba, own.proba, rtol=1e-12, atol=1e-15)
        else:
            np.testing.assert_allclose(fast.values, own.values, rtol=1e-12, atol=1e-15)


def test_every_category_and_every_gap_is_checked_at_load(mixed: Mixed) -> None:
    """The load-time check covers each category of each categorical column, unseen cells and
    missing cells, and the fast path passes it."""
    sample = check_rows(mixed.schema, mixed.rows[:50])
    assert set(np.unique(sample[:, 0][np.isfinite(sample[:, 0])])) == {UNSEEN, *range(12)}
    assert np.isnan(sample[:, 0]).any()
    assert np.isnan(sample[:, 1]).any()
    predictor, note = accelerate(mixed.model, mixed.schema, mixed.rows[:200])
    assert isinstance(predictor, FastPredictor), note
    assert note == f"flattened trees for up to {MIXED_BATCH_ROWS} rows"


def test_unseen_missing_and_never_trained_categories_go_where_the_model_sends_them(
    mixed: Mixed,
) -> None:
    """A row whose color is unseen, missing, or known but never trained on is answered as the
    model answers it, row for row."""
    base = np.repeat(mixed.rows[:1], 4, axis=0)
    base[:, 0] = [UNSEEN, np.nan, 10.0, 11.0]
    flat = flatten(mixed.model, mixed.schema)
    assert flat is not None
    fast, own = flat.answer(base), ModelPredictor(mixed.model, mixed.schema).answer(base)
    np.testing.assert_allclose(fast.values, own.values, rtol=1e-12)
    if own.proba is not None:
        assert fast.proba is not None
        np.testing.assert_allclose(fast.proba, own.proba, rtol=1e-12)


@pytest.fixture(scope="module", params=["binary", "multiclass"])
def classifier(request: pytest.FixtureRequest) -> Mixed:
    """The trainer's pipeline of a mixed schema, fitted for each classification task."""
    return fit_mixed(request.param)


def test_classes_come_in_the_schemas_order(classifier: Mixed) -> None:
    """A classifier's probabilities are in schema.classes order (not the model's sorted
    classes_) and its values index them."""
    mixed = classifier
    flat = flatten(mixed.model, mixed.schema)
    assert flat is not None
    rows = random_rows(20, seed=3)
    answer = flat.answer(rows)
    assert answer.proba is not None
    labels = mixed.model.predict(mixed.schema.model_input(rows))
    assert [mixed.schema.classes[int(i)] for i in answer.values] == list(labels)
    np.testing.assert_allclose(answer.proba.sum(axis=1), 1.0)
    own = mixed.model.predict_proba(mixed.schema.model_input(rows))
    order = [list(mixed.model.classes_).index(c) for c in mixed.schema.classes]
    np.testing.assert_allclose(answer.proba, own[:, order], rtol=1e-12)


def test_an_encoder_that_is_not_the_schemas_falls_back(mixed: Mixed) -> None:
    """When the pipeline's encoder learned other categories than the schema's, its codes are not
    the service's, and the model answers itself."""
    shuffled = Schema.from_dict(
        {
            **mixed.schema.to_dict(),
            "features": [
                {**f, "categories": list(reversed(f["categories"]))} if f["name"] == "size" else f
                for f in mixed.schema.to_dict()["features"]
            ],
        }
    )
    assert flatten(mixed.model, shuffled) is None
    predictor, note = accelerate(mixed.model, shuffled, mixed.rows[:20])
    assert isinstance(predictor, ModelPredictor)
    assert "not a model shape" in note
