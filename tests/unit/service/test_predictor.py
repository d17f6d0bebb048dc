"""The model's own predictor: a classifier whose class is its highest probability is asked once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline

from service.predictor import ModelPredictor, predicts_argmax
from tests.unit.service.mixed import fit_mixed, mixed_rows, mixed_schema


class Counted:
    """``model`` with its predict and predict_proba calls counted (everything else passed on)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def predict(self, x: Any) -> Any:
        self.calls.append("predict")
        return self.model.predict(x)

    def predict_proba(self, x: Any) -> Any:
        self.calls.append("predict_proba")
        return self.model.predict_proba(x)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_a_gradient_boosting_pipeline_is_asked_once_and_answers_as_predict_would(task: str):
    mixed = fit_mixed(task, rows=800, max_iter=15)
    predictor = ModelPredictor(mixed.model, mixed.schema)
    assert predictor.one_pass
    counted = Counted(mixed.model)
    predictor.model = counted
    answer = predictor.answer(mixed.rows)
    assert counted.calls == ["predict_proba"]
    assert answer.proba is not None
    assert answer.values.tolist() == mixed.schema.predict(mixed.model, mixed.rows).tolist()
    np.testing.assert_array_equal(answer.proba, mixed.schema.predict_proba(mixed.model, mixed.rows))


class Cautious(ClassifierMixin, BaseEstimator):
    """A classifier whose predict is not its argmax: 'yes' only when sure (p >= 0.9)."""

    def fit(self, x: Any, y: Any) -> Cautious:
        self.classes_ = np.array(["no", "yes"], dtype=object)
        return self

    def predict_proba(self, x: Any) -> np.ndarray:
        p = np.full(len(x), 0.6)
        return np.column_stack([1 - p, p])

    def predict(self, x: Any) -> np.ndarray:
        return np.where(self.predict_proba(x)[:, 1] >= 0.9, "yes", "no").astype(object)


def test_any_other_classifier_is_asked_for_its_class_and_its_probabilities():
    schema, rows = mixed_schema("binary"), mixed_rows(5)
    cautious = Pipeline([("model", Cautious())]).fit(schema.model_input(rows), None)
    assert not predicts_argmax(cautious)
    answer = ModelPredictor(cautious, schema).answer(rows)
    # argmax would say "yes" (0.6); the model's own predict says "no"
    assert answer.values.tolist() == [schema.classes.index("no")] * 5
    assert answer.proba is not None
    assert answer.proba[:, schema.classes.index("yes")].tolist() == [0.6] * 5


def test_a_regression_is_never_one_pass():
    mixed = fit_mixed("regression", rows=200, max_iter=10)
    assert not ModelPredictor(mixed.model, mixed.schema).one_pass
