"""Data drift of categorical and boolean features (PSI and Jensen-Shannon over categories, unseen
and missing), of the model's predictions, and the stored form of both."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from selfheal_daemon.errors import DataError
from selfheal_daemon.model.drift import EPSILON, PREDICTION, ReferenceSummary, check
from selfheal_daemon.model.drift_stats import category_counts
from selfheal_daemon.model.schema import UNSEEN, Column, Schema


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
ANY_ROWS = replace(DEFAULTS, min_rows=1)
COLOUR = Column("colour", "categorical", categories=("red", "green", "blue"))


def regression(*columns: Column) -> Schema:
    """A regression schema on ``columns``."""
    return Schema("m", "regression", "y", columns)


def classifier(*columns: Column, classes: tuple[str, ...] = ("no", "yes")) -> Schema:
    """A classifier schema on ``columns`` with ``classes``."""
    task = "binary" if len(classes) == 2 else "multiclass"
    return Schema("m", task, "y", columns, classes=classes)  # type: ignore[arg-type]


def codes(*counts: tuple[float, int]) -> np.ndarray:
    """A one-column matrix holding each (code, how many times) in turn."""
    return np.concatenate([np.full(n, code) for code, n in counts])[:, None]


def mixed_schema() -> Schema:
    """Two numeric features, a categorical one of 4 categories, a boolean."""
    return regression(
        Column("income", "numeric"),
        Column("city", "categorical", categories=("north", "south", "east", "west")),
        Column("age", "numeric"),
        Column("owner", "boolean"),
    )


def mixed_frame(rows: int, seed: int, city: list[float], owner: float) -> pd.DataFrame:
    """Rows for ``mixed_schema`` with the city shares ``city`` and an owner share ``owner``."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "income": rng.normal(3.0, 1.0, rows),
            "city": rng.choice(["north", "south", "east", "west"], size=rows, p=city),
            "age": rng.gamma(4.0, 8.0, rows),
            "owner": rng.choice(["true", "false"], size=rows, p=[owner, 1 - owner]),
        }
    )


# ----- the statistics ----------------------------------------------------------------------------


def test_categorical_psi_and_js_match_a_hand_computation() -> None:
    """Shares 0.5/0.3/0.2 against 0.2/0.3/0.3 plus a tenth unseen and a tenth missing."""
    summary = ReferenceSummary.build(codes((0, 5), (1, 3), (2, 2)), regression(COLOUR))
    assert summary.category_freqs[0].tolist() == [0.5, 0.3, 0.2, 0.0, 0.0]
    current = codes((0, 2), (1, 3), (2, 3), (UNSEEN, 1), (math.nan, 1))
    feature = check(summary, current, ANY_ROWS).features[0]
    # PSI: the empty reference bins (unseen, missing) count as EPSILON = 1e-4.
    psi = (
        (0.2 - 0.5) * math.log(0.2 / 0.5)
        + (0.3 - 0.3) * math.log(0.3 / 0.3)
        + (0.3 - 0.2) * math.log(0.3 / 0.2)
        + 2 * (0.1 - 1e-4) * math.log(0.1 / 1e-4)
    )
    assert feature.psi == pytest.approx(psi, abs=1e-12)
    # JS, base 2: against the mixture m = (r + c) / 2 = 0.35, 0.3, 0.25, 0.05, 0.05.
    kl_r = 0.5 * math.log2(0.5 / 0.35) + 0.3 * math.log2(0.3 / 0.3) + 0.2 * math.log2(0.2 / 0.25)
    kl_c = (
        0.2 * math.log2(0.2 / 0.35)
        + 0.3 * math.log2(0.3 / 0.3)
        + 0.3 * math.log2(0.3 / 0.25)
        + 2 * 0.1 * math.log2(0.1 / 0.05)
    )
    js = math.sqrt((kl_r + kl_c) / 2)
    assert feature.js == pytest.approx(js, abs=1e-12)
    scipy_js = jensenshannon([0.5, 0.3, 0.2, 0, 0], [0.2, 0.3, 0.3, 0.1, 0.1], base=2)
    assert feature.js == pytest.approx(float(scipy_js), abs=1e-12)
    assert (feature.kind, feature.ks, feature.unseen_share) == ("categorical", None, 0.1)
    assert feature.drifted  # PSI 1.70 and JS 0.39, both past their thresholds


