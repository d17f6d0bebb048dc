"""Data quality: check a batch against a learned profile, repair what can be repaired, and set aside
(quarantine) what cannot, reporting every fix in a sentence a person can check.

Pure: frames in, frames and sentences out; reading and writing files is in ``quality_io``.

What is found (the detection kind) and what is done, in this order:

- ``schema``: a feature (or a required target) column missing: the whole batch is quarantined as
  it arrived and ``rejected`` names why; a column named with other case or spaces: renamed; any
  other column: dropped. Each reported.
- ``dtype``: text that reads as a number is coerced; text that does not is missing (a feature) or
  quarantines its row (a label).
- ``out_of_range``: a value the reference says cannot occur quarantines its row (feature or label).
- ``missing_values``: a row with more than half its features missing or infinite is quarantined;
  a missing label quarantines its row; a missing feature is filled with the reference median.
- ``non_finite``: an infinite label quarantines its row; an infinite feature gets the median.
- ``duplicates``: a row equal (before repair) to an earlier good row is quarantined; the first
  copy is kept.
- ``outliers``: a feature beyond the outlier fence is capped to it.

Labels are never changed: ground truth cannot be imputed or capped, so a bad label sends its row
to quarantine. Every input row is either kept or quarantined (with its reason); none is lost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from selfheal_daemon.model.quality_profile import ColumnProfile, QualityProfile

__all__ = [
    "KINDS",
    "ColumnProfile",
    "Fix",
    "QualityProfile",
    "QualityResult",
    "check_and_repair",
    "describe",
    "fmt",
    "fmt_exact",
    "format_fixes",
]

Kind = Literal[
    "missing_values", "non_finite", "duplicates", "outliers", "out_of_range", "schema", "dtype"
]
KINDS: tuple[Kind, ...] = (
    "schema",
    "dtype",
    "missing_values",
    "non_finite",
    "out_of_range",
    "duplicates",
    "outliers",
)


@dataclass(frozen=True)
class Fix:
    """One thing done to a batch: what kind of problem, where, how many rows, and the sentence.

    ``action`` is "repaired" when values were changed or columns dropped/renamed, "quarantined" when
    rows were moved to quarantine (duplicates included).
    """

    kind: Kind
    column: str | None
    rows: int
    text: str
    action: Literal["repaired", "quarantined"] = "repaired"


@dataclass(frozen=True, eq=False)
class QualityResult:
    """The repaired rows, the quarantined rows, and what was found and done.

    ``frame`` holds the kept rows: the features (and the target when the batch has it) as float64,
    index 0..n-1. ``quarantined`` holds the rejected rows exactly as they arrived, with ``row``
    (their 0-based position in the input) and ``reason`` first. ``rejected`` names the reason when
    the whole batch was refused for its schema. Always ``rows_in == rows_kept + rows_quarantined``.
    """

    frame: pd.DataFrame
    quarantined: pd.DataFrame
    fixes: tuple[Fix, ...]
    detections: frozenset[Kind]
    rows_in: int
    rejected: str | None = None

    @property
    def rows_kept(self) -> int:
        return len(self.frame)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantined)


@dataclass
class _Report:
    fixes: list[Fix] = field(default_factory=list)
    detections: set[Kind] = field(default_factory=set)

    def add(
        self,
        kind: Kind,
        column: str | None,
        rows: int,
        text: str,
        action: Literal["repaired", "quarantined"] = "repaired",
    ) -> None:
        self.detections.add(kind)
        self.fixes.append(Fix(kind, column, rows, text, action))


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def fmt(x: float) -> str:
    """A number as the repair sentences show it: two decimals, trailing zeros dropped."""
    if x == 0:
        return "0"
    if abs(x) >= 0.1:
        return f"{round(x, 2):.12g}"
    return f"{x:.2g}"


def fmt_exact(x: float) -> str:
    """A bound that decides quarantine, to six significant digits (5.00001 stays 5.00001)."""
    return f"{x:.6g}"


def check_and_repair(
    frame: pd.DataFrame,
    profile: QualityProfile,
    *,
    features: Sequence[str] | None = None,
    target: str | None = None,
    require_target: bool = False,
) -> QualityResult:
    """Check ``frame`` against ``profile``; return the repaired rows, the quarantine and the fixes.

    ``features`` and ``target`` default to the profile's. With ``require_target`` a batch without
    the target column is refused whole; without it, a missing target is fine and a present one is
    checked all the same. Column order and any index of ``frame`` do not matter.
    """
    names = tuple(features) if features is not None else profile.feature_names
    label = target if target is not None else profile.target_name
    columns = {name: profile.column(name) for name in names}
    raw = frame.reset_index(drop=True)
    report = _Report()

    if not raw.columns.is_unique:
        dupes = sorted({str(c) for c in raw.columns[raw.columns.duplicated()]})
        return _refuse(raw, f"duplicate column names {', '.join(dupes)}", names)
    mapping = _match_columns(raw, (*names, label), report)
    missing = [n for n in names if n not in mapping]
    if require_target and label not in mapping:
        missing.append(label)
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        return _refuse(raw, f"missing {noun} {', '.join(missing)}", names)

    values = pd.DataFrame(
        {n: _to_float(raw[mapping[n]], n, report, is_label=False)[0] for n in names}
    )
    unreadable_label = None
    if label in mapping:
        values[label], unreadable_label = _to_float(
            raw[mapping[label]], label, report, is_label=True
        )
    problems = _row_problems(values, columns, label, profile.target, unreadable_label)
    bad = np.zeros(len(raw), dtype=bool)
    for mask, text, kind, column in problems:
        n = int(mask.sum())
        if n:
            report.add(kind, column, n, f"Quarantined {_count(n, 'row')}: {text}", "quarantined")
            bad |= mask
    row_reasons = {
        i: "; ".join(t for m, t, _k, _c in problems if m[i]) for i in np.flatnonzero(bad).tolist()
    }

    duplicate_of = _duplicate_of(values, ~bad)
    dup = duplicate_of >= 0
    if dup.any():
        n = int(dup.sum())
        first = "the first copy is kept" if n == 1 else "the first copy of each is kept"
        text = f"Dropped {_count(n, 'exact duplicate row')}; {first}"
        report.add("duplicates", None, n, text, "quarantined")
        for i in np.flatnonzero(dup).tolist():
            row_reasons[i] = f"exact duplicate of row {duplicate_of[i]}"

    keep = ~bad & ~dup
    kept = _repair(values[keep].reset_index(drop=True), columns, report)
    out = np.flatnonzero(~keep)
    quarantined = _quarantine_frame(raw, out, [row_reasons[i] for i in out.tolist()])
    return QualityResult(
        kept, quarantined, tuple(report.fixes), frozenset(report.detections), len(raw)
    )


_Problem = tuple[np.ndarray, str, Kind, str | None]


def _row_problems(
    values: pd.DataFrame,
    columns: dict[str, ColumnProfile],
    label: str,
    label_profile: ColumnProfile | None,
    unreadable_label: np.ndarray | None,
) -> list[_Problem]:
    """Each reason a row cannot be kept, with the mask of rows it applies to (masks may overlap)."""
    problems: list[_Problem] = []
    if unreadable_label is not None:
        y = values[label].to_numpy()
        problems += [
            (unreadable_label, f"label {label} is not a number", "dtype", label),
            (np.isnan(y) & ~unreadable_label, f"label {label} is missing", "missing_values", label),
            (np.isinf(y), f"label {label} is infinite", "non_finite", label),
        ]
        if label_profile is not None:
            problems.append(_impossible(y, label_profile, f"label {label}"))
    x = values[list(columns)].to_numpy()
    for i, col in enumerate(columns.values()):
        problems.append(_impossible(x[:, i], col, col.name))
    sparse = (~np.isfinite(x)).sum(axis=1) * 2 > len(columns)
    text = "more than half of the features missing or infinite"
    problems.append((sparse, text, "missing_values", None))
    return problems


def _impossible(v: np.ndarray, col: ColumnProfile, what: str) -> _Problem:
    """The finite values outside the column's possible range."""
    outside = np.isfinite(v) & ((v < col.valid_low) | (v > col.valid_high))
    bounds = f"[{fmt_exact(col.valid_low)}, {fmt_exact(col.valid_high)}]"
    return outside, f"{what} outside the possible range {bounds}", "out_of_range", col.name


