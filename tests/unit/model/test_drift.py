"""Data drift: PSI and KS per feature against a stored reference summary, and the verdict."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp

from selfheal_daemon.config import DriftConfig
from selfheal_daemon.errors import DataError
from selfheal_daemon.model.drift import EPSILON, ReferenceSummary, check
from selfheal_daemon.model.schema import Column, Schema

NAMES = ("a", "b", "c", "d")


def numeric_schema(*names: str) -> Schema:
    """A regression on numeric features ``names``: the California model's shape, other columns."""
    california = Schema.california()
    columns = tuple(Column(name, "numeric") for name in names)
    return Schema(california.name, california.task, california.target, columns)


ABCD, X, XY = numeric_schema(*NAMES), numeric_schema("x"), numeric_schema("x", "y")


@dataclass(frozen=True)
class Params:
    """The drift settings a check reads; the config's defaults unless a test says otherwise."""

    bins: int = 10
    psi_threshold: float = 0.2
    ks_threshold: float = 0.1
    js_threshold: float = 0.1
    min_rows: int = 500
    share: float = 0.5
    weighted: bool = True


DEFAULTS = Params()


def normal(rows: int, seed: int, features: int = len(NAMES)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, features))


@pytest.fixture(scope="module")
def summary() -> ReferenceSummary:
    """5,000 reference rows of four independent standard normal features, equal importance."""
    return ReferenceSummary.build(normal(5000, seed=1), ABCD)


def finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def scipy_ks(a: np.ndarray, b: np.ndarray) -> float:
    """scipy's two-sample KS statistic (its p-value, and warnings about it, are not wanted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ks_2samp(a, b).statistic)


# ----- the verdict -------------------------------------------------------------------------------


def test_identical_distributions_are_not_drift(summary: ReferenceSummary) -> None:
    """A window drawn from the reference's own distribution has no drifted feature."""
    result = check(summary, normal(5000, seed=2), DEFAULTS)
    assert result.judged
    assert result.drifted_features() == ()
    assert not result.dataset_drift
    assert all(f.psi < 0.02 and f.ks < 0.04 for f in result.features)
    assert result.reason == "0 of 4 features drifted, weighted share 0.00 < 0.50"


def test_a_shifted_feature_is_flagged_and_the_others_not(summary: ReferenceSummary) -> None:
    """Feature b moved by one standard deviation: b alone drifts, with large PSI and KS."""
    current = normal(5000, seed=3)
    current[:, 1] += 1.0
    result = check(summary, current, DEFAULTS)
    assert result.drifted_features() == ("b",)
    b = result.features[1]
    assert b.psi > 0.5
    assert b.ks > 0.3
    assert (result.share, result.weighted_share, result.score) == (0.25, 0.25, 0.25)
    assert not result.dataset_drift
    assert result.reason == "1 of 4 features drifted (b), weighted share 0.25 < 0.50"


@pytest.mark.parametrize(
    ("psi_threshold", "ks_threshold", "drifted"),
    [
        (100.0, 1.0, False),  # neither passes
        (0.01, 1.0, True),  # PSI alone suffices
        (100.0, 0.01, True),  # KS alone suffices
    ],
)
def test_either_effect_size_flags_a_feature(
    summary: ReferenceSummary, psi_threshold: float, ks_threshold: float, drifted: bool
) -> None:
    """A feature is drifted when its PSI or its KS reaches its threshold."""
    current = normal(2000, seed=4)
    current[:, 0] += 0.5
    params = replace(DEFAULTS, psi_threshold=psi_threshold, ks_threshold=ks_threshold)
    assert check(summary, current, params).features[0].drifted is drifted


def test_a_threshold_is_reached_at_equality(summary: ReferenceSummary) -> None:
    """KS exactly at the threshold counts as drift (>=), a hair below does not."""
    current = normal(2000, seed=5)
    ks = check(summary, current, DEFAULTS).features[2].ks
    at = replace(DEFAULTS, psi_threshold=100.0, ks_threshold=ks)
    above = replace(at, ks_threshold=math.nextafter(ks, 1.0))
    assert check(summary, current, at).features[2].drifted
    assert not check(summary, current, above).features[2].drifted


def test_too_few_rows_are_not_judged(summary: ReferenceSummary) -> None:
    """A window below min_rows is not judged, however far it moved."""
    current = normal(499, seed=6) + 5.0
    result = check(summary, current, DEFAULTS)
    assert not result.judged
    assert not result.dataset_drift
    assert result.drifted_features() == ()
    assert result.reason == "only 499 rows, fewer than the 500 needed to judge drift"
    assert check(summary, normal(500, seed=6) + 5.0, DEFAULTS).judged