def test_the_same_categories_are_not_drift() -> None:
    """A window drawn from the reference's own shares has PSI and JS near 0, and no drift."""
    rng = np.random.default_rng(1)
    p = [0.6, 0.3, 0.1]
    summary = ReferenceSummary.build(rng.choice(3, size=(5000, 1), p=p), regression(COLOUR))
    feature = check(summary, rng.choice(3, size=(5000, 1), p=p), DEFAULTS).features[0]
    assert feature.psi < 0.01
    assert feature.js < 0.03
    assert not feature.drifted
    assert feature.unseen_share == 0.0


def test_unseen_codes_of_every_form_share_one_bin() -> None:
    """UNSEEN, a code past the categories, a negative and a fractional one are all unseen."""
    counts = category_counts(np.array([0, 1, 2, UNSEEN, 3, -2, 1.5, 7, np.nan, np.inf]), 3)
    assert counts.tolist() == [1, 1, 1, 5, 2]  # red, green, blue, unseen, missing
    summary = ReferenceSummary.build(codes((0, 50), (1, 50)), regression(COLOUR))
    current = codes((0, 45), (1, 45), (UNSEEN, 4), (9, 6))
    feature = check(summary, current, ANY_ROWS).features[0]
    assert feature.unseen_share == pytest.approx(0.1)
    assert feature.drifted
    details = check(summary, current, ANY_ROWS).to_details()["features"]["colour"]
    assert details["unseen_share"] == 0.1


def test_one_bin_for_all_unseen_values_gives_the_same_js_as_a_bin_each() -> None:
    """Lumping unseen values changes no JS: a bin empty in the reference adds its share / 2."""
    reference, current = [0.7, 0.3, 0.0, 0.0], [0.5, 0.2, 0.2, 0.1]
    lumped = jensenshannon([*reference[:2], 0.0], [*current[:2], 0.3], base=2)
    assert float(lumped) == pytest.approx(float(jensenshannon(reference, current, base=2)))


def test_missing_cells_are_a_bin_of_their_own() -> None:
    """NaN (and inf) cells are the missing bin on both sides: a surge of them is drift."""
    reference = codes((0, 40), (1, 40), (2, 10), (math.nan, 10))
    summary = ReferenceSummary.build(reference, regression(COLOUR))
    assert summary.category_freqs[0].tolist() == [0.4, 0.4, 0.1, 0.0, 0.1]
    same = codes((0, 40), (1, 40), (2, 10), (math.nan, 5), (math.inf, 5))
    assert check(summary, same, ANY_ROWS).features[0].psi == pytest.approx(0.0, abs=1e-12)
    surge = codes((0, 20), (1, 20), (2, 10), (math.nan, 50))
    feature = check(summary, surge, ANY_ROWS).features[0]
    expected = 2 * (0.2 - 0.4) * math.log(0.2 / 0.4) + (0.5 - 0.1) * math.log(0.5 / 0.1)
    assert feature.psi == pytest.approx(expected, abs=1e-12)
    assert feature.drifted
    assert feature.unseen_share == 0.0
    all_missing = check(summary, np.full((600, 1), np.nan), DEFAULTS).features[0]
    assert all_missing.note == ""
    assert all_missing.drifted


def test_a_category_the_reference_lacks_is_floored_like_an_empty_bin() -> None:
    """A schema category with no reference rows counts as EPSILON in PSI, not as a division by 0."""
    summary = ReferenceSummary.build(codes((0, 5), (1, 5)), regression(COLOUR))
    current = codes((0, 4), (1, 4), (2, 2))
    psi = 2 * (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.2 - EPSILON) * math.log(0.2 / EPSILON)
    assert check(summary, current, ANY_ROWS).features[0].psi == pytest.approx(psi, abs=1e-12)


