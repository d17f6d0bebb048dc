"""Hand-written fakes for the model service tests: misbehaving models and a controllable source.

The fake models live in an importable module so the registry can pickle them like real ones.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from selfheal_daemon.model.registry import LoadedModel


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
    """Finite on the smoke-test probe, NaN for rows whose MedInc exceeds ``threshold``."""

    def __init__(self, threshold: float = 100.0) -> None:
        self.threshold = threshold

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.where(features[:, 0] > self.threshold, np.nan, 1.0)


def loaded(version: str, model: Any) -> LoadedModel:
    """A LoadedModel as the registry would return it, for a model that never touched disk."""
    return LoadedModel(version=version, sha256="0" * 64, metrics={"r2": 0.5}, model=model)


class FakeSource:
    """A model source handing out preset models by version; ``load`` may be held on a gate."""

    def __init__(self, models: dict[str, Any]) -> None:
        self.models = models
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
        return loaded(version, self.models[version])
