"""Data quality: each detection and repair in words a person can check, and no row ever lost."""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.errors import DataError
from selfheal_daemon.model.quality import (
    QualityResult,
    check_and_repair,
    describe,
    fmt,
    format_fixes,
)
from selfheal_daemon.model.quality_io import (
    default_quarantine_path,
    fix_file,
    quarantine_write,
    read_batch,
)
from selfheal_daemon.model.quality_profile import ColumnProfile, QualityProfile
from selfheal_daemon.model.schema import Schema

NAMES = ("a", "b", "c", "d")
NOW = datetime(2026, 11, 27, 10, 0, 0, 123000, tzinfo=UTC)


def _col(
    name: str, median: float, cap: tuple[float, float], valid: tuple[float, float]
) -> ColumnProfile:
    return ColumnProfile(name, median, cap[0], cap[1], cap[0], cap[1], valid[0], valid[1])


# A hand-written profile, so every number in the expected sentences is obvious.
PROFILE = QualityProfile(
    columns=(
        _col("a", 1.5, (0, 10), (0, 100)),
        _col("b", -2.25, (-5, 5), (-50, 50)),
        _col("c", 3.0, (1, 9), (0, 20)),
        _col("d", 0.5, (0, 1), (0, 1)),
    ),
    target_name="y",
    target=_col("y", 2.0, (0, 5), (0, 5)),
    reference_rows=100,
)


def clean(n: int = 4) -> pd.DataFrame:
    """``n`` distinct rows well inside every bound."""
    i = np.arange(n, dtype="float64")
    return pd.DataFrame(
        {"a": 1 + i, "b": -1 - i / 10, "c": 2 + i / 10, "d": 0.1 + i / 100, "y": 1 + i / 10}
    )


def texts(result: QualityResult) -> list[str]:
    return [f.text for f in result.fixes]


def check(frame: pd.DataFrame, *, require_target: bool = True) -> QualityResult:
    result = check_and_repair(frame, PROFILE, require_target=require_target)
    assert result.rows_in == result.rows_kept + result.rows_quarantined
    return result


@pytest.fixture(scope="module")
def bundled_profile(housing: pd.DataFrame) -> QualityProfile:
    """The profile of the bundled California data under its schema."""
    return QualityProfile.learn(housing, Schema.california())


# --- each detection and repair on small frames ---------------------------------------------------


def test_clean_batch_passes_untouched() -> None:
    """A batch inside every bound comes out equal, as float64, with no fixes and no quarantine."""
    frame = clean()
    result = check(frame)
    pd.testing.assert_frame_equal(result.frame, frame)
    assert result.fixes == ()
    assert result.detections == frozenset()
    assert result.quarantined.empty
    assert format_fixes(result) == "Checked 4 rows: kept 4, quarantined 0. No problems found."


def test_missing_features_are_filled_with_the_reference_median() -> None:
    """NaN and None in a feature become the profile's median, reported once per column."""
    frame = clean().astype({"a": "object"})
    frame.loc[[0, 2], "a"] = [np.nan, None]
    result = check(frame)
    assert texts(result) == ["Filled a with median 1.5 in 2 rows"]
    assert result.frame["a"].tolist() == [1.5, 2.0, 1.5, 4.0]
    assert result.detections == {"missing_values"}
    assert result.fixes[0].rows == 2
    assert result.fixes[0].column == "a"


def test_infinities_are_replaced_and_reported_apart_from_gaps() -> None:
    """+inf and -inf become the median under their own sentence and detection kind."""
    frame = clean()
    frame.loc[[1, 3], "b"] = [np.inf, -np.inf]
    frame.loc[0, "b"] = np.nan
    result = check(frame)
    assert texts(result) == [
        "Filled b with median -2.25 in 1 row",
        "Replaced 2 infinite values in b with median -2.25",
    ]
    assert result.frame["b"].tolist() == [-2.25, -2.25, -1.2, -2.25]
    assert result.detections == {"missing_values", "non_finite"}


