"""The schema: encoding rows and targets, decoding them for the model, storing it, comparing two."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.errors import DataError
from selfheal_daemon.model.schema import UNSEEN, Column, Schema, category_text


def adult_like() -> Schema:
    return Schema(
        name="income",
        task="binary",
        target="income",
        columns=(
            Column("age", "numeric", low=17, high=90),
            Column("sex", "categorical", categories=("Female", "Male")),
            Column("union", "boolean", missing=True),
        ),
        classes=("<=50K", ">50K"),
        metric="roc_auc",
    )


def test_encode_gives_values_category_indices_unseen_and_missing() -> None:
    """Numbers stay numbers; categories become their index, an unknown one UNSEEN, a gap NaN."""
    schema = adult_like()
    frame = pd.DataFrame(
        {
            "age": [39, "?", 50.5],
            "sex": ["Male", "Atlantis", "?"],
            "union": [True, "no", None],
        }
    )
    x = schema.encode(frame)
    assert x[0].tolist() == [39.0, 1.0, 1.0]
    assert math.isnan(x[1, 0])
    assert x[1, 1:].tolist() == [UNSEEN, 0.0]
    assert x[2, 0] == 50.5
    assert np.isnan(x[2, 1:]).all()


def test_decode_is_the_frame_the_model_was_trained_on() -> None:
    """Decoding gives text categories and NaN for unseen and missing cells, in feature order."""
    schema = adult_like()
    frame = schema.decode(np.array([[39.0, 1.0, 0.0], [20.0, UNSEEN, np.nan]]))
    assert list(frame.columns) == ["age", "sex", "union"]
    assert frame["sex"].iloc[0] == "Male"
    assert pd.isna(frame["sex"].iloc[1])
    assert frame["union"].iloc[0] == "false"
    assert pd.isna(frame["union"].iloc[1])
    assert frame["sex"].dtype == object


def test_targets_encode_to_class_indices_and_back() -> None:
    """A classifier's labels become indices into classes (NaN for unknown) and decode back."""
    schema = adult_like()
    codes = schema.encode_target([">50K", " <=50K", "maybe", None])
    assert codes[:2].tolist() == [1.0, 0.0]
    assert np.isnan(codes[2:]).all()
    assert schema.decode_target(np.array([1.0, 0.0])) == [">50K", "<=50K"]


def test_numbers_read_as_category_text_the_same_whatever_wrote_them() -> None:
    """3, 3.0 and "3 " are the same category; 2.5 keeps its decimals; NaN is missing."""
    assert category_text(3) == category_text(3.0) == category_text(" 3 ") == "3"
    assert category_text(2.5) == "2.5"
    assert category_text(float("nan")) is None


def test_a_stored_schema_round_trips_and_old_meta_is_california() -> None:
    """to_dict/from_dict give the same schema; a meta.json without a schema is the bundled one."""
    schema = adult_like()
    assert Schema.from_dict(schema.to_dict()) == schema
    old = Schema.from_meta({"metrics": {"r2": 0.8}})
    assert old.target == "MedHouseVal"
    assert old.task == "regression"
    assert old.all_numeric


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "binary", "classes": ("a",)}, "2 classes"),
        ({"task": "multiclass", "classes": ("a", "b")}, "at least 3"),
        ({"task": "regression", "classes": ("a", "b")}, "no classes"),
        ({"task": "guess"}, "task must be"),
    ],
)
def test_an_inconsistent_schema_is_refused(kwargs: dict[str, object], message: str) -> None:
    """A task whose classes do not fit it, or an unknown task, is a DataError saying which."""
    with pytest.raises(DataError, match=message):
        Schema(name="m", target="y", columns=(Column("a", "numeric"),), **kwargs)  # type: ignore[arg-type]


def test_breaks_names_what_old_clients_would_trip_on() -> None:
    """Lost or new features, a kind change, a lost class break clients; new categories don't."""
    old = adult_like()
    grown = Schema(
        name="income",
        task="binary",
        target="income",
        columns=(
            Column("age", "numeric"),
            Column("sex", "categorical", categories=("Female", "Male", "Other")),
            Column("union", "boolean"),
        ),
        classes=("<=50K", ">50K"),
    )
    assert old.breaks(grown) == []
    changed = Schema(
        name="income",
        task="multiclass",
        target="income",
        columns=(Column("age", "categorical", categories=("young",)), Column("hours", "numeric")),
        classes=("a", "b", "c"),
    )
    problems = old.breaks(changed)
    assert any("task changes" in p for p in problems)
    assert any("'sex' is no longer taken" in p for p in problems)
    assert any("'hours' is new" in p for p in problems)
    assert any("'age' changes from numeric to categorical" in p for p in problems)
    assert any("no longer answered" in p for p in problems)


def test_probabilities_are_put_in_the_schema_class_order() -> None:
    """A model whose classes_ are in another order has its probability columns reordered."""

    class Reversed:
        classes_ = np.array([">50K", "<=50K"], dtype=object)

    schema = adult_like()
    aligned = schema.align_proba(Reversed(), np.array([[0.9, 0.1]]))
    assert aligned.tolist() == [[0.1, 0.9]]
