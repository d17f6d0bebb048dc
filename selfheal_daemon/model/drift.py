"""Data drift: how far each feature of a current window has moved from the model's reference.

Pure numpy (and one scipy distance): arrays in, a frozen ``DriftResult`` out; the only I/O is
``ReferenceSummary.save`` and ``load``. Rows are the schema's matrix (``Schema.encode``): numeric
columns hold values, categorical and boolean ones category codes. The reference's summary is built
once, at training time, and stored with the model version (``drift.npz``): a check never looks at
the reference rows again.

The statistics are ``drift_stats``'s (which says why these and how they compare with Evidently's,
and what they cost): for a numeric feature PSI on the reference's quantile bins and the exact
two-sample KS, on finite values only; for a categorical or boolean feature PSI and the
Jensen-Shannon distance (log base 2, so in [0, 1]) over its categories plus an unseen and a
missing bin, on every row. **The rule**: a numeric feature is drifted when ``psi >= psi_threshold``
or ``ks >= ks_threshold``; a categorical one when ``psi >= psi_threshold`` or
``js >= js_threshold``.

**The verdict**: ``share`` is drifted features / all features and ``weighted_share`` the drifted
features' importance (the model's permutation importance, normalised to sum to 1). A numeric
feature with fewer than ``min_rows`` finite values is not judged (not drifted, and the reason says
why) but still counts in the denominator; a categorical one counts every row (missing is one of
its bins). A window of fewer than ``min_rows`` rows is not judged at all; otherwise
``dataset_drift`` is ``score >= share``, the score being the weighted share when ``weighted`` is
set.

**The predictions**: given the model's predictions on the reference rows, the summary also holds
their distribution, a regression's as a numeric feature, a classifier's (class indices) as a
categorical one over ``schema.classes``. A check given the window's predictions compares them by
the same rule (``DriftResult.prediction``, detail ``"prediction"``): one more signal, named in the
reason when it drifted, but no feature: it has no importance and does not change the verdict.

**Stored form**: an npz (no pickle). Format 1 throughout: the kinds, the categories and the
predictions' summary are optional arrays, and a file without them (written before categorical
features existed) is read as an all-numeric summary without predictions. A reader that predates
them ignores them: it sees a categorical feature as one with no finite reference values (never
judged) and the file still loads.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from selfheal_daemon.errors import DataError
from selfheal_daemon.model.drift_stats import (
    EPSILON,
    Grid,
    categorical_stats,
    category_counts,
    check_categories,
    flat_categories,
    grid,
    numeric_reference,
    numeric_stats,
    split_categories,
)
from selfheal_daemon.model.schema import Column, Schema
from selfheal_daemon.system.files import atomic_write_bytes

__all__ = [
    "EPSILON",
    "PREDICTION",
    "DriftParams",
    "DriftResult",
    "FeatureDrift",
    "ReferenceSummary",
    "check",
]

FORMAT_VERSION = 1
DRIFT_FILE = "drift.npz"  # the summary's name in a registry version (an extra artifact)
PREDICTION = "prediction"  # the name of the predictions' column and of their FeatureDrift
_KEYS = ("format", "features", "edges", "freqs", "sorted_sample", "importance", "rows")
_KIND_KEYS = ("kinds", "n_categories", "category_names", "category_freqs")  # all or none
_PREFIX = "prediction_"  # the predictions' summary's arrays, in the same file
_KNOWN = frozenset((*_KEYS, *_KIND_KEYS)) | {_PREFIX + k for k in (*_KEYS, *_KIND_KEYS)}


class DriftParams(Protocol):
    """What a check needs from the config; ``config.DriftConfig`` is one."""

    @property
    def bins(self) -> int: ...
    @property
    def psi_threshold(self) -> float: ...
    @property
    def ks_threshold(self) -> float: ...
    @property
    def js_threshold(self) -> float: ...
    @property
    def min_rows(self) -> int: ...
    @property
    def share(self) -> float: ...
    @property
    def weighted(self) -> bool: ...


@dataclass(frozen=True, eq=False)
class ReferenceSummary:
    """The reference a model version is checked against, computed once at training time.

    Layout, F features and B bins: ``edges`` (F, B-1) and ``freqs`` (F, B) per feature, a feature
    with tied edges padded at the end (edges with NaN, freqs with 0); ``sorted_sample`` (F, rows),
    each feature's finite values ascending, then NaN for the rows where it was not finite. A
    categorical (or boolean) feature has no numeric bins (all NaN and 0): its ``categories`` name
    its k categories and its ``category_freqs`` are k + 2 shares (each category, unseen, missing).
    ``kinds``, ``categories`` and ``category_freqs`` may be left empty: all numeric. ``prediction``
    is the predictions' own one-column summary (no importance, no prediction), or None.
    """

    features: tuple[str, ...]
    edges: np.ndarray
    freqs: np.ndarray
    sorted_sample: np.ndarray
    importance: np.ndarray
    rows: int
    kinds: tuple[str, ...] = ()
    categories: tuple[tuple[str, ...], ...] = ()
    category_freqs: tuple[np.ndarray, ...] = ()
    prediction: ReferenceSummary | None = None
    _grids: tuple[Grid, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate (ValueError naming what is wrong), freeze the arrays, derive the grids."""
        for name in ("edges", "freqs", "sorted_sample", "importance"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "features", tuple(str(f) for f in self.features))
        object.__setattr__(self, "rows", int(self.rows))
        n = len(self.features)
        if n == 0 or len(set(self.features)) != n:
            raise ValueError(f"features must be distinct and not empty: {self.features}")
        bins = self.freqs.shape[-1] if self.freqs.ndim == 2 else 0
        if bins < 2 or self.rows < 1:
            raise ValueError(f"need at least 2 bins and 1 row, got {bins} and {self.rows}")
        for name, shape in (
            ("edges", (n, bins - 1)),
            ("freqs", (n, bins)),
            ("sorted_sample", (n, self.rows)),
            ("importance", (n,)),
        ):
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} has shape {getattr(self, name).shape}, expected {shape}")
        imp = self.importance
        if not (np.all(np.isfinite(imp)) and np.all(imp >= 0) and abs(imp.sum() - 1) < 1e-6):
            raise ValueError("importance must be non-negative and sum to 1")
        self._set_kinds(n)
        grids = tuple(
            grid(self.features[j], self.sorted_sample[j], self.edges[j], self.freqs[j])
            for j in range(n)
        )
        for j in range(n):
            if self.kinds[j] != "numeric" and grids[j].values.size:
                raise ValueError(f"{self.features[j]}: a {self.kinds[j]} feature has numeric bins")
        object.__setattr__(self, "_grids", grids)
        sub = self.prediction
        if sub is not None and (len(sub.features) != 1 or sub.prediction is not None):
            raise ValueError("the predictions' summary must have one column and no predictions")

    def _set_kinds(self, n: int) -> None:
        """Fill in and validate ``kinds``, ``categories`` and ``category_freqs``."""
        kinds = tuple(str(k) for k in self.kinds) or ("numeric",) * n
        categories = tuple(tuple(str(c) for c in cats) for cats in self.categories) or ((),) * n
        freqs = tuple(_frozen(f) for f in self.category_freqs) or (np.empty(0),) * n
        if not (len(kinds) == len(categories) == len(freqs) == n):
            raise ValueError(f"kinds, categories and category_freqs must each have {n} entries")
        for name, kind, cats, share in zip(self.features, kinds, categories, freqs, strict=True):
            check_categories(name, kind, cats, share)
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "categories", categories)
        object.__setattr__(self, "category_freqs", freqs)

    @property
    def bins(self) -> int:
        """The number of quantile bins the summary was built with (before merging ties)."""
        return int(self.freqs.shape[1])

    @property
    def all_numeric(self) -> bool:
        return all(kind == "numeric" for kind in self.kinds)

    @classmethod
    def build(
        cls,
        reference: np.ndarray,
        schema: Schema,
        *,
        bins: int = 10,
        importance: Sequence[float] | np.ndarray | None = None,
        predictions: np.ndarray | None = None,
    ) -> ReferenceSummary:
        """Summarise ``reference``, the schema's matrix (rows x features in schema order);
        ``bins`` >= 2.

        ``importance`` is normalised to sum to 1; all features weigh the same without it.
        ``predictions`` are the model's on the reference rows (``schema.predict``: values, or class
        indices into ``schema.classes``); without them the summary has no ``prediction``.
        """
        if not isinstance(schema, Schema):
            raise TypeError(f"build takes the model's Schema, not {type(schema).__name__}")
        ref = np.asarray(reference, dtype=np.float64)
        n = len(schema.columns)
        if ref.ndim != 2 or ref.shape[1] != n or ref.shape[0] < 1:
            raise ValueError(f"reference has shape {ref.shape}, expected (rows, {n})")
        if bins < 2:
            raise ValueError(f"bins must be at least 2, got {bins}")
        if importance is None:
            weights = np.full(n, 1.0 / n)
        else:
            raw = np.asarray(importance, dtype=np.float64)
            if (
                raw.shape != (n,)
                or not np.all(np.isfinite(raw))
                or np.any(raw < 0)
                or raw.sum() <= 0
            ):
                raise ValueError(f"importance must be {n} non-negative numbers, not all 0")
            weights = raw / raw.sum()
        prediction = None
        if predictions is not None:
            pred = np.asarray(predictions, dtype=np.float64).reshape(-1)
            if pred.size != ref.shape[0]:
                raise ValueError(f"{pred.size} predictions for {ref.shape[0]} reference rows")
            column = (
                Column(PREDICTION, "categorical", categories=schema.classes)
                if schema.is_classifier
                else Column(PREDICTION, "numeric")
            )
            prediction = cls._summarise(pred[:, None], (column,), bins, np.ones(1), None)
        return cls._summarise(ref, schema.columns, bins, weights, prediction)

    @classmethod
    def _summarise(
        cls,
        ref: np.ndarray,
        columns: Sequence[Column],
        bins: int,
        weights: np.ndarray,
        prediction: ReferenceSummary | None,
    ) -> ReferenceSummary:
        n, rows = len(columns), ref.shape[0]
        edges, freqs = np.full((n, bins - 1), np.nan), np.zeros((n, bins))
        sample = np.full((n, rows), np.nan)
        shares = []
        for j, col in enumerate(columns):
            if col.is_numeric:
                edges[j], freqs[j], sample[j] = numeric_reference(ref[:, j], bins)
                shares.append(np.empty(0))
            else:
                shares.append(category_counts(ref[:, j], len(col.categories)) / rows)
        return cls(
            tuple(c.name for c in columns),
            edges,
            freqs,
            sample,
            weights,
            rows,
            kinds=tuple(c.kind for c in columns),
            categories=tuple(() if c.is_numeric else c.categories for c in columns),
            category_freqs=tuple(shares),
            prediction=prediction,
        )

    def save(self, path: Path) -> None:
        """Write the summary as an npz (no pickle), atomically and durably."""
        arrays = self._arrays()
        if self.prediction is not None:
            arrays.update({_PREFIX + k: v for k, v in self.prediction._arrays().items()})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(path, buffer.getvalue())

    def _arrays(self) -> dict[str, np.ndarray]:
        return {
            "format": np.array(FORMAT_VERSION),
            "features": np.array(self.features, dtype=np.str_),
            "edges": self.edges,
            "freqs": self.freqs,
            "sorted_sample": self.sorted_sample,
            "importance": self.importance,
            "rows": np.array(self.rows),
            **flat_categories(self.kinds, self.categories, self.category_freqs),
        }

    @classmethod
    def load(cls, path: Path) -> ReferenceSummary:
        """Read what ``save`` wrote; DataError naming the file if it is missing or malformed."""
        try:
            arrays = _read_npz(path)
            sub = {k[len(_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_PREFIX)}
            own = {k: v for k, v in arrays.items() if not k.startswith(_PREFIX)}
            prediction = cls._from_arrays(sub, None) if sub else None
            return cls._from_arrays(own, prediction)
        except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a valid drift reference summary: {exc}") from exc

    @classmethod
    def _from_arrays(
        cls, arrays: dict[str, np.ndarray], prediction: ReferenceSummary | None
    ) -> ReferenceSummary:
        missing = [key for key in _KEYS if key not in arrays]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        if arrays["format"].shape != () or int(arrays["format"]) != FORMAT_VERSION:
            raise ValueError(f"format {arrays['format']}, expected {FORMAT_VERSION}")
        if arrays["features"].dtype.kind != "U" or arrays["features"].ndim != 1:
            raise ValueError("features is not a list of names")
        if arrays["rows"].shape != () or arrays["rows"].dtype.kind not in "iu":
            raise ValueError("rows is not an integer")
        kinds: dict[str, Any] = {}
        present = [key for key in _KIND_KEYS if key in arrays]
        if present:  # a file written before kinds existed has none of them: all numeric
            absent = [key for key in _KIND_KEYS if key not in arrays]
            if absent:
                raise ValueError(f"missing {', '.join(absent)}")
            kinds = split_categories(arrays)
        return cls(
            tuple(str(name) for name in arrays["features"]),
            arrays["edges"],
            arrays["freqs"],
            arrays["sorted_sample"],
            arrays["importance"],
            int(arrays["rows"]),
            prediction=prediction,
            **kinds,
        )


def _frozen(value: Any) -> np.ndarray:
    array = np.array(value, dtype=np.float64)  # a private copy
    array.setflags(write=False)
    return array


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The summary's arrays in an npz file (TypeError if it is some other kind of file)."""
    # Our own file object: np.load leaks the one it opens when the zip directory is unreadable.
    with path.open("rb") as fh:
        loaded = np.load(fh, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise TypeError("not an npz archive")
        with loaded as npz:
            return {key: npz[key] for key in npz.files if key in _KNOWN}


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's effect sizes and verdict; its scores are NaN when it was not judged.

    ``note`` says why a feature was not judged (too few values); empty when it was. ``kind`` is
    the schema's; ``ks`` is None for a categorical or boolean feature, ``js`` (the Jensen-Shannon
    distance, base 2) and ``unseen_share`` (the window's share of categories the reference's
    schema does not know) are None for a numeric one.
    """

    name: str
    psi: float
    ks: float | None
    drifted: bool
    importance: float
    note: str = ""
    kind: str = "numeric"
    js: float | None = None
    unseen_share: float | None = None

    def to_details(self) -> dict[str, Any]:
        """JSON-ready scores (4 decimals; a score not computed, or not of its kind, is None)."""
        return {
            "psi": _round(self.psi),
            "ks": _round(self.ks),
            "drifted": self.drifted,
            "kind": self.kind,
            "js": _round(self.js),
            "unseen_share": _round(self.unseen_share),
        }


@dataclass(frozen=True)
class DriftResult:
    """The verdict on one current window; ``reason`` is the sentence for the audit and the logs.

    ``prediction`` compares the window's predictions with the reference's (None when the check
    was given none or the summary holds none); it does not enter the verdict.
    """

    rows: int
    judged: bool
    features: tuple[FeatureDrift, ...]
    share: float
    weighted_share: float
    score: float
    dataset_drift: bool
    reason: str
    prediction: FeatureDrift | None = None

    def drifted_features(self) -> tuple[str, ...]:
        """The drifted features' names, in the summary's feature order."""
        return tuple(f.name for f in self.features if f.drifted)

    def to_details(self) -> dict[str, Any]:
        """JSON-ready details for the audit record (4 decimals; a score not computed is None)."""
        return {
            "rows": self.rows,
            "judged": self.judged,
            "score": _round(self.score),
            "share": _round(self.share),
            "weighted_share": _round(self.weighted_share),
            "dataset_drift": self.dataset_drift,
            "reason": self.reason,
            "features": {f.name: f.to_details() for f in self.features},
            "prediction": None if self.prediction is None else self.prediction.to_details(),
        }


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None and math.isfinite(value) else None


def check(
    summary: ReferenceSummary,
    current: np.ndarray,
    params: DriftParams,
    predictions: np.ndarray | None = None,
) -> DriftResult:
    """Judge ``current`` (rows x features, in ``summary.features`` order) against the summary.

    ``predictions`` are the model's on the window's rows (as for ``build``); they are compared
    when the summary holds the reference's. ``params.bins`` is not used: the bins are the
    summary's, fixed when the version was trained. ``current`` is not modified; any float dtype
    and memory order is accepted.
    """
    window = np.asarray(current)
    n_features = len(summary.features)
    if window.ndim != 2 or window.shape[1] != n_features:
        raise DataError(f"current window has shape {window.shape}, expected (rows, {n_features})")
    rows = int(window.shape[0])
    need = max(int(params.min_rows), 1)
    features = tuple(
        _column_drift(summary, j, window[:, j], params, need) for j in range(n_features)
    )
    prediction = None
    if predictions is not None and summary.prediction is not None:
        pred = np.asarray(predictions)
        if pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.ndim != 1:
            raise DataError(f"predictions have shape {pred.shape}, expected (rows,)")
        prediction = replace(
            _column_drift(summary.prediction, 0, pred, params, need), importance=0.0
        )
    flagged = [f for f in features if f.drifted]
    share = len(flagged) / n_features
    weighted_share = min(sum(f.importance for f in flagged), 1.0)
    score = weighted_share if params.weighted else share
    judged = rows >= need
    dataset_drift = judged and score >= params.share
    result = DriftResult(
        rows, judged, features, share, weighted_share, score, dataset_drift, "", prediction
    )
    return _with_reason(result, params, need)


def _column_drift(
    summary: ReferenceSummary, j: int, column: np.ndarray, params: DriftParams, need: int
) -> FeatureDrift:
    """Column ``j`` of the summary against one current column, by its kind's rule."""
    name, weight, kind = summary.features[j], float(summary.importance[j]), summary.kinds[j]
    if kind != "numeric":
        psi, js, unseen, rows = categorical_stats(summary.category_freqs[j], column, need)
        if rows < need:
            note = f"only {rows} values, fewer than {need}" if rows else "no values"
            return FeatureDrift(name, math.nan, None, False, weight, note, kind, math.nan, unseen)
        drifted = psi >= params.psi_threshold or js >= params.js_threshold
        return FeatureDrift(name, psi, None, drifted, weight, "", kind, js, unseen)
    ref = summary._grids[j]
    psi, ks, finite = numeric_stats(ref, column, need)
    if ref.values.size == 0:
        note = "no finite reference values"
    elif finite < need:
        note = f"only {finite} finite values, fewer than {need}" if finite else "no finite values"
    else:
        drifted = psi >= params.psi_threshold or ks >= params.ks_threshold
        return FeatureDrift(name, psi, ks, drifted, weight)
    return FeatureDrift(name, math.nan, math.nan, False, weight, note)


def _with_reason(result: DriftResult, params: DriftParams, need: int) -> DriftResult:
    """The result with its one-sentence reason."""
    skipped = [f"{f.name} ({f.note})" for f in result.features if f.note]
    tail = f"; not judged: {', '.join(skipped)}" if skipped else ""
    if not result.judged:
        reason = f"only {result.rows} rows, fewer than the {need} needed to judge drift"
        return replace(result, reason=reason)
    if result.prediction is not None and result.prediction.drifted:
        tail += "; the predictions drifted"
    drifted = sorted(
        (f for f in result.features if f.drifted), key=lambda f: f.importance, reverse=True
    )
    names = f" ({', '.join(f.name for f in drifted)})" if drifted else ""
    label = "weighted share" if params.weighted else "share"
    relation = ">=" if result.dataset_drift else "<"
    score, limit = f"{result.score:.2f}", f"{params.share:.2f}"
    if score == limit and not result.dataset_drift:
        score, limit = f"{result.score:.4f}", f"{params.share:.4f}"
    reason = (
        f"{len(drifted)} of {len(result.features)} features drifted{names}, "
        f"{label} {score} {relation} {limit}{tail}"
    )
    return replace(result, reason=reason)
