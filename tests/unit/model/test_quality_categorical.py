"""Data quality on categorical, boolean and class-label columns: every fix in words, no row lost."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.errors import DataError
from selfheal_daemon.model.quality import QualityResult, check_and_repair, describe
from selfheal_daemon.model.quality_profile import CategoryProfile, ColumnProfile, QualityProfile
from selfheal_daemon.model.schema import Column, Schema

SCHEMA = Schema(
    name="people",
    task="binary",
    target="income",
    columns=(
        Column("age", "numeric", low=20.0, high=59.0),
        Column("workclass", "categorical", categories=("Private", "Self-emp", "State-gov")),
        Column("sex", "categorical", categories=("Female", "Male")),
        Column("native-country", "categorical", categories=("Mexico", "United-States")),
        Column("smoker", "boolean"),
    ),
    classes=("<=50K", ">50K"),
    metric="f1",
)
FEATURE_NAMES = SCHEMA.features

# 40 reference rows; the counts make every most frequent category obvious.
REFERENCE = pd.DataFrame(
    {
        "age": np.arange(20, 60, dtype="float64"),
        "workclass": ["Private"] * 20 + ["Self-emp"] * 12 + ["State-gov"] * 8,
        "sex": ["Male", "Female"] * 16 + ["Male"] * 8,
        "native-country": ["United-States"] * 35 + ["Mexico"] * 4 + ["?"],
        "smoker": ["false"] * 25 + ["true"] * 15,
        "income": ["<=50K"] * 30 + [">50K"] * 10,
    }
)
PROFILE = QualityProfile.learn(REFERENCE, SCHEMA)


def batch(n: int = 6) -> pd.DataFrame:
    """``n`` distinct clean rows in the known spellings."""
    return pd.DataFrame(
        {
            "age": 30.0 + np.arange(n),
            "workclass": [("Private", "Self-emp", "State-gov")[i % 3] for i in range(n)],
            "sex": [("Female", "Male")[i % 2] for i in range(n)],
            "native-country": ["United-States"] * n,
            "smoker": [("false", "true")[i % 2] for i in range(n)],
            "income": [("<=50K", ">50K")[i % 2] for i in range(n)],
        },
        dtype=object,
    ).astype({"age": "float64"})


def texts(result: QualityResult) -> list[str]:
    return [f.text for f in result.fixes]


def check(frame: pd.DataFrame, profile: QualityProfile = PROFILE) -> QualityResult:
    result = check_and_repair(frame, profile, require_target=True)
    assert result.rows_in == result.rows_kept + result.rows_quarantined
    return result


# --- the profile ---------------------------------------------------------------------------------


def test_profile_learns_categories_counts_and_the_most_frequent() -> None:
    """Each categorical column keeps the schema's categories, their counts and its mode."""
    workclass = PROFILE.column("workclass")
    assert workclass == CategoryProfile(
        "workclass", "categorical", ("Private", "Self-emp", "State-gov"), (20, 12, 8), "Private"
    )
    assert workclass.frequencies == {"Private": 0.5, "Self-emp": 0.3, "State-gov": 0.2}
    country = PROFILE.column("native-country")
    assert isinstance(country, CategoryProfile)
    assert (country.counts, country.mode, country.missing_allowed) == (
        (4, 35),
        "United-States",
        True,
    )
    smoker = PROFILE.column("smoker")
    assert isinstance(smoker, CategoryProfile)
    assert (smoker.kind, smoker.categories, smoker.mode) == ("boolean", ("false", "true"), "false")
    assert isinstance(PROFILE.column("age"), ColumnProfile)
    assert PROFILE.target == CategoryProfile(
        "income", "categorical", ("<=50K", ">50K"), (30, 10), "<=50K"
    )
    assert PROFILE.is_classifier
    assert PROFILE.text_columns == ("workclass", "sex", "native-country", "smoker", "income")


def test_a_tie_for_the_most_frequent_goes_to_the_schema_order() -> None:
    """With equal counts the category listed first in the schema is the one imputed."""
    frame = REFERENCE.assign(sex=["Male", "Female"] * 20)
    assert QualityProfile.learn(frame, SCHEMA).column("sex") == CategoryProfile(
        "sex", "categorical", ("Female", "Male"), (20, 20), "Female"
    )


def test_categories_come_from_the_reference_when_the_schema_lists_none() -> None:
    """A categorical column without categories in its schema learns the reference's, sorted."""
    schema = Schema(
        name="s",
        task="regression",
        target="y",
        columns=(Column("colour", "categorical"),),
    )
    frame = pd.DataFrame({"colour": ["red", " blue", "red", "?", None], "y": [1.0] * 5})
    profile = QualityProfile.learn(frame, schema)
    assert profile.column("colour") == CategoryProfile(
        "colour", "categorical", ("blue", "red"), (1, 2), "red", missing_allowed=True
    )
    with pytest.raises(DataError, match="no categories in column colour"):
        QualityProfile.learn(frame.assign(colour=["?"] * 5), schema)