@pytest.mark.parametrize(
    ("moved", "weighted", "dataset_drift"),
    [
        ("a", True, True),  # the important feature: weighted share 0.7
        ("b", True, False),  # an unimportant one: weighted share 0.1
        ("a", False, False),  # unweighted, either is one feature of four: 0.25
        ("b", False, False),
    ],
)
def test_importance_weighting_decides_the_verdict(
    moved: str, weighted: bool, dataset_drift: bool
) -> None:
    """One drifted feature of four tips the verdict only if it matters to the model."""
    summary = ReferenceSummary.build(normal(5000, seed=7), ABCD, importance=[7, 1, 1, 1])
    assert np.allclose(summary.importance, [0.7, 0.1, 0.1, 0.1])
    current = normal(5000, seed=8)
    current[:, NAMES.index(moved)] += 1.0
    result = check(summary, current, replace(DEFAULTS, weighted=weighted))
    assert result.drifted_features() == (moved,)
    assert result.share == 0.25
    assert result.weighted_share == pytest.approx(0.7 if moved == "a" else 0.1)
    assert result.score == (result.weighted_share if weighted else result.share)
    assert result.dataset_drift is dataset_drift


def test_the_reason_names_the_drifted_features_most_important_first() -> None:
    """The sentence lists what drifted by importance to the model, then the weighted share."""
    summary = ReferenceSummary.build(normal(5000, seed=24), ABCD, importance=[1, 2, 3, 4])
    current = normal(5000, seed=25)
    current[:, [0, 3]] += 1.0
    result = check(summary, current, DEFAULTS)
    assert result.drifted_features() == ("a", "d")
    assert result.reason == "2 of 4 features drifted (d, a), weighted share 0.50 >= 0.50"
    assert result.dataset_drift
    unweighted = check(summary, current, replace(DEFAULTS, weighted=False, share=0.6))
    assert unweighted.reason == "2 of 4 features drifted (d, a), share 0.50 < 0.60"


def test_the_config_model_satisfies_the_params(summary: ReferenceSummary) -> None:
    """config.DriftConfig can be passed as it is; its bins are ignored for the summary's."""
    result = check(summary, normal(1000, seed=9), DriftConfig(bins=25))
    assert result.judged
    assert summary.bins == 10


# ----- the statistics ----------------------------------------------------------------------------


def test_psi_matches_a_hand_computation() -> None:
    """Two bins split at the median 5: shares 0.8/0.2 against 0.5/0.5, and an empty bin."""
    summary = ReferenceSummary.build(np.arange(1.0, 11.0)[:, None], X, bins=2)
    assert summary.edges.tolist() == [[5.0]]
    assert summary.freqs.tolist() == [[0.5, 0.5]]
    params = replace(DEFAULTS, min_rows=1)
    current = np.array([1, 2, 3, 4, 5, 5, 5, 5, 9, 10], dtype=float)[:, None]
    expected = 0.3 * math.log(0.8 / 0.5) + (-0.3) * math.log(0.2 / 0.5)
    assert check(summary, current, params).features[0].psi == pytest.approx(expected, abs=1e-12)
    all_low = np.full((10, 1), 2.0)
    assert EPSILON == 1e-4  # the documented floor of a current bin's share
    empty = 0.5 * math.log(1.0 / 0.5) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)
    assert check(summary, all_low, params).features[0].psi == pytest.approx(empty, abs=1e-12)


def test_tied_quantiles_merge_into_fewer_bins_none_empty() -> None:
    """An integer feature (ties at the quantiles) gets fewer bins, each holding reference rows."""
    reference = np.random.default_rng(10).integers(0, 4, size=(1000, 1)).astype(float)
    summary = ReferenceSummary.build(reference, X, bins=10)
    edges = summary.edges[0][np.isfinite(summary.edges[0])]
    assert edges.tolist() == [0.0, 1.0, 2.0]
    active = summary.freqs[0][: edges.size + 1]
    assert np.all(active > 0)
    assert np.all(summary.freqs[0][edges.size + 1 :] == 0)
    assert active.sum() == pytest.approx(1.0)


@settings(max_examples=100, deadline=None)
@given(
    reference=st.lists(
        st.sampled_from([0.0, 1.0, 1.5, 2.0, 3.0, -1.0, math.nan, math.inf]),
        min_size=1,
        max_size=60,
    ),
    current=st.lists(
        st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 4.0, -1.0, math.nan, -math.inf]),
        min_size=1,
        max_size=60,
    ),
)
def test_ks_equals_scipy_with_ties_and_non_finite_values(
    reference: list[float], current: list[float]
) -> None:
    """KS is scipy's two-sample statistic on the finite values, exactly, ties included."""
    ref, cur = np.array(reference), np.array(current)
    if finite(ref).size == 0 or finite(cur).size == 0:
        return
    summary = ReferenceSummary.build(ref[:, None], X, bins=4)
    feature = check(summary, cur[:, None], replace(DEFAULTS, min_rows=1)).features[0]
    assert feature.ks == pytest.approx(scipy_ks(finite(ref), finite(cur)), abs=1e-12)


