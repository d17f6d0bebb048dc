"""The model a service worker serves, and the in-process swap to another version.

A swap is: load through the registry (checksum verified before unpickling; the version's
schema comes with it, ``LoadedModel.schema``, from its ``meta.json``), refuse it when its schema
would break the clients of the version served now (``Schema.breaks``), smoke-predict a probe row
made from the schema and require a finite answer (and valid probabilities from a classifier), then
replace the served model by one reference assignment. Request handlers call ``current()`` once and
use that snapshot for the whole request, so a request never mixes two versions (nor two schemas),
and the old model keeps answering until the new one is ready. When any step fails the served model
is left as it was and the error propagates (``POST /admin/model`` answers it as a 409 with the
reason).

What is served is a ``Served``: the loaded model, its schema, the ``RowParser`` that reads request
rows for that schema (built once here, not per request), and the predictor that answers them (the
flattened-trees fast path when it agrees with the model, else the model itself).

Errors (besides what ``ModelRegistry.load`` raises: ``ChecksumMismatchError``,
``VersionNotFoundError``, ``RegistryError``, or an unpickling error)::

    SelfhealError
    ├── SmokeTestError    the loaded model failed to answer the probe row, or answered a non-finite
    │                     value, a class its schema does not know, or invalid probabilities
    └── SchemaBreakError  the version's schema differs from the served one's in a way clients
                          written for the served one would break on
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from selfheal_daemon.errors import SelfhealError
from selfheal_daemon.model.registry import LoadedModel
from selfheal_daemon.model.schema import UNSEEN, Schema
from service.compiled import accelerate
from service.predictor import Answer, ModelPredictor, Predictor
from service.validation import RowParser

CHECK_ROWS = 512  # reference rows the fast path must reproduce (as is, with gaps, unseen, ...)
PROBABILITY_SLACK = 1e-6  # how far a classifier's probabilities may sum from 1


class SmokeTestError(SelfhealError):
    """A freshly loaded model could not answer the probe row, or answered it invalidly."""


class SchemaBreakError(SelfhealError):
    """Serving the version would break clients of the served one (see ``Schema.breaks``)."""


class ModelSource(Protocol):
    """Where models come from: ``ModelRegistry`` or a test fake."""

    def load(self, version: str) -> LoadedModel:
        """Return the checksum-verified, unpickled model of ``version``, with its schema."""
        ...


def _probe_value(schema: Schema, j: int) -> float:
    col = schema.columns[j]
    if col.is_numeric:
        if col.low is None or col.high is None:
            return 0.0
        return (col.low + col.high) / 2.0
    return 0.0 if col.categories else UNSEEN


def probe_matrix(schema: Schema) -> np.ndarray:
    """The probe row of ``schema`` as a ``(1, len(features))`` encoded matrix: each numeric
    feature at the midpoint of the range training saw (0 when unknown), each categorical one at
    its first category."""
    return np.array([[_probe_value(schema, j) for j in range(len(schema.columns))]])


def probe_row(schema: Schema) -> dict[str, Any]:
    """The probe row as a ``POST /predict`` body: numbers, the first category's text, ``false``."""
    row: dict[str, Any] = {}
    for j, col in enumerate(schema.columns):
        if col.is_numeric:
            row[col.name] = _probe_value(schema, j)
        elif col.kind == "boolean":
            row[col.name] = False
        else:
            row[col.name] = col.categories[0] if col.categories else "?"
    return row


PROBE_ROW: dict[str, Any] = probe_row(Schema.california())
"""A request body the bundled default model (``Schema.california()``) accepts, for callers that
send it one; a served model's own probe is ``probe_row(served.schema)``."""


@dataclass(frozen=True)
class Served:
    """One served version: what the registry loaded, its schema, how rows are read for it, and
    what answers them. Immutable: a swap replaces the whole object."""

    loaded: LoadedModel
    schema: Schema
    rows: RowParser
    predictor: Predictor
    predict_path: str  # how small batches are answered, in words
    labels: np.ndarray = field(repr=False)  # class labels by index (object), for the answers

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def sha256(self) -> str:
        return self.loaded.sha256

    @property
    def metrics(self) -> dict[str, float]:
        return self.loaded.metrics

    @property
    def model(self) -> Any:
        return self.loaded.model

    def class_labels(self, values: np.ndarray) -> list[str]:
        """A classifier's predicted class indices as their labels."""
        return list(self.labels[values.astype(np.intp)])


