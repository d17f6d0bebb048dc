"""A model version that passes every check at load and then kills the worker serving it.

``ExitAfter`` answers its first ``calls`` predictions through a real model (so the smoke test and
the first requests pass), then ends its process with ``os._exit(3)``: the crash loop of a bad model
version that only shows under traffic. It is unpickled by the service's workers, which import it
from this module (their working directory is the project's root, as in CI). It exposes no
attribute of the model inside, so the service cannot compile its trees and calls ``predict``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


class ExitAfter:
    def __init__(self, inner: Any, calls: int) -> None:
        self.inner = inner
        self.calls = calls
        self.count = 0

    def predict(self, x: Any) -> np.ndarray:
        self.count += 1
        if self.count > self.calls:
            os._exit(3)
        return np.asarray(self.inner.predict(x))