def test_ks_equals_scipy_on_rounded_random_data_with_nan() -> None:
    """On 20,000 rows of continuous and rounded (tied) values with NaN, KS is scipy's to 1e-12."""
    rng = np.random.default_rng(11)
    reference = np.column_stack([rng.normal(size=3000), np.round(rng.gamma(2.0, size=3000), 1)])
    current = np.column_stack(
        [rng.normal(0.1, 1.1, size=20_000), np.round(rng.gamma(2.2, size=20_000), 1)]
    )
    reference[rng.random(reference.shape) < 0.05] = np.nan
    current[rng.random(current.shape) < 0.05] = np.nan
    summary = ReferenceSummary.build(reference, XY)
    result = check(summary, current, DEFAULTS)
    for j, feature in enumerate(result.features):
        expected = ks_2samp(
            finite(reference[:, j]), finite(current[:, j]), method="asymp"
        ).statistic
        assert feature.ks == pytest.approx(expected, abs=1e-12)


def test_non_finite_values_are_ignored(summary: ReferenceSummary) -> None:
    """Rows of NaN and +/-inf added to a window change neither PSI nor KS."""
    current = normal(2000, seed=12)
    junk = np.array([[np.nan, np.inf, -np.inf, np.nan]] * 300)
    plain, padded = (
        check(summary, current, DEFAULTS),
        check(summary, np.vstack([current, junk]), DEFAULTS),
    )
    assert [(f.psi, f.ks) for f in padded.features] == [(f.psi, f.ks) for f in plain.features]
    assert padded.rows == 2300


def test_a_column_of_nan_is_not_drifted_and_says_so(summary: ReferenceSummary) -> None:
    """A feature with no finite value in the window is not judged; the others are."""
    current = normal(1000, seed=13)
    current[:, 3] = np.nan
    current[:, 0] += 2.0
    result = check(summary, current, DEFAULTS)
    d = result.features[3]
    assert (d.drifted, d.note, math.isnan(d.psi), math.isnan(d.ks)) == (
        False,
        "no finite values",
        True,
        True,
    )
    assert result.drifted_features() == ("a",)
    assert result.share == 0.25
    assert result.reason.endswith("; not judged: d (no finite values)")
    assert result.to_details()["features"]["d"] == {
        "psi": None,
        "ks": None,
        "drifted": False,
        "kind": "numeric",
        "js": None,
        "unseen_share": None,
    }


def test_a_feature_with_too_few_finite_values_is_not_judged(summary: ReferenceSummary) -> None:
    """A feature finite in fewer than min_rows rows is left out of the verdict, with the count."""
    current = normal(1000, seed=14)
    current[100:, 2] = np.nan
    current[:100, 2] += 5.0
    feature = check(summary, current, DEFAULTS).features[2]
    assert (feature.drifted, feature.note) == (False, "only 100 finite values, fewer than 500")


def test_a_reference_column_of_nan_is_never_judged() -> None:
    """A feature with no finite reference value builds, and is reported as such by every check."""
    reference = normal(1000, seed=15, features=2)
    reference[:, 1] = np.nan
    summary = ReferenceSummary.build(reference, XY)
    feature = check(summary, normal(1000, seed=16, features=2), DEFAULTS).features[1]
    assert (feature.drifted, feature.note) == (False, "no finite reference values")


def test_memory_order_and_dtype_do_not_matter_and_the_window_is_untouched(
    summary: ReferenceSummary,
) -> None:
    """C order, Fortran order and float32 give the same scores; the caller's array is not sorted."""
    current = normal(3000, seed=17)
    current[:, 1] += 0.3
    before = current.copy()
    scores = [
        [(f.psi, f.ks) for f in check(summary, window, DEFAULTS).features]
        for window in (current, np.asfortranarray(current))
    ]
    assert scores[0] == scores[1]
    assert np.array_equal(current, before)
    as_float32 = check(summary, current.astype(np.float32), DEFAULTS)
    assert as_float32.drifted_features() == ("b",)


def test_a_window_of_the_wrong_width_is_a_data_error(summary: ReferenceSummary) -> None:
    """A window whose columns do not match the summary's features is refused."""
    with pytest.raises(DataError, match=r"expected \(rows, 4\)"):
        check(summary, normal(1000, seed=19, features=3), DEFAULTS)