def _refuse(raw: pd.DataFrame, reason: str, names: Sequence[str]) -> QualityResult:
    """The whole batch to quarantine as it arrived: its schema leaves nothing to repair."""
    n, report = len(raw), _Report()
    report.add("schema", None, n, f"Quarantined all {_count(n, 'row')}: {reason}", "quarantined")
    empty = pd.DataFrame({name: pd.Series(dtype="float64") for name in names})
    quarantined = _quarantine_frame(raw, np.arange(n), [reason] * n)
    return QualityResult(
        empty, quarantined, tuple(report.fixes), frozenset(report.detections), n, rejected=reason
    )


def _match_columns(raw: pd.DataFrame, wanted: Sequence[str], report: _Report) -> dict[str, Any]:
    """Map each wanted name to its column in ``raw``: exact first, else one case/space-insensitive
    match (reported as a rename). Every other column is dropped, and that is reported too."""
    mapping: dict[str, Any] = {w: w for w in wanted if w in raw.columns}
    loose: dict[str, list[Any]] = {}
    for c in raw.columns:
        if c not in mapping.values():
            loose.setdefault(str(c).strip().casefold(), []).append(c)
    for w in wanted:
        candidates = loose.get(w.casefold(), [])
        if w not in mapping and len(candidates) == 1:
            mapping[w] = candidates[0]
            report.add("schema", w, len(raw), f"Renamed column {str(candidates[0])!r} to {w}")
    extra = [str(c) for c in raw.columns if c not in mapping.values()]
    if extra:
        text = f"Dropped {_count(len(extra), 'unknown column')}: {', '.join(extra)}"
        report.add("schema", None, len(raw), text)
    return mapping


