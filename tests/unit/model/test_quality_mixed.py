"""Data quality on mixed batches: duplicates and sparse rows over every column, files, the real
Adult data, and the invariant that no row is ever lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.model.quality import check_and_repair
from selfheal_daemon.model.quality_io import fix_file, read_batch
from selfheal_daemon.model.quality_profile import CategoryProfile, QualityProfile
from selfheal_daemon.model.schema import Column, Schema
from tests.unit.model.test_quality_categorical import (
    FEATURE_NAMES,
    PROFILE,
    batch,
    check,
    texts,
)

# --- rows ----------------------------------------------------------------------------------------


def test_duplicates_are_judged_over_every_column_after_respelling() -> None:
    """Rows differing only in a category are distinct; rows equal once respelled are duplicates."""
    frame = pd.concat([batch(2)] * 3, ignore_index=True)
    frame.loc[2, "sex"] = " female"  # row 2 becomes row 0 once respelled
    frame.loc[3, "workclass"] = "State-gov"  # row 3 differs from row 1 in one category
    frame.loc[4, "smoker"] = "no"  # row 4 becomes row 0 too
    result = check(frame)
    assert result.quarantined[["row", "reason"]].to_dict("records") == [
        {"row": 2, "reason": "exact duplicate of row 0"},
        {"row": 4, "reason": "exact duplicate of row 0"},
        {"row": 5, "reason": "exact duplicate of row 1"},
    ]


def test_missing_categories_count_towards_a_sparse_row() -> None:
    """A row with more than half its features missing, numeric or categorical, is quarantined."""
    frame = batch(2)
    frame.loc[0, ["workclass", "sex", "smoker"]] = ["?", "", None]
    frame.loc[1, ["workclass", "sex"]] = ["?", "NA"]
    result = check(frame)
    assert texts(result)[0] == (
        "Quarantined 1 row: more than half of the features missing or infinite"
    )
    assert result.quarantined["row"].tolist() == [0]


def test_a_mixed_batch_without_a_column_is_refused_with_typed_empty_columns() -> None:
    """A missing feature refuses the batch; the empty frame still has the columns' dtypes."""
    result = check(batch(2).drop(columns=["sex"]))
    assert result.rejected == "missing column sex"
    assert result.frame.dtypes["age"] == np.dtype("float64")
    assert result.frame.dtypes["workclass"] == np.dtype(object)


def test_the_adult_like_mixed_batch_gets_every_fix() -> None:
    """One dirty batch of every kind: the sentences in order, the counts, and the quarantine."""
    frame = batch(12).astype({"age": object})
    frame.loc[0, "workclass"] = "?"
    frame.loc[1, "workclass"] = "private"
    frame.loc[2, "sex"] = " male"
    frame.loc[3, "native-country"] = "Atlantis"
    frame.loc[4, "workclass"] = "42"
    frame.loc[5, "age"] = "unknown"
    frame.loc[6, "smoker"] = "Yes"
    frame.loc[7, "income"] = ">50K."
    frame.loc[8, "age"] = 1e6
    frame = pd.concat([frame, frame.iloc[[9]]], ignore_index=True)
    result = check(frame)
    assert texts(result) == [
        "Could not read 1 value in age as a number ('unknown'); treated as missing",
        "Normalised 1 value of workclass to a known category ('private' -> 'Private')",
        "Could not read 1 value in workclass as a category: a number in a column of text"
        " categories ('42'); treated as missing",
        "Normalised 1 value of sex to a known category (' male' -> 'Male')",
        "Normalised 1 value of smoker to true/false ('Yes' -> 'true')",
        "Quarantined 1 row: label '>50K.' is not one of the classes <=50K, >50K",
        "Quarantined 1 row: age outside the possible range [0, 176]",
        "Dropped 1 exact duplicate row; the first copy is kept",
        "Filled age with median 39.5 in 1 row",
        "Filled workclass with the most frequent category 'Private' (2 rows)",
        "Kept 1 row of native-country with a category training never saw: 'Atlantis' (1)",
    ]
    assert result.quarantined["row"].tolist() == [7, 8, 12]
    assert result.rows_kept == 10
    kept = result.frame
    assert kept["workclass"].tolist()[:5] == [
        "Private",
        "Private",
        "State-gov",
        "Private",
        "Private",
    ]
    assert kept["sex"].tolist()[2] == "Male"
    assert kept["smoker"].tolist()[6] == "true"
    assert kept["age"].dtype == np.dtype("float64")
    assert np.isfinite(kept["age"]).all()


# --- files ---------------------------------------------------------------------------------------


