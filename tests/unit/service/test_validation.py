"""Parsing of /predict and /feedback bodies against the served schema: the shapes accepted, every
kind of column, and every refusal with its status and loc."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfheal_daemon.defaults import FEATURES
from selfheal_daemon.model.schema import UNSEEN, Schema
from service import validation
from service.validation import InputError, RowParser, parse_feedback_body, parse_predict_body
from tests.unit.service.mixed import mixed_schema

CALIFORNIA = RowParser(Schema.california())

ROW: dict[str, float] = {
    "MedInc": 8.3252,
    "HouseAge": 41.0,
    "AveRooms": 6.98,
    "AveBedrms": 1.02,
    "Population": 322.0,
    "AveOccup": 2.55,
    "Latitude": 37.88,
    "Longitude": -122.23,
}
ROW_VALUES = [ROW[name] for name in FEATURES]


def row_text(**raw: str | None) -> str:
    """ROW as JSON text, with some values replaced by raw JSON fragments (e.g. ``NaN``, ``1e400``).

    A fragment of ``None`` (the Python value) removes the key.
    """
    parts = []
    for name in FEATURES:
        if name in raw:
            if raw[name] is not None:
                parts.append(f'"{name}": {raw[name]}')
        else:
            parts.append(f'"{name}": {json.dumps(ROW[name])}')
    parts.extend(f'"{key}": {value}' for key, value in raw.items() if key not in FEATURES)
    return "{" + ", ".join(parts) + "}"


def batch_text(*rows: str) -> str:
    return '{"instances": [' + ", ".join(rows) + "]}"


def test_single_object_parses_to_one_row_in_feature_order() -> None:
    """One object of features becomes a (1, 8) float64 matrix with columns in FEATURES order."""
    matrix = parse_predict_body(json.dumps(ROW).encode(), max_rows=10, parser=CALIFORNIA)
    assert matrix.dtype == np.float64
    assert matrix.tolist() == [ROW_VALUES]


def test_batch_parses_rows_in_order_whatever_the_key_order() -> None:
    """Each instance is one row, in request order, regardless of the key order inside it."""
    reversed_row = dict(reversed(list(ROW.items())))
    second = {**ROW, "MedInc": 1.5}
    body = json.dumps({"instances": [reversed_row, second]}).encode()
    assert parse_predict_body(body, max_rows=2, parser=CALIFORNIA).tolist() == [
        ROW_VALUES,
        [1.5, *ROW_VALUES[1:]],
    ]


def test_integers_are_accepted_as_numbers() -> None:
    """A JSON integer is a number like any other (HouseAge is usually sent as one)."""
    matrix = parse_predict_body(
        row_text(HouseAge="41", Population="-0").encode(), max_rows=1, parser=CALIFORNIA
    )
    assert matrix[0, FEATURES.index("HouseAge")] == 41.0
    assert matrix[0, FEATURES.index("Population")] == 0.0


def test_batch_at_the_row_limit_is_accepted() -> None:
    """Exactly ``max_rows`` rows is within the limit."""
    body = batch_text(*[row_text()] * 5).encode()
    assert parse_predict_body(body, max_rows=5, parser=CALIFORNIA).shape == (5, len(FEATURES))


DEEP = "[" * 100_000 + "]" * 100_000

BAD_BODIES: list[tuple[str, bytes, int, list[Any], str]] = [
    ("empty body", b"", 422, ["body", 0], "json_invalid"),
    ("not json", b"MedInc=3", 422, ["body", 0], "json_invalid"),
    (
        "truncated json",
        row_text().encode()[:-1],
        422,
        ["body", len(row_text()) - 1],
        "json_invalid",
    ),
    ("invalid utf-8", b'{"MedInc": "\xc3\x28"}', 422, ["body"], "json_invalid"),
    ("utf-16 bom then junk", b"\xff\xfe\xfa", 422, ["body"], "json_invalid"),
    ("deeply nested array", DEEP.encode(), 422, ["body"], "json_invalid"),
    ("deeply nested value", row_text(MedInc=DEEP).encode(), 422, ["body"], "json_invalid"),
    ("top-level array", b"[]", 422, ["body"], "dict_type"),
    ("top-level array of rows", f"[{row_text()}]".encode(), 422, ["body"], "dict_type"),
    ("top-level string", b'"x"', 422, ["body"], "dict_type"),
    ("top-level null", b"null", 422, ["body"], "dict_type"),
    ("top-level number", b"3.5", 422, ["body"], "dict_type"),
    ("empty object", b"{}", 422, ["body", "MedInc"], "missing"),
    ("missing feature", row_text(Latitude=None).encode(), 422, ["body", "Latitude"], "missing"),
    ("unknown key", row_text(color='"red"').encode(), 422, ["body", "color"], "extra_forbidden"),
    (
        "wrong-case key",
        row_text(MedInc=None, medinc="3").encode(),
        422,
        ["body", "MedInc"],
        "missing",
    ),
    ("string value", row_text(MedInc='"3.5"').encode(), 422, ["body", "MedInc"], "float_type"),
    ("boolean value", row_text(HouseAge="true").encode(), 422, ["body", "HouseAge"], "float_type"),
    ("null value", row_text(AveRooms="null").encode(), 422, ["body", "AveRooms"], "float_type"),
    ("list value", row_text(AveOccup="[1.0]").encode(), 422, ["body", "AveOccup"], "float_type"),
    ("object value", row_text(Longitude="{}").encode(), 422, ["body", "Longitude"], "float_type"),
    ("NaN", row_text(MedInc="NaN").encode(), 422, ["body", "MedInc"], "finite_number"),
    (
        "Infinity",
        row_text(Latitude="Infinity").encode(),
        422,
        ["body", "Latitude"],
        "finite_number",
    ),
    (
        "-Infinity",
        row_text(Longitude="-Infinity").encode(),
        422,
        ["body", "Longitude"],
        "finite_number",
    ),
    (
        "float overflow",
        row_text(Population="1e400").encode(),
        422,
        ["body", "Population"],
        "finite_number",
    ),
    (
        "negative overflow",
        row_text(AveRooms="-1e999").encode(),
        422,
        ["body", "AveRooms"],
        "finite_number",
    ),
    (
        "integer overflow",
        row_text(Population="1" + "0" * 400).encode(),
        422,
        ["body", "Population"],
        "finite_number",
    ),
    (
        "integer over the str-digits limit",
        row_text(Population="9" * 5000).encode(),
        422,
        ["body", "Population"],
        "finite_number",
    ),
    ("instances null", b'{"instances": null}', 422, ["body", "instances"], "list_type"),
    ("instances object", b'{"instances": {}}', 422, ["body", "instances"], "list_type"),
    ("instances string", b'{"instances": "abc"}', 422, ["body", "instances"], "list_type"),
    ("instances empty", b'{"instances": []}', 422, ["body", "instances"], "too_short"),
    (
        "instances beside a feature",
        f'{{"instances": [{row_text()}], "MedInc": 1}}'.encode(),
        422,
        ["body", "MedInc"],
        "extra_forbidden",
    ),
    (
        "instance not an object",
        batch_text(row_text(), "5").encode(),
        422,
        ["body", "instances", 1],
        "dict_type",
    ),
    ("instance null", batch_text("null").encode(), 422, ["body", "instances", 0], "dict_type"),
    (
        "instance missing a feature",
        batch_text(row_text(), row_text(), row_text(MedInc=None)).encode(),
        422,
        ["body", "instances", 2, "MedInc"],
        "missing",
    ),
    (
        "instance with unknown key",
        batch_text(row_text(), row_text(id="7")).encode(),
        422,
        ["body", "instances", 1, "id"],
        "extra_forbidden",
    ),
    (
        "instance with NaN",
        batch_text(*[row_text()] * 3, row_text(AveRooms="NaN")).encode(),
        422,
        ["body", "instances", 3, "AveRooms"],
        "finite_number",
    ),
    (
        "instance with bool",
        batch_text(row_text(), row_text(HouseAge="false")).encode(),
        422,
        ["body", "instances", 1, "HouseAge"],
        "float_type",
    ),
    (
        "too many rows",
        batch_text(*[row_text()] * 6).encode(),
        413,
        ["body", "instances"],
        "too_long",
    ),
    (
        "too many junk rows",
        b'{"instances": [' + b",".join([b"1"] * 6) + b"]}",
        413,
        ["body", "instances"],
        "too_long",
    ),
]


@pytest.mark.parametrize(
    ("body", "status", "loc", "kind"),
    [
        pytest.param(body, status, loc, kind, id=name)
        for name, body, status, loc, kind in BAD_BODIES
    ],
)
def test_bad_body_is_refused_with_status_and_location(
    body: bytes, status: int, loc: list[Any], kind: str
) -> None:
    """Every malformed body raises InputError with the expected status, loc and error type."""
    with pytest.raises(InputError) as caught:
        parse_predict_body(body, max_rows=5, parser=CALIFORNIA)
    assert (caught.value.status_code, caught.value.loc, caught.value.type) == (status, loc, kind)
    assert caught.value.as_detail() == {"loc": loc, "msg": caught.value.msg, "type": kind}


def test_non_finite_message_says_so() -> None:
    """A NaN or an infinity is reported as 'not a finite number'."""
    with pytest.raises(InputError, match="not a finite number"):
        parse_predict_body(row_text(MedInc="Infinity").encode(), max_rows=1, parser=CALIFORNIA)


def test_first_problem_is_reported_in_row_major_order() -> None:
    """Of several wrong values, the one in the earliest row (then earliest feature) is reported."""
    body = batch_text(row_text(), row_text(Longitude='"x"'), row_text(MedInc='"y"')).encode()
    with pytest.raises(InputError) as caught:
        parse_predict_body(body, max_rows=5, parser=CALIFORNIA)
    assert caught.value.loc == ["body", "instances", 1, "Longitude"]


def test_missing_key_outranks_a_bad_value_in_an_earlier_row() -> None:
    """Structural problems (keys) are reported before value problems."""
    body = batch_text(row_text(MedInc="NaN"), row_text(HouseAge=None)).encode()
    with pytest.raises(InputError) as caught:
        parse_predict_body(body, max_rows=5, parser=CALIFORNIA)
    assert caught.value.loc == ["body", "instances", 1, "HouseAge"]


finite_numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(10**30), max_value=10**30),
)


@settings(database=None, max_examples=200)
@given(
    values=st.fixed_dictionaries({name: finite_numbers for name in FEATURES}),
    order=st.permutations(FEATURES),
    batch=st.booleans(),
)
def test_any_finite_row_round_trips_in_feature_order(
    values: dict[str, float], order: list[str], batch: bool
) -> None:
    """Any object of 8 finite numbers, keys in any order, parses to exactly those values."""
    row = {name: values[name] for name in order}
    document: Any = {"instances": [row]} if batch else row
    matrix = parse_predict_body(json.dumps(document).encode(), max_rows=1, parser=CALIFORNIA)
    assert matrix.tolist() == [[float(values[name]) for name in FEATURES]]


non_finite_literals = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e309", "-1e400", "1" + "0" * 400, "-" + "9" * 5000]
)


@settings(database=None, max_examples=200)
@given(
    values=st.fixed_dictionaries(
        {name: st.floats(allow_nan=False, allow_infinity=False) for name in FEATURES}
    ),
    feature=st.sampled_from(FEATURES),
    literal=non_finite_literals,
    rows_before=st.integers(min_value=0, max_value=3),
)
def test_any_non_finite_value_is_refused_naming_it(
    values: dict[str, float], feature: str, literal: str, rows_before: int
) -> None:
    """A non-finite number in any feature of any row is a 422 at that row and feature."""
    good = json.dumps(values)
    bad = row_text(**{name: json.dumps(v) for name, v in values.items()} | {feature: literal})
    body = batch_text(*[good] * rows_before, bad).encode()
    with pytest.raises(InputError) as caught:
        parse_predict_body(body, max_rows=10, parser=CALIFORNIA)
    assert caught.value.status_code == 422
    assert caught.value.type == "finite_number"
    assert caught.value.loc == ["body", "instances", rows_before, feature]


# ----- a mixed schema: categorical, boolean, missing values -----------------------------------

SHOP = RowParser(mixed_schema("multiclass"))
SHOP_ROW: dict[str, Any] = {"color": "c3", "age": 40, "member": True, "size": "M", "visits": 2.5}


def shop(**changes: Any) -> bytes:
    """SHOP_ROW with some values changed (a value of ``...`` removes the key), as a body."""
    row = {k: v for k, v in {**SHOP_ROW, **changes}.items() if v is not ...}
    return json.dumps(row).encode()


def parse_shop(body: bytes) -> list[float]:
    matrix = parse_predict_body(body, max_rows=10, parser=SHOP)
    assert matrix.dtype == np.float64
    return [float(v) for v in matrix[0]]


def test_categories_parse_to_their_index_in_schema_order() -> None:
    """Category text becomes its index into the column's categories, a boolean 0 or 1, columns
    in schema order whatever the key order."""
    body = json.dumps(dict(reversed(list(SHOP_ROW.items())))).encode()
    assert parse_shop(body) == [3.0, 40.0, 1.0, 1.0, 2.5]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        pytest.param(3, 3.0, id="integer"),
        pytest.param(3.0, 3.0, id="float"),
        pytest.param("3", 3.0, id="text"),
        pytest.param(" L ", 2.0, id="stray-whitespace"),
        pytest.param("XL", UNSEEN, id="unseen"),
        pytest.param(4, UNSEEN, id="unseen-number"),
        pytest.param("m", UNSEEN, id="case-is-a-different-category"),
    ],
)
def test_a_categorical_value_is_read_as_its_text(value: Any, code: float) -> None:
    """Numbers are read as their text (3 and 3.0 are the category "3"), text is stripped, and a
    category training never saw is encoded UNSEEN rather than refused."""
    assert parse_shop(shop(size=value))[3] == code


@pytest.mark.parametrize(
    ("value", "code"),
    [
        pytest.param(True, 1.0, id="true"),
        pytest.param(False, 0.0, id="false"),
        pytest.param("true", 1.0, id="text-true"),
        pytest.param("False", 0.0, id="text-false"),
        pytest.param(" yes ", 1.0, id="yes"),
        pytest.param(0, 0.0, id="zero"),
        pytest.param(1, 1.0, id="one"),
    ],
)
def test_a_boolean_takes_true_false_and_their_spellings(value: Any, code: float) -> None:
    """JSON true/false, the strings "true"/"false" (and yes/no, 1/0) are a boolean's values."""
    assert parse_shop(shop(member=value))[2] == code