def test_numbers_written_as_text_are_coerced() -> None:
    """Text that reads as a number becomes that number; the count is reported."""
    frame = clean().astype({"c": "object"})
    frame.loc[[0, 1, 2], "c"] = ["3", " 4.5 ", "1e0"]
    result = check(frame)
    assert texts(result) == ["Coerced 3 values in c from text to numbers"]
    assert result.frame["c"].tolist() == [3.0, 4.5, 1.0, 2.3]
    assert result.detections == {"dtype"}


def test_unreadable_text_in_a_feature_counts_as_missing() -> None:
    """Text that is no number is named in the report and filled like a gap."""
    frame = clean().astype({"c": "object"})
    frame.loc[[0, 1], "c"] = ["abc", "1_000"]
    result = check(frame)
    assert texts(result) == [
        "Could not read 2 values in c as numbers ('abc', '1_000'); treated as missing",
        "Filled c with median 3 in 2 rows",
    ]
    assert result.detections == {"dtype", "missing_values"}


def test_outliers_are_capped_to_the_fence() -> None:
    """Values beyond the fence but possible are capped to it, one sentence per column."""
    frame = clean()
    frame.loc[[0, 1], "b"] = [-7.0, 8.0]
    result = check(frame)
    assert texts(result) == ["Capped 2 outliers in b to [-5, 5]"]
    assert result.frame["b"].tolist()[:2] == [-5.0, 5.0]
    assert result.detections == {"outliers"}


def test_an_impossible_feature_value_quarantines_its_row() -> None:
    """A value outside the possible range is not capped: the row goes to quarantine with why."""
    frame = clean()
    frame.loc[2, "c"] = 25.0
    frame.loc[3, "a"] = -1.0
    result = check(frame)
    assert texts(result) == [
        "Quarantined 1 row: a outside the possible range [0, 100]",
        "Quarantined 1 row: c outside the possible range [0, 20]",
    ]
    assert result.quarantined["row"].tolist() == [2, 3]
    assert result.quarantined["reason"].tolist() == [
        "c outside the possible range [0, 20]",
        "a outside the possible range [0, 100]",
    ]
    assert result.rows_kept == 2
    assert result.detections == {"out_of_range"}
    assert {f.action for f in result.fixes} == {"quarantined"}


def test_bad_labels_are_quarantined_never_repaired() -> None:
    """A missing, unreadable, infinite or impossible label sends its row to quarantine."""
    frame = clean(6).astype({"y": "object"})
    frame.loc[0:4, "y"] = [None, "abc", np.inf, 7.0, "4.5"]
    result = check(frame)
    assert texts(result) == [
        "Coerced 1 value in y from text to a number",
        "Quarantined 1 row: label y is not a number",
        "Quarantined 1 row: label y is missing",
        "Quarantined 1 row: label y is infinite",
        "Quarantined 1 row: label y outside the possible range [0, 5]",
    ]
    assert result.frame["y"].tolist() == [4.5, 1.5]
    assert result.quarantined["y"].tolist() == [None, "abc", np.inf, 7.0]
    assert result.detections == {"dtype", "missing_values", "non_finite", "out_of_range"}


def test_a_row_missing_more_than_half_its_features_is_quarantined() -> None:
    """Three of four features missing cannot be imputed credibly; two of four can."""
    frame = clean()
    frame.loc[0, ["a", "b", "c"]] = np.nan
    frame.loc[1, ["a", "b"]] = [np.nan, np.inf]
    result = check(frame)
    assert texts(result) == [
        "Quarantined 1 row: more than half of the features missing or infinite",
        "Filled a with median 1.5 in 1 row",
        "Replaced 1 infinite value in b with median -2.25",
    ]
    assert result.quarantined["row"].tolist() == [0]


def test_exact_duplicates_are_dropped_into_quarantine() -> None:
    """Later copies of a row are moved to quarantine naming the row they repeat; the first stays."""
    frame = clean()
    frame = pd.concat([frame, frame.iloc[[0, 0, 2]]], ignore_index=True)
    result = check(frame)
    assert texts(result) == ["Dropped 3 exact duplicate rows; the first copy of each is kept"]
    assert result.quarantined["row"].tolist() == [4, 5, 6]
    assert result.quarantined["reason"].tolist() == [
        "exact duplicate of row 0",
        "exact duplicate of row 0",
        "exact duplicate of row 2",
    ]
    pd.testing.assert_frame_equal(result.frame, clean())
    assert result.detections == {"duplicates"}


