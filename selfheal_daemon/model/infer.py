"""Reading a user's table and inferring its schema: what ``selfheal init`` shows and writes.

``read_table`` reads CSV (also gzip-compressed) or Parquet into a clean frame: text stripped, the
missing-value tokens read as missing, columns whose every value is a number as numbers. It refuses,
with a DataError saying why, a file that does not exist, is empty, is not a table (binary data,
one column of prose, rows of differing widths, a first line that is data rather than names) or has
no rows.

``infer_schema`` decides, for every column, what it is to the model and why: numeric, categorical,
boolean, ignored (constant, an id, all missing, too many distinct text values, listed in
``ignore``), or the target; and the task from the target (regression; binary or multiclass). The
rules are written next to ``_decide``; the reasons are sentences a person can check, and
``format_schema`` prints them as a table.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from selfheal_daemon.config import REGRESSION_METRICS, ModelConfig
from selfheal_daemon.errors import DataError
from selfheal_daemon.model.schema import Column, Schema, Task, category_text

DecisionKind = Literal["numeric", "categorical", "boolean", "ignored", "target"]

MIN_LABELLED_ROWS = 50
"""Fewer rows with a label than this cannot be split into a training set and a holdout."""
MAX_CATEGORIES = 255
"""More categories than this is not a categorical feature (HistGradientBoosting's own limit)."""
MANY_DISTINCT = 50
"""A text column with more distinct values than this, and more than half as many as it has values,
is free text or a key, not a category."""
MAX_CLASSES = 200
"""A target with more classes than this is almost surely the wrong column."""
REGRESSION_DISTINCT = 20
"""A numeric target with more distinct values than this (or any fraction) is a regression."""
FEW_VALUES = 20
"""An integer feature with at most this many values is pointed out as possibly categorical."""
NUMERIC_SHARE = 0.98
"""A text column whose cells are numbers but for this share is a numeric column with typos."""
MONOTONE_SHARE = 0.9
"""An all-distinct integer column rising (or falling) from row to row this often is a row id."""

_PARQUET = (".parquet", ".pq")
_DELIMITERS = (",", "\t", ";", "|")
_SAMPLE_BYTES = 1 << 16
_ID_NAME = re.compile(r"(^|[^a-z])(id|ids|key|uuid|guid|index|idx|row|rownum)$|^unnamed: \d+$")
_BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no"})


# ----- reading ---------------------------------------------------------------------------------


def read_table(path: Path, missing_values: Sequence[str]) -> pd.DataFrame:
    """The table in ``path`` (CSV, ``.csv.gz`` or Parquet) as a clean frame.

    Text is stripped; a cell equal to one of ``missing_values`` (or empty) is missing; a column
    whose every present value is a number holds numbers. DataError, naming the file and the
    reason, when there is no such file, it is empty, it is not a table, or it has no rows.
    """
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a CSV or Parquet file")
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise DataError(f"{path}: the file is empty")
    if path.name.lower().endswith(_PARQUET) or head == b"PAR1":
        frame = _read_parquet(path)
    else:
        frame = _read_csv(path, gzipped=head[:2] == b"\x1f\x8b")
    if frame.shape[1] == 0:
        raise DataError(f"{path}: the file holds no columns")
    if len(frame) == 0:
        raise DataError(f"{path}: the file has column names but no rows")
    return clean_frame(frame, missing_values)


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError as exc:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow (pip install pyarrow): {exc}"
        ) from None
    except (OSError, ValueError, TypeError, RuntimeError) as exc:  # pyarrow's derive from these
        raise DataError(f"{path}: not a readable Parquet table: {exc}") from None


