"""Data quality: check a batch against a learned profile, repair what can be repaired, and set aside
(quarantine) what cannot, reporting every fix in a sentence a person can check.

Pure: frames in, frames and sentences out; reading and writing files is in ``quality_io``, how cells
are read (numbers, categories, labels) in ``quality_categorical``. Column names come from the
profile.

What is found (the detection kind) and what is done, in this order:

- ``schema``: a feature (or a required target) column missing: the whole batch is quarantined as
  it arrived and ``rejected`` names why; a column named with other case or spaces: renamed; any
  other column: dropped. Each reported.
- ``dtype``: in a numeric column, text that reads as a number is coerced and text that does not
  is missing (a feature) or quarantines its row (a label); in a categorical column whose categories
  are all text a number is missing; in a boolean column anything but true/false/yes/no/1/0 is.
  The schema's missing-value tokens ("?", "NA"...) are missing cells, not unreadable ones.
- ``spelling``: a known category (or class label) with stray whitespace or in other case is
  respelled as known; true/false/yes/no/1/0 in any case become a boolean's ``true``/``false``.
- ``out_of_range``: a value the reference says cannot occur quarantines its row (feature or label).
- ``unknown_class``: a classifier's label that is none of its classes quarantines its row.
- ``missing_values``: a row with more than half its features missing or infinite is quarantined;
  a missing label quarantines its row; a missing numeric feature is filled with the reference
  median, a missing categorical one with the most frequent category.
- ``non_finite``: an infinite label quarantines its row; an infinite feature gets the median.
- ``duplicates``: a row equal (before repair, over every column) to an earlier good row is
  quarantined; the first copy is kept.
- ``outliers``: a numeric feature beyond the outlier fence is capped to it.
- ``unseen_categories``: a category training never saw is kept as it is, counted and reported.

Labels are never changed beyond their spelling: ground truth cannot be imputed or capped, so a bad
label sends its row to quarantine. Every input row is either kept or quarantined (with its reason);
none is lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from selfheal_daemon.model.quality_categorical import (
    category_notes,
    fill_note,
    folded_tokens,
    label_notes,
    label_problems,
    read_categories,
    read_numbers,
    unseen_counts,
    unseen_note,
)
from selfheal_daemon.model.quality_profile import (
    CategoryProfile,
    ColumnProfile,
    FeatureProfile,
    QualityProfile,
)

__all__ = [
    "KINDS",
    "CategoryProfile",
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
    "missing_values",
    "non_finite",
    "duplicates",
    "outliers",
    "out_of_range",
    "schema",
    "dtype",
    "spelling",
    "unknown_class",
    "unseen_categories",
]
KINDS: tuple[Kind, ...] = (
    "schema",
    "dtype",
    "spelling",
    "missing_values",
    "non_finite",
    "out_of_range",
    "unknown_class",
    "duplicates",
    "outliers",
    "unseen_categories",
)
Action = Literal["repaired", "quarantined", "kept"]


@dataclass(frozen=True)
class Fix:
    """One thing done to a batch: what kind of problem, where, how many rows, and the sentence.

    ``action`` is "repaired" when values were changed or columns dropped/renamed, "quarantined" when
    rows were moved to quarantine (duplicates included), "kept" when rows were found unusual but
    kept as they are (categories training never saw).
    """

    kind: Kind
    column: str | None
    rows: int
    text: str
    action: Action = "repaired"


@dataclass(frozen=True, eq=False)
class QualityResult:
    """The repaired rows, the quarantined rows, and what was found and done.

    ``frame`` holds the kept rows, index 0..n-1: the features in profile order (numeric as float64,
    categorical and boolean as text, object dtype, in the known spelling; an unseen category as
    its stripped text) and the target when the batch has it (float64 for a regression, the class
    label as text for a classifier). ``quarantined`` holds the rejected rows exactly as they
    arrived, with ``row`` (their 0-based position in the input) and ``reason`` first. ``rejected``
    names the reason when the whole batch was refused for its schema. ``unseen`` counts, per
    column, the kept rows of each category training never saw. Always
    ``rows_in == rows_kept + rows_quarantined``.
    """

    frame: pd.DataFrame
    quarantined: pd.DataFrame
    fixes: tuple[Fix, ...]
    detections: frozenset[Kind]
    rows_in: int
    rejected: str | None = None
    unseen: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def rows_kept(self) -> int:
        return len(self.frame)

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantined)


_Entry = tuple[Kind, str | None, int, str, Action]


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
        action: Action = "repaired",
    ) -> None:
        self.detections.add(kind)
        self.fixes.append(Fix(kind, column, rows, text, action))

    def note(self, notes: Sequence[_Entry]) -> None:
        for kind, column, rows, text, action in notes:
            self.add(kind, column, rows, text, action)


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
        return _refuse(raw, f"duplicate column names {', '.join(dupes)}", columns)
    mapping = _match_columns(raw, (*names, label), report)
    missing = [n for n in names if n not in mapping]
    if require_target and label not in mapping:
        missing.append(label)
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        return _refuse(raw, f"missing {noun} {', '.join(missing)}", columns)

    values, gaps = _read_features(raw, mapping, columns, profile.missing_values, report)
    problems: list[_Problem] = []
    if label in mapping:
        problems += _read_label(raw[mapping[label]], values, label, profile, report)
    problems += _feature_problems(values, columns, gaps)
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
    unseen: dict[str, dict[str, int]] = {}
    for name, col in columns.items():
        if isinstance(col, CategoryProfile) and (counts := unseen_counts(kept[name], col)):
            unseen[name] = counts
            report.note([unseen_note(col, counts)])
    out = np.flatnonzero(~keep)
    quarantined = _quarantine_frame(raw, out, [row_reasons[i] for i in out.tolist()])
    return QualityResult(
        kept,
        quarantined,
        tuple(report.fixes),
        frozenset(report.detections),
        len(raw),
        unseen=unseen,
    )


_Problem = tuple[np.ndarray, str, Kind, str | None]


def _read_features(
    raw: pd.DataFrame,
    mapping: dict[str, Any],
    columns: dict[str, FeatureProfile],
    tokens: Sequence[str],
    report: _Report,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The features as read (numeric float64, categorical text or None) and, per row, how many
    of its features are missing or not finite."""
    data: dict[str, pd.Series] = {}
    gaps = np.zeros(len(raw), dtype=np.int64)
    absent = folded_tokens(tokens)
    for name, col in columns.items():
        cells = raw[mapping[name]]
        if isinstance(col, ColumnProfile):
            numbers, _unreadable, notes = read_numbers(cells, name, absent, is_label=False)
            report.note(notes)
            data[name] = numbers
            gaps += ~np.isfinite(numbers.to_numpy(dtype="float64"))
        else:
            read = read_categories(cells, col, tokens)
            report.note(category_notes(read, col))
            data[name] = pd.Series(read.values, dtype=object, name=name)
            gaps += read.missing
    return pd.DataFrame(data, columns=list(columns), index=raw.index), gaps