def test_duplicates_are_judged_before_repair_and_only_among_good_rows() -> None:
    """Two rows with the same gap are duplicates; a copy of a bad row keeps its own reason."""
    frame = clean()
    frame.loc[1, "a"] = np.nan
    frame.loc[3, "y"] = np.nan
    frame = pd.concat([frame, frame.iloc[[1, 3]]], ignore_index=True)
    result = check(frame)
    assert result.quarantined["reason"].tolist() == [
        "label y is missing",
        "exact duplicate of row 1",
        "label y is missing",
    ]
    assert texts(result)[-1] == "Filled a with median 1.5 in 1 row"


def test_a_missing_feature_column_refuses_the_whole_batch() -> None:
    """Without a feature nothing can be repaired: every row is quarantined as it arrived."""
    frame = clean(3).drop(columns=["c"]).assign(note="x")
    result = check(frame)
    assert result.rejected == "missing column c"
    assert texts(result) == ["Quarantined all 3 rows: missing column c"]
    assert result.detections == {"schema"}
    assert result.rows_kept == 0
    assert list(result.quarantined.columns) == ["row", "reason", "a", "b", "d", "y", "note"]
    assert set(result.quarantined["reason"]) == {"missing column c"}


def test_a_required_target_column_is_a_schema_requirement() -> None:
    """Training data without labels is refused; the same batch passes when labels are optional."""
    frame = clean(3).drop(columns=["y"])
    refused = check(frame)
    assert refused.rejected == "missing column y"
    taken = check(frame, require_target=False)
    assert taken.fixes == ()
    assert list(taken.frame.columns) == list(NAMES)


def test_columns_are_matched_by_name_with_case_and_spaces_forgiven() -> None:
    """A loose name is renamed and reported; unknown columns are dropped and reported."""
    frame = clean(2).rename(columns={"a": " A ", "y": "Y"}).assign(note="x", id=[1, 2])
    result = check(frame)
    assert texts(result) == [
        "Renamed column ' A ' to a",
        "Renamed column 'Y' to y",
        "Dropped 2 unknown columns: note, id",
    ]
    assert list(result.frame.columns) == [*NAMES, "y"]
    assert result.detections == {"schema"}


def test_an_exact_name_wins_over_a_loose_one() -> None:
    """With both ``a`` and ``A`` present, ``a`` is used and ``A`` is dropped as unknown."""
    frame = clean(2).assign(A=99.0)
    assert texts(check(frame)) == ["Dropped 1 unknown column: A"]


def test_quarantine_rows_are_positions_in_the_input_whatever_its_index() -> None:
    """``row`` counts from 0 in input order, ignoring the frame's own index labels."""
    frame = clean(3)
    frame.index = pd.Index([10, 20, 30])
    frame.loc[20, "y"] = np.nan
    assert check(frame).quarantined["row"].tolist() == [1]


def test_describe_gives_the_audit_details() -> None:
    """The summary carries the counts, every sentence, and the detections in a fixed order."""
    frame = clean()
    frame.loc[0, "a"] = np.nan
    frame.loc[1, "y"] = 9.0
    assert describe(check(frame)) == {
        "rows_in": 4,
        "rows_kept": 3,
        "rows_quarantined": 1,
        "fixes": [
            "Quarantined 1 row: label y outside the possible range [0, 5]",
            "Filled a with median 1.5 in 1 row",
        ],
        "detections": ["missing_values", "out_of_range"],
    }


def test_format_fixes_lists_one_line_per_fix() -> None:
    """The fix-data report: a summary line, then each sentence indented."""
    frame = clean()
    frame.loc[0, "a"] = 12.0
    frame.loc[1, "y"] = np.nan
    assert format_fixes(check(frame)) == (
        "Checked 4 rows: kept 3, quarantined 1.\n"
        "  - Quarantined 1 row: label y is missing\n"
        "  - Capped 1 outlier in a to [0, 10]"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.0488888, "1.05"), (1243.3333, "1243.33"), (35682.0, "35682"), (0.0012, "0.0012"), (0, "0")],
)
def test_numbers_in_sentences_read_like_a_person_writes_them(value: float, text: str) -> None:
    """Two decimals without trailing zeros; tiny values keep two significant digits."""
    assert fmt(value) == text