def test_details_are_json_with_four_decimals(summary: ReferenceSummary) -> None:
    """to_details is strict JSON (no NaN) and every score is rounded to 4 places."""
    current = normal(1000, seed=20)
    current[:, 0] = np.nan
    details = check(summary, current, DEFAULTS).to_details()
    json.dumps(details, allow_nan=False)
    assert set(details) == {
        "rows",
        "judged",
        "score",
        "share",
        "weighted_share",
        "dataset_drift",
        "reason",
        "features",
        "prediction",
    }
    assert details["prediction"] is None  # the summary holds no predictions
    for scores in details["features"].values():
        assert {"psi", "ks", "drifted"} <= set(scores)
        for key in ("psi", "ks"):
            assert scores[key] is None or scores[key] == round(scores[key], 4)


# ----- building, saving, loading -----------------------------------------------------------------


def test_build_refuses_bad_input() -> None:
    """Wrong width, too few bins and meaningless importance are programming errors."""
    with pytest.raises(ValueError, match="shape"):
        ReferenceSummary.build(normal(10, seed=21, features=3), ABCD)
    with pytest.raises(ValueError, match="bins"):
        ReferenceSummary.build(normal(10, seed=21), ABCD, bins=1)
    with pytest.raises(ValueError, match="importance"):
        ReferenceSummary.build(normal(10, seed=21), ABCD, importance=[0, 0, 0, 0])
    with pytest.raises(ValueError, match="importance"):
        ReferenceSummary.build(normal(10, seed=21), ABCD, importance=[1, -1, 1, 1])


def test_save_and_load_round_trip(summary: ReferenceSummary, tmp_path: Path) -> None:
    """A loaded summary equals the saved one and judges a window identically; no temp file stays."""
    reference = normal(800, seed=22)
    reference[::7, 2] = np.nan
    original = ReferenceSummary.build(reference, ABCD, bins=7, importance=[4, 3, 2, 1])
    path = tmp_path / "v1" / "drift.npz"
    original.save(path)
    loaded = ReferenceSummary.load(path)
    assert loaded.features == original.features
    assert loaded.rows == original.rows == 800
    for name in ("edges", "freqs", "sorted_sample", "importance"):
        assert np.array_equal(getattr(loaded, name), getattr(original, name), equal_nan=True)
    current = normal(1000, seed=23)
    assert check(loaded, current, DEFAULTS) == check(original, current, DEFAULTS)
    assert [p.name for p in path.parent.iterdir()] == ["drift.npz"]


def test_the_summary_is_read_only(summary: ReferenceSummary) -> None:
    """Its arrays cannot be changed in place, so a cached summary stays what was trained."""
    with pytest.raises(ValueError, match="read-only"):
        summary.sorted_sample[0, 0] = 99.0


def _tampered(summary: ReferenceSummary, path: Path, drop: str = "", **changes: np.ndarray) -> Path:
    """Write ``summary`` as ``save`` would, with some arrays replaced (or one dropped)."""
    arrays = {
        "format": np.array(1),
        "features": np.array(summary.features),
        "edges": summary.edges,
        "freqs": summary.freqs,
        "sorted_sample": summary.sorted_sample,
        "importance": summary.importance,
        "rows": np.array(summary.rows),
    }
    arrays.update(changes)
    with path.open("wb") as fh:
        np.savez(fh, **{k: v for k, v in arrays.items() if k != drop})
    return path


def test_malformed_files_are_data_errors_naming_the_file(
    summary: ReferenceSummary, tmp_path: Path
) -> None:
    """Truncated, garbage, missing, pickled or inconsistent files raise DataError with the path."""
    good = tmp_path / "good.npz"
    summary.save(good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all" * 10)
    pickled = tmp_path / "pickled.npz"
    with pickled.open("wb") as fh:
        np.savez(fh, features=np.array([{"a": 1}], dtype=object))
    freqs = summary.freqs.copy()
    freqs[0, 0] += 0.01
    unsorted = summary.sorted_sample.copy()
    unsorted[1, :2] = unsorted[1, 1::-1]
    bad = [
        truncated,
        garbage,
        tmp_path / "missing.npz",
        pickled,
        _tampered(summary, tmp_path / "no-rows.npz", drop="rows"),
        _tampered(summary, tmp_path / "freqs.npz", freqs=freqs),
        _tampered(summary, tmp_path / "unsorted.npz", sorted_sample=unsorted),
        _tampered(summary, tmp_path / "shape.npz", edges=summary.edges[:, :3]),
        _tampered(summary, tmp_path / "version.npz", format=np.array(2)),
        _tampered(summary, tmp_path / "importance.npz", importance=summary.importance * 2),
    ]
    for path in bad:
        with pytest.raises(DataError, match=path.name):
            ReferenceSummary.load(path)
    assert ReferenceSummary.load(_tampered(summary, tmp_path / "same.npz")).rows == summary.rows
