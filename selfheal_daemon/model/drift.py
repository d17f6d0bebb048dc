"""Data drift: how far each feature of a current window has moved from the model's reference.

Pure numpy: arrays in, a frozen ``DriftResult`` out; the only I/O is ``ReferenceSummary.save`` and
``load``. The reference's summary is built once, at training time, and stored with the model
version (``drift.npz``): a check never looks at the reference rows again.

The statistics, per feature, on its finite values only (NaN and +/-inf are left out on both sides):

- **PSI** (population stability index) on the reference's quantile bins:
  ``sum((c - r) * ln(c / r))`` over the bins, ``r`` and ``c`` the reference's and the window's
  share of each bin. The edges are reference values at the quantiles 1/bins .. (bins-1)/bins
  (inverted CDF), bins closed on the right (``e[i-1] < x <= e[i]``); tied edges are merged, so a
  feature with few distinct values gets fewer bins, and no reference bin is ever empty. A window's
  share is floored at ``EPSILON`` = 1e-4: an empty bin counts as 1e-4 (what Evidently's PSI puts in
  empty bins), and one row in a bin never scores higher than none. A vanished decile alone scores
  about 0.69.
- **KS**: the two-sample Kolmogorov-Smirnov statistic, the largest distance between the two
  empirical CDFs. Exact, ties included (equal to ``scipy.stats.ks_2samp(...).statistic`` up to
  float rounding): the difference of two step functions is largest just below or at one of the
  reference's distinct values, and the window's counts there (``< u`` and ``<= u``) are binary
  searches in its sorted column.

**The rule**: a feature is drifted when ``psi >= psi_threshold`` or ``ks >= ks_threshold``. Effect
sizes, not p-values: with a million rows any p-value is tiny, but a retrain is worth it only when
the distribution moved by a meaningful amount. Either suffices because they see different moves:
KS reads the CDF at every value, so it sees the bulk shift or squeeze; PSI compares the mass of
each decile, so it sees mass move into or out of a region (a tail that fills, a decile that
empties) even where the CDF moves little at any one point. With the defaults (0.2, 0.1) a smooth
one-humped feature is flagged from a shift of about 0.2 of its standard deviation, one with sharp
modes (Latitude) from about 0.05. Without drift, 5,000-row windows against a 5,000-row reference
stayed below PSI 0.01 and KS 0.03 (``bench/drift.py``'s sweep).

Evidently's default for such columns (Wasserstein distance over the reference's standard
deviation, >= 0.1) is a different measure: both flag the same features on clear drift and on none
(the benchmark's data), but they part on about one case in six near the thresholds, and no pair
of thresholds here removes that. Evidently flags a scale change of a skewed feature sooner (the
distance grows in the long tail), and late to flag a feature whose standard deviation a few
outliers inflate: AveOccup's is 1.1 or 9.1 in a 5,000-row reference depending on whether it
drew the blocks averaging 230 and 600 people a household, and its verdict moves with it; a
rank-based KS does not. See docs/BENCHMARKS.md.

**The verdict**: ``share`` is drifted features / all features and ``weighted_share`` the drifted
features' importance (the model's permutation importance, normalised to sum to 1). A feature with
fewer than ``min_rows`` finite values is not judged (not drifted, and the reason says why) but
still counts in the denominator. A window of fewer than ``min_rows`` rows is not judged at all;
otherwise ``dataset_drift`` is ``score >= share``, the score being the weighted share when
``weighted`` is set.

**Cost**, n window rows and k distinct reference values per feature (k <= the reference's rows):
per feature one copy of the column, sorted in place, then 2k binary searches: O(n log n + k log n)
time and 8n bytes beyond the window. The sort is deliberate: numpy's vectorised sort
(x86-simd-sort, AVX2 or AVX-512) orders a million float64 in about 10 ms here, while
``np.searchsorted`` of that million against 9 bin edges takes 30 ms and against 5,000 reference
values 130 ms; and an O(n) histogram cannot give an exact KS. One thread: two (a feature each;
numpy's sort releases the GIL) saved about 10% at a million rows at a quiet moment and nothing
in a full benchmark run, and on this VM the second core serves predictions. A Fortran-order
(column-major) window copies its columns fastest; any order and float dtype works.
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
from selfheal_daemon.system.files import atomic_write_bytes

__all__ = [
    "EPSILON",
    "DriftParams",
    "DriftResult",
    "FeatureDrift",
    "ReferenceSummary",
    "check",
]

EPSILON = 1e-4  # the floor of a window's share of a PSI bin: what an empty bin counts as
FORMAT_VERSION = 1
DRIFT_FILE = "drift.npz"  # the summary's name in a registry version (an extra artifact)
_KEYS = ("format", "features", "edges", "freqs", "sorted_sample", "importance", "rows")


class DriftParams(Protocol):
    """What a check needs from the config; ``config.DriftConfig`` is one."""

    @property
    def bins(self) -> int: ...
    @property
    def psi_threshold(self) -> float: ...
    @property
    def ks_threshold(self) -> float: ...
    @property
    def min_rows(self) -> int: ...
    @property
    def share(self) -> float: ...
    @property
    def weighted(self) -> bool: ...


@dataclass(frozen=True)
class _Grid:
    """One feature's reference, as a check reads it: its distinct values and the CDF around each."""

    values: np.ndarray  # (k,) distinct finite reference values, ascending
    below: np.ndarray  # (k,) reference share < values[j]
    at: np.ndarray  # (k,) reference share <= values[j]
    edge_pos: np.ndarray  # (bins-1,) index in ``values`` of each bin edge
    share: np.ndarray  # (bins,) reference share of each bin, all > 0


