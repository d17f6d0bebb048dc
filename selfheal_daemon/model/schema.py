"""The model's schema: its features in order with their kind, its target and task, its classes.

Every part of selfheal that touches data reads the serving version's schema, never a constant:
requests, feedback, data quality, drift, the gate. A version's schema is learned from its training
data and stored in its ``meta.json``; a version without one (registered before schemas existed)
is the bundled California model's (``Schema.california``).

Inside selfheal, rows travel as one float64 matrix whose columns are the features in schema order
(``encode``): a numeric column holds its value, a categorical one the index of its category in the
column's ``categories`` (``UNSEEN`` = -1 for a category training never saw, NaN for a missing cell).
The capture ring, the drift window and reference, and the compiled fast path all work on that
matrix. A model never sees it: ``model_input`` turns it back into the DataFrame the model was
trained on (numbers as float64, categories as text, missing and unseen as NaN), the form a user's
own pipeline takes.

Targets travel the same way (``encode_target``): a regression target is its value; a classifier's
is the index of its class in ``classes`` (NaN for a label the schema does not know).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from selfheal_daemon.defaults import FEATURES, MODEL_NAME, TARGET
from selfheal_daemon.errors import DataError

Kind = Literal["numeric", "categorical", "boolean"]
Task = Literal["regression", "binary", "multiclass"]
KINDS: tuple[str, ...] = ("numeric", "categorical", "boolean")
TASKS: tuple[str, ...] = ("regression", "binary", "multiclass")
UNSEEN = -1.0
"""The code of a category the schema does not know (NaN is a missing cell)."""
DEFAULT_MISSING: tuple[str, ...] = ("", "?", "NA", "N/A", "null")
BOOLEAN_CATEGORIES: tuple[str, ...] = ("false", "true")
_TRUE = frozenset({"true", "yes", "y", "t", "1", "1.0"})
_FALSE = frozenset({"false", "no", "n", "f", "0", "0.0"})


def category_text(value: object) -> str | None:
    """A cell of a categorical column as the text it is compared by; None when missing.

    Numbers are read as their text (``3.0`` as ``"3"``, so a column of integer codes written as
    floats by one tool and as integers by another meets the same categories); text is stripped.
    """
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            return None
        as_float = float(value)
        return str(int(as_float)) if as_float.is_integer() else repr(as_float)
    text = str(value).strip()
    return text


def boolean_text(value: object) -> str | None:
    """A cell of a boolean column as ``"true"``/``"false"``; None when missing or not a boolean."""
    text = category_text(value)
    if text is None:
        return None
    low = text.lower()
    if low in _TRUE:
        return "true"
    if low in _FALSE:
        return "false"
    return None


@dataclass(frozen=True)
class Column:
    """One feature: its name and kind; the categories seen (categorical, boolean) or the range
    seen (numeric); whether training saw it missing."""

    name: str
    kind: Kind
    categories: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    missing: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"column {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "boolean" and self.categories != BOOLEAN_CATEGORIES:
            object.__setattr__(self, "categories", BOOLEAN_CATEGORIES)

    @property
    def is_numeric(self) -> bool:
        return self.kind == "numeric"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "missing": self.missing}
        if self.is_numeric:
            out["low"], out["high"] = self.low, self.high
        else:
            out["categories"] = list(self.categories)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Column:
        return cls(
            name=str(data["name"]),
            kind=data["kind"],
            categories=tuple(str(c) for c in data.get("categories") or ()),
            low=None if data.get("low") is None else float(data["low"]),
            high=None if data.get("high") is None else float(data["high"]),
            missing=bool(data.get("missing", False)),
        )

    def codes(
        self, values: Iterable[object], missing: Iterable[str] = DEFAULT_MISSING
    ) -> np.ndarray:
        """A categorical or boolean column's cells as codes: the category's index, ``UNSEEN``
        for one not in ``categories``, NaN for a missing cell (empty, or one of ``missing``)."""
        index = {c: float(i) for i, c in enumerate(self.categories)}
        absent = {m.strip() for m in missing} | {""}
        read = boolean_text if self.kind == "boolean" else category_text
        out = []
        for value in values:
            text = read(value)
            if text is None:
                out.append(math.nan if _is_missing(value) or _blank(value, absent) else UNSEEN)
            elif text in absent:
                out.append(math.nan)
            else:
                out.append(index.get(text, UNSEEN))
        return np.asarray(out, dtype="float64")


def _blank(value: object, absent: set[str]) -> bool:
    return isinstance(value, str) and value.strip() in absent


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return not math.isfinite(float(value))
    if isinstance(value, str):
        return not value.strip()
    return bool(pd.isna(value)) if np.ndim(value) == 0 else False  # type: ignore[arg-type]


@dataclass(frozen=True)
class Schema:
    """What a model version takes and answers. ``classes`` is empty for a regression."""

    name: str
    task: Task
    target: str
    columns: tuple[Column, ...]
    classes: tuple[str, ...] = ()
    metric: str = "r2"
    missing_values: tuple[str, ...] = DEFAULT_MISSING
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        names = [c.name for c in self.columns]
        if not names:
            raise DataError("a model needs at least one feature column")
        if len(set(names)) != len(names):
            raise DataError(f"feature names repeat: {names}")
        if self.target in names:
            raise DataError(f"the target {self.target!r} cannot also be a feature")
        if self.task == "regression" and self.classes:
            raise DataError("a regression has no classes")
        if self.task == "binary" and len(self.classes) != 2:
            raise DataError(f"a binary task needs 2 classes, got {len(self.classes)}")
        if self.task == "multiclass" and len(self.classes) < 3:
            raise DataError(f"a multiclass task needs at least 3 classes, got {len(self.classes)}")
        self._index.update({c.name: i for i, c in enumerate(self.columns)})

    # -- what it is ---------------------------------------------------------------------------

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def is_classifier(self) -> bool:
        return self.task != "regression"

    @property
    def categorical_mask(self) -> np.ndarray:
        """True for each feature (in order) that is categorical or boolean."""
        return np.array([not c.is_numeric for c in self.columns], dtype=bool)

    @property
    def all_numeric(self) -> bool:
        return not bool(self.categorical_mask.any())

    def column(self, name: str) -> Column:
        try:
            return self.columns[self._index[name]]
        except KeyError:
            raise DataError(f"{name!r} is not a feature of model {self.name!r}") from None

    def position(self, name: str) -> int:
        self.column(name)
        return self._index[name]

    # -- rows -----------------------------------------------------------------------------------

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """The feature columns of ``frame`` as the ``(n, len(features))`` float64 matrix.

        Numeric cells that are not finite numbers become NaN (the quality check has reported and
        repaired them before this where it matters)."""
        missing = [name for name in self.features if name not in frame.columns]
        if missing:
            raise DataError(f"data lacks the feature columns: {', '.join(missing)}")
        out = np.empty((len(frame), len(self.columns)), dtype="float64")
        for j, col in enumerate(self.columns):
            values = frame[col.name]
            if col.is_numeric:
                numbers = np.array(pd.to_numeric(values, errors="coerce"), dtype="float64")
                numbers[~np.isfinite(numbers)] = np.nan
                out[:, j] = numbers
            else:
                out[:, j] = col.codes(values.tolist(), self.missing_values)
        return out

    def decode(self, x: np.ndarray) -> pd.DataFrame:
        """The matrix as a frame of the features, categories as text in object columns (unseen
        and missing: NaN, which scikit-learn's encoders read as missing)."""
        x = np.asarray(x, dtype="float64").reshape(-1, len(self.columns))
        if self.all_numeric:  # one float block, no per-column copy: the bundled model's path
            return pd.DataFrame(x, columns=list(self.features), copy=False)
        data: dict[str, Any] = {}
        for j, col in enumerate(self.columns):
            if col.is_numeric:
                data[col.name] = x[:, j]
            else:
                lookup = np.array([*col.categories, np.nan], dtype=object)
                codes = x[:, j]
                picks = np.where(np.isfinite(codes) & (codes >= 0), codes, len(col.categories))
                data[col.name] = pd.Series(lookup[picks.astype("int64")], dtype=object)
        return pd.DataFrame(data, columns=list(self.features))

    model_input = decode
    """What a model is given: the decoded frame (``predict(schema.model_input(x))``)."""

    def encode_target(self, values: Iterable[object]) -> np.ndarray:
        """Target cells as float64: values for a regression, class indices for a classifier
        (NaN for a missing or unknown label)."""
        if not self.is_classifier:
            series = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce")
            out = np.array(series, dtype="float64")
            out[~np.isfinite(out)] = np.nan
            return out
        index = {c: float(i) for i, c in enumerate(self.classes)}
        return np.array(
            [
                math.nan if (text := category_text(v)) is None else index.get(text, math.nan)
                for v in values
            ],
            dtype="float64",
        )

    def decode_target(self, codes: np.ndarray) -> list[Any]:
        """Class indices back to their labels (a regression's values pass through)."""
        if not self.is_classifier:
            return [float(v) for v in np.asarray(codes, dtype="float64")]
        return [self.classes[int(c)] if np.isfinite(c) else None for c in codes]

    def class_labels(self, model: Any) -> list[str]:
        """The labels of ``model.classes_`` as schema text, in the model's own order."""
        return [category_text(c) or "" for c in getattr(model, "classes_", ())]

    # -- what the model answers ------------------------------------------------------------------

    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        """The model's answers as float64: values, or class indices into ``classes``."""
        raw = np.asarray(model.predict(self.model_input(x)))
        if not self.is_classifier:
            return raw.astype("float64").reshape(-1)
        return self.encode_target(raw.reshape(-1).tolist())

    def predict_proba(self, model: Any, x: np.ndarray) -> np.ndarray:
        """Class probabilities, one column per entry of ``classes`` in that order."""
        proba = np.asarray(model.predict_proba(self.model_input(x)), dtype="float64")
        return self.align_proba(model, proba)

    def align_proba(self, model: Any, proba: np.ndarray) -> np.ndarray:
        """Reorder a model's probability columns (``model.classes_`` order) into ``classes``
        order; a class the model never learned gets probability 0."""
        labels = self.class_labels(model)
        if labels == list(self.classes):
            return proba
        out = np.zeros((proba.shape[0], len(self.classes)), dtype="float64")
        where = {c: i for i, c in enumerate(self.classes)}
        for k, label in enumerate(labels):
            if label in where:
                out[:, where[label]] = proba[:, k]
        return out

    # -- stored form -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "target": self.target,
            "metric": self.metric,
            "classes": list(self.classes),
            "missing_values": list(self.missing_values),
            "features": [c.to_dict() for c in self.columns],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        try:
            return cls(
                name=str(data["name"]),
                task=data["task"],
                target=str(data["target"]),
                columns=tuple(Column.from_dict(c) for c in data["features"]),
                classes=tuple(str(c) for c in data.get("classes") or ()),
                metric=str(data.get("metric") or "r2"),
                missing_values=tuple(data.get("missing_values") or DEFAULT_MISSING),
            )
        except (KeyError, TypeError) as exc:
            raise DataError(f"a stored schema is incomplete: {exc}") from None

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Schema:
        """A version's schema from its ``meta.json``; the California model's for an old one."""
        stored = meta.get("schema")
        return cls.from_dict(stored) if stored else cls.california()

    @classmethod
    def california(cls, low_high: Mapping[str, tuple[float, float]] | None = None) -> Schema:
        """The bundled California housing regression: eight numeric features, target in
        units of $100,000."""
        bounds = low_high or {}
        return cls(
            name=MODEL_NAME,
            task="regression",
            target=TARGET,
            columns=tuple(
                Column(
                    name,
                    "numeric",
                    low=bounds.get(name, (None, None))[0],
                    high=bounds.get(name, (None, None))[1],
                )
                for name in FEATURES
            ),
            classes=(),
            metric="r2",
        )

    # -- compatibility ---------------------------------------------------------------------------

    def breaks(self, newer: Schema) -> list[str]:
        """How serving ``newer`` in place of this schema would break a client written for this
        one: features it would refuse or read differently, classes that would disappear.

        Categories and bounds may grow (a retrain learns them), and whether a null is taken
        follows the version: neither breaks a rollback to a version served before."""
        problems: list[str] = []
        if newer.task != self.task:
            problems.append(f"the task changes from {self.task} to {newer.task}")
        old = {c.name: c for c in self.columns}
        new = {c.name: c for c in newer.columns}
        for name in self.features:
            if name not in new:
                problems.append(f"feature {name!r} is no longer taken")
        for name in newer.features:
            if name not in old:
                problems.append(f"feature {name!r} is new and required")
                continue
            before, after = old[name], new[name]
            if before.is_numeric != after.is_numeric:
                problems.append(f"feature {name!r} changes from {before.kind} to {after.kind}")
        gone = [c for c in self.classes if c not in newer.classes]
        if gone:
            problems.append(f"classes {', '.join(map(repr, gone))} are no longer answered")
        return problems


def slice_values(schema: Schema, x: np.ndarray, column: str) -> np.ndarray:
    """The category index of each row in ``column`` (a categorical feature), for per-slice views."""
    col = schema.column(column)
    if col.is_numeric:
        raise DataError(f"a slice column must be categorical; {column!r} is numeric")
    return np.asarray(x, dtype="float64")[:, schema.position(column)]


def as_text(values: Sequence[object]) -> list[str | None]:
    """Category text of each value (see ``category_text``)."""
    return [category_text(v) for v in values]