@pytest.mark.parametrize(
    ("psi_threshold", "js_threshold", "drifted"),
    [(100.0, 1.0, False), (0.01, 1.0, True), (100.0, 0.05, True)],
)
def test_either_psi_or_js_flags_a_categorical_feature(
    psi_threshold: float, js_threshold: float, drifted: bool
) -> None:
    """A categorical feature is drifted when its PSI or its JS reaches its threshold."""
    summary = ReferenceSummary.build(codes((0, 500), (1, 300), (2, 200)), regression(COLOUR))
    current = codes((0, 400), (1, 350), (2, 250))  # PSI 0.041, JS 0.086
    params = replace(ANY_ROWS, psi_threshold=psi_threshold, js_threshold=js_threshold)
    assert check(summary, current, params).features[0].drifted is drifted


def test_a_js_threshold_is_reached_at_equality() -> None:
    """JS exactly at the threshold counts as drift (>=), a hair below does not."""
    summary = ReferenceSummary.build(codes((0, 500), (1, 500)), regression(COLOUR))
    current = codes((0, 600), (1, 400))
    js = check(summary, current, ANY_ROWS).features[0].js
    assert js is not None
    at = replace(ANY_ROWS, psi_threshold=100.0, js_threshold=js)
    assert check(summary, current, at).features[0].drifted
    above = replace(at, js_threshold=math.nextafter(js, 1.0))
    assert not check(summary, current, above).features[0].drifted


def test_a_boolean_column_is_categorical_over_false_and_true() -> None:
    """A boolean feature's two categories are false and true; a flip of shares is drift."""
    schema = regression(Column("owner", "boolean"))
    frame = pd.DataFrame({"owner": ["yes"] * 700 + ["no"] * 300})
    summary = ReferenceSummary.build(schema.encode(frame), schema)
    assert summary.categories == (("false", "true"),)
    assert summary.category_freqs[0].tolist() == [0.3, 0.7, 0.0, 0.0]
    flipped = schema.encode(pd.DataFrame({"owner": [True] * 300 + [False] * 700}))
    feature = check(summary, flipped, DEFAULTS).features[0]
    assert (feature.kind, feature.drifted, feature.ks) == ("boolean", True, None)
    assert not check(summary, schema.encode(frame), DEFAULTS).features[0].drifted


def test_a_short_window_leaves_a_categorical_feature_unjudged() -> None:
    """Fewer rows than min_rows: no scores, a note, and the window is not judged."""
    summary = ReferenceSummary.build(codes((0, 500), (1, 500)), regression(COLOUR))
    result = check(summary, codes((2, 100)), DEFAULTS)
    feature = result.features[0]
    assert not result.judged
    assert (feature.drifted, feature.note) == (False, "only 100 values, fewer than 500")
    assert math.isnan(feature.psi)
    assert feature.js is not None
    assert math.isnan(feature.js)
    json.dumps(result.to_details(), allow_nan=False)


# ----- mixed schemas, end to end ------------------------------------------------------------------