def test_a_classifier_profile_without_labels_still_knows_its_classes() -> None:
    """Learned from features only, a classifier's profile has its classes with zero counts."""
    profile = QualityProfile.learn(REFERENCE.drop(columns=["income"]), SCHEMA)
    assert profile.target == CategoryProfile(
        "income", "categorical", ("<=50K", ">50K"), (0, 0), "<=50K"
    )


def test_mixed_profile_survives_json() -> None:
    """``to_dict`` through JSON and back gives an equal profile, kinds and tokens included."""
    data = json.loads(json.dumps(PROFILE.to_dict()))
    assert [c["kind"] for c in data["features"]] == [
        "numeric",
        "categorical",
        "categorical",
        "categorical",
        "boolean",
    ]
    assert QualityProfile.from_dict(data) == PROFILE


def test_a_version_1_profile_reads_as_all_numeric() -> None:
    """A dict written before categorical columns existed (no kinds, no tokens) still reads."""
    numeric = {
        "name": "a",
        "median": 1.0,
        "minimum": 0.0,
        "maximum": 2.0,
        "cap_low": 0.0,
        "cap_high": 2.0,
        "valid_low": 0.0,
        "valid_high": 8.0,
    }
    old = {
        "version": 1,
        "reference_rows": 3,
        "features": [numeric],
        "target_name": "y",
        "target": {**numeric, "name": "y"},
    }
    profile = QualityProfile.from_dict(old)
    assert profile.column("a") == ColumnProfile("a", 1.0, 0.0, 2.0, 0.0, 2.0, 0.0, 8.0)
    assert not profile.is_classifier
    assert profile.missing_values == SCHEMA.missing_values


def test_a_malformed_categorical_profile_is_a_data_error() -> None:
    """Counts that do not match the categories, or a mode that is no category, are refused."""
    data = PROFILE.to_dict()
    data["features"][1]["counts"] = [1]
    with pytest.raises(DataError, match="categories and counts"):
        QualityProfile.from_dict(data)
    data = PROFILE.to_dict()
    data["features"][1]["mode"] = "Nobody"
    with pytest.raises(DataError, match="not a category"):
        QualityProfile.from_dict(data)
    data = PROFILE.to_dict()
    data["features"][1]["kind"] = "colour"
    with pytest.raises(DataError, match="unknown kind"):
        QualityProfile.from_dict(data)


# --- categorical fixes ---------------------------------------------------------------------------


def test_a_clean_mixed_batch_passes_untouched() -> None:
    """Known spellings pass with no fix; numbers stay float64, categories and labels text."""
    frame = batch()
    result = check(frame)
    assert result.fixes == ()
    pd.testing.assert_frame_equal(result.frame, frame)
    assert result.frame.dtypes.to_dict() == {
        "age": np.dtype("float64"),
        **{name: np.dtype(object) for name in PROFILE.text_columns},
    }


def test_missing_value_tokens_are_filled_with_the_most_frequent_category() -> None:
    """A "?", blanks, "NA" in any case, None and NaN are missing and filled with the mode."""
    frame = batch(8)
    frame["workclass"] = ["?", "", " na ", None, np.nan, "Self-emp", "N/A", "null"]
    result = check(frame)
    assert texts(result) == ["Filled workclass with the most frequent category 'Private' (7 rows)"]
    assert result.frame["workclass"].tolist() == ["Private"] * 5 + ["Self-emp"] + ["Private"] * 2
    assert result.detections == {"missing_values"}
    assert (result.fixes[0].column, result.fixes[0].rows) == ("workclass", 7)


def test_case_and_whitespace_variants_take_the_known_spelling() -> None:
    """Stray spaces and other case become the known category, with examples of each respelling."""
    frame = batch()
    frame["sex"] = [" male", "FEMALE", "Male ", "fe male", " Female", "Male"]
    result = check(frame)
    assert texts(result) == [
        "Normalised 4 values of sex to known categories"
        " (' male' -> 'Male', 'FEMALE' -> 'Female', 'Male ' -> 'Male')",
        "Kept 1 row of sex with a category training never saw: 'fe male' (1)",
    ]
    assert result.frame["sex"].tolist() == ["Male", "Female", "Male", "fe male", "Female", "Male"]
    assert result.detections == {"spelling", "unseen_categories"}


