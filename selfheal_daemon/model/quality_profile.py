"""What good data looks like, learned from a reference frame and the model's schema: per numeric
column the median, the outlier fence (values beyond it are capped) and the possible range (values
beyond it are quarantined); per categorical or boolean column the known categories, how often each
was seen, the most frequent one (what a missing cell is filled with) and whether training saw the
column missing; for a classifier's target, its classes.

How the bounds are learned, per numeric column, from its finite reference values ``v`` (n of them):

- **Outlier fence** ``[cap_low, cap_high]``: the 0.1 % and 99.9 % quantiles widened by 3 IQR
  (Tukey's "far out" distance), and never narrower than the reference's own min..max. Quantiles
  and IQR are robust, so a handful of wild values does not stretch the fence; the 3 IQR margin
  leaves room beyond what a sample of a few thousand rows happened to contain; and including
  min..max means the reference passes its own profile unchanged (a value the model was trained on
  is not an outlier).
- **Possible range** ``[valid_low, valid_high]``: min..max widened by three times its span on
  each side, never below 0 for a column never negative in the reference (population, rooms,
  income, age). A value outside is not extreme but wrong (a sign flip, a unit or decimal error,
  shifted columns, a sentinel like -999), so the rest of its row is suspect too: the row is
  quarantined, not capped. Three spans, not one, because a reference sample of a few thousand rows
  sees only part of a heavy tail (the bundled housing data's rooms per household: 52 in a
  5,000-row sample, 142 in all 20,640) and a rare true value must not be lost. For a latitude seen
  from 32.54 to 41.95 the range is 4.31..70.18: a sign flip (-34) or a shifted decimal (341.5) is
  caught.
- **Censoring**: when at least 1 % (and at least 3) of the reference rows sit exactly on the minimum
  or maximum, the source clipped the column there (the bundled housing data: house age at 52, the
  house value at 5.00001). For a feature the fence is that edge, so capping repeats the source's
  own coding; for
  the target it is the edge of the possible range: a label beyond it cannot come from that source.

The fence always lies inside the possible range. A regression target has only a possible range
(labels are never capped).

A categorical column's categories are the schema's (learned from the training data), in the
schema's order; when the schema lists none they are the reference's own values. A boolean column's
are ``false`` and ``true``. The counts are of reference cells read as the check reads them
(``quality_categorical``: whitespace and case variants count for their category, the schema's
missing-value tokens as missing). The most frequent category breaks ties by the schema's order.

Serialisable with ``to_dict``/``from_dict`` so it can be stored beside a model; a dict written
before categorical columns existed (version 1) reads as all numeric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from selfheal_daemon.errors import DataError
from selfheal_daemon.model.quality_categorical import (
    distinct_categories,
    is_number,
    read_categories,
)
from selfheal_daemon.model.schema import DEFAULT_MISSING, Column, Schema

QUANTILES = (0.001, 0.999)
FENCE_IQRS = 3.0
VALID_SPANS = 3.0
CENSORED_SHARE = 0.01
CENSORED_MIN_ROWS = 3
PROFILE_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class ColumnProfile:
    """The learned facts about one numeric column; see the module docstring for how each is
    learned."""

    kind: ClassVar[str] = "numeric"
    name: str
    median: float
    minimum: float
    maximum: float
    cap_low: float
    cap_high: float
    valid_low: float
    valid_high: float

    @classmethod
    def learn(cls, name: str, values: pd.Series, *, is_label: bool = False) -> ColumnProfile:
        """Learn from a column; raise DataError when it has no finite value to learn from."""
        v = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise DataError(f"reference data has no finite values in column {name}")
        lo, hi = float(v.min()), float(v.max())
        q_lo, q1, q3, q_hi = (
            float(q) for q in np.quantile(v, [QUANTILES[0], 0.25, 0.75, QUANTILES[1]])
        )
        span = hi - lo if hi > lo else max(abs(hi), 1.0)
        valid_low = lo - VALID_SPANS * span
        if lo >= 0:
            valid_low = max(valid_low, 0.0)
        valid_high = hi + VALID_SPANS * span
        cap_low = min(lo, q_lo - FENCE_IQRS * (q3 - q1))
        cap_high = max(hi, q_hi + FENCE_IQRS * (q3 - q1))
        need = max(CENSORED_MIN_ROWS, CENSORED_SHARE * v.size)
        # A feature is capped at a censored edge as the source did; a label beyond it is impossible.
        if np.count_nonzero(v == lo) >= need:
            valid_low, cap_low = (lo, cap_low) if is_label else (valid_low, lo)
        if np.count_nonzero(v == hi) >= need:
            valid_high, cap_high = (hi, cap_high) if is_label else (valid_high, hi)
        if is_label:
            cap_low, cap_high = valid_low, valid_high
        return cls(
            name=name,
            median=float(np.median(v)),
            minimum=lo,
            maximum=hi,
            cap_low=max(cap_low, valid_low),
            cap_high=min(cap_high, valid_high),
            valid_low=valid_low,
            valid_high=valid_high,
        )


@dataclass(frozen=True)
class CategoryProfile:
    """The learned facts about one categorical or boolean column (or a classifier's target):
    its known categories in the schema's order, how many reference cells held each, the most
    frequent one, and whether training saw the column missing."""

    name: str
    kind: Literal["categorical", "boolean"]
    categories: tuple[str, ...]
    counts: tuple[int, ...]
    mode: str
    missing_allowed: bool = False

    @property
    def text_only(self) -> bool:
        """True when no known category reads as a number: a number in this column is no category."""
        return not any(is_number(c) for c in self.categories)

    @property
    def frequencies(self) -> dict[str, float]:
        """Each known category's share of the reference cells that held a known category."""
        total = sum(self.counts)
        return {
            c: (n / total if total else 0.0)
            for c, n in zip(self.categories, self.counts, strict=True)
        }

    @classmethod
    def learn(
        cls,
        column: Column,
        values: pd.Series | None,
        missing_values: tuple[str, ...] = DEFAULT_MISSING,
    ) -> CategoryProfile:
        """Learn from a column of the schema and its reference cells (None: no reference cells)."""
        return cls.of(
            column.name,
            "boolean" if column.kind == "boolean" else "categorical",
            column.categories,
            values,
            missing_values,
            missing_allowed=column.missing,
        )

    @classmethod
    def of(
        cls,
        name: str,
        kind: Literal["categorical", "boolean"],
        categories: tuple[str, ...],
        values: pd.Series | None,
        missing_values: tuple[str, ...] = DEFAULT_MISSING,
        *,
        missing_allowed: bool = False,
    ) -> CategoryProfile:
        """The profile of ``categories`` counted over ``values``; with no categories given, the
        distinct values of ``values`` (DataError when there are none either)."""
        if not categories and values is not None:
            categories = distinct_categories(values, missing_values)
        if not categories:
            raise DataError(f"reference data has no categories in column {name}")
        counts = [0] * len(categories)
        if values is not None:
            draft = cls(name, kind, tuple(categories), tuple(counts), categories[0])
            read = read_categories(values, draft, missing_values)
            where = {c: i for i, c in enumerate(categories)}
            for value in read.values[read.known]:
                counts[where[value]] += 1
            missing_allowed = missing_allowed or bool(read.missing.any())
        best = max(range(len(categories)), key=lambda i: (counts[i], -i))
        return cls(
            name, kind, tuple(categories), tuple(counts), categories[best], bool(missing_allowed)
        )


FeatureProfile = ColumnProfile | CategoryProfile


@dataclass(frozen=True)
class QualityProfile:
    """Per-feature profiles in feature order, and the target's: a regression's when the reference
    had labels, a classifier's classes always. ``missing_values`` are the schema's tokens read as
    a missing cell."""

    columns: tuple[FeatureProfile, ...]
    target_name: str
    target: FeatureProfile | None
    reference_rows: int
    missing_values: tuple[str, ...] = DEFAULT_MISSING

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def is_classifier(self) -> bool:
        """True when the target is a class label (its profile lists the classes)."""
        return isinstance(self.target, CategoryProfile)

    @property
    def text_columns(self) -> tuple[str, ...]:
        """The columns read as text: categorical and boolean features, a classifier's target."""
        names = [c.name for c in self.columns if isinstance(c, CategoryProfile)]
        return (*names, self.target_name) if self.is_classifier else tuple(names)

    def column(self, name: str) -> FeatureProfile:
        """The profile of feature ``name``; ValueError if the profile does not know it."""
        for col in self.columns:
            if col.name == name:
                return col
        raise ValueError(f"the quality profile has no feature {name!r}")

    def numeric(self, name: str) -> ColumnProfile:
        """The profile of numeric feature ``name``; ValueError if there is none, TypeError if it
        is not numeric."""
        col = self.column(name)
        if not isinstance(col, ColumnProfile):
            raise TypeError(f"feature {name!r} is {col.kind}, not numeric")
        return col

    @classmethod
    def learn(cls, frame: pd.DataFrame, schema: Schema) -> QualityProfile:
        """Learn from ``frame``, which must hold every feature of ``schema``; the target is
        optional.

        A profile learned from a model's reference sample (features only) checks that labels are
        present and finite (a regression) or known classes (a classifier) but has no range for them.
        """
        missing = [f for f in schema.features if f not in frame.columns]
        if missing:
            raise DataError(f"reference data lacks columns: {', '.join(missing)}")
        tokens = tuple(schema.missing_values)
        columns: list[FeatureProfile] = []
        for col in schema.columns:
            if col.is_numeric:
                columns.append(ColumnProfile.learn(col.name, frame[col.name]))
            else:
                columns.append(CategoryProfile.learn(col, frame[col.name], tokens))
        labels = frame[schema.target] if schema.target in frame.columns else None
        target: FeatureProfile | None
        if schema.is_classifier:
            target = CategoryProfile.of(
                schema.target, "categorical", tuple(schema.classes), labels, tokens
            )
        elif labels is not None:
            target = ColumnProfile.learn(schema.target, labels, is_label=True)
        else:
            target = None
        return cls(tuple(columns), schema.target, target, len(frame), tokens)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``from_dict`` reads it back."""
        return {
            "version": PROFILE_VERSION,
            "reference_rows": self.reference_rows,
            "missing_values": list(self.missing_values),
            "features": [_column_dict(c) for c in self.columns],
            "target_name": self.target_name,
            "target": _column_dict(self.target) if self.target is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityProfile:
        """Read a dict written by ``to_dict`` (or by version 1); DataError if it is not one."""
        try:
            if data["version"] not in READABLE_VERSIONS:
                raise DataError(f"quality profile version {data['version']!r} is not supported")
            target = data["target"]
            tokens = data.get("missing_values")
            return cls(
                columns=tuple(_column_from(c) for c in data["features"]),
                target_name=str(data["target_name"]),
                target=_column_from(target) if target is not None else None,
                reference_rows=int(data["reference_rows"]),
                missing_values=DEFAULT_MISSING if tokens is None else tuple(map(str, tokens)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"quality profile is malformed: {exc!r}") from exc


def _column_dict(col: FeatureProfile) -> dict[str, Any]:
    out = asdict(col)
    if isinstance(col, ColumnProfile):
        out["kind"] = "numeric"
    else:
        out["categories"], out["counts"] = list(col.categories), list(col.counts)
    return out


def _column_from(data: Mapping[str, Any]) -> FeatureProfile:
    kind = data.get("kind", "numeric")
    if kind in ("categorical", "boolean"):
        categories = tuple(str(c) for c in data["categories"])
        counts = tuple(int(n) for n in data["counts"])
        if len(counts) != len(categories) or not categories:
            raise ValueError(f"column {data['name']!r}: categories and counts do not match")
        mode = str(data["mode"])
        if mode not in categories:
            raise ValueError(f"column {data['name']!r}: mode {mode!r} is not a category")
        return CategoryProfile(
            str(data["name"]),
            "boolean" if kind == "boolean" else "categorical",
            categories,
            counts,
            mode,
            bool(data["missing_allowed"]),
        )
    if kind != "numeric":
        raise ValueError(f"column {data['name']!r}: unknown kind {kind!r}")
    fields = ("median", "minimum", "maximum", "cap_low", "cap_high", "valid_low", "valid_high")
    return ColumnProfile(str(data["name"]), *(float(data[f]) for f in fields))