def test_a_mixed_schema_builds_saves_loads_and_checks(tmp_path: Path) -> None:
    """Numeric, categorical and boolean features through build, save, load and check."""
    schema = mixed_schema()
    reference = schema.encode(mixed_frame(5000, 1, [0.4, 0.3, 0.2, 0.1], 0.6))
    original = ReferenceSummary.build(reference, schema, importance=[4, 3, 2, 1])
    path = tmp_path / "drift.npz"
    original.save(path)
    loaded = ReferenceSummary.load(path)
    assert loaded.kinds == ("numeric", "categorical", "numeric", "boolean")
    assert loaded.categories == ((), ("north", "south", "east", "west"), (), ("false", "true"))
    for mine, theirs in zip(loaded.category_freqs, original.category_freqs, strict=True):
        assert np.array_equal(mine, theirs)
    assert not loaded.all_numeric

    frame = mixed_frame(5000, 2, [0.1, 0.2, 0.3, 0.4], 0.6)
    frame.loc[:249, "city"] = "atlantis"  # 5 % a city training never saw
    current = schema.encode(frame)
    result = check(loaded, current, DEFAULTS)
    assert result == check(original, current, DEFAULTS)
    assert result.drifted_features() == ("city",)
    assert result.weighted_share == pytest.approx(0.3)
    city = result.features[1]
    assert city.unseen_share == pytest.approx(0.05)
    assert [f.kind for f in result.features] == list(loaded.kinds)
    assert [f.ks is None for f in result.features] == [False, True, False, True]
    assert [f.js is None for f in result.features] == [True, False, True, False]
    details = result.to_details()
    json.dumps(details, allow_nan=False)
    assert details["features"]["city"]["kind"] == "categorical"
    assert details["features"]["city"]["ks"] is None
    assert details["features"]["income"]["js"] is None
    # The numeric features score exactly what an all-numeric summary of them would.
    numeric = regression(Column("income", "numeric"), Column("age", "numeric"))
    alone = check(
        ReferenceSummary.build(reference[:, [0, 2]], numeric), current[:, [0, 2]], DEFAULTS
    )
    assert [(f.psi, f.ks) for f in alone.features] == [
        (f.psi, f.ks) for f in (result.features[0], result.features[2])
    ]


def test_a_million_mixed_rows_are_checked() -> None:
    """A 1,000,000-row window of 8 numeric and 6 categorical columns is judged (a smoke run)."""
    rng = np.random.default_rng(3)
    columns = [Column(f"n{j}", "numeric") for j in range(8)]
    columns += [
        Column(f"c{j}", "categorical", categories=tuple("abcdefgh"[: j + 2])) for j in range(6)
    ]
    schema = regression(*columns)

    def rows(n: int) -> np.ndarray:
        """``n`` rows: standard normal numbers, uniform category codes."""
        x = np.empty((n, 14))
        x[:, :8] = rng.normal(size=(n, 8))
        for j in range(6):
            x[:, 8 + j] = rng.integers(0, j + 2, size=n)
        return x

    summary = ReferenceSummary.build(rows(5000), schema, predictions=rng.normal(size=5000))
    window = rows(1_000_000)
    result = check(summary, window, DEFAULTS, predictions=rng.normal(size=1_000_000))
    assert result.judged
    assert result.rows == 1_000_000
    assert result.drifted_features() == ()
    assert result.prediction is not None
    assert not result.prediction.drifted


# ----- the predictions ----------------------------------------------------------------------------


def test_a_regressions_predictions_are_compared_like_a_numeric_feature(tmp_path: Path) -> None:
    """Shifted predictions are flagged with PSI and KS, reported, and leave the verdict alone."""
    rng = np.random.default_rng(4)
    schema = regression(Column("x", "numeric"))
    reference = rng.normal(size=(5000, 1))
    summary = ReferenceSummary.build(reference, schema, predictions=2 * reference[:, 0])
    assert summary.prediction is not None
    assert summary.prediction.features == (PREDICTION,)
    path = tmp_path / "drift.npz"
    summary.save(path)
    loaded = ReferenceSummary.load(path)
    assert loaded.prediction is not None
    assert np.array_equal(loaded.prediction.edges, summary.prediction.edges, equal_nan=True)

    window = rng.normal(size=(5000, 1))
    result = check(loaded, window, DEFAULTS, predictions=2 * window[:, 0] + 1.0)
    prediction = result.prediction
    assert prediction is not None
    assert (prediction.name, prediction.kind, prediction.drifted) == (PREDICTION, "numeric", True)
    assert prediction.ks is not None
    assert prediction.ks > 0.2
    assert prediction.js is None
    assert prediction.importance == 0.0
    assert result.drifted_features() == ()
    assert not result.dataset_drift
    assert (
        result.reason
        == "0 of 1 features drifted, weighted share 0.00 < 0.50; the predictions drifted"
    )
    details = result.to_details()["prediction"]
    assert details["drifted"] is True
    assert details["kind"] == "numeric"
    steady = check(loaded, window, DEFAULTS, predictions=2 * window[:, 0])
    assert steady.prediction is not None
    assert not steady.prediction.drifted
    assert check(loaded, window, DEFAULTS).prediction is None  # no predictions given