# --- the profile ---------------------------------------------------------------------------------


def test_profile_survives_json(bundled_profile: QualityProfile) -> None:
    """``to_dict`` through JSON and back gives an equal profile."""
    text = json.dumps(bundled_profile.to_dict())
    assert QualityProfile.from_dict(json.loads(text)) == bundled_profile


def test_a_malformed_profile_is_a_data_error(bundled_profile: QualityProfile) -> None:
    """A dict that is not a profile is refused with a DataError, not a KeyError."""
    broken = bundled_profile.to_dict()
    del broken["features"][0]["median"]
    with pytest.raises(DataError, match="malformed"):
        QualityProfile.from_dict(broken)
    with pytest.raises(DataError, match="version"):
        QualityProfile.from_dict({**bundled_profile.to_dict(), "version": 99})


def test_bounds_learned_from_the_bundled_data(bundled_profile: QualityProfile) -> None:
    """Medians, censored edges and possible ranges come from the data, not from constants."""
    house_age = bundled_profile.column("HouseAge")
    assert (house_age.cap_high, house_age.valid_high) == (52.0, 205.0)
    bedrooms = bundled_profile.column("AveBedrms")
    assert fmt(bedrooms.median) == "1.05"
    assert (bedrooms.cap_low, bedrooms.valid_low) == (bedrooms.minimum, 0.0)
    latitude = bundled_profile.column("Latitude")
    assert (round(latitude.valid_low, 2), round(latitude.valid_high, 2)) == (4.31, 70.18)
    assert bundled_profile.target is not None
    assert (bundled_profile.target.valid_low, bundled_profile.target.valid_high) == (0.0, 5.00001)


def test_a_profile_without_labels_still_refuses_missing_labels(housing: pd.DataFrame) -> None:
    """Learned from features only (a model's reference), labels are checked for presence only."""
    profile = QualityProfile.learn(housing[list(FEATURES)].head(500), Schema.california())
    assert profile.target is None
    frame = housing.dropna().head(3).reset_index(drop=True)
    frame.loc[0, TARGET] = np.nan
    frame.loc[1, TARGET] = 99.0
    result = check_and_repair(frame, profile, require_target=True)
    assert texts(result) == [f"Quarantined 1 row: label {TARGET} is missing"]


def test_a_reference_column_without_values_cannot_be_learned(housing: pd.DataFrame) -> None:
    """A profile needs at least one finite value per feature, else it is a DataError."""
    frame = housing.head(5).assign(MedInc=np.nan)
    with pytest.raises(DataError, match="no finite values in column MedInc"):
        QualityProfile.learn(frame, Schema.california())
    with pytest.raises(DataError, match="lacks columns: HouseAge"):
        QualityProfile.learn(frame.drop(columns=["HouseAge"]), Schema.california())


# --- the bundled data ----------------------------------------------------------------------------


def test_bundled_data_passes_its_own_profile(
    housing: pd.DataFrame, bundled_profile: QualityProfile
) -> None:
    """The only fix the bundled data needs is its 207 known gaps; no row is capped or lost."""
    result = check_and_repair(housing, bundled_profile, require_target=True)
    assert texts(result) == ["Filled AveBedrms with median 1.05 in 207 rows"]
    assert result.rows_kept == len(housing)
    other = [c for c in housing.columns if c != "AveBedrms"]
    pd.testing.assert_frame_equal(result.frame[other], housing[other])


