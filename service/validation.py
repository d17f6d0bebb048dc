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
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import numpy as np

from selfheal_daemon.features import FEATURES

_FEATURE_KEYS = frozenset(FEATURES)
_INSTANCES = "instances"

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
        extra = [key for key in document if key != _INSTANCES]
        if extra:
            raise InputError(
                422, ["body", extra[0]], "Extra inputs are not permitted", "extra_forbidden"
            )
        rows = document[_INSTANCES]
        prefix: Loc = ["body", _INSTANCES]
        if not isinstance(rows, list):
            raise InputError(422, prefix, "Input should be a valid list", "list_type")
        if not rows:
            raise InputError(422, prefix, "List should have at least 1 item", "too_short")
        if len(rows) > max_rows:
            raise InputError(
                413,
                prefix,
                f"batch of {len(rows)} rows exceeds the limit of {max_rows} rows",
                "too_long",
            )
        _check_keys(rows, prefix, batch=True)
        return _to_matrix(rows, prefix, batch=True)
    _check_keys([document], ["body"], batch=False)
    return _to_matrix([document], ["body"], batch=False)


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