def _read_label(
    cells: pd.Series,
    values: pd.DataFrame,
    label: str,
    profile: QualityProfile,
    report: _Report,
) -> list[_Problem]:
    """Read the label column into ``values``; each reason a label sends its row to quarantine."""
    target = profile.target
    if isinstance(target, CategoryProfile):
        read = read_categories(cells, target, profile.missing_values, labels=True)
        report.note(label_notes(read, target))
        values[label] = pd.Series(read.values, dtype=object, index=values.index)
        return list(label_problems(read, target))
    absent = folded_tokens(profile.missing_values)
    values[label], unreadable, notes = read_numbers(cells, label, absent, is_label=True)
    report.note(notes)
    y = values[label].to_numpy(dtype="float64")
    problems: list[_Problem] = [
        (unreadable, f"label {label} is not a number", "dtype", label),
        (np.isnan(y) & ~unreadable, f"label {label} is missing", "missing_values", label),
        (np.isinf(y), f"label {label} is infinite", "non_finite", label),
    ]
    if target is not None:
        problems.append(_impossible(y, target, f"label {label}"))
    return problems


def _feature_problems(
    values: pd.DataFrame, columns: dict[str, FeatureProfile], gaps: np.ndarray
) -> list[_Problem]:
    """Each reason a row's features cannot be kept, with the rows it applies to."""
    problems: list[_Problem] = [
        _impossible(values[name].to_numpy(dtype="float64"), col, name)
        for name, col in columns.items()
        if isinstance(col, ColumnProfile)
    ]
    text = "more than half of the features missing or infinite"
    problems.append((gaps * 2 > len(columns), text, "missing_values", None))
    return problems