def test_null_is_a_missing_value_where_the_column_allows_one() -> None:
    """A null numeric or categorical cell of a column that had missing values in training is NaN;
    so is a missing-value token ("?") in such a categorical column."""
    assert np.isnan(parse_shop(shop(age=None))[1])
    assert np.isnan(parse_shop(shop(color=None))[0])
    assert np.isnan(parse_shop(shop(color="?"))[0])
    assert np.isnan(parse_shop(shop(color=" "))[0])


SHOP_REFUSALS: list[tuple[str, bytes, list[Any], str]] = [
    ("null numeric, not allowed", shop(visits=None), ["body", "visits"], "float_type"),
    ("null category, not allowed", shop(size=None), ["body", "size"], "missing_not_allowed"),
    ("token category, not allowed", shop(size="?"), ["body", "size"], "missing_not_allowed"),
    ("null boolean, not allowed", shop(member=None), ["body", "member"], "missing_not_allowed"),
    ("NaN where null is allowed", shop(age=float("nan")), ["body", "age"], "finite_number"),
    ("infinite category", shop(color=float("inf")), ["body", "color"], "finite_number"),
    ("boolean as a category", shop(size=True), ["body", "size"], "string_type"),
    ("list as a category", shop(color=["c1"]), ["body", "color"], "string_type"),
    ("unreadable boolean", shop(member="maybe"), ["body", "member"], "bool_parsing"),
    ("number as a boolean", shop(member=2), ["body", "member"], "bool_parsing"),
    ("object as a boolean", shop(member={}), ["body", "member"], "bool_type"),
    ("string as a number", shop(age="40"), ["body", "age"], "float_type"),
    ("boolean as a number", shop(visits=False), ["body", "visits"], "float_type"),
    ("missing feature", shop(color=...), ["body", "color"], "missing"),
    ("unknown feature", shop(zip="94110"), ["body", "zip"], "extra_forbidden"),
]


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [pytest.param(body, loc, kind, id=name) for name, body, loc, kind in SHOP_REFUSALS],
)
def test_a_bad_value_of_any_kind_is_a_422_naming_the_field(
    body: bytes, loc: list[Any], kind: str
) -> None:
    """Wrong types, refused missing values, unreadable booleans and non-finite numbers are each a
    422 at the feature, with the error's type."""
    with pytest.raises(InputError) as caught:
        parse_predict_body(body, max_rows=10, parser=SHOP)
    assert (caught.value.status_code, caught.value.loc, caught.value.type) == (422, loc, kind)


