"""How the quality check reads a column's cells, and the sentences that say what it found: a
categorical or boolean column and a classifier's labels (below), and a numeric column
(``read_numbers``: numbers pass, text that reads as a number is coerced, the missing-value tokens
and blanks are missing, any other text is unreadable).

In a categorical or boolean column each distinct cell is read once, in this order:

- known: exactly a known category (a number is read as its text: ``3.0`` as ``"3"``);
- missing: None, NaN, an empty or blank text, or one of the schema's missing-value tokens ("?",
  "NA"... compared without surrounding whitespace);
- respelled: a known category with stray whitespace (around it, or runs inside it) or in other
  case, read as the known spelling (only when that case-free spelling is one category's alone);
- missing: a missing-value token in other case ("na", "NULL");
- a boolean column: true/false/yes/no/y/n/t/f/1/0 in any case are its two values; native booleans,
  0/1 and true/false are its own spellings and pass silently, the others are reported as respelled;
  anything else is unreadable (treated as missing);
- a number in a column whose known categories are all text: unreadable (treated as missing);
- anything else: a category training never saw, kept (stripped) and counted. For labels, a class
  the model does not know: its row is quarantined.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from selfheal_daemon.model.schema import DEFAULT_MISSING, boolean_text, category_text

if TYPE_CHECKING:
    from selfheal_daemon.model.quality_profile import CategoryProfile

CategoryKind = Literal["dtype", "spelling", "unseen_categories", "missing_values", "unknown_class"]
Action = Literal["repaired", "quarantined", "kept"]
Note = tuple[CategoryKind, str, int, str, Action]
"""A finding in words: detection kind, column, rows, sentence, action."""
LabelProblem = tuple[np.ndarray, str, CategoryKind, str | None]
"""Rows a label sends to quarantine: their mask, the reason, the detection kind, the column."""

State = Literal["known", "respelled", "missing", "unreadable", "unseen"]
Parsed = Literal["number", "text", "missing", "unreadable"]
EXAMPLES = 3
UNSEEN_SHOWN = 5
_SILENT_BOOLEANS = frozenset({"true", "false", "1", "0", "1.0", "0.0"})


@dataclass(frozen=True)
class CategoryRead:
    """A column's cells as read: ``values`` (object) holds the known spelling, an unseen category's
    stripped text, or None; the masks say which rows were which (``missing`` includes
    ``unreadable``). ``respellings`` maps an input spelling to its category;
    ``unreadable_examples`` are the first unreadable inputs, as text."""

    values: np.ndarray
    known: np.ndarray
    respelled: np.ndarray
    missing: np.ndarray
    unreadable: np.ndarray
    respellings: dict[str, str]
    unreadable_examples: list[str]

    @property
    def unseen(self) -> np.ndarray:
        """The rows holding a category training never saw (for labels: an unknown class)."""
        rows: np.ndarray = ~self.known & ~self.missing
        return rows


def is_number(text: str) -> bool:
    """True when ``text`` reads as a number (``1_000`` does not: no data file means that)."""
    if "_" in text:
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _collapse(text: str) -> str:
    return " ".join(text.split())


def folded_tokens(missing_values: Iterable[str]) -> frozenset[str]:
    """The missing-value tokens as cells are compared with them: stripped, casefolded, and ""."""
    return frozenset(_collapse(t).casefold() for t in missing_values) | {""}


def _is_missing_scalar(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def read_categories(
    values: pd.Series | Iterable[object],
    profile: CategoryProfile,
    missing_values: Iterable[str] = DEFAULT_MISSING,
    *,
    labels: bool = False,
) -> CategoryRead:
    """Read ``values`` against ``profile`` (see the module docstring); with ``labels`` a number
    among text classes is an unknown class, not unreadable."""
    cells = pd.Series(list(values) if not isinstance(values, pd.Series) else values, dtype=object)
    codes, uniques = pd.factorize(cells.to_numpy(dtype=object), use_na_sentinel=True)
    known = set(profile.categories)
    folded: dict[str, str | None] = {}
    for c in profile.categories:
        key = c.casefold()
        folded[key] = None if key in folded else c
    text_only = not labels and profile.text_only
    missing_values = tuple(missing_values)
    exact = frozenset(_collapse(t) for t in missing_values)
    reader = _Reader(profile, known, folded, folded_tokens(missing_values), exact, text_only)
    read = [reader.read(u) for u in uniques.tolist()]
    read.append((None, "missing"))  # the slot for code -1, pandas' missing cells
    lookup = np.empty(len(read), dtype=object)
    lookup[:] = [value for value, _state in read]
    states = np.array([state for _value, state in read], dtype=object)
    picks = np.where(codes < 0, len(read) - 1, codes)
    state = states[picks]
    out = lookup[picks]
    respellings: dict[str, str] = {}
    unreadable_examples: list[str] = []
    for u, (value, st) in zip(uniques.tolist(), read, strict=False):
        if st == "respelled" and value is not None:
            respellings.setdefault(str(u), value)
        elif st == "unreadable" and len(unreadable_examples) < EXAMPLES:
            unreadable_examples.append(str(u))
    return CategoryRead(
        values=out,
        known=(state == "known") | (state == "respelled"),
        respelled=state == "respelled",
        missing=(state == "missing") | (state == "unreadable"),
        unreadable=state == "unreadable",
        respellings=respellings,
        unreadable_examples=unreadable_examples,
    )


@dataclass(frozen=True)
class _Reader:
    profile: CategoryProfile
    known: set[str]
    folded: dict[str, str | None]
    tokens: frozenset[str]
    exact_tokens: frozenset[str]
    text_only: bool

    def read(self, value: object) -> tuple[str | None, State]:
        """One distinct cell: what it reads as, and how it was read."""
        if _is_missing_scalar(value):
            return None, "missing"
        if self.profile.kind == "boolean":
            return self._boolean(value)
        text = value if isinstance(value, str) else category_text(value)
        return (None, "missing") if text is None else self._text(text)

    def _text(self, text: str) -> tuple[str | None, State]:
        if text in self.known:
            return text, "known"
        key = _collapse(text)
        if key in self.exact_tokens and key not in self.known:
            return None, "missing"
        spelled = key if key in self.known else self.folded.get(key.casefold())
        if spelled is not None:
            return spelled, "respelled"
        if key.casefold() in self.tokens:
            return None, "missing"
        if self.text_only and is_number(key):
            return None, "unreadable"
        return key, "unseen"

    def _boolean(self, value: object) -> tuple[str | None, State]:
        text = boolean_text(value)
        if text is not None:
            loud = isinstance(value, str) and (
                value != value.strip() or value.lower() not in _SILENT_BOOLEANS
            )
            return text, "respelled" if loud else "known"
        raw = category_text(value)
        if raw is None or _collapse(raw).casefold() in self.tokens:
            return None, "missing"
        return None, "unreadable"


def distinct_categories(
    values: pd.Series, missing_values: Iterable[str] = DEFAULT_MISSING
) -> tuple[str, ...]:
    """The distinct categories of a reference column, sorted: stripped text, tokens left out."""
    tokens = folded_tokens(missing_values)
    seen = {
        _collapse(text)
        for v in pd.unique(values.to_numpy(dtype=object))
        if not _is_missing_scalar(v) and (text := category_text(v)) is not None
    }
    return tuple(sorted(t for t in seen if t.casefold() not in tokens))


# -- the sentences ---------------------------------------------------------------------------------


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _examples(pairs: dict[str, str]) -> str:
    return ", ".join(f"{raw!r} -> {known!r}" for raw, known in list(pairs.items())[:EXAMPLES])


def category_notes(read: CategoryRead, profile: CategoryProfile) -> list[Note]:
    """What reading a feature column found, in words: respellings, unreadable cells, unseen
    categories (the fill of missing cells is ``fill_note``)."""
    name = profile.name
    notes: list[Note] = []
    n = int(read.respelled.sum())
    if n:
        where = (
            "true/false"
            if profile.kind == "boolean"
            else ("a known category" if n == 1 else "known categories")
        )
        text = (
            f"Normalised {_count(n, 'value')} of {name} to {where} ({_examples(read.respellings)})"
        )
        notes.append(("spelling", name, n, text, "repaired"))
    n = int(read.unreadable.sum())
    if n:
        shown = ", ".join(repr(e) for e in read.unreadable_examples)
        if profile.kind == "boolean":
            what = "true or false"
        else:
            what = "a category: a number" if n == 1 else "categories: numbers"
            what += " in a column of text categories"
        text = (
            f"Could not read {_count(n, 'value')} in {name} as {what} ({shown}); treated as missing"
        )
        notes.append(("dtype", name, n, text, "repaired"))
    return notes


def unseen_counts(values: Iterable[object], profile: CategoryProfile) -> dict[str, int]:
    """How many cells hold each category ``profile`` does not know (missing cells aside), most
    frequent first, ties in order of first appearance."""
    known = set(profile.categories)
    counts: dict[str, int] = {}
    for v in values:
        if isinstance(v, str) and v not in known:
            counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def unseen_note(profile: CategoryProfile, counts: dict[str, int]) -> Note:
    """The sentence for the kept rows holding categories training never saw."""
    n = sum(counts.values())
    listed = list(counts.items())
    shown = ", ".join(f"{c!r} ({k:,})" for c, k in listed[:UNSEEN_SHOWN])
    if len(listed) > UNSEEN_SHOWN:
        shown += f" and {len(listed) - UNSEEN_SHOWN:,} more"
    which = "a category" if n == 1 else "categories"
    text = f"Kept {_count(n, 'row')} of {profile.name} with {which} training never saw: {shown}"
    return ("unseen_categories", profile.name, n, text, "kept")


def label_notes(read: CategoryRead, profile: CategoryProfile) -> list[Note]:
    """The respelled labels of a classifier's target, in words."""
    n = int(read.respelled.sum())
    if not n:
        return []
    where = "a known class" if n == 1 else "known classes"
    shown = _examples(read.respellings)
    text = f"Normalised {_count(n, 'label')} of {profile.name} to {where} ({shown})"
    return [("spelling", profile.name, n, text, "repaired")]