def _parse(value: object) -> tuple[float, Literal["number", "text", "missing", "unreadable"]]:
    """One cell as a float, and whether it was a number, readable text, missing or unreadable."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return math.nan, "missing"
    if isinstance(value, bool | np.bool_):
        return math.nan, "unreadable"
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value), "number"
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return math.nan, "missing"
        if "_" not in text:  # float() accepts "1_000"; a data file that writes that is not safe
            try:
                return float(text), "text"
            except ValueError:
                pass
    return math.nan, "unreadable"


def _to_float(
    series: pd.Series, name: str, report: _Report, *, is_label: bool
) -> tuple[pd.Series, np.ndarray]:
    """The column as float64 and a mask of unreadable cells, reporting coercions from text."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64"), np.zeros(len(series), dtype=bool)
    parsed = [_parse(v) for v in series.tolist()]
    floats = pd.Series([p[0] for p in parsed], dtype="float64", name=name)
    unreadable = np.array([p[1] == "unreadable" for p in parsed], dtype=bool)
    coerced = sum(1 for p in parsed if p[1] == "text")
    if coerced:
        unit = "a number" if coerced == 1 else "numbers"
        text = f"Coerced {_count(coerced, 'value')} in {name} from text to {unit}"
        report.add("dtype", name, coerced, text)
    n = int(unreadable.sum())
    if n and not is_label:
        examples = ", ".join(repr(s) for s in list(dict.fromkeys(map(str, series[unreadable])))[:3])
        unit = "a number" if n == 1 else "numbers"
        text = (
            f"Could not read {_count(n, 'value')} in {name} as {unit} ({examples});"
            " treated as missing"
        )
        report.add("dtype", name, n, text)
    return floats, unreadable


def _duplicate_of(values: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
    """For each row, the position of the earlier equal candidate row it repeats, else -1."""
    result = np.full(len(values), -1, dtype=np.int64)
    pool = values[candidates]
    if pool.empty:
        return result
    group = pool.groupby(list(pool.columns), dropna=False, sort=False).ngroup().to_numpy()
    positions = np.flatnonzero(candidates)
    first = pd.Series(positions).groupby(group).transform("first").to_numpy()
    repeat = first != positions
    result[positions[repeat]] = first[repeat]
    return result


def _repair(kept: pd.DataFrame, columns: dict[str, ColumnProfile], report: _Report) -> pd.DataFrame:
    """Fill missing and infinite features with the reference median, then cap to the fences."""
    fills: list[tuple[Kind, str, int, str]] = []
    caps: list[tuple[Kind, str, int, str]] = []
    for name, col in columns.items():
        v = kept[name].to_numpy(dtype="float64", copy=True)
        nan, inf = np.isnan(v), np.isinf(v)
        v[nan | inf] = col.median
        if nan.any():
            n = int(nan.sum())
            fills.append(
                (
                    "missing_values",
                    name,
                    n,
                    f"Filled {name} with median {fmt(col.median)} in {_count(n, 'row')}",
                )
            )
        if inf.any():
            n = int(inf.sum())
            text = f"Replaced {_count(n, 'infinite value')} in {name} with median {fmt(col.median)}"
            fills.append(("non_finite", name, n, text))
        outlying = (v < col.cap_low) | (v > col.cap_high)
        if outlying.any():
            n = int(outlying.sum())
            bounds = f"[{fmt(col.cap_low)}, {fmt(col.cap_high)}]"
            text = f"Capped {_count(n, 'outlier')} in {name} to {bounds}"
            caps.append(("outliers", name, n, text))
            v = np.clip(v, col.cap_low, col.cap_high)
        kept[name] = v
    for kind, name, n, text in sorted(fills, key=lambda f: f[0] != "missing_values") + caps:
        report.add(kind, name, n, text)
    return kept.astype("float64")


def _quarantine_frame(raw: pd.DataFrame, rows: np.ndarray, reasons: list[str]) -> pd.DataFrame:
    """The given input rows as they arrived, with ``row`` and ``reason`` in front.

    An input column already called ``row`` or ``reason`` is kept as ``row_input``/``reason_input``.
    """
    out = raw.iloc[rows].copy()
    out = out.rename(columns={c: f"{c}_input" for c in ("row", "reason") if c in out.columns})
    out.insert(0, "reason", pd.Series(reasons, index=out.index, dtype="object"))
    out.insert(0, "row", rows.astype("int64"))
    return out.reset_index(drop=True)


def describe(result: QualityResult) -> dict[str, Any]:
    """The summary the audit record carries in ``details``."""
    return {
        "rows_in": result.rows_in,
        "rows_kept": result.rows_kept,
        "rows_quarantined": result.rows_quarantined,
        "fixes": [f.text for f in result.fixes],
        "detections": [k for k in KINDS if k in result.detections],
    }


def format_fixes(result: QualityResult) -> str:
    """The report ``selfheal fix-data`` prints: one summary line, then one line per fix."""
    head = (
        f"Checked {_count(result.rows_in, 'row')}: kept {result.rows_kept:,},"
        f" quarantined {result.rows_quarantined:,}."
    )
    if not result.fixes:
        return f"{head} No problems found."
    return "\n".join([head, *(f"  - {f.text}" for f in result.fixes)])
