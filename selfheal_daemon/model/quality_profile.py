"""What good data looks like, learned from a reference frame: per column the median, the outlier
fence (values beyond it are capped) and the possible range (values beyond it are quarantined).

How the bounds are learned, per column, from its finite reference values ``v`` (n of them):

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
  sees only part of a heavy tail (AveRooms: 52 in a 5,000-row sample, 142 in all 20,640) and a
  rare true value must not be lost. For Latitude (32.54..41.95) the range is 4.31..70.18: a sign
  flip (-34) or a shifted decimal (341.5) is caught.
- **Censoring**: when at least 1 % (and at least 3) of the reference rows sit exactly on the minimum
  or maximum, the source clipped the column there (California: HouseAge at 52, the target at
  5.00001). For a feature the fence is that edge, so capping repeats the source's own coding; for
  the target it is the edge of the possible range: a label beyond it cannot come from that source.

The fence always lies inside the possible range. The target has only a possible range (labels are
never capped). Serialisable with ``to_dict``/``from_dict`` so it can be stored beside a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from selfheal_daemon.errors import DataError

QUANTILES = (0.001, 0.999)
FENCE_IQRS = 3.0
VALID_SPANS = 3.0
CENSORED_SHARE = 0.01
CENSORED_MIN_ROWS = 3
PROFILE_VERSION = 1


@dataclass(frozen=True)
class ColumnProfile:
    """The learned facts about one column; see the module docstring for how each is learned."""

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
class QualityProfile:
    """Per-feature profiles in feature order, and the target's when the reference had labels."""

    columns: tuple[ColumnProfile, ...]
    target_name: str
    target: ColumnProfile | None
    reference_rows: int

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> ColumnProfile:
        """The profile of feature ``name``; ValueError if the profile does not know it."""
        for col in self.columns:
            if col.name == name:
                return col
        raise ValueError(f"the quality profile has no feature {name!r}")

    @classmethod
    def learn(cls, frame: pd.DataFrame, features: Sequence[str], target: str) -> QualityProfile:
        """Learn from ``frame``, which must hold every feature; the target is optional.

        A profile learned from a model's reference sample (features only) checks that labels are
        present and finite but has no range for them.
        """
        missing = [f for f in features if f not in frame.columns]
        if missing:
            raise DataError(f"reference data lacks columns: {', '.join(missing)}")
        return cls(
            columns=tuple(ColumnProfile.learn(f, frame[f]) for f in features),
            target_name=target,
            target=(
                ColumnProfile.learn(target, frame[target], is_label=True)
                if target in frame.columns
                else None
            ),
            reference_rows=len(frame),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``from_dict`` reads it back."""
        return {
            "version": PROFILE_VERSION,
            "reference_rows": self.reference_rows,
            "features": [asdict(c) for c in self.columns],
            "target_name": self.target_name,
            "target": asdict(self.target) if self.target is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualityProfile:
        """Read a dict written by ``to_dict``; DataError if it is not one."""
        try:
            if data["version"] != PROFILE_VERSION:
                raise DataError(f"quality profile version {data['version']!r} is not supported")
            target = data["target"]
            return cls(
                columns=tuple(_column_from(c) for c in data["features"]),
                target_name=str(data["target_name"]),
                target=_column_from(target) if target is not None else None,
                reference_rows=int(data["reference_rows"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"quality profile is malformed: {exc!r}") from exc


def _column_from(data: Mapping[str, Any]) -> ColumnProfile:
    fields = ("median", "minimum", "maximum", "cap_low", "cap_high", "valid_low", "valid_high")
    return ColumnProfile(str(data["name"]), *(float(data[f]) for f in fields))