def test_a_classifiers_predictions_are_compared_as_class_shares(tmp_path: Path) -> None:
    """Class indices are a categorical summary over the classes; a swing of shares is flagged."""
    rng = np.random.default_rng(5)
    schema = classifier(COLOUR, classes=("low", "mid", "high"))
    reference = rng.choice(3, size=(3000, 1)).astype(float)
    predicted = rng.choice(3, size=3000, p=[0.5, 0.3, 0.2]).astype(float)
    summary = ReferenceSummary.build(reference, schema, predictions=predicted)
    path = tmp_path / "drift.npz"
    summary.save(path)
    loaded = ReferenceSummary.load(path)
    assert loaded.prediction is not None
    assert loaded.prediction.kinds == ("categorical",)
    assert loaded.prediction.categories == (("low", "mid", "high"),)
    assert loaded.prediction.category_freqs[0][3:].tolist() == [0.0, 0.0]  # no unseen, missing

    window = rng.choice(3, size=(3000, 1)).astype(float)
    swung = rng.choice(3, size=3000, p=[0.2, 0.3, 0.5]).astype(float)
    result = check(loaded, window, DEFAULTS, predictions=swung[:, None])
    prediction = result.prediction
    assert prediction is not None
    assert prediction.kind == "categorical"
    assert prediction.drifted
    assert prediction.js is not None
    assert prediction.js > 0.1
    assert prediction.ks is None
    assert not result.dataset_drift
    same = rng.choice(3, size=3000, p=[0.5, 0.3, 0.2]).astype(float)
    assert check(loaded, window, DEFAULTS, predictions=same).prediction.drifted is False  # type: ignore[union-attr]


def test_predictions_are_refused_when_they_do_not_fit() -> None:
    """Predictions of another length than the reference, or not one column, are errors."""
    schema = regression(Column("x", "numeric"))
    with pytest.raises(ValueError, match="3 predictions for 4 reference rows"):
        ReferenceSummary.build(np.zeros((4, 1)), schema, predictions=np.zeros(3))
    summary = ReferenceSummary.build(np.zeros((4, 1)), schema, predictions=np.zeros(4))
    with pytest.raises(DataError, match="predictions have shape"):
        check(summary, np.zeros((4, 1)), ANY_ROWS, predictions=np.zeros((4, 2)))


def test_build_takes_a_schema_not_names() -> None:
    """The second argument is the model's Schema; a tuple of names is a TypeError."""
    with pytest.raises(TypeError, match="Schema"):
        ReferenceSummary.build(np.zeros((4, 1)), ("x",))  # type: ignore[arg-type]


def test_the_california_schema_builds_an_all_numeric_summary() -> None:
    """The bundled model's schema: its eight features in order, all numeric, no categories."""
    schema = Schema.california()
    summary = ReferenceSummary.build(np.random.default_rng(6).normal(size=(600, 8)), schema)
    assert summary.features == schema.features
    assert summary.all_numeric
    assert summary.kinds == ("numeric",) * 8
    assert summary.prediction is None


# ----- stored form --------------------------------------------------------------------------------

OLD_KEYS = ("format", "features", "edges", "freqs", "sorted_sample", "importance", "rows")