def test_a_refused_missing_value_says_the_column_takes_none() -> None:
    """The message for a null where the column never had missing values names the column."""
    with pytest.raises(InputError, match="'size' takes no missing value"):
        parse_predict_body(shop(size=None), max_rows=10, parser=SHOP)


def test_a_wrong_kind_outranks_a_non_finite_value_in_an_earlier_row() -> None:
    """Across rows and kinds of column, a value of the wrong kind is reported before a NaN."""
    rows = [{**SHOP_ROW, "age": float("nan")}, {**SHOP_ROW, "member": "perhaps"}]
    with pytest.raises(InputError) as caught:
        parse_predict_body(json.dumps({"instances": rows}).encode(), max_rows=10, parser=SHOP)
    assert caught.value.loc == ["body", "instances", 1, "member"]


def test_unseen_categories_are_counted_per_feature() -> None:
    """``unseen_counts`` gives each categorical feature's unseen cells in a parsed matrix."""
    rows = [SHOP_ROW, {**SHOP_ROW, "color": "teal", "size": "XL"}, {**SHOP_ROW, "color": "navy"}]
    matrix = parse_predict_body(json.dumps({"instances": rows}).encode(), 10, SHOP)
    assert SHOP.unseen_counts(matrix) == [("color", 2), ("size", 1)]
    assert CALIFORNIA.unseen_counts(np.zeros((3, 8))) == []


