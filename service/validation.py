"""Turn a ``POST /predict`` body into the model's float64 feature matrix, or say precisely why not.

What a body must hold comes from the served version's schema (``selfheal_daemon.model.schema``),
read once per model load into a ``RowParser``. The body is JSON, whatever the Content-Type header
says: either one object of features (``{"age": 39, "workclass": "Private", ...}``) or
``{"instances": [{...}, ...]}``. Every row must have exactly the schema's feature keys:

- a numeric feature takes a finite JSON number (an integer too; ``true``/``false`` are not
  numbers);
- a categorical feature takes a string, or a number read as its text (``3`` and ``3.0`` are the
  category ``"3"``, as ``schema.category_text`` reads them); a category the model never saw is
  answered and encoded ``UNSEEN``, and counted (``unseen_counts``);
- a boolean feature takes ``true``/``false``, or a string or number read as one (``"true"``,
  ``"no"``, ``1``, ... as ``schema.boolean_text`` reads them);
- ``null`` (and, for a categorical or boolean feature, one of the schema's missing-value tokens
  such as ``""`` or ``"?"``) is a missing value, accepted only where the column allows missing
  values (``Column.missing``) and encoded NaN.

The result has shape ``(rows, len(features))`` in schema feature order: numbers as they are,
categories as their index into ``Column.categories`` (``UNSEEN`` = -1, NaN when missing), the
matrix the capture, the drift monitor and the fast path share.

Errors are one ``InputError`` naming the first problem found, with a FastAPI-style ``loc``
(``["body", "instances", 3, "age"]`` or ``["body", "age"]``). Structural problems (not JSON, wrong
container, missing or unknown keys) are reported before value problems, value problems of the
wrong kind (type, a refused missing value, an unreadable boolean) before non-finite numbers; within
each kind the first row, then the first feature in schema order.

A ``/predict`` body is decoded by orjson (``decode_rows_json``: 0.4 ms for 1000 rows of eight
numbers where ``json.loads`` takes 2 to 3 ms, the largest cost of a batch outside the model); a
body orjson refuses is decoded again by ``decode_json``, whose document or error is then the
answer, so what is accepted and every error message stay those of ``json.loads`` (NaN and
Infinity literals among them, which orjson refuses and ``json.loads`` reads). orjson reads an
integer as ``int``: the rows' cells are turned to ``float`` as they are gathered into columns,
as ``parse_int=float`` does, so every later check sees what it saw before.

The matrix is built column by column from the decoded lists: no object is created per row, so a
1000-row batch of numbers costs about a millisecond beyond decoding. A categorical column costs
one dict lookup per cell.

``parse_feedback_body`` checks a ``POST /feedback`` body the same way (same error shape, the same
feature rules for features sent with labels); labels are numbers for a regression and class labels
for a classifier (see its docstring).

``parse_columns`` is the check itself, on a table given column by column (feature -> its cells):
``/predict`` and ``/feedback`` rows are read into columns and go through it, and so do the Open
Inference Protocol's tensors (``service.oip``), one per feature.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import orjson

from selfheal_daemon.model.schema import (
    UNSEEN,
    Column,
    Schema,
    boolean_text,
    category_text,
)

_INSTANCES = "instances"
_ITEMS = "items"
_FEEDBACK_KEYS = frozenset({"request_id", "features", _INSTANCES, "label", "labels"})
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_UNKNOWN = -2.0  # a cell the fast lookup did not resolve (never a real code)
_NUMBER_TYPES = frozenset({float})
_CATEGORY_TYPES = frozenset({str, float, type(None)})

Loc = list[str | int]
Locate = Callable[[int, str], Loc]
"""Where a cell was sent, for an error: (row index, feature name) -> a FastAPI-style loc."""


class InputError(Exception):
    """A request body the service refuses: HTTP status, FastAPI-style location, message, type.

    ``status_code`` is 422 for malformed input and 413 for a batch over the row limit.
    """

    def __init__(self, status_code: int, loc: Loc, msg: str, type: str) -> None:
        super().__init__(f"{status_code} at {loc}: {msg}")
        self.status_code = status_code
        self.loc = loc
        self.msg = msg
        self.type = type

    def as_detail(self) -> dict[str, Any]:
        """The error as one item of FastAPI's ``{"detail": [...]}`` list."""
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


