"""Small, fast training for tests: a config that fits in a second, and rows to probe with."""

from __future__ import annotations

import numpy as np
import pandas as pd

from selfheal_daemon.config import TrainingConfig
from selfheal_daemon.defaults import FEATURES

FAST_TRAINING = TrainingConfig(max_iter=15, reference_rows=200)


def probe_rows(frame: pd.DataFrame, n: int = 5) -> np.ndarray:
    """The first ``n`` rows of ``frame`` as the model's feature matrix."""
    return frame[list(FEATURES)].to_numpy(dtype="float64")[:n]
