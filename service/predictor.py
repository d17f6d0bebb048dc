"""How the service asks a model for answers: through its schema, on the encoded matrix.

A request's rows reach the model as the float64 matrix of ``service.validation`` (schema feature
order; categories as codes). ``ModelPredictor`` asks the model the way the schema says a model is
asked (``schema.predict(model, x)``, and ``schema.predict_proba(model, x)`` for a classifier: the
model takes ``schema.model_input(x)``, a DataFrame), and answers an ``Answer``:

- ``values``: one float64 per row: the predicted value, or for a classifier the index of the
  predicted class in ``schema.classes`` (NaN when the model answered a class the schema does not
  know);
- ``proba``: for a classifier, ``(rows, len(schema.classes))`` probabilities in that order; None
  for a regression.

A classifier is asked once, not twice, when its predicted class is by its own code the class of
its highest probability (scikit-learn's tree ensembles, trees and logistic regression, alone or as
a pipeline's last step: ``ONE_PASS_CLASSIFIERS``): one ``predict_proba`` call answers both, the
class as ``predict`` would (``classes_`` at the first highest probability). Any other classifier
gets ``predict`` and ``predict_proba``, since its ``predict`` may be more than that argmax (a
threshold, a vote); the pipeline then runs twice.

One exception, for versions registered before models took DataFrames: a scikit-learn model that was
fitted on a bare array (it has ``n_features_in_`` but no ``feature_names_in_``) of an all-numeric
schema is given the matrix itself, which is exactly the array it was trained on (a DataFrame would
make scikit-learn warn about feature names on every call).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

from selfheal_daemon.model.schema import Schema

# Classifiers whose ``predict`` is ``classes_[argmax(predict_proba)]`` in their own code (the exact
# classes: a subclass may predict otherwise).
ONE_PASS_CLASSIFIERS = (
    HistGradientBoostingClassifier,
    GradientBoostingClassifier,
    RandomForestClassifier,
    ExtraTreesClassifier,
    DecisionTreeClassifier,
    ExtraTreeClassifier,
    LogisticRegression,
)


class Answer(NamedTuple):
    """A model's answers for some rows (see the module docstring)."""

    values: np.ndarray  # (rows,) float64: values, or class indices into schema.classes
    proba: np.ndarray | None  # (rows, classes) float64 for a classifier, else None

    def slice(self, start: int, stop: int) -> Answer:
        """The answers of rows ``start`` to ``stop`` (views, no copy)."""
        return Answer(
            self.values[start:stop], None if self.proba is None else self.proba[start:stop]
        )

    @staticmethod
    def join(answers: list[Answer]) -> Answer:
        """Answers of consecutive row blocks as one."""
        if len(answers) == 1:
            return answers[0]
        values = np.concatenate([a.values for a in answers])
        probas = [a.proba for a in answers]
        if any(p is None for p in probas):
            return Answer(values, None)
        return Answer(values, np.concatenate([p for p in probas if p is not None]))


class Predictor(Protocol):
    """Answers encoded rows; what the batcher calls."""

    def answer(self, x: np.ndarray) -> Answer:
        """The answers for the ``(rows, features)`` float64 matrix ``x``."""
        ...


def takes_bare_array(model: Any, schema: Schema) -> bool:
    """True for a model fitted on a plain array of an all-numeric schema (a version registered
    before models took DataFrames): it is given the matrix as it is."""
    return (
        schema.all_numeric
        and hasattr(model, "n_features_in_")
        and not hasattr(model, "feature_names_in_")
    )


def predicts_argmax(model: Any) -> bool:
    """True when ``model`` (or a pipeline's last step) is one of ``ONE_PASS_CLASSIFIERS``."""
    final = model.steps[-1][1] if isinstance(model, Pipeline) and model.steps else model
    return type(final) in ONE_PASS_CLASSIFIERS and hasattr(model, "classes_")


class ModelPredictor:
    """The model itself, asked through its schema (see the module docstring)."""

    def __init__(self, model: Any, schema: Schema) -> None:
        self.model = model
        self.schema = schema
        self.bare = takes_bare_array(model, schema)
        self.one_pass = schema.is_classifier and predicts_argmax(model)

    def answer(self, x: np.ndarray) -> Answer:
        schema, model = self.schema, self.model
        if self.one_pass:
            given = x if self.bare else schema.model_input(x)
            raw = np.asarray(model.predict_proba(given), dtype=np.float64)
            labels = np.asarray(model.classes_)[np.argmax(raw, axis=1)]
            return Answer(schema.encode_target(labels.tolist()), schema.align_proba(model, raw))
        if not self.bare:
            values = schema.predict(model, x)
            proba = schema.predict_proba(model, x) if schema.is_classifier else None
            return Answer(np.asarray(values, dtype=np.float64), proba)
        raw = np.asarray(model.predict(x))
        if not schema.is_classifier:
            return Answer(raw.astype(np.float64).reshape(-1), None)
        values = schema.encode_target(raw.reshape(-1).tolist())
        proba = schema.align_proba(model, np.asarray(model.predict_proba(x), dtype=np.float64))
        return Answer(values, proba)