# A problem with one cell: (tier, message, type). Tier 0 (wrong kind of value) outranks tier 1
# (a non-finite number) across the whole body, as a type error outranked a NaN before schemas.
Problem = tuple[int, str, str]
_WRONG, _NON_FINITE = 0, 1


@dataclass(frozen=True)
class _Feature:
    """One column's reading rules, fixed when the model is loaded."""

    name: str
    kind: str  # "numeric", "categorical" or "boolean"
    missing: bool  # null (and missing-value tokens) accepted
    lookup: dict[Any, float]  # exact request value -> code, for categorical and boolean columns


class RowParser:
    """How to read request rows for one schema: its keys, and per column a lookup table from the
    values a client may send to their codes. Build it once per model load (``ModelStore`` does);
    it is read-only afterwards, so requests share it without a lock."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.features: tuple[str, ...] = schema.features
        self.keys = frozenset(self.features)
        self.columns = tuple(_feature(col, schema.missing_values) for col in schema.columns)
        self.absent = frozenset(m.strip() for m in schema.missing_values) | {""}
        self.numeric = np.array([c.kind == "numeric" for c in self.columns], dtype=bool)
        self.all_numeric = bool(self.numeric.all())
        self.categorical = np.flatnonzero(~self.numeric)  # positions that may hold UNSEEN
        self.categorical_names = tuple(self.features[j] for j in self.categorical)
        self.classes = {label: float(i) for i, label in enumerate(schema.classes)}

    def unseen_counts(self, matrix: np.ndarray) -> list[tuple[str, int]]:
        """``(feature, cells)`` for each categorical feature with an unseen category in
        ``matrix`` (nothing to do for an all-numeric schema)."""
        if not self.categorical.size:
            return []
        counts = np.count_nonzero(matrix[:, self.categorical] == UNSEEN, axis=0)
        return [(self.categorical_names[k], int(n)) for k, n in enumerate(counts.tolist()) if n]


def _feature(col: Column, missing_values: tuple[str, ...]) -> _Feature:
    """The lookup of one column: every category's text, and its numeric spellings (``3.0`` for
    the category ``"3"``); a boolean column's JSON ``true``/``false`` and its spellings."""
    lookup: dict[Any, float] = {}
    if col.kind == "numeric":
        return _Feature(col.name, col.kind, col.missing, lookup)
    if col.kind == "boolean":
        index = {c: float(i) for i, c in enumerate(col.categories)}
        for text in ("true", "false", "True", "False", "TRUE", "FALSE"):
            lookup[text] = index[boolean_text(text) or ""]
        # JSON true/false are matched by type in _boolean_column: True == 1.0 in a dict.
        return _Feature(col.name, col.kind, col.missing, lookup)
    for code, text in enumerate(col.categories):
        lookup[text] = float(code)
        try:
            number = float(text)
        except ValueError:
            continue
        if math.isfinite(number) and category_text(number) == text:
            lookup.setdefault(number, float(code))
    for token in {m.strip() for m in missing_values} | {""}:  # a token is missing, as in
        if col.missing:  # Column.codes, even where it is also a category's text
            lookup[token] = math.nan
        else:
            lookup.pop(token, None)  # refused: decided (and reported) on the slow path
    return _Feature(col.name, col.kind, col.missing, lookup)


