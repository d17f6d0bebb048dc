"""The per-column statistics behind ``drift.check``: PSI and KS for a numeric column, PSI and the
Jensen-Shannon distance for a categorical (or boolean) one.

**Numeric**, on the column's finite values only (NaN and +/-inf are left out on both sides):

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

**Why both, as effect sizes**: not p-values: with a million rows any p-value is tiny, but a retrain
is worth it only when the distribution moved by a meaningful amount. Either suffices because they
see different moves: KS reads the CDF at every value, so it sees the bulk shift or squeeze; PSI
compares the mass of each decile, so it sees mass move into or out of a region (a tail that fills,
a decile that empties) even where the CDF moves little at any one point. With the defaults (0.2,
0.1) a smooth one-humped feature is flagged from a shift of about 0.2 of its standard deviation, a
coordinate with sharp modes from about 0.05. Without drift, 5,000-row windows against a 5,000-row
reference stayed below PSI 0.01 and KS 0.03 (``bench/drift.py``'s sweep).

Evidently's default for numeric columns (Wasserstein distance over the reference's standard
deviation, >= 0.1) is a different measure: both flag the same features on clear drift and on none
(the benchmark's data), but they part on about one case in six near the thresholds, and no pair
of thresholds here removes that. Evidently flags a scale change of a skewed feature sooner (the
distance grows in the long tail), and late to flag a feature whose standard deviation a few
outliers inflate: the benchmark's average household size has one of 1.1 or 9.1 in a 5,000-row
reference depending on whether it drew the two blocks averaging 230 and 600 people a household,
and its verdict moves with it; a rank-based KS does not. See docs/BENCHMARKS.md.

**Categorical and boolean**, on every row: the column holds category codes (``schema.encode``),
and its distribution is the share of each of its k categories plus two more bins, **unseen** (a
finite code that is not one of 0 .. k-1: ``UNSEEN`` = -1, or any other) and **missing** (NaN or
+/-inf). The k + 2 counts are one ``np.bincount``.

- **PSI** over those k + 2 bins, the same formula, with *both* shares floored at ``EPSILON``: a
  reference built from the training data never holds an unseen row, often no missing one, and may
  lack a category the schema knows; a bin empty on both sides scores 0. Unseen rows alone reach
  PSI 0.2 at about 3.5 % of the window (0.035 * ln(0.035 / 1e-4)).
- **JS**: the Jensen-Shannon distance, ``scipy.spatial.distance.jensenshannon(r, c, base=2)``,
  the square root of the JS divergence with log base 2, so it lies in [0, 1] (0: the same
  distribution; 1: no bin in common). Unlike PSI it needs no floor: a bin empty on one side adds
  ``share / 2`` to the divergence, whatever the number of such bins, so lumping every unseen value
  into one bin gives the same distance as a bin per value.

Evidently's default test for a categorical column with more than 1,000 reference rows is this
distance, drifted at >= 0.1, computed with the same scipy call on the shares of every value seen in
either sample. Two differences: Evidently drops missing cells first (here missing is a bin, since
the model sees it), and its current code passes scipy's default base, e (natural log: values in
[0, sqrt(ln 2)] = [0, 0.833]). On a window without missing cells, Evidently's distance is this one
times ``sqrt(ln 2)`` = 0.8326: its verdict at 0.1 is ``js_threshold`` = 0.1201 here, and 0.1 here is
0.0833 there. Base 2 is kept for the bounded [0, 1] scale (``JS_BASE``).

JS sees shares move between common categories; PSI, floored, sees a rare bin fill.

**Cost**, n window rows and k distinct reference values per numeric feature (k <= the reference's
rows): per numeric feature one copy of the column, sorted in place, then 2k binary searches:
O(n log n + k log n) time and 8n bytes beyond the window. The sort is deliberate: numpy's
vectorised sort (x86-simd-sort, AVX2 or AVX-512) orders a million float64 in about 10 ms here,
while ``np.searchsorted`` of that million against 9 bin edges takes 30 ms and against 5,000
reference values 130 ms; and an O(n) histogram cannot give an exact KS. Per categorical feature
one copy and one ``np.bincount``: O(n), about 5 ms a million rows. One thread: two (a feature each;
numpy's sort releases the GIL) saved about 10% at a million rows at a quiet moment and nothing
in a full benchmark run, and on this VM the second core serves predictions. A Fortran-order
(column-major) window copies its columns fastest; any order and float dtype works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon

from selfheal_daemon.model.schema import KINDS

EPSILON = 1e-4  # the floor of a share in a PSI bin: what an empty bin counts as
JS_BASE = 2.0  # the Jensen-Shannon distance's log base: values in [0, 1]


@dataclass(frozen=True)
class Grid:
    """One numeric feature's reference, as a check reads it: its distinct values and the CDF
    around each."""

    values: np.ndarray  # (k,) distinct finite reference values, ascending
    below: np.ndarray  # (k,) reference share < values[j]
    at: np.ndarray  # (k,) reference share <= values[j]
    edge_pos: np.ndarray  # (bins-1,) index in ``values`` of each bin edge
    share: np.ndarray  # (bins,) reference share of each bin, all > 0


EMPTY_GRID = Grid(np.empty(0), np.empty(0), np.empty(0), np.empty(0, np.intp), np.empty(0))


# ----- numeric ---------------------------------------------------------------------------------


def numeric_reference(column: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, freqs, sorted sample) of one reference column: (bins-1,) edges padded with NaN,
    (bins,) shares padded with 0, the finite values ascending then NaN (one per row)."""
    values = np.sort(column[np.isfinite(column)])
    edges, freqs = np.full(bins - 1, np.nan), np.zeros(bins)
    sample = np.full(column.size, np.nan)
    sample[: values.size] = values
    if values.size:
        cut = _quantile_edges(values, bins)
        edges[: cut.size] = cut
        counts = np.diff(np.searchsorted(values, cut, side="right"), prepend=0, append=values.size)
        freqs[: counts.size] = counts / values.size
    return edges, freqs, sample