CLASSES_SHOWN = 10
UNKNOWN_SHOWN = 5


def label_problems(read: CategoryRead, profile: CategoryProfile) -> list[LabelProblem]:
    """The rows a classifier's labels send to quarantine: a missing label, and a label that is
    none of the classes (one reason per such label, the first few; the rest share one)."""
    name, classes = profile.name, classes_text(profile)
    problems: list[LabelProblem] = [
        (read.missing, f"label {name} is missing", "missing_values", name)
    ]
    unknown = read.unseen
    labels = list(dict.fromkeys(read.values[unknown].tolist()))
    for value in labels[:UNKNOWN_SHOWN]:
        mask = unknown & (read.values == value)
        problems.append(
            (mask, f"label {value!r} is not one of the classes {classes}", "unknown_class", name)
        )
    if len(labels) > UNKNOWN_SHOWN:
        rest = unknown & ~np.isin(read.values, labels[:UNKNOWN_SHOWN])
        problems.append(
            (rest, f"label {name} is not one of the classes {classes}", "unknown_class", name)
        )
    return problems


def classes_text(profile: CategoryProfile) -> str:
    """The classes as a reason lists them: ``<=50K, >50K`` (the first ten, then how many)."""
    shown = ", ".join(profile.categories[:CLASSES_SHOWN])
    more = len(profile.categories) - CLASSES_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def fill_note(profile: CategoryProfile, n: int) -> Note:
    """The sentence for filling ``n`` missing cells of a categorical column with its mode."""
    what = "value" if profile.kind == "boolean" else "category"
    text = (
        f"Filled {profile.name} with the most frequent {what} {profile.mode!r} ({_count(n, 'row')})"
    )
    return ("missing_values", profile.name, n, text, "repaired")