def test_read_batch_keeps_text_as_text_and_tokens_as_missing(tmp_path: Path) -> None:
    """Codes stay text, a "?" (even with spaces) leaves a numeric column numeric, and a known
    category spelled like a missing marker stays a category."""
    schema = Schema(
        name="s",
        task="regression",
        target="y",
        columns=(
            Column("zip", "categorical", categories=("007", "010")),
            Column("alley", "categorical", categories=("None", "Paved")),
            Column("rooms", "numeric"),
            Column("floors", "numeric"),
        ),
    )
    reference = {"zip": ["007"], "alley": ["None"], "rooms": [3.0], "floors": [1.0], "y": [1.0]}
    profile = QualityProfile.learn(pd.DataFrame(reference), schema)
    src = tmp_path / "in.csv"
    src.write_text("zip,alley,rooms,floors,y\n007,None,3,1,1.5\n010,NA,?,1,2\n?,Paved, ?,1,3\n")
    frame = read_batch(src, profile)
    assert frame["zip"].tolist()[:2] == ["007", "010"]
    assert pd.isna(frame["zip"][2])
    assert frame["alley"].tolist()[0] == "None"
    assert pd.isna(frame["alley"][1])
    assert frame["rooms"].dtype == np.dtype("float64")
    assert frame["rooms"].isna().tolist() == [False, True, True]
    result = check_and_repair(frame, profile)
    assert texts(result) == [
        "Filled zip with the most frequent category '007' (1 row)",
        "Filled alley with the most frequent category 'None' (1 row)",
        "Filled rooms with median 3 in 2 rows",
    ]
    assert read_batch(src)["rooms"].dtype != np.dtype("float64")


def test_read_batch_leaves_a_column_of_real_junk_as_text(tmp_path: Path) -> None:
    """A numeric column with text that is no number stays text so the check can name the cells."""
    src = tmp_path / "in.csv"
    batch(3).assign(age=["31", "oops", "?"]).to_csv(src, index=False)
    result = check_and_repair(read_batch(src, PROFILE), PROFILE)
    assert texts(result) == [
        "Coerced 1 value in age from text to a number",
        "Could not read 1 value in age as a number ('oops'); treated as missing",
        "Filled age with median 39.5 in 2 rows",
    ]


def test_fix_file_on_a_mixed_csv_writes_rows_that_pass_again(tmp_path: Path) -> None:
    """fix-data repairs a mixed CSV; its output read back needs no fix at all."""
    frame = batch(5)
    frame.loc[0, "workclass"] = "?"
    frame.loc[1, "sex"] = "MALE"
    frame.loc[2, "income"] = ">50K."
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    frame.to_csv(src, index=False)
    result = fix_file(src, out, PROFILE, require_target=True)
    assert texts(result) == [
        "Normalised 1 value of sex to a known category ('MALE' -> 'Male')",
        "Quarantined 1 row: label '>50K.' is not one of the classes <=50K, >50K",
        "Filled workclass with the most frequent category 'Private' (1 row)",
    ]
    again = check_and_repair(read_batch(out, PROFILE), PROFILE, require_target=True)
    assert again.fixes == ()
    pd.testing.assert_frame_equal(again.frame, result.frame)
    quarantine = pd.read_csv(tmp_path / "out.quarantine.csv")
    assert quarantine["income"].tolist() == [">50K."]


# --- the real Adult data -------------------------------------------------------------------------

ADULT = Path("/work/shared/data/adult/adult.data")
ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
ADULT_NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")


@pytest.fixture(scope="module")
def adult() -> tuple[pd.DataFrame, Schema]:
    """The real Adult training file and a schema of its columns; skipped where it is absent."""
    if not ADULT.is_file():
        pytest.skip(f"{ADULT} is not here")
    frame = pd.read_csv(ADULT, header=None, names=list(ADULT_COLUMNS), sep=", ", engine="python")
    columns = tuple(
        Column(name, "numeric")
        if name in ADULT_NUMERIC
        else Column(name, "categorical", categories=tuple(sorted(set(frame[name]) - {"?"})))
        for name in ADULT_COLUMNS[:-1]
    )
    schema = Schema(
        name="adult",
        task="binary",
        target="income",
        columns=columns,
        classes=("<=50K", ">50K"),
        metric="f1",
    )
    return frame, schema