def _quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Distinct reference values at the quantiles i/bins (inverted CDF), each below the maximum."""
    ranks = np.ceil(np.arange(1, bins) / bins * values.size).astype(np.intp) - 1
    cut = np.unique(values[np.clip(ranks, 0, values.size - 1)])
    return np.asarray(cut[cut < values[-1]])


def grid(name: str, sample: np.ndarray, edges: np.ndarray, freqs: np.ndarray) -> Grid:
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
        return EMPTY_GRID
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
    return Grid(distinct, first / finite, after / finite, pos, counts / finite)


def numeric_stats(ref: Grid, column: np.ndarray, need: int) -> tuple[float, float, int]:
    """(psi, ks, finite values) of one current column; NaN scores if it has fewer than ``need``."""
    data = np.array(column, dtype=np.float64)  # the one copy: contiguous, sorted in place
    data.sort()  # NaN last; -inf first, +inf just before the NaN
    start = int(np.searchsorted(data, -np.inf, side="right"))
    stop = int(np.searchsorted(data, np.inf, side="left"))
    finite = stop - start
    if finite < need or ref.values.size == 0:
        return math.nan, math.nan, finite
    values = data[start:stop]
    below = np.searchsorted(values, ref.values, side="left") / finite
    at = np.searchsorted(values, ref.values, side="right") / finite
    ks = max(float(np.max(np.abs(ref.below - below))), float(np.max(np.abs(ref.at - at))))
    current = np.diff(at[ref.edge_pos], prepend=0.0, append=1.0)
    return psi(ref.share, current), ks, finite


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two share vectors, the current shares floored at ``EPSILON``; every reference share
    must be above 0 (a numeric bin's always is; a categorical caller floors its own)."""
    c = np.maximum(current, EPSILON)
    return float(np.sum((c - reference) * np.log(c / reference)))


# ----- categorical -----------------------------------------------------------------------------


def category_counts(column: np.ndarray, k: int) -> np.ndarray:
    """(k + 2,) counts of a column of codes: each category's, then unseen, then missing.

    Unseen is any finite code that is not an integer in 0 .. k-1 (``UNSEEN`` = -1 among them);
    missing is NaN or +/-inf. One copy of the column, a few passes over it, one ``bincount``.
    """
    data = np.array(column, dtype=np.float64)  # a contiguous copy, rewritten in place
    known = (data >= 0) & (data < k) & (data == np.floor(data))
    missing = ~np.isfinite(data)
    data[~known] = k
    data[missing] = k + 1
    return np.bincount(data.astype(np.intp), minlength=k + 2)