def _impossible(v: np.ndarray, col: ColumnProfile, what: str) -> _Problem:
    """The finite values outside the column's possible range."""
    outside = np.isfinite(v) & ((v < col.valid_low) | (v > col.valid_high))
    bounds = f"[{fmt_exact(col.valid_low)}, {fmt_exact(col.valid_high)}]"
    return outside, f"{what} outside the possible range {bounds}", "out_of_range", col.name


def _refuse(raw: pd.DataFrame, reason: str, columns: Mapping[str, FeatureProfile]) -> QualityResult:
    """The whole batch to quarantine as it arrived: its schema leaves nothing to repair."""
    n, report = len(raw), _Report()
    report.add("schema", None, n, f"Quarantined all {_count(n, 'row')}: {reason}", "quarantined")
    empty = pd.DataFrame(
        {
            name: pd.Series(dtype="float64" if isinstance(col, ColumnProfile) else object)
            for name, col in columns.items()
        }
    )
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


def _repair(
    kept: pd.DataFrame, columns: dict[str, FeatureProfile], report: _Report
) -> pd.DataFrame:
    """Fill missing and infinite numeric features with the reference median, then cap them to the
    fences; fill missing categorical features with the most frequent category."""
    fills: list[_Entry] = []
    caps: list[_Entry] = []
    for name, col in columns.items():
        if isinstance(col, CategoryProfile):
            cells = kept[name].to_numpy(dtype=object, copy=True)
            gap = pd.isna(cells)
            if gap.any():
                cells[gap] = col.mode
                fills.append(fill_note(col, int(gap.sum())))
            kept[name] = pd.Series(cells, dtype=object, index=kept.index)
            continue
        v = kept[name].to_numpy(dtype="float64", copy=True)
        nan, inf = np.isnan(v), np.isinf(v)
        v[nan | inf] = col.median
        if nan.any():
            n = int(nan.sum())
            text = f"Filled {name} with median {fmt(col.median)} in {_count(n, 'row')}"
            fills.append(("missing_values", name, n, text, "repaired"))
        if inf.any():
            n = int(inf.sum())
            text = f"Replaced {_count(n, 'infinite value')} in {name} with median {fmt(col.median)}"
            fills.append(("non_finite", name, n, text, "repaired"))
        outlying = (v < col.cap_low) | (v > col.cap_high)
        if outlying.any():
            n = int(outlying.sum())
            bounds = f"[{fmt(col.cap_low)}, {fmt(col.cap_high)}]"
            text = f"Capped {_count(n, 'outlier')} in {name} to {bounds}"
            caps.append(("outliers", name, n, text, "repaired"))
            v = np.clip(v, col.cap_low, col.cap_high)
        kept[name] = v
    report.note([*sorted(fills, key=lambda f: f[0] != "missing_values"), *caps])
    return kept


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
        **({"unseen": {c: dict(n) for c, n in result.unseen.items()}} if result.unseen else {}),
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