def test_the_real_adult_data_passes_its_own_profile(adult: tuple[pd.DataFrame, Schema]) -> None:
    """Adult's own "?" cells are filled with each column's most frequent category, its 24
    repeated rows dropped, and nothing else is touched."""
    frame, schema = adult
    profile = QualityProfile.learn(frame, schema)
    result = check_and_repair(frame, profile, require_target=True)
    assert texts(result) == [
        "Dropped 24 exact duplicate rows; the first copy of each is kept",
        "Filled workclass with the most frequent category 'Private' (1,836 rows)",
        "Filled occupation with the most frequent category 'Prof-specialty' (1,843 rows)",
        "Filled native-country with the most frequent category 'United-States' (582 rows)",
    ]
    assert result.rows_kept == len(frame) - 24
    assert set(result.frame["income"]) == {"<=50K", ">50K"}
    assert (result.frame[list(ADULT_NUMERIC)].dtypes == "float64").all()


def test_a_dirty_adult_sample_is_repaired_as_said(adult: tuple[pd.DataFrame, Schema]) -> None:
    """The test-file label spelling ">50K." is quarantined; stray case and unseen countries are
    respelled or kept."""
    frame, schema = adult
    profile = QualityProfile.learn(frame, schema)
    sample = frame[~frame.isin(["?"]).any(axis=1)].head(200).reset_index(drop=True)
    sample.loc[0:2, "income"] = [">50K.", "<=50K.", " >50k"]
    sample.loc[3:5, "sex"] = ["male", " Female", "FEMALE"]
    sample.loc[6:8, "native-country"] = "Atlantis"
    result = check_and_repair(sample, profile, require_target=True)
    assert texts(result) == [
        "Normalised 3 values of sex to known categories"
        " ('male' -> 'Male', ' Female' -> 'Female', 'FEMALE' -> 'Female')",
        "Normalised 1 label of income to a known class (' >50k' -> '>50K')",
        "Quarantined 1 row: label '>50K.' is not one of the classes <=50K, >50K",
        "Quarantined 1 row: label '<=50K.' is not one of the classes <=50K, >50K",
        "Kept 3 rows of native-country with categories training never saw: 'Atlantis' (3)",
    ]


# --- the invariant and the names -----------------------------------------------------------------

_category_cell = st.one_of(
    st.sampled_from(["Private", " private", "PRIVATE", "Self-emp", "?", "", "NA", "Atlantis"]),
    st.sampled_from([42, 3.5, np.nan, None, True, "yes", "0", " no "]),
)


@st.composite
def dirty_mixed_frames(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(min_value=0, max_value=10))
    data = {
        name: draw(st.lists(_category_cell, min_size=n, max_size=n))
        for name in (*FEATURE_NAMES[1:], "income")
    }
    ages = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["?", "x"]))
    data["age"] = draw(st.lists(ages, min_size=n, max_size=n))
    labels = st.sampled_from(["<=50K", ">50K", " >50k", ">50K.", "?", None])
    data["income"] = draw(st.lists(labels, min_size=n, max_size=n))
    frame = pd.DataFrame(data, dtype=object)
    copies = draw(st.lists(st.integers(min_value=0, max_value=max(n - 1, 0)), max_size=3))
    if n and copies:
        frame = pd.concat([frame, frame.iloc[copies]], ignore_index=True)
    return frame


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=dirty_mixed_frames())
def test_no_mixed_row_is_ever_lost(frame: pd.DataFrame) -> None:
    """Every row is kept (numbers finite, categories known or counted as unseen, labels known
    classes) or quarantined with a reason."""
    result = check_and_repair(frame, PROFILE, require_target=True)
    assert result.rows_in == len(frame) == result.rows_kept + result.rows_quarantined
    assert all(isinstance(r, str) and r for r in result.quarantined["reason"])
    kept = result.frame
    assert np.isfinite(kept["age"].to_numpy(dtype="float64")).all()
    for name in PROFILE.text_columns:
        assert kept[name].dtype == np.dtype(object)
        assert kept[name].map(lambda v: isinstance(v, str)).all()
    assert set(kept["income"]) <= {"<=50K", ">50K"}
    assert set(kept["smoker"]) <= {"false", "true"}
    for name, counts in result.unseen.items():
        column = PROFILE.column(name)
        assert isinstance(column, CategoryProfile)
        unseen = kept[name][~kept[name].isin(column.categories)]
        assert unseen.value_counts().to_dict() == counts
    assert {f.kind for f in result.fixes} == result.detections


def test_the_quality_modules_name_no_california_column() -> None:
    """Sentences take their column names from the profile: no module names a bundled column."""
    root = Path(__file__).resolve().parents[3] / "selfheal_daemon" / "model"
    for module in ("quality.py", "quality_profile.py", "quality_io.py", "quality_categorical.py"):
        source = (root / module).read_text()
        assert "defaults import" not in source, module
        assert [name for name in (*FEATURES, TARGET) if name in source] == [], module