def _read_csv(path: Path, *, gzipped: bool) -> pd.DataFrame:
    try:
        if gzipped:
            with gzip.open(path, "rb") as fh:
                raw = fh.read(_SAMPLE_BYTES)
        else:
            with path.open("rb") as fh:
                raw = fh.read(_SAMPLE_BYTES)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable CSV file: {exc}") from None
    if not raw.strip():
        raise DataError(f"{path}: the file is empty")
    encoding, sample = _decode(path, raw)
    delimiter, header = _sniff(path, sample, complete=len(raw) < _SAMPLE_BYTES)
    names = [h.strip() for h in header]
    repeated = sorted({n for n in names if n and names.count(n) > 1})
    if repeated:
        raise DataError(f"{path}: column names repeat: {', '.join(repeated)}")
    try:
        frame = pd.read_csv(
            path,
            sep=delimiter,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skipinitialspace=True,
            skip_blank_lines=True,
            encoding=encoding,
            compression="gzip" if gzipped else "infer",
        )
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text table (bytes that are not {encoding} text)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError, EOFError) as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a table: {message}") from None
    frame.columns = pd.Index([str(c).strip() for c in frame.columns])
    _refuse_headerless(path, frame)
    return frame


def _decode(path: Path, raw: bytes) -> tuple[str, str]:
    """The encoding the file is read with and its decoded sample; DataError for binary data."""
    if b"\x00" in raw:
        raise DataError(f"{path}: not a CSV or Parquet table (it holds binary data)")
    try:
        return "utf-8-sig", raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start >= len(raw) - 3:  # a character cut by the end of the sample
            return "utf-8-sig", raw[: exc.start].decode("utf-8-sig")
    text = raw.decode("latin-1")
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\r\n\t") + sum(
        1 for ch in text if 0x7F <= ord(ch) < 0xA0
    )
    if control > len(text) // 100:
        raise DataError(f"{path}: not a CSV or Parquet table (it holds binary data)")
    return "latin-1", text


def _sniff(path: Path, sample: str, *, complete: bool) -> tuple[str, list[str]]:
    """The delimiter whose rows (in the sample) all have the header's width, and the header."""
    if not complete and "\n" in sample:
        sample = sample[: sample.rfind("\n")]  # drop a record cut by the end of the sample
    widths: dict[str, list[int]] = {}
    for delimiter in _DELIMITERS:
        try:
            rows = [
                r
                for r in csv.reader(io.StringIO(sample), delimiter=delimiter, skipinitialspace=True)
                if any(cell.strip() for cell in r)
            ]
        except csv.Error:
            continue
        if not rows:
            raise DataError(f"{path}: the file is empty")
        counts = [len(r) for r in rows]
        widths[delimiter] = counts
        if counts[0] > 1 and all(c == counts[0] for c in counts[1:]):
            return delimiter, rows[0]
    if all(counts[0] == 1 for counts in widths.values()):
        raise DataError(
            f"{path}: not a table: it has a single column (no ',', tab, ';' or '|' between "
            "values); a model needs a target column and at least one feature column"
        )
    counts = max(widths.values(), key=lambda c: c[0])
    seen = ", ".join(str(w) for w in sorted(set(counts)))
    raise DataError(
        f"{path}: not a table: its lines have differing numbers of fields ({seen}; the first "
        f"line has {counts[0]})"
    )


def _refuse_headerless(path: Path, frame: pd.DataFrame) -> None:
    """DataError when the first line is a row of data: most names are values of their column."""
    if len(frame) == 0:
        return
    like_values = []
    head = frame.head(10_000)
    for name in head.columns:
        column = head[name].str.strip()
        number = _as_number(name)
        if number is None:
            if (column == name).any():
                like_values.append(name)
            continue
        numbers = _to_numbers(column)
        if numbers.notna().all() and numbers.min() <= number <= numbers.max():
            like_values.append(name)
    if len(like_values) >= max(2, math.ceil(frame.shape[1] / 2)):
        shown = ", ".join(repr(v) for v in like_values[:4])
        raise DataError(
            f"{path}: the first line looks like a row of data, not column names ({shown} are "
            "values of their own columns); add a header line naming the columns"
        )


def _as_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# ----- cleaning --------------------------------------------------------------------------------