def test_an_old_all_numeric_file_loads_unchanged(tmp_path: Path) -> None:
    """A drift.npz written before kinds existed (its seven arrays only) is all numeric."""
    schema = regression(Column("a", "numeric"), Column("b", "numeric"))
    reference = np.random.default_rng(7).normal(size=(2000, 2))
    reference[::9, 1] = np.nan
    summary = ReferenceSummary.build(reference, schema, importance=[3, 1])
    old = tmp_path / "old.npz"
    arrays = {
        "format": np.array(1),
        "features": np.array(summary.features),
        "edges": summary.edges,
        "freqs": summary.freqs,
        "sorted_sample": summary.sorted_sample,
        "importance": summary.importance,
        "rows": np.array(summary.rows),
    }
    with old.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    with np.load(old) as npz:
        assert sorted(npz.files) == sorted(OLD_KEYS)
    loaded = ReferenceSummary.load(old)
    assert loaded.kinds == ("numeric", "numeric")
    assert loaded.prediction is None
    assert loaded.categories == ((), ())
    assert all(f.size == 0 for f in loaded.category_freqs)
    window = np.random.default_rng(8).normal(0.3, 1.0, size=(2000, 2))
    assert check(loaded, window, DEFAULTS) == check(summary, window, DEFAULTS)
    # A new file of the same summary holds the same seven arrays, and more.
    new = tmp_path / "new.npz"
    summary.save(new)
    with np.load(new) as npz:
        assert set(OLD_KEYS) < set(npz.files)
        for key in OLD_KEYS:
            assert np.array_equal(npz[key], arrays[key], equal_nan=key != "features")


def _rewrite(source: Path, target: Path, drop: str = "", **changes: np.ndarray) -> Path:
    """Copy the npz ``source`` to ``target`` with some arrays replaced (or one dropped)."""
    with np.load(source) as npz:
        arrays = {key: npz[key] for key in npz.files if key != drop}
    arrays.update(changes)
    with target.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return target


def test_malformed_category_arrays_are_data_errors(tmp_path: Path) -> None:
    """Inconsistent kinds, category counts, names or shares raise DataError naming the file."""
    schema = mixed_schema()
    reference = schema.encode(mixed_frame(500, 9, [0.25, 0.25, 0.25, 0.25], 0.5))
    good = tmp_path / "good.npz"
    ReferenceSummary.build(reference, schema, predictions=reference[:, 0]).save(good)
    with np.load(good) as npz:
        shares, sizes = npz["category_freqs"], npz["n_categories"]
    skewed = shares.copy()
    skewed[0] += 0.1
    bad = [
        _rewrite(good, tmp_path / "no-names.npz", drop="category_names"),
        _rewrite(
            good,
            tmp_path / "kind.npz",
            kinds=np.array(["numeric", "ordinal", "numeric", "boolean"]),
        ),
        _rewrite(good, tmp_path / "numeric.npz", kinds=np.array(["numeric"] * 4)),
        _rewrite(good, tmp_path / "sizes.npz", n_categories=sizes + 1),
        _rewrite(good, tmp_path / "negative.npz", n_categories=-sizes),
        _rewrite(good, tmp_path / "shares.npz", category_freqs=skewed),
        _rewrite(good, tmp_path / "short.npz", category_freqs=shares[:-1]),
        _rewrite(good, tmp_path / "prediction.npz", prediction_rows=np.array(1.5)),
    ]
    for path in bad:
        with pytest.raises(DataError, match=path.name):
            ReferenceSummary.load(path)
    assert ReferenceSummary.load(_rewrite(good, tmp_path / "same.npz")).kinds[1] == "categorical"


def test_a_categorical_feature_with_numeric_bins_is_refused() -> None:
    """A summary that gives a categorical feature a sorted sample is inconsistent: ValueError."""
    numeric = ReferenceSummary.build(np.arange(10.0)[:, None], regression(Column("x", "numeric")))
    with pytest.raises(ValueError, match="numeric bins"):
        ReferenceSummary(
            numeric.features,
            numeric.edges,
            numeric.freqs,
            numeric.sorted_sample,
            numeric.importance,
            numeric.rows,
            kinds=("categorical",),
            categories=(("a",),),
            category_freqs=(np.array([1.0, 0.0, 0.0]),),
        )