@dataclass(frozen=True, eq=False)
class ReferenceSummary:
    """The reference a model version is checked against, computed once at training time.

    Layout, F features and B bins: ``edges`` (F, B-1) and ``freqs`` (F, B) per feature, a feature
    with tied edges padded at the end (edges with NaN, freqs with 0); ``sorted_sample`` (F, rows),
    each feature's finite values ascending, then NaN for the rows where it was not finite.
    """

    features: tuple[str, ...]
    edges: np.ndarray
    freqs: np.ndarray
    sorted_sample: np.ndarray
    importance: np.ndarray
    rows: int
    _grids: tuple[_Grid, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Validate (ValueError naming what is wrong), freeze the arrays, derive the grids."""
        for name in ("edges", "freqs", "sorted_sample", "importance"):
            array = np.array(getattr(self, name), dtype=np.float64)  # a private copy
            array.setflags(write=False)
            object.__setattr__(self, name, array)
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
        grids = tuple(
            _grid(self.features[j], self.sorted_sample[j], self.edges[j], self.freqs[j])
            for j in range(n)
        )
        object.__setattr__(self, "_grids", grids)

    @property
    def bins(self) -> int:
        """The number of quantile bins the summary was built with (before merging ties)."""
        return int(self.freqs.shape[1])

    @classmethod
    def build(
        cls,
        reference: np.ndarray,
        features: Sequence[str],
        *,
        bins: int = 10,
        importance: Sequence[float] | np.ndarray | None = None,
    ) -> ReferenceSummary:
        """Summarise ``reference`` (rows x features, in ``features`` order); ``bins`` >= 2.

        ``importance`` is normalised to sum to 1; all features weigh the same without it.
        """
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[1] != len(features) or ref.shape[0] < 1:
            raise ValueError(f"reference has shape {ref.shape}, expected (rows, {len(features)})")
        if bins < 2:
            raise ValueError(f"bins must be at least 2, got {bins}")
        n = len(features)
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
        edges = np.full((n, bins - 1), np.nan)
        freqs = np.zeros((n, bins))
        sample = np.full((n, ref.shape[0]), np.nan)
        for j in range(n):
            values = np.sort(ref[:, j][np.isfinite(ref[:, j])])
            sample[j, : values.size] = values
            if values.size == 0:
                continue
            cut = _quantile_edges(values, bins)
            edges[j, : cut.size] = cut
            counts = np.diff(
                np.searchsorted(values, cut, side="right"), prepend=0, append=values.size
            )
            freqs[j, : counts.size] = counts / values.size
        return cls(tuple(features), edges, freqs, sample, weights, ref.shape[0])

    def save(self, path: Path) -> None:
        """Write the summary as an npz (no pickle), atomically and durably."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            format=np.array(FORMAT_VERSION),
            features=np.array(self.features, dtype=np.str_),
            edges=self.edges,
            freqs=self.freqs,
            sorted_sample=self.sorted_sample,
            importance=self.importance,
            rows=np.array(self.rows),
        )
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> ReferenceSummary:
        """Read what ``save`` wrote; DataError naming the file if it is missing or malformed."""
        try:
            return cls._from_arrays(_read_npz(path))
        except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a valid drift reference summary: {exc}") from exc

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray]) -> ReferenceSummary:
        missing = [key for key in _KEYS if key not in arrays]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        if arrays["format"].shape != () or int(arrays["format"]) != FORMAT_VERSION:
            raise ValueError(f"format {arrays['format']}, expected {FORMAT_VERSION}")
        if arrays["features"].dtype.kind != "U" or arrays["features"].ndim != 1:
            raise ValueError("features is not a list of names")
        if arrays["rows"].shape != () or arrays["rows"].dtype.kind not in "iu":
            raise ValueError("rows is not an integer")
        return cls(
            tuple(str(name) for name in arrays["features"]),
            arrays["edges"],
            arrays["freqs"],
            arrays["sorted_sample"],
            arrays["importance"],
            int(arrays["rows"]),
        )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The summary's arrays in an npz file (TypeError if it is some other kind of file)."""
    # Our own file object: np.load leaks the one it opens when the zip directory is unreadable.
    with path.open("rb") as fh:
        loaded = np.load(fh, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise TypeError("not an npz archive")
        with loaded as npz:
            return {key: npz[key] for key in _KEYS if key in npz.files}


def _quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Distinct reference values at the quantiles i/bins (inverted CDF), each below the maximum."""
    ranks = np.ceil(np.arange(1, bins) / bins * values.size).astype(np.intp) - 1
    cut = np.unique(values[np.clip(ranks, 0, values.size - 1)])
    return np.asarray(cut[cut < values[-1]])


def _grid(name: str, sample: np.ndarray, edges: np.ndarray, freqs: np.ndarray) -> _Grid:
    """Check one feature's stored layout and derive what a check reads (ValueError if invalid)."""
    finite = int(np.count_nonzero(np.isfinite(sample)))
    values = sample[:finite]
    if not (np.all(np.isnan(sample[finite:])) and np.all(np.diff(values) >= 0)):
        raise ValueError(f"{name}: sorted_sample is not ascending finite values, then NaN")
    cut = edges[np.isfinite(edges)]
    if not np.all(np.isnan(edges[cut.size :])):
        raise ValueError(f"{name}: edges are not finite values, then NaN")
    if finite == 0:
        if cut.size or np.any(freqs):
            raise ValueError(f"{name}: bins without any reference values")
        empty = np.empty(0)
        return _Grid(empty, empty, empty, np.empty(0, np.intp), empty)
    distinct, first = np.unique(values, return_index=True)
    pos = np.searchsorted(distinct, cut)
    if (
        np.any(np.diff(cut) <= 0)
        or np.any(pos >= distinct.size - 1)
        or np.any(distinct[np.minimum(pos, distinct.size - 1)] != cut)
    ):
        raise ValueError(f"{name}: edges are not ascending reference values below the maximum")
    after = np.append(first[1:], finite)  # rows <= each distinct value
    counts = np.diff(after[pos], prepend=0, append=finite)
    share = freqs[: counts.size]
    if not (
        np.allclose(share, counts / finite, rtol=0, atol=1e-9) and not np.any(freqs[counts.size :])
    ):
        raise ValueError(f"{name}: freqs do not match the sorted sample and the edges")
    return _Grid(distinct, first / finite, after / finite, pos, counts / finite)


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's effect sizes and verdict; ``psi``/``ks`` are NaN when it was not judged.

    ``note`` says why a feature was not judged (too few finite values); empty when it was.
    """

    name: str
    psi: float
    ks: float
    drifted: bool
    importance: float
    note: str = ""


@dataclass(frozen=True)
class DriftResult:
    """The verdict on one current window; ``reason`` is the sentence for the audit and the logs."""

    rows: int
    judged: bool
    features: tuple[FeatureDrift, ...]
    share: float
    weighted_share: float
    score: float
    dataset_drift: bool
    reason: str

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
            "features": {
                f.name: {"psi": _round(f.psi), "ks": _round(f.ks), "drifted": f.drifted}
                for f in self.features
            },
        }


def _round(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def check(summary: ReferenceSummary, current: np.ndarray, params: DriftParams) -> DriftResult:
    """Judge ``current`` (rows x features, in ``summary.features`` order) against the summary.

    ``params.bins`` is not used: the bins are the summary's, fixed when the version was trained.
    ``current`` is not modified; any float dtype and memory order is accepted.
    """
    window = np.asarray(current)
    n_features = len(summary.features)
    if window.ndim != 2 or window.shape[1] != n_features:
        raise DataError(f"current window has shape {window.shape}, expected (rows, {n_features})")
    rows = int(window.shape[0])
    need = max(int(params.min_rows), 1)

    stats = [_feature_stats(summary._grids[j], window[:, j], need) for j in range(n_features)]

    features = []
    for j, (psi, ks, finite) in enumerate(stats):
        name, weight = summary.features[j], float(summary.importance[j])
        if summary._grids[j].values.size == 0:
            note = "no finite reference values"
        elif finite < need:
            note = (
                f"only {finite} finite values, fewer than {need}" if finite else "no finite values"
            )
        else:
            drifted = psi >= params.psi_threshold or ks >= params.ks_threshold
            features.append(FeatureDrift(name, psi, ks, drifted, weight))
            continue
        features.append(FeatureDrift(name, math.nan, math.nan, False, weight, note))
    flagged = [f for f in features if f.drifted]
    share = len(flagged) / n_features
    weighted_share = min(sum(f.importance for f in flagged), 1.0)
    score = weighted_share if params.weighted else share
    judged = rows >= need
    dataset_drift = judged and score >= params.share
    result = DriftResult(
        rows, judged, tuple(features), share, weighted_share, score, dataset_drift, ""
    )
    return _with_reason(result, params, need)


def _feature_stats(grid: _Grid, column: np.ndarray, need: int) -> tuple[float, float, int]:
    """(psi, ks, finite values) of one current column; NaN scores if it has fewer than ``need``."""
    data = np.array(column, dtype=np.float64)  # the one copy: contiguous, sorted in place
    data.sort()  # NaN last; -inf first, +inf just before the NaN
    start = int(np.searchsorted(data, -np.inf, side="right"))
    stop = int(np.searchsorted(data, np.inf, side="left"))
    finite = stop - start
    if finite < need or grid.values.size == 0:
        return math.nan, math.nan, finite
    values = data[start:stop]
    below = np.searchsorted(values, grid.values, side="left") / finite
    at = np.searchsorted(values, grid.values, side="right") / finite
    ks = max(float(np.max(np.abs(grid.below - below))), float(np.max(np.abs(grid.at - at))))
    current = np.maximum(np.diff(at[grid.edge_pos], prepend=0.0, append=1.0), EPSILON)
    psi = float(np.sum((current - grid.share) * np.log(current / grid.share)))
    return psi, ks, finite


def _with_reason(result: DriftResult, params: DriftParams, need: int) -> DriftResult:
    """The result with its one-sentence reason."""
    skipped = [f"{f.name} ({f.note})" for f in result.features if f.note]
    tail = f"; not judged: {', '.join(skipped)}" if skipped else ""
    if not result.judged:
        reason = f"only {result.rows} rows, fewer than the {need} needed to judge drift"
        return replace(result, reason=reason)
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