def parse_predict_body(body: bytes, max_rows: int, parser: RowParser) -> np.ndarray:
    """Decode and validate a predict body; returns an ``(n, len(features))`` float64 array.

    Raises ``InputError`` (422) for anything that is not a valid single object or non-empty
    ``instances`` list of feature objects, and ``InputError`` (413) for more than ``max_rows`` rows.
    """
    document = decode_rows_json(body)
    if not isinstance(document, dict):
        raise InputError(
            422,
            ["body"],
            'Input should be an object of features or {"instances": [objects of features]}',
            "dict_type",
        )
    if _INSTANCES in document:
        _only_key(document, _INSTANCES)
        return _instances_matrix(document[_INSTANCES], ["body", _INSTANCES], max_rows, parser)
    _check_keys([document], ["body"], parser, batch=False)
    return _to_matrix([document], ["body"], parser, batch=False)


def _only_key(document: dict[str, Any], key: str) -> None:
    """A 422 naming the first key of ``document`` other than ``key``, if there is one."""
    extra = [name for name in document if name != key]
    if extra:
        raise InputError(
            422, ["body", extra[0]], "Extra inputs are not permitted", "extra_forbidden"
        )


def _bounded_list(value: Any, prefix: Loc, max_rows: int, too_many: str) -> list[Any]:
    """``value`` when it is a non-empty list of at most ``max_rows`` entries, else a 422 or 413;
    ``too_many`` begins the 413's message, with ``{n}`` for the count ("{n} items exceed")."""
    if not isinstance(value, list):
        raise InputError(422, prefix, "Input should be a valid list", "list_type")
    if not value:
        raise InputError(422, prefix, "List should have at least 1 item", "too_short")
    if len(value) > max_rows:
        message = f"{too_many.format(n=len(value))} the limit of {max_rows} rows"
        raise InputError(413, prefix, message, "too_long")
    return value


def _instances_matrix(value: Any, prefix: Loc, max_rows: int, parser: RowParser) -> np.ndarray:
    """An ``instances`` list of feature objects as a float64 matrix (/predict, /feedback)."""
    rows = _bounded_list(value, prefix, max_rows, "batch of {n} rows exceeds")
    _check_keys(rows, prefix, parser, batch=True)
    return _to_matrix(rows, prefix, parser, batch=True)