def smoke_test(loaded: LoadedModel, predictor: Predictor | None = None) -> Answer:
    """Answer the schema's probe row with ``predictor`` (the model itself by default); returns
    the answer or raises SmokeTestError."""
    schema = loaded.schema
    ask = predictor if predictor is not None else ModelPredictor(loaded.model, schema)
    try:
        answer = ask.answer(probe_matrix(schema))
    except Exception as exc:  # any failure of foreign model code is a failed smoke test
        raise SmokeTestError(
            f"model version {loaded.version} failed to predict the probe row: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    values = np.asarray(answer.values, dtype=np.float64)
    if values.shape != (1,):
        raise SmokeTestError(
            f"model version {loaded.version} returned shape {values.shape} for one probe row, "
            "expected (1,)"
        )
    value = float(values[0])
    if not np.isfinite(value):
        if schema.is_classifier:
            raise SmokeTestError(
                f"model version {loaded.version} predicted a class that is not one of its "
                f"schema's classes ({', '.join(schema.classes)}) for the probe row"
            )
        raise SmokeTestError(
            f"model version {loaded.version} predicted {value} for the probe row, "
            "not a finite number"
        )
    if schema.is_classifier:
        _check_probabilities(loaded.version, schema, answer.proba)
    return answer


def _check_probabilities(version: str, schema: Schema, proba: np.ndarray | None) -> None:
    expected = (1, len(schema.classes))
    if proba is None or np.shape(proba) != expected:
        shape = None if proba is None else np.shape(proba)
        raise SmokeTestError(
            f"model version {version} returned probabilities of shape {shape} for one probe "
            f"row, expected {expected}"
        )
    if (
        not np.all(np.isfinite(proba))
        or np.any(proba < 0)
        or np.any(proba > 1)
        or abs(float(proba.sum()) - 1.0) > PROBABILITY_SLACK
    ):
        raise SmokeTestError(
            f"model version {version} returned invalid probabilities for the probe row: "
            f"{np.round(proba[0], 6).tolist()} (each in [0, 1], summing to 1)"
        )


class ModelStore:
    """Holds the ``Served`` version (or None) and swaps it atomically. Thread-safe.

    Loads are serialised by a lock, so concurrent swaps apply in the order they got the lock;
    readers never take the lock: ``current()`` is one attribute read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Served | None = None
        self._last_error: str | None = None
        self.predict_path = "model.predict"  # how the served model predicts small batches

    def load(self, registry: ModelSource, version: str) -> Served:
        """Load, verify, check the schema of and smoke-test ``version``, then serve it.

        On any failure the previously served model (if any) stays, ``last_error`` records why,
        and the exception propagates unchanged.
        """
        with self._lock:
            try:
                loaded = registry.load(version)
                self._check_schema(loaded)
                real = ModelPredictor(loaded.model, loaded.schema)
                smoke_test(loaded, real)
                predictor, path = self._accelerated(registry, loaded, real)
                served = Served(
                    loaded=loaded,
                    schema=loaded.schema,
                    rows=RowParser(loaded.schema),
                    predictor=predictor,
                    predict_path=path,
                    labels=np.array(loaded.schema.classes, dtype=object),
                )
            except Exception as exc:
                self._last_error = f"loading {version} failed: {type(exc).__name__}: {exc}"
                raise
            self._current = served  # one reference assignment: readers see old or new, never half
            self.predict_path = path
            self._last_error = None
            return served

    def _check_schema(self, loaded: LoadedModel) -> None:
        """SchemaBreakError when clients of the served version would break on ``loaded``'s."""
        current = self._current
        if current is None:
            return
        problems = current.schema.breaks(loaded.schema)
        if problems:
            raise SchemaBreakError(
                f"model version {loaded.version} would break clients of {current.version} "
                f"({current.schema.name}): {'; '.join(problems)}"
            )

    def _accelerated(
        self, registry: ModelSource, loaded: LoadedModel, real: ModelPredictor
    ) -> tuple[Predictor, str]:
        """The fast small-batch path, if it agrees with the model on the version's reference
        rows (or the probe row, when the source has none), smoke-tested; else the model."""
        schema = loaded.schema
        rows = probe_matrix(schema)
        reference = getattr(registry, "load_reference", None)
        if callable(reference):
            sample = np.asarray(reference(loaded.version), dtype=np.float64)
            if sample.ndim == 2 and sample.shape[1] == len(schema.columns) and len(sample):
                rows = sample[:CHECK_ROWS]
        predictor, path = accelerate(loaded.model, schema, rows)
        if predictor is real or isinstance(predictor, ModelPredictor):
            return real, path
        smoke_test(loaded, predictor)
        return predictor, path

    def current(self) -> Served | None:
        """The version to use for one request; call once per request and keep the reference."""
        return self._current

    @property
    def ready(self) -> bool:
        """True when a model has been loaded and passed its smoke test."""
        return self._current is not None

    @property
    def last_error(self) -> str | None:
        """Why the most recent load failed, or None if it succeeded (or none was attempted)."""
        return self._last_error