def clean_frame(frame: pd.DataFrame, missing_values: Sequence[str]) -> pd.DataFrame:
    """A copy of ``frame`` with text stripped, missing tokens as missing, number columns numeric.

    Text and mixed columns become text (numbers in them as ``category_text``) or, when every
    present value is a number, float64 (int64 when they are whole and none is missing).
    Numeric, boolean and date columns pass through.
    """
    absent = {m.strip() for m in missing_values} | {""}
    names = [str(name).strip() for name in frame.columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"column names repeat: {', '.join(repeated)}")
    out: dict[str, pd.Series] = {}
    for name, position in zip(names, range(frame.shape[1]), strict=True):
        series = frame.iloc[:, position]
        if _is_text(series):
            series = _clean_text(series, absent)
        out[name] = series.reset_index(drop=True)
    return pd.DataFrame(out, columns=names)


def _is_text(series: pd.Series) -> bool:
    return bool(
        pd.api.types.is_object_dtype(series.dtype)
        or pd.api.types.is_string_dtype(series.dtype)
        or isinstance(series.dtype, pd.CategoricalDtype)
    )


def _clean_text(series: pd.Series, absent: set[str]) -> pd.Series:
    """Stripped text (numbers as their text, missing as None), or numbers when every present
    cell is one; each distinct cell is looked at once."""
    codes, uniques = pd.factorize(series.astype(object), use_na_sentinel=True)
    texts = []
    for value in uniques:
        text = category_text(value)
        texts.append(None if text is None or text in absent else text)
    where = np.where(codes < 0, len(texts), codes)
    present = [t for t in texts if t is not None]
    if present:
        numbers = pd.to_numeric(pd.Series(texts, dtype=object), errors="coerce")
        parsed = numbers.to_numpy(dtype="float64", na_value=np.nan)
        if int(np.count_nonzero(~np.isnan(parsed))) == len(present):
            values = np.append(parsed, np.nan)[where]
            whole = np.isfinite(values).all() and bool((values % 1 == 0).all())
            if whole and bool((np.abs(values) < 2**53).all()):
                return pd.Series(values.astype("int64"), index=series.index, name=series.name)
            return pd.Series(values, index=series.index, name=series.name)
    lookup = np.array([*texts, None], dtype=object)
    return pd.Series(lookup[where], index=series.index, dtype=object, name=series.name)


def _texts(values: pd.Series) -> pd.Series:
    """Cells as ``category_text`` (None where missing), each distinct value converted once."""
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
    lookup = np.array([*(category_text(u) for u in uniques), None], dtype=object)
    return pd.Series(lookup[np.where(codes < 0, len(uniques), codes)], index=values.index)


def _to_numbers(values: pd.Series) -> pd.Series:
    """Cells as float64 (NaN where not a number), each distinct text parsed once."""
    if not _is_text(values):
        return pd.Series(values, index=values.index, dtype="float64")
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
    parsed = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce")
    lookup = np.append(parsed.to_numpy(dtype="float64", na_value=np.nan), np.nan)
    return pd.Series(lookup[np.where(codes < 0, len(uniques), codes)], index=values.index)


