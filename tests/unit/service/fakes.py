"""Hand-written fakes for the model service tests: misbehaving models and a controllable source.

The fake models live in an importable module so the registry can pickle them like real ones. Like
every model they are given ``schema.model_input(x)``, a DataFrame of the schema's features.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from selfheal_daemon.model.registry import LoadedModel
from selfheal_daemon.model.schema import Schema


class ConstantModel:
    """Predicts ``value`` for every row."""

    def __init__(self, value: float = 2.0) -> None:
        self.value = value

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.full(features.shape[0], self.value)


class NanModel:
    """Predicts NaN for every row: a model that must never be served."""

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.full(features.shape[0], np.nan)


class RaisingModel:
    """Raises on every prediction, like a model pickled against an incompatible library."""

    def predict(self, features: np.ndarray) -> np.ndarray:
        raise AttributeError(
            "'HistGradientBoostingRegressor' object has no attribute '_bin_mapper'"
        )


class WrongShapeModel:
    """Returns two numbers per row."""

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.ones((features.shape[0], 2))


class NanAboveModel:
    """Finite on the smoke-test probe, NaN for rows whose first feature exceeds ``threshold``."""

    def __init__(self, threshold: float = 100.0) -> None:
        self.threshold = threshold

    def predict(self, features: Any) -> np.ndarray:
        first = np.asarray(features, dtype=np.float64)[:, 0]
        return np.where(first > self.threshold, np.nan, 1.0)


class BadProbabilityClassifier:
    """Predicts its first class, with probabilities that do not sum to 1."""

    classes_ = np.array(["no", "yes"], dtype=object)

    def predict(self, features: Any) -> np.ndarray:
        return np.full(len(features), "no", dtype=object)

    def predict_proba(self, features: Any) -> np.ndarray:
        return np.full((len(features), 2), 0.9)


class StrangerClassifier:
    """Predicts a class its schema does not know."""

    classes_ = np.array(["no", "yes"], dtype=object)

    def predict(self, features: Any) -> np.ndarray:
        return np.full(len(features), "maybe", dtype=object)

    def predict_proba(self, features: Any) -> np.ndarray:
        return np.full((len(features), 2), 0.5)


def loaded(version: str, model: Any, schema: Schema | None = None) -> LoadedModel:
    """A LoadedModel as the registry would return it, for a model that never touched disk
    (the California schema unless another is given)."""
    return LoadedModel(
        version=version,
        sha256="0" * 64,
        metrics={"r2": 0.5},
        model=model,
        schema=schema or Schema.california(),
    )


class FakeSource:
    """A model source handing out preset models by version (with a schema per version, the
    California one by default); ``load`` may be held on a gate."""

    def __init__(self, models: dict[str, Any], schemas: dict[str, Schema] | None = None) -> None:
        self.models = models
        self.schemas = schemas or {}
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def hold(self) -> threading.Event:
        """Make the next ``load`` calls wait until the returned event is set."""
        self.gate = threading.Event()
        return self.gate

    def load(self, version: str) -> LoadedModel:
        self.entered.set()
        if self.gate is not None and not self.gate.wait(timeout=10):
            raise TimeoutError("test gate was never opened")
        return loaded(version, self.models[version], self.schemas.get(version))
