"""Turn a ``POST /predict`` body into the model's float64 feature matrix, or say precisely why not.

The body is JSON, whatever the Content-Type header says: either one object of features
(``{"MedInc": 3.1, ...}``) or ``{"instances": [{...}, ...]}``. Every row must have exactly the
``FEATURES`` keys, each a finite JSON number. The result has shape ``(rows, len(FEATURES))`` and
its columns are ``FEATURES`` in order.

Errors are one ``InputError`` naming the first problem found, with a FastAPI-style ``loc``
(``["body", "instances", 3, "MedInc"]`` or ``["body", "MedInc"]``). Structural problems (not JSON,
wrong container, missing or unknown keys) are reported before value problems (wrong type,
non-finite); within each kind the first row, then the first feature in ``FEATURES`` order.

The matrix is built column by column from the decoded lists: no object is created per row, so a
1000-row batch costs about a millisecond beyond ``json.loads``.

``parse_feedback_body`` checks a ``POST /feedback`` body the same way (same error shape, the same
feature rules for features sent with labels); see its docstring for the accepted forms.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from selfheal_daemon.defaults import FEATURES

_FEATURE_KEYS = frozenset(FEATURES)
_INSTANCES = "instances"
_ITEMS = "items"
_FEEDBACK_KEYS = frozenset({"request_id", "features", _INSTANCES, "label", "labels"})
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

Loc = list[str | int]


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


def parse_predict_body(body: bytes, max_rows: int) -> np.ndarray:
    """Decode and validate a predict body; returns an ``(n, len(FEATURES))`` float64 array.

    Raises ``InputError`` (422) for anything that is not a valid single object or non-empty
    ``instances`` list of feature objects, and ``InputError`` (413) for more than ``max_rows`` rows.
    """
    document = _decode(body)
    if not isinstance(document, dict):
        raise InputError(
            422,
            ["body"],
            'Input should be an object of features or {"instances": [objects of features]}',
            "dict_type",
        )
    if _INSTANCES in document:
        _only_key(document, _INSTANCES)
        return _instances_matrix(document[_INSTANCES], ["body", _INSTANCES], max_rows)
    _check_keys([document], ["body"], batch=False)
    return _to_matrix([document], ["body"], batch=False)


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


def _instances_matrix(value: Any, prefix: Loc, max_rows: int) -> np.ndarray:
    """An ``instances`` list of feature objects as a float64 matrix (/predict, /feedback)."""
    rows = _bounded_list(value, prefix, max_rows, "batch of {n} rows exceeds")
    _check_keys(rows, prefix, batch=True)
    return _to_matrix(rows, prefix, batch=True)


def _decode(body: bytes) -> Any:
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


def _check_keys(rows: list[Any], prefix: Loc, *, batch: bool) -> None:
    """Every row is an object with exactly the FEATURES keys; the first offender is reported."""
    for index, row in enumerate(rows):
        if type(row) is dict and row.keys() == _FEATURE_KEYS:
            continue  # the common case: one C-level set comparison per row
        loc = _row_loc(prefix, index, batch)
        if not isinstance(row, dict):
            raise InputError(422, loc, "Input should be an object of features", "dict_type")
        for name in FEATURES:
            if name not in row:
                raise InputError(422, [*loc, name], "Field required", "missing")
        unknown = next(key for key in row if key not in _FEATURE_KEYS)
        raise InputError(422, [*loc, unknown], "Extra inputs are not permitted", "extra_forbidden")


def _to_matrix(rows: list[dict[str, Any]], prefix: Loc, *, batch: bool) -> np.ndarray:
    """Build the float64 matrix column-wise, then check types and finiteness per column.

    After ``_decode`` every JSON number is a Python float, so a column is valid exactly when all
    its values have type ``float`` (which also excludes ``bool``, an ``int`` subclass).
    """
    matrix = np.empty((len(rows), len(FEATURES)), dtype=np.float64)
    for column, name in enumerate(FEATURES):
        values = [row[name] for row in rows]
        if set(map(type, values)) != {float}:
            _raise_first_type_error(rows, prefix, batch=batch)
        matrix[:, column] = values
    finite = np.isfinite(matrix)
    if not finite.all():
        index, column = (int(i) for i in np.argwhere(~finite)[0])
        raise InputError(
            422,
            [*_row_loc(prefix, index, batch), FEATURES[column]],
            "not a finite number",
            "finite_number",
        )
    return matrix


def _raise_first_type_error(rows: list[dict[str, Any]], prefix: Loc, *, batch: bool) -> NoReturn:
    """Report the first non-number in row-major order (error path only, so a plain scan)."""
    for index, row in enumerate(rows):
        for name in FEATURES:
            value = row[name]
            if type(value) is not float:
                raise InputError(
                    422,
                    [*_row_loc(prefix, index, batch), name],
                    f"Input should be a valid number, got {_json_type(value)}",
                    "float_type",
                )
    raise AssertionError("unreachable: a column held a non-float but no row did")


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
    """Ground truth for some rows: ``labels`` (n,), with the rows' ``features`` (n, 8) if sent,
    and the ``request_id`` of the prediction they belong to if sent."""

    request_id: str | None
    features: np.ndarray | None
    labels: np.ndarray


def parse_feedback_body(body: bytes, max_rows: int) -> list[FeedbackItem]:
    """Decode and validate a feedback body: one item, or ``{"items": [item, ...]}``.

    An item has a ``request_id`` (labels for the rows of that answered request, in order), or the
    features themselves (``"features": {...}`` for one row, ``"instances": [{...}, ...]``), or
    both; and ``"labels": [y, ...]`` or, for one row, ``"label": y``. Labels are finite numbers,
    one per row when features are given. 422 for anything else, naming the field; 413 when the
    items or the rows of all items together exceed ``max_rows``.
    """
    document = _decode(body)
    if not isinstance(document, dict):
        raise InputError(422, ["body"], "Input should be a feedback object", "dict_type")
    if _ITEMS not in document:
        return [_feedback_item(document, ["body"], max_rows)]
    _only_key(document, _ITEMS)
    prefix: Loc = ["body", _ITEMS]
    raw = _bounded_list(document[_ITEMS], prefix, max_rows, "{n} items exceed")
    items = [_feedback_item(item, [*prefix, i], max_rows) for i, item in enumerate(raw)]
    rows = sum(len(item.labels) for item in items)
    if rows > max_rows:
        raise InputError(
            413, prefix, f"{rows} labelled rows exceed the limit of {max_rows} rows", "too_long"
        )
    return items


def _feedback_item(item: Any, loc: Loc, max_rows: int) -> FeedbackItem:
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
    features = _feedback_features(item, loc, max_rows)
    labels = _labels(item, loc, max_rows)
    if features is not None and features.shape[0] != labels.shape[0]:
        name = "labels" if "labels" in item else "label"
        raise InputError(
            422,
            [*loc, name],
            f"{labels.shape[0]} labels for {features.shape[0]} rows: give one label per row",
            "value_error",
        )
    return FeedbackItem(request_id=request_id, features=features, labels=labels)


def _feedback_features(item: dict[str, Any], loc: Loc, max_rows: int) -> np.ndarray | None:
    if "features" in item:
        prefix: Loc = [*loc, "features"]
        _check_keys([item["features"]], prefix, batch=False)
        return _to_matrix([item["features"]], prefix, batch=False)
    if _INSTANCES not in item:
        return None
    return _instances_matrix(item[_INSTANCES], [*loc, _INSTANCES], max_rows)


def _labels(item: dict[str, Any], loc: Loc, max_rows: int) -> np.ndarray:
    """The item's labels as a float64 vector: each a finite JSON number."""
    if "label" in item:
        values, prefix, one = [item["label"]], [*loc, "label"], True
    else:
        prefix, one = [*loc, "labels"], False
        values = _bounded_list(item["labels"], prefix, max_rows, "{n} labels exceed")
    if set(map(type, values)) != {float}:  # after _decode every JSON number is a float
        index = next(i for i, v in enumerate(values) if type(v) is not float)
        raise InputError(
            422,
            prefix if one else [*prefix, index],
            f"Input should be a valid number, got {_json_type(values[index])}",
            "float_type",
        )
    labels = np.array(values, dtype=np.float64)
    finite = np.isfinite(labels)
    if not finite.all():
        index = int(np.argmin(finite))
        raise InputError(
            422, prefix if one else [*prefix, index], "not a finite number", "finite_number"
        )
    return labels