# ----- inference -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What one column of the data is to the model and why: ``kind`` is a schema kind,
    ``"ignored"`` or ``"target"``; ``reason`` starts with the kind (``"numeric: 73 distinct
    values in [17, 90]"``, ``"ignored: constant (every value is 'x')"``)."""

    column: str
    kind: DecisionKind
    reason: str

    @property
    def detail(self) -> str:
        """The reason without its leading kind."""
        head, sep, rest = self.reason.partition(": ")
        return rest if sep and head == self.kind else self.reason


@dataclass(frozen=True)
class Inference:
    """A schema inferred from data, with the decision on every column of the data (file order),
    the rows read and labelled, each class's count, and why the task and the metric are what
    they are."""

    schema: Schema
    decisions: list[Decision]
    rows: int
    labelled: int
    class_counts: dict[str, int] = field(default_factory=dict)
    task_reason: str = ""
    metric_reason: str = ""

    @property
    def ignored(self) -> list[Decision]:
        return [d for d in self.decisions if d.kind == "ignored"]

    def decision(self, column: str) -> Decision:
        for d in self.decisions:
            if d.column == column:
                return d
        raise DataError(f"no decision about {column!r}: it is not a column of the data")

    def slice_candidates(self, limit: int = 2, max_categories: int = 10) -> list[str]:
        """Up to ``limit`` categorical features with 2 to ``max_categories`` categories, fewest
        first: the columns a per-slice comparison in the gate can use."""
        small = [
            (len(c.categories), i, c.name)
            for i, c in enumerate(self.schema.columns)
            if c.kind == "categorical" and 2 <= len(c.categories) <= max_categories
        ]
        return [name for _, _, name in sorted(small)[:limit]]


def infer_schema(frame: pd.DataFrame, spec: ModelConfig, *, name: str | None = None) -> Inference:
    """The schema of ``frame`` for the model ``spec`` describes (``[model]``), and why.

    ``spec.features`` (when given) selects and orders the features, ``spec.ignore`` leaves columns
    out, ``spec.categorical`` forces columns categorical; a column named in either list is always
    kept. DataError for: a target or named feature not in the data, a target all missing or
    with one class, fewer than 50 labelled rows, a task or metric that does not fit the target.
    """
    data = clean_frame(frame, spec.missing_values)
    columns = [str(c) for c in data.columns]
    _require_columns(spec, columns)
    target_text = data[spec.target]
    labelled_mask = target_text.notna().to_numpy()
    if not labelled_mask.any():
        raise DataError(f"the target {spec.target!r} is all missing: nothing to learn from")
    task, target_values, task_reason = _decide_task(target_text[labelled_mask], spec)
    keep = np.asarray(target_values.notna())
    labelled = data[labelled_mask].loc[keep].reset_index(drop=True)
    if len(labelled) < MIN_LABELLED_ROWS:
        raise DataError(
            f"only {len(labelled):,} rows have a label in {spec.target!r}; a model needs at "
            f"least {MIN_LABELLED_ROWS}"
        )
    labels = target_values[keep].reset_index(drop=True)

    classes: tuple[str, ...] = ()
    counts: dict[str, int] = {}
    if task != "regression":
        tally = labels.value_counts()
        classes = tuple(sorted(str(c) for c in tally.index))
        counts = {c: int(tally[c]) for c in classes}

    chosen = (
        list(spec.features)
        if spec.features
        else [c for c in columns if c != spec.target and c not in spec.ignore]
    )
    named = set(spec.features) | set(spec.categorical)
    decisions: dict[str, Decision] = {}
    kept: dict[str, Column] = {}
    for column in columns:
        if column == spec.target:
            decisions[column] = Decision(column, "target", f"target: {task_reason}")
        elif column in spec.ignore:
            decisions[column] = Decision(column, "ignored", "ignored: listed in ignore")
        elif column not in chosen:
            decisions[column] = Decision(column, "ignored", "ignored: not listed in features")
        else:
            col, decision = _decide(
                column,
                labelled[column],
                categorical=column in spec.categorical,
                named=column in named,
            )
            decisions[column] = decision
            if col is not None:
                kept[column] = col
    features = [kept[c] for c in chosen if c in kept]
    if not features:
        why = "; ".join(
            f"{d.column}: {d.detail}" for d in decisions.values() if d.kind == "ignored"
        )
        raise DataError(
            f"no column is usable as a feature ({why or 'the data has only the target'})"
        )
    metric, metric_reason = _decide_metric(spec.metric, task)
    schema = Schema(
        name=name or spec.name,
        task=task,
        target=spec.target,
        columns=tuple(features),
        classes=classes,
        metric=metric,
        missing_values=tuple(spec.missing_values),
    )
    return Inference(
        schema=schema,
        decisions=[decisions[c] for c in columns],
        rows=len(data),
        labelled=len(labelled),
        class_counts=counts,
        task_reason=task_reason,
        metric_reason=metric_reason,
    )


def _require_columns(spec: ModelConfig, columns: list[str]) -> None:
    listed = ", ".join(columns)
    if spec.target not in columns:
        raise DataError(
            f"no such column {spec.target!r}{_did_you_mean(spec.target, columns)}; "
            f"columns are: {listed}"
        )
    for key in ("features", "categorical"):
        absent = [n for n in getattr(spec, key) if n not in columns]
        if absent:
            names = ", ".join(f"{n!r}{_did_you_mean(n, columns)}" for n in absent)
            raise DataError(f"{key} names {names}, not in the data; columns are: {listed}")


def _did_you_mean(name: str, columns: list[str]) -> str:
    close = difflib.get_close_matches(name, columns, n=1, cutoff=0.6)
    if not close:
        folded = [c for c in columns if c.casefold() == name.casefold()]
        close = folded[:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


# The rules, for a column of the labelled rows (a column named in features or categorical is
# never ignored; the others are, when constant, all missing, an id, or text too varied):
#   - dates and times: ignored (derive numbers from them first);
#   - all missing: ignored;
#   - listed in categorical: categorical, categories its distinct values as text;
#   - a boolean dtype, or text that is only true/false/yes/no: boolean;
#   - numbers: numeric (an integer column with few values stays numeric, and the reason says
#     how to make it categorical); an all-distinct integer column that rises (or falls) row
#     after row, or is named like an id, is an id;
#   - text whose cells are numbers for 98% or more: numeric, the others read as missing;
#   - other text: categorical; an all-distinct one (over 50 values) is an id, one with over 255
#     categories, or over 50 and more than half as many as it has values, is ignored.
def _decide(  # noqa: PLR0911 - one return per rule, in the order above
    name: str, series: pd.Series, *, categorical: bool, named: bool
) -> tuple[Column | None, Decision]:
    def ignored(why: str) -> tuple[None, Decision]:
        return None, Decision(name, "ignored", f"ignored: {why}")

    n = len(series)
    present = series.notna()
    count = int(present.sum())
    missing = count < n
    gaps = f", {n - count:,} missing" if missing else ""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        if named:
            raise DataError(
                f"column {name!r} holds dates or times: a feature must be numbers, "
                "categories or booleans (derive numbers from it first)"
            )
        return ignored("dates or times (derive numbers from them to use them)")
    if count == 0:
        if not named:
            return ignored("all missing")
        if categorical:
            col = Column(name, "categorical", categories=(), missing=True)
            return col, Decision(name, "categorical", "categorical: all missing (kept: named)")
        col = Column(name, "numeric", missing=True)
        return col, Decision(name, "numeric", "numeric: all missing (kept: named)")
    values = series[present]
    distinct = values.nunique()
    if distinct == 1 and not named:
        return ignored(f"constant (every value is {_show(values.iloc[0])}{gaps})")

    if categorical:
        categories = _categories(values)
        col = Column(name, "categorical", categories=categories, missing=missing)
        why = f"categorical: {len(categories):,} categories{gaps} (listed in categorical)"
        return col, Decision(name, "categorical", why)

    if pd.api.types.is_bool_dtype(series.dtype) or _boolean_words(values):
        col = Column(name, "boolean", missing=missing)
        shown = "/".join(sorted({str(v).lower() for v in values.unique()}))
        return col, Decision(name, "boolean", f"boolean: {shown}{gaps}")

    numbers = _to_numbers(values)
    stray = count - int(numbers.notna().sum())
    if stray == 0 or (stray <= (1 - NUMERIC_SHARE) * count and numbers.nunique() > 2):
        return _numeric(name, series, numbers, stray=stray, named=named, n=n)

    categories = _categories(values)
    k = len(categories)
    if not named:
        if k == count and k > MANY_DISTINCT:
            return ignored(f"an id (every value distinct, {k:,} of them)")
        if k > MAX_CATEGORIES or (k > MANY_DISTINCT and k > count / 2):
            return ignored(f"too many distinct text values ({k:,} of {count:,})")
    col = Column(name, "categorical", categories=categories, missing=missing)
    return col, Decision(name, "categorical", f"categorical: {k:,} categories{gaps}")


def _numeric(
    name: str, series: pd.Series, numbers: pd.Series, *, stray: int, named: bool, n: int
) -> tuple[Column | None, Decision]:
    finite = numbers[np.isfinite(numbers)]
    count = len(numbers)
    if finite.empty:  # only infinities, or stray text
        if not named:
            return None, Decision(name, "ignored", "ignored: no finite numbers")
        col = Column(name, "numeric", missing=True)
        return col, Decision(name, "numeric", "numeric: no finite numbers (kept: named)")
    distinct = int(finite.nunique())
    whole = bool((finite % 1 == 0).all())
    if (
        not named
        and whole
        and distinct == count
        and count > 1
        and (_id_like(name) or _monotone(finite.to_numpy()))
    ):
        return None, Decision(name, "ignored", "ignored: an id (every value distinct)")
    low, high = float(finite.min()), float(finite.max())
    absent = n - len(finite)  # missing cells, stray text, infinities: all missing to the model
    plural = "value" if distinct == 1 else "values"
    why = f"numeric: {distinct:,} distinct {plural} in [{_number(low)}, {_number(high)}]"
    if absent:
        why += f", {absent:,} missing"
    if stray:
        odd = series[series.notna()][numbers.isna().to_numpy()]
        why += f" ({stray:,} cells not numbers, e.g. {_show(odd.iloc[0])}, read as missing)"
    if whole and 2 <= distinct <= FEW_VALUES:
        why += "; whole numbers, few values: kept numeric (list it in categorical for categories)"
    col = Column(name, "numeric", low=low, high=high, missing=absent > 0)
    return col, Decision(name, "numeric", why)


def _decide_task(target: pd.Series, spec: ModelConfig) -> tuple[Task, pd.Series, str]:
    """The task, the labels it learns from (numbers or class text, NaN for an unusable one), and
    the reason in words."""
    count = len(target)
    numbers = _to_numbers(target)
    numbers = numbers.where(np.isfinite(numbers))
    stray = count - int(numbers.notna().sum())
    numeric = not pd.api.types.is_bool_dtype(target.dtype) and (
        stray == 0 or stray <= (1 - NUMERIC_SHARE) * count
    )
    distinct = int(numbers.nunique())
    fractional = bool((numbers.dropna() % 1 != 0).any())
    name = spec.target
    dropped = f"; {stray:,} labels not numbers, left out" if stray else ""
    regression_why = (
        f"regression: numeric in [{_number(float(numbers.min()))}, "
        f"{_number(float(numbers.max()))}], {distinct:,} distinct values{dropped}"
        if numeric and distinct
        else ""
    )
    if spec.task == "regression":
        if not numeric or not distinct:
            example = target[numbers.isna()].iloc[0] if stray else None
            raise DataError(
                f"the task is regression but the target {name!r} is not numeric "
                f"(e.g. {_show(example)})"
            )
        return "regression", numbers, regression_why
    if spec.task == "auto" and numeric and (distinct > REGRESSION_DISTINCT or fractional):
        return "regression", numbers, regression_why + " (auto)"

    source = numbers if numeric else target  # a numeric target's stray text is no class
    labels = _texts(source)
    classes = sorted(labels.dropna().unique())
    k = len(classes)
    if k == 1:
        raise DataError(
            f"the target {name!r} has one class ({_show(classes[0])}): a classifier needs at "
            "least two"
        )
    if k > MAX_CLASSES:
        raise DataError(
            f"the target {name!r} has {k:,} distinct values, too many classes (at most "
            f"{MAX_CLASSES}); is it the right column? (a numeric target is a regression)"
        )
    if spec.task == "binary" and k != 2:
        raise DataError(
            f"the task is binary but the target {name!r} has {k} classes: {', '.join(classes[:10])}"
        )
    if spec.task == "multiclass" and k < 3:
        raise DataError(
            f"the task is multiclass but the target {name!r} has {k} classes: {', '.join(classes)}"
        )
    task: Task = "binary" if k == 2 else "multiclass"
    auto = " (auto)" if spec.task == "auto" else ""
    return task, labels, f"{task}: {k} classes{auto}"


# The rule model.metrics.choose_metric applies too; kept here until that lands.
_AUTO_METRIC: dict[str, tuple[str, str]] = {
    "regression": ("r2", "a constant answer (the mean) scores 0"),
    "binary": ("roc_auc", "ranks the two classes; a constant answer scores 0.5 at any balance"),
    "multiclass": (
        "balanced_accuracy",
        "mean recall over classes; answering the largest class scores 1/k at any balance",
    ),
}


def _decide_metric(metric: str, task: Task) -> tuple[str, str]:
    if metric == "auto":
        chosen, why = _AUTO_METRIC[task]
        return chosen, f"auto for {task}: {why}"
    if task == "regression" and metric not in REGRESSION_METRICS:
        raise DataError(f"metric {metric!r} is for a classifier; the task is regression")
    if task != "regression" and metric in REGRESSION_METRICS:
        raise DataError(f"metric {metric!r} is for a regression; the task is {task}")
    return metric, "from the config"


def _categories(values: pd.Series) -> tuple[str, ...]:
    return tuple(sorted({t for v in values.unique() if (t := category_text(v)) is not None}))


def _boolean_words(values: pd.Series) -> bool:
    if not _is_text(values):
        return False
    words = {str(v).lower() for v in values.unique()}
    return len(words) <= 4 and words <= _BOOLEAN_WORDS


def _id_like(name: str) -> bool:
    return bool(_ID_NAME.search(name.strip().lower()))


def _monotone(values: np.ndarray) -> bool:
    steps = np.diff(values)
    if steps.size == 0:
        return False
    rising = float(np.mean(steps > 0))
    return rising >= MONOTONE_SHARE or rising <= 1 - MONOTONE_SHARE


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _show(value: Any) -> str:
    text = category_text(value)
    if text is None:
        return "missing"
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    return repr(text if len(text) <= 40 else text[:37] + "...")


# ----- the table a person checks -----------------------------------------------------------------


def format_schema(inference: Inference) -> str:
    """The inferred schema as a table (column, kind, detail), then the task, target and classes."""
    schema = inference.schema
    width = max(len("COLUMN"), *(len(d.column) for d in inference.decisions))
    width = min(width, 40)
    kind_width = len("categorical")
    lines = [f"{'COLUMN':<{width}}  {'KIND':<{kind_width}}  DETAIL"]
    for d in inference.decisions:
        column = d.column if len(d.column) <= width else d.column[: width - 3] + "..."
        lines.append(f"{column:<{width}}  {d.kind:<{kind_width}}  {d.detail}")
    kinds: list[str] = [c.kind for c in schema.columns]
    summary = ", ".join(
        f"{kinds.count(k)} {k}" for k in ("numeric", "categorical", "boolean") if kinds.count(k)
    )
    lines += [
        "",
        f"model:    {schema.name}",
        f"task:     {inference.task_reason or schema.task}",
        f"target:   {schema.target}",
        f"metric:   {schema.metric} ({inference.metric_reason})",
        f"features: {len(schema.columns)} ({summary}); {len(inference.ignored)} column(s) ignored",
        f"rows:     {inference.rows:,} read, {inference.labelled:,} with a label",
    ]
    if schema.classes:
        total = sum(inference.class_counts.values()) or 1
        shown = ", ".join(
            f"{c!r} {inference.class_counts.get(c, 0):,} "
            f"({100 * inference.class_counts.get(c, 0) / total:.1f}%)"
            for c in schema.classes
        )
        lines.append(f"classes:  {shown}")
    return "\n".join(lines)