def test_runs_of_inner_whitespace_count_as_stray() -> None:
    """A category with doubled inner spaces is the category; one respelling reads singular."""
    schema = Schema(
        name="s",
        task="regression",
        target="y",
        columns=(Column("place", "categorical", categories=("New York", "Boston")),),
    )
    profile = QualityProfile.learn(pd.DataFrame({"place": ["Boston"], "y": [1.0]}), schema)
    frame = pd.DataFrame({"place": ["new  york", "Boston"], "y": [1.0, 2.0]})
    result = check(frame, profile)
    assert texts(result) == [
        "Normalised 1 value of place to a known category ('new  york' -> 'New York')"
    ]
    assert result.frame["place"].tolist() == ["New York", "Boston"]


def test_unseen_categories_are_kept_counted_and_reported() -> None:
    """A category training never saw is neither imputed nor dropped: kept, counted, reported."""
    frame = batch(6)
    frame["native-country"] = ["Atlantis", "Narnia", " Atlantis", "United-States", "Atlantis", "?"]
    result = check(frame)
    assert texts(result) == [
        "Filled native-country with the most frequent category 'United-States' (1 row)",
        "Kept 4 rows of native-country with categories training never saw:"
        " 'Atlantis' (3), 'Narnia' (1)",
    ]
    assert result.frame["native-country"].tolist() == [
        "Atlantis",
        "Narnia",
        "Atlantis",
        "United-States",
        "Atlantis",
        "United-States",
    ]
    assert result.unseen == {"native-country": {"Atlantis": 3, "Narnia": 1}}
    assert result.fixes[-1].action == "kept"
    assert result.fixes[-1].kind == "unseen_categories"
    assert describe(result)["unseen"] == {"native-country": {"Atlantis": 3, "Narnia": 1}}
    assert "unseen" not in describe(check(batch()))


def test_many_unseen_categories_are_summarised() -> None:
    """Beyond five unseen categories the sentence names the five most frequent, counts the rest."""
    frame = batch(8)
    frame["native-country"] = ["A", "A", "B", "C", "D", "E", "F", "G"]
    assert texts(check(frame)) == [
        "Kept 8 rows of native-country with categories training never saw:"
        " 'A' (2), 'B' (1), 'C' (1), 'D' (1), 'E' (1) and 2 more"
    ]


def test_unseen_categories_in_quarantined_rows_are_not_counted_as_kept() -> None:
    """Only kept rows count as kept: an unseen category on a quarantined row is not in the count."""
    frame = batch(3)
    frame["native-country"] = ["Atlantis", "Atlantis", "United-States"]
    frame.loc[1, "income"] = None
    result = check(frame)
    assert texts(result) == [
        "Quarantined 1 row: label income is missing",
        "Kept 1 row of native-country with a category training never saw: 'Atlantis' (1)",
    ]
    assert result.unseen == {"native-country": {"Atlantis": 1}}


def test_numbers_in_a_text_column_are_missing_and_filled() -> None:
    """Numbers where every known category is text are unreadable, reported, and imputed."""
    frame = batch()
    frame["workclass"] = [42, "7", "Private", 3.5, "Self-emp", "State-gov"]
    result = check(frame)
    assert texts(result) == [
        "Could not read 3 values in workclass as categories: numbers in a column of text"
        " categories ('42', '7', '3.5'); treated as missing",
        "Filled workclass with the most frequent category 'Private' (3 rows)",
    ]
    assert result.frame["workclass"].tolist() == ["Private"] * 4 + ["Self-emp", "State-gov"]
    assert result.detections == {"dtype", "missing_values"}


def test_numbers_are_categories_where_the_categories_are_numbers() -> None:
    """Among coded categories ``2``, ``3.0`` and ``" 1"`` are categories; ``5`` is unseen."""
    schema = Schema(
        name="s",
        task="regression",
        target="y",
        columns=(Column("grade", "categorical", categories=("1", "2", "3")),),
    )
    reference = pd.DataFrame({"grade": [1, 2, 2, 3], "y": [1.0, 2.0, 3.0, 4.0]})
    profile = QualityProfile.learn(reference, schema)
    assert profile.column("grade") == CategoryProfile(
        "grade", "categorical", ("1", "2", "3"), (1, 2, 1), "2"
    )
    frame = pd.DataFrame({"grade": [2, 3.0, " 1", 5], "y": [1.0, 2.0, 3.0, 4.0]})
    result = check(frame, profile)
    assert texts(result) == [
        "Normalised 1 value of grade to a known category (' 1' -> '1')",
        "Kept 1 row of grade with a category training never saw: '5' (1)",
    ]
    assert result.frame["grade"].tolist() == ["2", "3", "1", "5"]


def test_text_in_a_number_column_is_missing_and_tokens_are_not_unreadable() -> None:
    """Unreadable text in a numeric column is reported and filled; a "?" there is just missing."""
    frame = batch().astype({"age": object})
    frame["age"] = ["old", "?", " NA", "41", 42.0, 43.0]
    result = check(frame)
    assert texts(result) == [
        "Coerced 1 value in age from text to a number",
        "Could not read 1 value in age as a number ('old'); treated as missing",
        "Filled age with median 39.5 in 3 rows",
    ]
    assert result.frame["age"].tolist() == [39.5, 39.5, 39.5, 41.0, 42.0, 43.0]