# -- numeric columns -------------------------------------------------------------------------------


def _parse(value: object, absent: frozenset[str]) -> tuple[float, Parsed]:
    """One cell as a float, and whether it was a number, readable text, missing (empty or a
    missing-value token, ``absent`` casefolded) or unreadable."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return math.nan, "missing"
    if isinstance(value, bool | np.bool_):
        return math.nan, "unreadable"
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value), "number"
    if isinstance(value, str):
        text = value.strip()
        if not text or text.casefold() in absent:
            return math.nan, "missing"
        if "_" not in text:  # float() accepts "1_000"; a data file that writes that is not safe
            try:
                return float(text), "text"
            except ValueError:
                pass
    return math.nan, "unreadable"


def read_numbers(
    series: pd.Series, name: str, absent: frozenset[str], *, is_label: bool
) -> tuple[pd.Series, np.ndarray, list[Note]]:
    """A numeric column as float64, the mask of its unreadable cells, and the sentences for the
    text coerced and (a feature's) the text that could not be read."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series.astype("float64"), np.zeros(len(series), dtype=bool), []
    parsed = [_parse(v, absent) for v in series.tolist()]
    floats = pd.Series([p[0] for p in parsed], dtype="float64", name=name, index=series.index)
    unreadable = np.array([p[1] == "unreadable" for p in parsed], dtype=bool)
    notes: list[Note] = []
    coerced = sum(1 for p in parsed if p[1] == "text")
    if coerced:
        unit = "a number" if coerced == 1 else "numbers"
        text = f"Coerced {_count(coerced, 'value')} in {name} from text to {unit}"
        notes.append(("dtype", name, coerced, text, "repaired"))
    n = int(unreadable.sum())
    if n and not is_label:
        examples = ", ".join(repr(s) for s in list(dict.fromkeys(map(str, series[unreadable])))[:3])
        unit = "a number" if n == 1 else "numbers"
        text = (
            f"Could not read {_count(n, 'value')} in {name} as {unit} ({examples});"
            " treated as missing"
        )
        notes.append(("dtype", name, n, text, "repaired"))
    return floats, unreadable, notes