def decode_rows_json(body: bytes) -> Any:
    """A ``/predict`` body decoded by orjson, or by ``decode_json`` when orjson refuses it (the
    module docstring says why the answer is the same); its integers are ``int``, which
    ``_to_matrix`` turns to ``float``."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return decode_json(body)


def decode_json(body: bytes) -> Any:
    """``json.loads`` with every failure turned into a 422; integers decode straight to float.

    ``parse_int=float`` keeps all numbers one type (so a type check is one comparison), turns a
    10,000-digit integer into ``inf`` (rejected later as non-finite) instead of tripping Python's
    int-string limit, and never builds a huge int.
    """
    try:
        return json.loads(body, parse_int=float)
    except json.JSONDecodeError as exc:
        raise InputError(
            422, ["body", exc.pos], f"JSON decode error: {exc.msg}", "json_invalid"
        ) from None
    except UnicodeDecodeError:
        raise InputError(
            422, ["body"], "JSON decode error: body is not valid UTF-8 text", "json_invalid"
        ) from None
    except RecursionError:
        raise InputError(
            422, ["body"], "JSON decode error: nested too deeply", "json_invalid"
        ) from None
    except ValueError as exc:  # any other decoder refusal is still the client's input
        raise InputError(422, ["body"], f"JSON decode error: {exc}", "json_invalid") from None


def _row_loc(prefix: Loc, index: int, batch: bool) -> Loc:
    return [*prefix, index] if batch else list(prefix)


def _check_keys(rows: list[Any], prefix: Loc, parser: RowParser, *, batch: bool) -> None:
    """Every row is an object with exactly the schema's feature keys; the first offender is
    reported."""
    keys = parser.keys
    for index, row in enumerate(rows):
        if type(row) is dict and row.keys() == keys:
            continue  # the common case: one C-level set comparison per row
        loc = _row_loc(prefix, index, batch)
        if not isinstance(row, dict):
            raise InputError(422, loc, "Input should be an object of features", "dict_type")
        for name in parser.features:
            if name not in row:
                raise InputError(422, [*loc, name], "Field required", "missing")
        unknown = next(key for key in row if key not in keys)
        raise InputError(422, [*loc, unknown], "Extra inputs are not permitted", "extra_forbidden")


def _to_matrix(
    rows: list[dict[str, Any]], prefix: Loc, parser: RowParser, *, batch: bool
) -> np.ndarray:
    """Rows of feature objects (their keys checked) as the float64 matrix: column by column.
    An ``int`` cell (orjson's reading of a JSON integer) becomes the ``float`` ``json.loads``
    with ``parse_int=float`` reads (``bool`` is not an ``int`` here: ``type`` is compared)."""
    columns: dict[str, list[Any]] = {}
    for feature in parser.columns:
        cells = [row[feature.name] for row in rows]
        if int in set(map(type, cells)):
            cells = [float(v) if type(v) is int else v for v in cells]
        columns[feature.name] = cells

    def locate(index: int, name: str) -> Loc:
        return [*_row_loc(prefix, index, batch), name]

    return parse_columns(columns, len(rows), parser, locate)


def parse_columns(
    columns: Mapping[str, list[Any]], rows: int, parser: RowParser, locate: Locate
) -> np.ndarray:
    """Validate a table given column by column into the ``(rows, len(features))`` float64 matrix.

    ``columns`` maps every feature of the schema (no other key) to its ``rows`` cells, as
    ``decode_json`` reads them: numbers as ``float``, text as ``str``, ``true``/``false``, and
    ``None``. The one path every request's features take (``/predict`` and ``/feedback`` rows,
    the Open Inference Protocol's tensors); ``locate(row, feature)`` says where a cell was sent,
    for the ``InputError`` (422) naming the first problem (see the module docstring's order).

    After ``decode_json`` every JSON number is a Python float, so a numeric column without
    missing values is valid exactly when all its values have type ``float`` (which also excludes
    ``bool``, an ``int`` subclass). Any column that does not convert cleanly sends the whole table
    to ``_raise_first_problem``, which finds the first problem in row-major order.
    """
    matrix = np.empty((rows, len(parser.columns)), dtype=np.float64)
    nulls: list[tuple[int, np.ndarray]] = []  # numeric columns with accepted nulls: where
    for column, feature in enumerate(parser.columns):
        values = columns[feature.name]
        if feature.kind == "numeric":
            if set(map(type, values)) == _NUMBER_TYPES:
                matrix[:, column] = values
                continue
            if feature.missing and set(map(type, values)) <= {float, type(None)}:
                absent = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
                matrix[:, column] = [math.nan if v is None else v for v in values]
                nulls.append((column, absent))
                continue
            _raise_first_problem(columns, rows, parser, locate)
        codes = (
            _categorical_column(values, feature, parser.absent)
            if feature.kind == "categorical"
            else _boolean_column(values, feature, parser.absent)
        )
        if codes is None:
            _raise_first_problem(columns, rows, parser, locate)
        matrix[:, column] = codes
    numbers = matrix if parser.all_numeric else matrix[:, parser.numeric]
    finite = np.isfinite(numbers)
    if not finite.all():
        if nulls:
            bad = ~finite
            positions = np.flatnonzero(parser.numeric) if not parser.all_numeric else None
            for column, absent in nulls:
                at = column if positions is None else int(np.searchsorted(positions, column))
                bad[absent, at] = False
            if not bad.any():
                return matrix
        _raise_first_problem(columns, rows, parser, locate)
    return matrix


def _categorical_column(
    values: list[Any], feature: _Feature, absent: frozenset[str]
) -> list[float] | None:
    """A categorical column's codes (UNSEEN for a category the model never saw, NaN for an
    accepted missing value), or None when some cell is refused (the caller then reports it)."""
    if not set(map(type, values)) <= _CATEGORY_TYPES:  # bool (True == 1.0 as a key), list, ...
        return None
    lookup = feature.lookup
    codes = [lookup.get(v, _UNKNOWN) for v in values]
    if _UNKNOWN in codes:  # stray whitespace, a number spelled another way, unseen, null, NaN
        resolved = [
            code if code != _UNKNOWN else _category_code(v, feature, absent)
            for code, v in zip(codes, values, strict=True)
        ]
        if None in resolved:
            return None
        return resolved
    return codes


def _category_code(value: Any, feature: _Feature, absent: frozenset[str]) -> Any:
    """One categorical cell the exact lookup missed: its code, NaN when missing (and allowed),
    UNSEEN for an unknown category, or None when the cell is refused."""
    if value is None:
        return math.nan if feature.missing else None
    if type(value) is float:
        if not math.isfinite(value):
            return None
        text = category_text(value)
    elif type(value) is str:
        text = value.strip()
    else:
        return None
    if text is None or text in absent:
        return math.nan if feature.missing else None
    return feature.lookup.get(text, UNSEEN)


def _boolean_column(
    values: list[Any], feature: _Feature, absent: frozenset[str]
) -> list[float] | None:
    """A boolean column's codes (``false`` 0, ``true`` 1), or None when some cell is refused."""
    out: list[float] = []
    for value in values:
        code = _boolean_code(value, feature, absent)
        if code is None:
            return None
        out.append(code)
    return out


def _boolean_code(value: Any, feature: _Feature, absent: frozenset[str]) -> float | None:
    """One boolean cell's code (``false`` 0, ``true`` 1, NaN when missing and allowed), or None
    when it is refused."""
    if value is True or value is False:
        return float(value)
    if isinstance(value, str):
        code = feature.lookup.get(value)
        if code is not None:
            return code
        missing = value.strip() in absent
    else:
        missing = value is None
        if not missing and (type(value) is not float or not math.isfinite(value)):
            return None
    if missing:
        return math.nan if feature.missing else None
    text = boolean_text(value)
    return None if text is None else float(text == "true")


_NOT_FINITE: Problem = (_NON_FINITE, "not a finite number", "finite_number")


def _numeric_problem(value: Any, feature: _Feature, absent: frozenset[str]) -> Problem | None:
    if type(value) is float:
        return None if math.isfinite(value) else _NOT_FINITE
    if value is None and feature.missing:
        return None
    return (_WRONG, f"Input should be a valid number, got {_json_type(value)}", "float_type")


def _categorical_problem(value: Any, feature: _Feature, absent: frozenset[str]) -> Problem | None:
    if type(value) is float and not math.isfinite(value):
        return _NOT_FINITE
    if value is None or type(value) is float or type(value) is str:
        if _category_code(value, feature, absent) is not None:
            return None
        return (_WRONG, _no_missing(feature), "missing_not_allowed")
    return (
        _WRONG,
        f"Input should be a valid string (a category), got {_json_type(value)}",
        "string_type",
    )


def _boolean_problem(value: Any, feature: _Feature, absent: frozenset[str]) -> Problem | None:
    if type(value) is float and not math.isfinite(value):
        return _NOT_FINITE
    if _boolean_code(value, feature, absent) is not None:
        return None
    if value is None or (isinstance(value, str) and value.strip() in absent):
        return (_WRONG, _no_missing(feature), "missing_not_allowed")
    if isinstance(value, str | float):
        message = f"Input should be a valid boolean, unable to interpret {value!r}"
        return (_WRONG, message, "bool_parsing")
    return (_WRONG, f"Input should be a valid boolean, got {_json_type(value)}", "bool_type")


_PROBLEMS: dict[str, Callable[[Any, _Feature, frozenset[str]], Problem | None]] = {
    "numeric": _numeric_problem,
    "categorical": _categorical_problem,
    "boolean": _boolean_problem,
}


def _problem(value: Any, feature: _Feature, absent: frozenset[str]) -> Problem | None:
    """What is wrong with one cell for its column, or None when it is acceptable."""
    return _PROBLEMS[feature.kind](value, feature, absent)


def _no_missing(feature: _Feature) -> str:
    return f"{feature.name!r} takes no missing value (the model was trained without any)"


def _raise_first_problem(
    columns: Mapping[str, list[Any]], rows: int, parser: RowParser, locate: Locate
) -> NoReturn:
    """Report the first wrong value in row-major order, else the first non-finite one (error
    path only, so a plain scan)."""
    first_non_finite: tuple[int, _Feature, Problem] | None = None
    for index in range(rows):
        for feature in parser.columns:
            problem = _problem(columns[feature.name][index], feature, parser.absent)
            if problem is None:
                continue
            if problem[0] == _WRONG:
                _raise_at(locate(index, feature.name), problem)
            if first_non_finite is None:
                first_non_finite = (index, feature, problem)
    if first_non_finite is not None:
        _raise_at(locate(first_non_finite[0], first_non_finite[1].name), first_non_finite[2])
    raise AssertionError("unreachable: a column failed to convert but no cell is at fault")


def _raise_at(loc: Loc, problem: Problem) -> NoReturn:
    raise InputError(422, loc, problem[1], problem[2])


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def valid_request_id(value: object) -> bool:
    """True for a request id we accept from clients: 1 to 64 of ``A-Z a-z 0-9 . _ : -``."""
    return isinstance(value, str) and REQUEST_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class FeedbackItem:
    """Ground truth for some rows: ``labels`` (n,) encoded as the schema encodes targets (values,
    or class indices), with the rows' ``features`` (n, len(features)) if sent, and the
    ``request_id`` of the prediction they belong to if sent."""

    request_id: str | None
    features: np.ndarray | None
    labels: np.ndarray


def parse_feedback_body(body: bytes, max_rows: int, parser: RowParser) -> list[FeedbackItem]:
    """Decode and validate a feedback body: one item, or ``{"items": [item, ...]}``.

    An item has a ``request_id`` (labels for the rows of that answered request, in order), or the
    features themselves (``"features": {...}`` for one row, ``"instances": [{...}, ...]``), or
    both; and ``"labels": [y, ...]`` or, for one row, ``"label": y``. For a regression a label is a
    finite number; for a classifier it is one of the schema's class labels, as text (a number is
    read as its text), kept as the class's index. One label per row when features are given.
    422 for anything else, naming the field (and an unknown class); 413 when the items or the rows
    of all items together exceed ``max_rows``.
    """
    document = decode_json(body)
    if not isinstance(document, dict):
        raise InputError(422, ["body"], "Input should be a feedback object", "dict_type")
    if _ITEMS not in document:
        return [_feedback_item(document, ["body"], max_rows, parser)]
    _only_key(document, _ITEMS)
    prefix: Loc = ["body", _ITEMS]
    raw = _bounded_list(document[_ITEMS], prefix, max_rows, "{n} items exceed")
    items = [_feedback_item(item, [*prefix, i], max_rows, parser) for i, item in enumerate(raw)]
    rows = sum(len(item.labels) for item in items)
    if rows > max_rows:
        raise InputError(
            413, prefix, f"{rows} labelled rows exceed the limit of {max_rows} rows", "too_long"
        )
    return items


def _feedback_item(item: Any, loc: Loc, max_rows: int, parser: RowParser) -> FeedbackItem:
    """One feedback item; structure first (keys, alternatives), then values, like /predict."""
    if not isinstance(item, dict):
        raise InputError(422, loc, "Input should be a feedback object", "dict_type")
    unknown = [key for key in item if key not in _FEEDBACK_KEYS]
    if unknown:
        raise InputError(
            422, [*loc, unknown[0]], "Extra inputs are not permitted", "extra_forbidden"
        )
    if "features" in item and _INSTANCES in item:
        raise InputError(
            422, [*loc, _INSTANCES], "give either features (one row) or instances", "value_error"
        )
    if "label" in item and "labels" in item:
        raise InputError(422, [*loc, "labels"], "give either label or labels", "value_error")
    if not ("request_id" in item or "features" in item or _INSTANCES in item):
        raise InputError(
            422,
            [*loc, "request_id"],
            "Field required: request_id, features or instances",
            "missing",
        )
    if "label" not in item and "labels" not in item:
        raise InputError(
            422, [*loc, "label" if "features" in item else "labels"], "Field required", "missing"
        )
    request_id = item.get("request_id")
    if "request_id" in item and not valid_request_id(request_id):
        raise InputError(
            422,
            [*loc, "request_id"],
            "Input should be a request id: 1 to 64 characters of A-Z a-z 0-9 . _ : -",
            "string_pattern_mismatch",
        )
    features = _feedback_features(item, loc, max_rows, parser)
    labels = _labels(item, loc, max_rows, parser)
    if features is not None and features.shape[0] != labels.shape[0]:
        name = "labels" if "labels" in item else "label"
        raise InputError(
            422,
            [*loc, name],
            f"{labels.shape[0]} labels for {features.shape[0]} rows: give one label per row",
            "value_error",
        )
    return FeedbackItem(request_id=request_id, features=features, labels=labels)


def _feedback_features(
    item: dict[str, Any], loc: Loc, max_rows: int, parser: RowParser
) -> np.ndarray | None:
    if "features" in item:
        prefix: Loc = [*loc, "features"]
        _check_keys([item["features"]], prefix, parser, batch=False)
        return _to_matrix([item["features"]], prefix, parser, batch=False)
    if _INSTANCES not in item:
        return None
    return _instances_matrix(item[_INSTANCES], [*loc, _INSTANCES], max_rows, parser)


def _labels(item: dict[str, Any], loc: Loc, max_rows: int, parser: RowParser) -> np.ndarray:
    """The item's labels as a float64 vector: finite numbers, or class indices."""
    if "label" in item:
        values, prefix, one = [item["label"]], [*loc, "label"], True
    else:
        prefix, one = [*loc, "labels"], False
        values = _bounded_list(item["labels"], prefix, max_rows, "{n} labels exceed")
    read: Callable[[Any], float | Problem] = (
        (lambda v: _class_index(v, parser)) if parser.classes else _number_label
    )
    if not parser.classes and set(map(type, values)) == _NUMBER_TYPES:
        labels = np.array(values, dtype=np.float64)
        if np.isfinite(labels).all():
            return labels  # the common case of a regression: no per-label work
    read_all = [read(value) for value in values]
    problems = [(i, got) for i, got in enumerate(read_all) if isinstance(got, tuple)]
    if problems:  # a wrong kind of label anywhere outranks a non-finite one, as for features
        index, problem = min(problems, key=lambda p: (p[1][0], p[0]))
        raise InputError(422, prefix if one else [*prefix, index], problem[1], problem[2])
    return np.array(read_all, dtype=np.float64)


def _number_label(value: Any) -> float | Problem:
    """A regression label: a finite JSON number (after ``decode_json`` every number is a float)."""
    if type(value) is not float:
        return (_WRONG, f"Input should be a valid number, got {_json_type(value)}", "float_type")
    if not math.isfinite(value):
        return _NOT_FINITE
    return value


def _class_index(value: Any, parser: RowParser) -> float | Problem:
    """A classifier's label: one of the schema's classes, as text (numbers read as their text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return (_NON_FINITE, "not a finite number", "finite_number")
    if not isinstance(value, str | float | bool):
        return (
            _WRONG,
            f"Input should be a class label (a string), got {_json_type(value)}",
            "string_type",
        )
    text = category_text(value)
    index = parser.classes.get(text or "")
    if index is None:
        known = ", ".join(map(repr, parser.schema.classes))
        return (_WRONG, f"{text!r} is not a class of this model; its classes are {known}", "enum")
    return index
