"""The model a service worker serves, and the in-process swap to another version.

A swap is: load through the registry (checksum verified before unpickling), smoke-predict a fixed
probe row and require one finite number, then replace the served model by one reference
assignment. Request handlers call ``current()`` once and use that snapshot for the whole request,
so a request never mixes two versions, and the old model keeps answering until the new one is
ready. When any step fails the served model is left as it was and the error propagates.

Errors (besides what ``ModelRegistry.load`` raises: ``ChecksumMismatchError``,
``VersionNotFoundError``, ``RegistryError``, or an unpickling error)::

    SelfhealError
    └── SmokeTestError   the loaded model failed to predict the probe row, or predicted a non-finite
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Protocol

import numpy as np

from selfheal_daemon.defaults import FEATURES
from selfheal_daemon.errors import SelfhealError
from selfheal_daemon.model.registry import LoadedModel
from service.compiled import accelerate

# The per-feature medians of the bundled California housing data: a row every sane model of it
# must answer with a finite number (units of $100,000).
PROBE_ROW: dict[str, float] = {
    "MedInc": 3.5348,
    "HouseAge": 29.0,
    "AveRooms": 5.229129,
    "AveBedrms": 1.048889,
    "Population": 1166.0,
    "AveOccup": 2.818116,
    "Latitude": 34.26,
    "Longitude": -118.49,
}


CHECK_ROWS = 512  # reference rows the fast path must reproduce exactly (twice: as is, with gaps)


class SmokeTestError(SelfhealError):
    """A freshly loaded model could not predict the probe row, or predicted a non-finite value."""


class ModelSource(Protocol):
    """Where models come from: ``ModelRegistry`` or a test fake."""

    def load(self, version: str) -> LoadedModel:
        """Return the checksum-verified, unpickled model of ``version``."""
        ...


def probe_matrix() -> np.ndarray:
    """The probe row as a ``(1, len(FEATURES))`` float64 matrix in FEATURES order."""
    return np.array([[PROBE_ROW[name] for name in FEATURES]], dtype=np.float64)


def smoke_test(loaded: LoadedModel) -> float:
    """Predict the probe row with ``loaded``; returns the prediction or raises SmokeTestError."""
    try:
        output = np.asarray(loaded.model.predict(probe_matrix()), dtype=np.float64)
    except Exception as exc:  # any failure of foreign model code is a failed smoke test
        raise SmokeTestError(
            f"model version {loaded.version} failed to predict the probe row: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if output.shape != (1,):
        raise SmokeTestError(
            f"model version {loaded.version} returned shape {output.shape} for one probe row, "
            "expected (1,)"
        )
    value = float(output[0])
    if not np.isfinite(value):
        raise SmokeTestError(
            f"model version {loaded.version} predicted {value} for the probe row, "
            "not a finite number"
        )
    return value


class ModelStore:
    """Holds the served ``LoadedModel`` (or None) and swaps it atomically. Thread-safe.

    Loads are serialised by a lock, so concurrent swaps apply in the order they got the lock;
    readers never take the lock: ``current()`` is one attribute read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: LoadedModel | None = None
        self._last_error: str | None = None
        self.predict_path = "model.predict"  # how the served model predicts small batches

    def load(self, registry: ModelSource, version: str) -> LoadedModel:
        """Load, verify and smoke-test ``version``, then serve it; returns the new model.

        On any failure the previously served model (if any) stays, ``last_error`` records why,
        and the exception propagates unchanged.
        """
        with self._lock:
            try:
                loaded = registry.load(version)
                smoke_test(loaded)
                loaded = self._accelerated(registry, loaded)
            except Exception as exc:
                self._last_error = f"loading {version} failed: {type(exc).__name__}: {exc}"
                raise
            self._current = loaded  # one reference assignment: readers see old or new, never half
            self._last_error = None
            return loaded

    def _accelerated(self, registry: ModelSource, loaded: LoadedModel) -> LoadedModel:
        """The same model with the fast small-batch path, if it matches ``predict`` exactly on
        the version's reference rows (or the probe row, when the source has none)."""
        reference = getattr(registry, "load_reference", None)
        rows = reference(loaded.version)[:CHECK_ROWS] if callable(reference) else probe_matrix()
        model, self.predict_path = accelerate(loaded.model, rows)
        if model is loaded.model:
            return loaded
        fast = replace(loaded, model=model)
        smoke_test(fast)
        return fast

    def current(self) -> LoadedModel | None:
        """The model to use for one request; call once per request and keep the reference."""
        return self._current

    @property
    def ready(self) -> bool:
        """True when a model has been loaded and passed its smoke test."""
        return self._current is not None

    @property
    def last_error(self) -> str | None:
        """Why the most recent load failed, or None if it succeeded (or none was attempted)."""
        return self._last_error
