"""A model's metrics on labelled rows: what training reports and the gate compares.

R2, MAE and RMSE of a regression; MAE and RMSE are in the target's own unit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from selfheal_daemon.errors import TrainingError

METRIC_NAMES: tuple[str, ...] = ("r2", "mae", "rmse")


def evaluate(model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """R2, MAE and RMSE of ``model`` on (x, y); ``TrainingError`` on a non-finite prediction."""
    pred = model.predict(x)
    if not np.all(np.isfinite(pred)):
        raise TrainingError("model produced non-finite predictions on the holdout")
    return {
        "r2": float(r2_score(y, pred)),
        "mae": float(mean_absolute_error(y, pred)),
        "rmse": float(np.sqrt(mean_squared_error(y, pred))),
    }