@settings(database=None, max_examples=100)
@given(
    colors=st.lists(
        st.one_of(st.sampled_from(["c0", "c9", " c4", "teal", "?", ""]), st.none()),
        min_size=1,
        max_size=6,
    ),
    sizes=st.lists(st.sampled_from(["S", "M", "L", "3", 3, 3.0, "XL", 7]), min_size=6, max_size=6),
)
def test_rows_encode_as_the_schema_encodes_a_frame(colors: list[Any], sizes: list[Any]) -> None:
    """A parsed body is the matrix ``Schema.encode`` makes of the same cells (the codes the
    drift monitor and the trainer use)."""
    rows = [{**SHOP_ROW, "color": c, "size": sizes[i]} for i, c in enumerate(colors)]
    matrix = parse_predict_body(json.dumps({"instances": rows}).encode(), 10, SHOP)
    expected = SHOP.schema.encode(pd.DataFrame(rows))
    np.testing.assert_array_equal(matrix, expected)


# ----- feedback labels ----------------------------------------------------------------------


def test_classifier_labels_are_kept_as_class_indices() -> None:
    """A classifier's labels are its class labels as text (numbers read as text), stored as
    the class's index into the schema's classes."""
    body = {"instances": [SHOP_ROW, SHOP_ROW], "labels": ["low", " mid"]}
    (item,) = parse_feedback_body(json.dumps(body).encode(), 10, SHOP)
    assert item.labels.tolist() == [0.0, 1.0]
    assert item.features is not None
    assert item.features.shape == (2, 5)