def test_a_dirty_copy_of_the_bundled_data_gets_every_fix(
    housing: pd.DataFrame, bundled_profile: QualityProfile
) -> None:
    """Injected faults come back as exactly the expected sentences, counts and quarantine."""
    frame = housing.dropna().head(1000).reset_index(drop=True).astype({"HouseAge": "object"})
    frame.loc[0:11, "MedInc"] = np.nan
    frame.loc[20:22, "AveOccup"] = np.inf
    frame.loc[30:32, "HouseAge"] = ["41", "21.0", " 52"]
    frame.loc[33, "HouseAge"] = "old"
    frame.loc[40:41, "AveOccup"] = [2000.0, 3000.0]
    frame.loc[50, "Population"] = -5.0
    frame.loc[60, "Latitude"] = -37.0
    frame.loc[70:71, TARGET] = [np.nan, 9.0]
    frame.loc[80, ["MedInc", "AveRooms", "AveBedrms", "Population", "AveOccup"]] = np.nan
    frame = pd.concat([frame, frame.iloc[[100, 101, 101, 102]]], ignore_index=True)

    result = check_and_repair(frame, bundled_profile, require_target=True)

    assert texts(result) == [
        "Coerced 3 values in HouseAge from text to numbers",
        "Could not read 1 value in HouseAge as a number ('old'); treated as missing",
        f"Quarantined 1 row: label {TARGET} is missing",
        f"Quarantined 1 row: label {TARGET} outside the possible range [0, 5.00001]",
        "Quarantined 1 row: Population outside the possible range [0, 142719]",
        "Quarantined 1 row: Latitude outside the possible range [4.31, 70.18]",
        "Quarantined 1 row: more than half of the features missing or infinite",
        "Dropped 4 exact duplicate rows; the first copy of each is kept",
        "Filled MedInc with median 3.53 in 12 rows",
        "Filled HouseAge with median 29 in 1 row",
        "Replaced 3 infinite values in AveOccup with median 2.82",
        "Capped 2 outliers in AveOccup to [0, 1243.33]",
    ]
    assert result.rows_in == 1004
    assert result.rows_kept == 995
    assert result.quarantined["row"].tolist() == [50, 60, 70, 71, 80, 1000, 1001, 1002, 1003]
    assert result.quarantined["reason"].tolist()[-4:] == [
        "exact duplicate of row 100",
        "exact duplicate of row 101",
        "exact duplicate of row 101",
        "exact duplicate of row 102",
    ]
    kept = result.frame[list(FEATURES)].to_numpy()
    assert np.isfinite(kept).all()
    assert kept[:, FEATURES.index("AveOccup")].max() == pytest.approx(1243.3333333)
    assert result.detections == {
        "dtype",
        "missing_values",
        "non_finite",
        "out_of_range",
        "duplicates",
        "outliers",
    }


# --- the invariant -------------------------------------------------------------------------------

_cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.sampled_from([-1e9, -51.0, -5.5, 0.0, 0.5, 3.0, 9.5, 21.0, 1e12]),
    st.sampled_from(["2", " 7.5", "abc", "", "inf", "-1e3", "nan", "1_0"]),
    st.none(),
)


@st.composite
def dirty_frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(min_value=0, max_value=12))
    columns = {name: draw(st.lists(_cell, min_size=n, max_size=n)) for name in (*NAMES, "y")}
    frame = pd.DataFrame(columns, dtype="object")
    copies = draw(st.lists(st.integers(min_value=0, max_value=max(n - 1, 0)), max_size=3))
    if n and copies:
        frame = pd.concat([frame, frame.iloc[copies]], ignore_index=True)
    return frame


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=dirty_frames(), require_target=st.booleans())
def test_no_row_is_ever_lost(frame: pd.DataFrame, require_target: bool) -> None:
    """Every input row is kept (finite, within the fences) or quarantined with a reason."""
    result = check_and_repair(frame, PROFILE, require_target=require_target)
    assert result.rows_in == len(frame) == result.rows_kept + result.rows_quarantined
    rows = result.quarantined["row"].tolist()
    assert len(set(rows)) == len(rows)
    assert all(0 <= r < len(frame) for r in rows)
    assert all(isinstance(r, str) and r for r in result.quarantined["reason"])
    assert (result.frame.dtypes == "float64").all()
    kept = result.frame.to_numpy()
    assert np.isfinite(kept).all()
    for col in PROFILE.columns:
        assert result.frame[col.name].between(col.cap_low, col.cap_high).all()
    assert {f.kind for f in result.fixes} == result.detections


# --- files ---------------------------------------------------------------------------------------