def categorical_stats(
    reference: np.ndarray, column: np.ndarray, need: int
) -> tuple[float, float, float, int]:
    """(psi, js, unseen share, rows) of one current column against the reference's (k + 2,)
    shares; NaN scores if it has fewer than ``need`` rows (the unseen share is NaN for none)."""
    k = reference.size - 2
    counts = category_counts(column, k)
    rows = int(column.size)
    unseen = float(counts[k]) / rows if rows else math.nan
    if rows < need or rows == 0:
        return math.nan, math.nan, unseen, rows
    current = counts / rows
    floored = np.maximum(reference, EPSILON)
    return psi(floored, current), js_distance(reference, current), unseen, rows


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """The Jensen-Shannon distance of two share vectors, base ``JS_BASE`` (2): in [0, 1]."""
    value = float(jensenshannon(reference, current, base=JS_BASE))
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else math.nan


# ----- the categorical reference's stored form ----------------------------------------------------


def check_categories(name: str, kind: str, categories: tuple[str, ...], share: np.ndarray) -> None:
    """ValueError unless ``share`` is a valid reference for a feature of ``kind``: none for a
    numeric one, k + 2 non-negative shares summing to 1 for a categorical or boolean one."""
    if kind not in KINDS:
        raise ValueError(f"{name}: kind must be one of {KINDS}, got {kind!r}")
    if kind == "numeric":
        if categories or share.size:
            raise ValueError(f"{name}: a numeric feature has categories")
        return
    if share.shape != (len(categories) + 2,):
        raise ValueError(f"{name}: category_freqs must be {len(categories) + 2} shares")
    if not (np.all(np.isfinite(share)) and np.all(share >= 0)):
        raise ValueError(f"{name}: category_freqs must be non-negative")
    if abs(share.sum() - 1) > 1e-9:
        raise ValueError(f"{name}: category_freqs must sum to 1")


def flat_categories(
    kinds: Sequence[str], categories: Sequence[Sequence[str]], shares: Sequence[np.ndarray]
) -> dict[str, np.ndarray]:
    """The kinds and the categorical references as four flat arrays (``split_categories``)."""
    return {
        "kinds": np.array(kinds, dtype=np.str_),
        "n_categories": np.array([len(c) for c in categories], dtype=np.int64),
        "category_names": np.array([c for cats in categories for c in cats], dtype=np.str_),
        "category_freqs": np.concatenate([np.empty(0), *shares]),
    }


def split_categories(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """``kinds``, ``categories`` and ``category_freqs`` from their flat stored form."""
    kinds, sizes = arrays["kinds"], arrays["n_categories"]
    names, shares = arrays["category_names"], arrays["category_freqs"]
    if kinds.dtype.kind != "U" or kinds.ndim != 1 or names.dtype.kind != "U" or names.ndim != 1:
        raise ValueError("kinds or category_names is not a list of names")
    if sizes.ndim != 1 or sizes.dtype.kind not in "iu" or np.any(sizes < 0):
        raise ValueError("n_categories is not a list of counts")
    if sizes.shape != kinds.shape or shares.ndim != 1 or shares.dtype.kind != "f":
        raise ValueError("n_categories or category_freqs does not match kinds")
    categorical = kinds != "numeric"
    if int(sizes.sum()) != names.size or int((sizes + 2)[categorical].sum()) != shares.size:
        raise ValueError("category_names or category_freqs does not match n_categories")
    name_ends = np.cumsum(sizes)
    share_ends = np.cumsum(np.where(categorical, sizes + 2, 0))
    return {
        "kinds": tuple(str(k) for k in kinds),
        "categories": tuple(
            tuple(str(c) for c in names[end - size : end])
            for end, size in zip(name_ends, sizes, strict=True)
        ),
        "category_freqs": tuple(
            shares[end - size : end]
            for end, size in zip(share_ends, np.where(categorical, sizes + 2, 0), strict=True)
        ),
    }
