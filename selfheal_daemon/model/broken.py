"""A model that answers nothing usable, for the ``bad-model`` drill: every prediction NaN, every
probability NaN, of the same task and classes as the model it stands in for. Loading it passes
the checksum; its smoke test fails, which is what the drill exercises."""

from __future__ import annotations

from typing import Any

import numpy as np


class NaNModel:
    """Answers NaN for every row (``classes_`` as the schema's, for a classifier)."""

    def __init__(self, classes: list[str] | None = None) -> None:
        if classes:
            self.classes_ = np.asarray(classes, dtype=object)

    def fit(self, *_args: Any) -> NaNModel:
        return self

    def predict(self, x: Any) -> np.ndarray:
        return np.full(len(x), np.nan)

    def predict_proba(self, x: Any) -> np.ndarray:
        return np.full((len(x), len(getattr(self, "classes_", [0, 1]))), np.nan)