def test_quarantine_file_is_written_whole_and_readable(tmp_path: Path) -> None:
    """The quarantine CSV is named after the batch and UTC time, has reasons, leaves no temp."""
    frame = clean()
    frame.loc[1, "y"] = np.nan
    quarantined = check(frame).quarantined
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    path = quarantine_write(quarantined, tmp_path / "quarantine", "incoming/batch-7.csv", local)
    assert path == tmp_path / "quarantine" / "batch-7-20261127T100000Z.csv"
    assert os.listdir(path.parent) == [path.name]
    back = pd.read_csv(path)
    assert back["reason"].tolist() == ["label y is missing"]
    assert back["row"].tolist() == [1]
    again = quarantine_write(quarantined, tmp_path / "quarantine", "batch-7.parquet", NOW)
    assert again.name == "batch-7-20261127T100000Z-1.csv"
    with pytest.raises(ValueError, match="timezone-aware"):
        quarantine_write(quarantined, tmp_path, "b.csv", NOW.replace(tzinfo=None))


def test_fix_file_round_trip_csv(tmp_path: Path) -> None:
    """fix-data on a CSV writes the repaired rows and, beside them, the quarantine."""
    frame = clean().astype({"b": "object"})
    frame.loc[0, "b"] = "oops"
    frame.loc[2, "y"] = 8.0
    src, out = tmp_path / "in.csv", tmp_path / "out" / "clean.csv"
    frame.to_csv(src, index=False)
    result = fix_file(src, out, PROFILE)
    # One bad cell makes the whole CSV column text, so its good numbers count as coerced.
    assert texts(result) == [
        "Coerced 3 values in b from text to numbers",
        "Could not read 1 value in b as a number ('oops'); treated as missing",
        "Quarantined 1 row: label y outside the possible range [0, 5]",
        "Filled b with median -2.25 in 1 row",
    ]
    pd.testing.assert_frame_equal(pd.read_csv(out), result.frame)
    assert default_quarantine_path(out) == tmp_path / "out" / "clean.quarantine.csv"
    quarantine = pd.read_csv(default_quarantine_path(out))
    assert quarantine[["row", "reason", "y"]].to_dict("records") == [
        {"row": 2, "reason": "label y outside the possible range [0, 5]", "y": 8.0}
    ]
    assert sorted(os.listdir(out.parent)) == ["clean.csv", "clean.quarantine.csv"]


def test_fix_file_writes_no_quarantine_for_a_clean_file(tmp_path: Path) -> None:
    """A clean file gives OUT alone; OUT may be the input file itself."""
    src = tmp_path / "data.csv"
    clean().to_csv(src, index=False)
    result = fix_file(src, src, PROFILE)
    assert result.fixes == ()
    assert os.listdir(tmp_path) == ["data.csv"]


def test_fix_file_round_trip_parquet(tmp_path: Path) -> None:
    """Parquet in and out keeps float64 values exactly."""
    pytest.importorskip("pyarrow")
    src, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    frame = clean()
    frame.loc[0, "a"] = math.nan
    frame.to_parquet(src)
    result = fix_file(src, out, PROFILE)
    pd.testing.assert_frame_equal(pd.read_parquet(out), result.frame)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("notes.txt", b"a,b\n1,2\n", "neither CSV"),
        ("image.csv", bytes(range(256)) * 4, "cannot read"),
        ("empty.csv", b"", "cannot read"),
        ("letter.csv", b"Dear reader,\nthis is no table.\n", "missing columns a, b, c, d"),
    ],
)
def test_a_file_that_is_not_a_table_is_a_data_error(
    tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    """Wrong suffix, binary junk, an empty file or prose: a DataError naming it; nothing written."""
    src = tmp_path / name
    src.write_bytes(content)
    with pytest.raises(DataError, match=match) as caught:
        fix_file(src, tmp_path / "out.csv", PROFILE)
    assert name in str(caught.value)
    assert sorted(os.listdir(tmp_path)) == [name]


def test_a_missing_input_file_is_a_data_error(tmp_path: Path) -> None:
    """A path that does not exist is a DataError naming it."""
    with pytest.raises(DataError, match=r"nowhere\.csv"):
        read_batch(tmp_path / "nowhere.csv")