@pytest.mark.parametrize(
    ("label", "kind"),
    [
        pytest.param("medium", "enum", id="unknown-class"),
        pytest.param(2.0, "enum", id="a-number-that-is-no-class"),
        pytest.param(None, "string_type", id="null"),
        pytest.param(["low"], "string_type", id="list"),
    ],
)
def test_a_label_that_is_not_a_class_is_a_422_naming_it(label: Any, kind: str) -> None:
    """A classifier's label outside its classes is refused at the label, naming it and the
    classes."""
    body = {"request_id": "r", "labels": ["low", label]}
    with pytest.raises(InputError) as caught:
        parse_feedback_body(json.dumps(body).encode(), 10, SHOP)
    assert (caught.value.loc, caught.value.type) == (["body", "labels", 1], kind)
    if kind == "enum":
        assert "'low', 'mid', 'high'" in caught.value.msg


def test_regression_labels_stay_numbers() -> None:
    """For a regression a label is a finite number, and a class-like string is refused."""
    (item,) = parse_feedback_body(b'{"request_id": "r", "labels": [1, 2.5]}', 10, CALIFORNIA)
    assert item.labels.tolist() == [1.0, 2.5]
    with pytest.raises(InputError) as caught:
        parse_feedback_body(b'{"request_id": "r", "label": "low"}', 10, CALIFORNIA)
    assert (caught.value.loc, caught.value.type) == (["body", "label"], "float_type")