def test_booleans_in_any_spelling_become_true_or_false() -> None:
    """true/false/yes/no/y/n/1/0 in any case read as the two values; only text variants are
    reported, anything else is unreadable and filled with the most frequent value."""
    frame = batch(11)
    frame["smoker"] = [True, False, "TRUE", "yes", "NO", " true", 1, "0", "Y", "maybe", "?"]
    result = check(frame)
    assert texts(result) == [
        "Normalised 4 values of smoker to true/false ('yes' -> 'true', 'NO' -> 'false',"
        " ' true' -> 'true')",
        "Could not read 1 value in smoker as true or false ('maybe'); treated as missing",
        "Filled smoker with the most frequent value 'false' (2 rows)",
    ]
    assert result.frame["smoker"].tolist() == [
        "true",
        "false",
        "true",
        "true",
        "false",
        "true",
        "true",
        "false",
        "true",
        "false",
        "false",
    ]


# --- class labels --------------------------------------------------------------------------------


def test_class_labels_are_respelled_then_unknown_ones_quarantined() -> None:
    """Variants of a class take its spelling; a label that is no class, or none, is quarantined."""
    frame = batch(7)
    frame["income"] = [" >50k", "<=50K ", ">50K.", "?", None, "<=50K", "maybe"]
    result = check(frame)
    assert texts(result) == [
        "Normalised 2 labels of income to known classes (' >50k' -> '>50K', '<=50K ' -> '<=50K')",
        "Quarantined 2 rows: label income is missing",
        "Quarantined 1 row: label '>50K.' is not one of the classes <=50K, >50K",
        "Quarantined 1 row: label 'maybe' is not one of the classes <=50K, >50K",
    ]
    assert result.frame["income"].tolist() == [">50K", "<=50K", "<=50K"]
    assert result.quarantined[["row", "reason"]].to_dict("records") == [
        {"row": 2, "reason": "label '>50K.' is not one of the classes <=50K, >50K"},
        {"row": 3, "reason": "label income is missing"},
        {"row": 4, "reason": "label income is missing"},
        {"row": 6, "reason": "label 'maybe' is not one of the classes <=50K, >50K"},
    ]
    assert result.quarantined["income"].tolist()[0] == ">50K."
    assert result.detections == {"spelling", "missing_values", "unknown_class"}


def test_many_unknown_labels_share_one_sentence_after_the_fifth() -> None:
    """Five unknown labels get a sentence each; the rest are counted under one."""
    frame = batch(8)
    frame["income"] = ["a", "b", "c", "d", "e", "f", "g", "<=50K"]
    result = check(frame)
    assert texts(result)[-1] == (
        "Quarantined 2 rows: label income is not one of the classes <=50K, >50K"
    )
    assert result.rows_kept == 1


def test_numeric_class_labels_match_their_text() -> None:
    """Classes ``0``/``1`` accept labels written as 1, 0.0 or " 1"; 2 is no class."""
    schema = Schema(
        name="s", task="binary", target="y", columns=(Column("x", "numeric"),), classes=("0", "1")
    )
    profile = QualityProfile.learn(pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]}), schema)
    frame = pd.DataFrame({"x": [1.0, 1.5, 2.0, 1.2], "y": [1, 0.0, " 1", 2]})
    result = check(frame, profile)
    assert texts(result) == [
        "Normalised 1 label of y to a known class (' 1' -> '1')",
        "Quarantined 1 row: label '2' is not one of the classes 0, 1",
    ]
    assert result.frame["y"].tolist() == ["1", "0", "1"]


def test_a_token_in_its_own_spelling_is_missing_even_beside_a_like_category() -> None:
    """With a category "Na" and the token "NA", "NA" is missing while "na" and " Na" are "Na"."""
    schema = Schema(
        name="s",
        task="regression",
        target="y",
        columns=(
            Column("element", "categorical", categories=("K", "Na")),
            Column("grams", "numeric"),
        ),
    )
    reference = pd.DataFrame({"element": ["Na", "K", "Na"], "grams": 1.0, "y": [1.0, 2.0, 3.0]})
    profile = QualityProfile.learn(reference, schema)
    frame = pd.DataFrame(
        {"element": ["NA", "na", " Na", "K"], "grams": 1.0, "y": [1.0, 2.0, 3.0, 2.5]}
    )
    result = check(frame, profile)
    assert texts(result) == [
        "Normalised 2 values of element to known categories ('na' -> 'Na', ' Na' -> 'Na')",
        "Filled element with the most frequent category 'Na' (1 row)",
    ]
    assert result.frame["element"].tolist() == ["Na", "Na", "Na", "K"]