# ----- orjson decodes /predict bodies: the same answers and errors as json.loads --------------


def parsed_or_refused(body: bytes, parser: RowParser) -> Any:
    """The matrix as a list (NaN as None), or the refusal's (status, loc, msg, type)."""
    try:
        matrix = parse_predict_body(body, max_rows=5, parser=parser)
    except InputError as exc:
        return (exc.status_code, exc.loc, exc.msg, exc.type)
    return [[None if np.isnan(v) else v for v in row] for row in matrix.tolist()]


def with_json_only(body: bytes, parser: RowParser, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What the body gives when every body goes to ``json.loads`` (orjson refusing them all)."""

    def refuse(_body: bytes) -> Any:
        raise orjson.JSONDecodeError("refused for the test", "", 0)

    with monkeypatch.context() as patched:
        patched.setattr(validation.orjson, "loads", refuse)
        return parsed_or_refused(body, parser)


ODD_BODIES = [
    b'{"instances": [' + row_text(HouseAge="41").encode() + b"]}",  # an integer
    row_text(Population="18446744073709551615").encode(),  # the largest 64-bit integer
    row_text(Population="123456789012345678901234567890").encode(),  # past it: a float
    row_text(Population="1" + "0" * 400).encode(),  # an integer json reads as inf
    row_text(AveRooms="Infinity").encode(),  # orjson refuses, json reads inf: 422 finite
    row_text(AveRooms="-Infinity").encode(),
    row_text(AveRooms="1e400").encode(),
    row_text(HouseAge="true").encode(),
    b"\xef\xbb\xbf" + json.dumps(ROW).encode(),  # a UTF-8 byte order mark
    json.dumps(ROW).encode("utf-16"),  # json.loads reads UTF-16; orjson does not
    b'{"MedInc": "\\ud800"}',  # a lone surrogate
    b"[" * 5000 + b"]" * 5000,  # nested past both decoders' depth
    b'{"instances": [1, 2]}',
    b'{"a": 1,}',
    b"",
]


@pytest.mark.parametrize(
    "body",
    ODD_BODIES + [body for _name, body, *_rest in BAD_BODIES],
    ids=[f"odd-{i}" for i in range(len(ODD_BODIES))] + [name for name, *_ in BAD_BODIES],
)
def test_orjson_answers_every_body_as_json_loads_does(
    body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parsed_or_refused(body, CALIFORNIA) == with_json_only(body, CALIFORNIA, monkeypatch)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "color": st.one_of(
                    st.sampled_from(["c1", "c3", "?", ""]), st.none(), st.integers(-3, 12)
                ),
                "age": st.one_of(
                    st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.none()
                ),
                "member": st.one_of(
                    st.booleans(), st.integers(-1, 2), st.sampled_from(["yes", "no"])
                ),
                "size": st.one_of(
                    st.sampled_from(["S", "M", "3"]), st.integers(2, 4), st.floats(2, 4)
                ),
                "visits": st.one_of(st.integers(0, 10), st.floats(0, 10)),
            }
        ),
        min_size=1,
        max_size=4,
    )
)
@settings(max_examples=200, deadline=None)
def test_orjson_reads_any_mixed_rows_as_json_loads_does(rows: list[dict[str, Any]]) -> None:
    body = json.dumps({"instances": rows}).encode()
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert parsed_or_refused(body, SHOP) == with_json_only(body, SHOP, monkeypatch)
