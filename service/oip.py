"""The Open Inference Protocol (v2, as KServe, MLServer and Triton speak it) beside ``/predict``.

Routes, on the same listener as ``/predict`` (the ``/versions/{version}`` forms take only the
served version; another is a 404)::

    GET  /v2/health/live                 200 {"live": true}
    GET  /v2/health/ready                200 {"ready": true} when a model is served, else 400
                                         {"ready": false} (the protocol: 4xx means false)
    GET  /v2                             200 {"name": "selfheal", "version": ..., "extensions": []}
    GET  /v2/models/{name}[/versions/{version}]
                                         200 model metadata: "name" (the schema's), "versions"
                                         [the served one], "platform" "scikit-learn", "inputs" one
                                         per feature {"name", "datatype", "shape": [-1]} (FP64 for
                                         a numeric feature, BYTES for a categorical one, BOOL for a
                                         boolean one), "outputs" "predict" (FP64, or BYTES class
                                         labels) and, for a classifier, "predict_proba" (FP64
                                         [-1, classes], the classes in its "parameters")
    GET  /v2/models/{name}[/versions/{version}]/ready
                                         200 {"name", "ready": true}; 400 {"name", "ready": false}
                                         when no model is served
    POST /v2/models/{name}[/versions/{version}]/infer
                                         an inference request (below) -> 200 {"model_name",
                                         "model_version", "id", "outputs": [...]}

An inference request carries one tensor per feature, named after it, of shape ``[n]`` (or
``[n, 1]``), as MLServer's pandas codec sends a table: numbers in FP64, FP32, FP16, INT8-64 or
UINT8-64 tensors, text in BYTES, ``true``/``false`` in BOOL; ``null`` marks a missing cell (where
the schema allows one), and so does NaN in a float tensor (as numpy writes one, and tritonclient
sends it). When every feature is numeric, one 2-D number tensor of shape
``[n, features]`` (any name) holding the rows in schema feature order is taken too. Data may be
flat or nested (row-major either way). The tensors become the same columns a ``/predict`` body
becomes and go through the same check (``validation.parse_columns``), so a cell is accepted or
refused exactly as it is in ``/predict``; the rows then take the same way as ``/predict`` rows:
the batcher, the capture, the metrics (the ``answer`` callable ``create_app`` hands over).

Outputs: ``predict``, shape ``[n]``: FP64 values for a regression, BYTES class labels for a
classifier; a classifier's ``predict_proba``, FP64 ``[n, classes]`` in the order of
``parameters.classes``. A request's ``outputs`` selects among them (all by default); output
parameters such as tritonclient's ``binary_data`` are ignored: data always travels as JSON. The
request's ``id`` is echoed; without one the answer's ``id`` is the request id the capture keeps
(also the ``X-Request-ID`` header, as for ``/predict``; ``/feedback`` takes it). A valid
``X-Request-ID`` header, else a valid ``id``, is that capture request id.

Errors are the protocol's ``{"error": "a sentence"}``: 400 for a request the model cannot take,
naming the input (and the element, or the row and feature of a 2-D tensor); 404 for a model name
other than the served schema's or a version other than the served one; 413 for more rows than
``max_batch_rows`` (or, from the body limiter, a body over ``max_body_bytes``); 503 when no model
is served; 500 when the model itself misbehaved. The binary tensor extension is not supported: a
request with binary data (the ``Inference-Header-Content-Length`` header, or an input's
``binary_data_size``) is a 400 saying so. ``OipErrorBodies`` gives every error under ``/v2`` that
shape, also those answered before a route runs (404 for an unknown path, the limiter's 413).

The routes are not in ``/openapi.json``: the protocol's own specification describes them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NamedTuple, NoReturn

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from loguru import logger
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from selfheal_daemon import __version__
from service.batching import Batcher, ModelOutputError
from service.model_store import ModelStore, Served
from service.predictor import Answer
from service.settings import ServiceSettings
from service.validation import (
    InputError,
    Loc,
    Locate,
    decode_json,
    parse_columns,
    valid_request_id,
)

PREFIX = "/v2"
SERVER_NAME = "selfheal"
PLATFORM = "scikit-learn"
PREDICT = "predict"
PROBA = "predict_proba"
NO_MODEL = "no model loaded"
BINARY_REFUSED = (
    "binary tensor data is not supported (the binary tensor extension); send every tensor as "
    "JSON data (tritonclient: set_data_from_numpy(array, binary_data=False))"
)
_KIND_DATATYPE = {"numeric": "FP64", "categorical": "BYTES", "boolean": "BOOL"}
_INTEGERS = frozenset(f"{sign}INT{bits}" for sign in ("", "U") for bits in (8, 16, 32, 64))
_NUMBERS = _INTEGERS | {"FP16", "FP32", "FP64"}
_DATATYPES = _NUMBERS | {"BOOL", "BYTES"}
_CELL_TYPES: dict[str, frozenset[type]] = {
    **dict.fromkeys(_NUMBERS, frozenset({float, type(None)})),
    "BOOL": frozenset({bool, type(None)}),
    "BYTES": frozenset({str, type(None)}),
}
_CELL_WORDS = {"BOOL": "true or false", "BYTES": "strings"}


class Answered(NamedTuple):
    """What the shared prediction path answers for some validated rows: the model's answer and
    the request id their capture is kept under."""

    answer: Answer
    request_id: str


AnswerRows = Callable[[Served, np.ndarray, str | None], Awaitable[Answered]]
"""Predict validated rows (batcher, capture, metrics), given the request id wanted if valid."""


class OipError(Exception):
    """A request refused with the protocol's ``{"error": message}`` and an HTTP status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def error_response(status_code: int, message: str) -> JSONResponse:
    """The protocol's error object."""
    return JSONResponse({"error": message}, status_code=status_code)


@dataclass(frozen=True)
class InferRequest:
    """A decoded, validated inference request: the encoded rows and what to answer."""

    id: str | None
    features: np.ndarray  # (rows, len(features)) float64, as validation.parse_columns makes it
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class _Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    cells: list[Any]  # flat, row-major


# ----- the codec ----------------------------------------------------------------------------


def output_names(served: Served) -> tuple[str, ...]:
    """The model's outputs, in the order they are answered."""
    return (PREDICT, PROBA) if served.schema.is_classifier else (PREDICT,)


def model_metadata(served: Served) -> dict[str, Any]:
    """The protocol's model metadata object for the served model."""
    schema = served.schema
    outputs: list[dict[str, Any]] = [
        {
            "name": PREDICT,
            "datatype": "BYTES" if schema.is_classifier else "FP64",
            "shape": [-1],
        }
    ]
    if schema.is_classifier:
        outputs.append(
            {
                "name": PROBA,
                "datatype": "FP64",
                "shape": [-1, len(schema.classes)],
                "parameters": {"classes": list(schema.classes)},
            }
        )
    return {
        "name": schema.name,
        "versions": [served.version],
        "platform": PLATFORM,
        "inputs": [
            {"name": column.name, "datatype": _KIND_DATATYPE[column.kind], "shape": [-1]}
            for column in schema.columns
        ],
        "outputs": outputs,
    }


def parse_infer_body(body: bytes, served: Served, max_rows: int) -> InferRequest:
    """Decode an inference request body and validate its tensors into the encoded rows.

    Raises ``OipError``: 400 naming what is wrong (the input, and where in it), 413 for more
    than ``max_rows`` rows.
    """
    try:
        document = decode_json(body)
    except InputError as exc:
        raise OipError(400, exc.msg) from None
    if not isinstance(document, dict):
        raise OipError(400, "an inference request is a JSON object with an inputs list")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise OipError(400, "id must be a string")
    if not isinstance(document.get("parameters", {}), dict):
        raise OipError(400, "parameters must be an object")
    raw = document.get("inputs")
    if not isinstance(raw, list) or not raw:
        raise OipError(400, "inputs must be a non-empty list of tensors")
    features = _features(raw, served, max_rows)
    outputs = _requested_outputs(document.get("outputs"), served)
    return InferRequest(id=request_id, features=features, outputs=outputs)


def infer_response(
    served: Served, answer: Answer, outputs: tuple[str, ...], request_id: str
) -> dict[str, Any]:
    """The protocol's inference response for ``answer``, with the ``outputs`` asked for."""
    rows = int(answer.values.shape[0])
    tensors: list[dict[str, Any]] = []
    for name in outputs:
        if name == PREDICT and served.schema.is_classifier:
            tensors.append(
                {
                    "name": PREDICT,
                    "datatype": "BYTES",
                    "shape": [rows],
                    "data": served.class_labels(answer.values),
                }
            )
        elif name == PREDICT:
            tensors.append(
                {
                    "name": PREDICT,
                    "datatype": "FP64",
                    "shape": [rows],
                    "data": answer.values.tolist(),
                }
            )
        elif answer.proba is not None:  # PROBA, asked of a classifier (checked when decoded)
            tensors.append(
                {
                    "name": PROBA,
                    "datatype": "FP64",
                    "shape": [rows, int(answer.proba.shape[1])],
                    "parameters": {"classes": list(served.schema.classes)},
                    "data": answer.proba.reshape(-1).tolist(),
                }
            )
    return {
        "model_name": served.schema.name,
        "model_version": served.version,
        "id": request_id,
        "outputs": tensors,
    }


def _input_name(item: Any, index: int) -> str:
    if not isinstance(item, dict):
        raise OipError(400, f"inputs[{index}] must be a tensor object")
    name = item.get("name")
    if not isinstance(name, str):
        raise OipError(400, f"inputs[{index}] needs a name (a string)")
    return name


def _tensor(item: dict[str, Any], name: str) -> _Tensor:
    """One request input: its datatype, shape and flat data, checked against each other."""
    parameters = item.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise OipError(400, f"input {name!r}: parameters must be an object")
    if parameters and "binary_data_size" in parameters:
        raise OipError(400, f"input {name!r}: {BINARY_REFUSED}")
    datatype = item.get("datatype")
    if datatype not in _DATATYPES:
        known = ", ".join(sorted(_DATATYPES))
        raise OipError(400, f"input {name!r}: datatype {datatype!r} is not one of {known}")
    shape = _shape(item.get("shape"), name)
    data = item.get("data")
    if not isinstance(data, list):
        raise OipError(400, f"input {name!r}: data must be a list (JSON tensor data)")
    cells = _flatten(data)
    expected = math.prod(shape)
    if len(cells) != expected:
        raise OipError(
            400,
            f"input {name!r}: shape {list(shape)} holds {expected} elements, data has {len(cells)}",
        )
    _check_cells(name, datatype, shape, cells)
    return _Tensor(name, datatype, shape, cells)


def _shape(value: Any, name: str) -> tuple[int, ...]:
    """A tensor's shape: a non-empty list of non-negative integers (read as floats by JSON)."""
    if not isinstance(value, list) or not value:
        raise OipError(400, f"input {name!r}: shape must be a non-empty list of dimensions")
    dims = []
    for dim in value:
        if type(dim) is not float or not dim.is_integer() or dim < 0:
            shown = json.dumps(
                [int(d) if type(d) is float and d.is_integer() else d for d in value]
            )
            raise OipError(400, f"input {name!r}: shape {shown} must hold non-negative integers")
        dims.append(int(dim))
    return tuple(dims)


def _flatten(data: list[Any]) -> list[Any]:
    """Tensor data flat, in row-major order (it may come nested, in its natural shape)."""
    if not any(type(cell) is list for cell in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for cell in stack[-1]:
            if type(cell) is list:
                stack.append(iter(cell))
                break
            flat.append(cell)
        else:
            stack.pop()
    return flat


def _check_cells(name: str, datatype: str, shape: tuple[int, ...], cells: list[Any]) -> None:
    """Every element is of the datatype's JSON kind (or null: a missing cell); an integer
    datatype holds whole numbers, an unsigned one no negative number."""
    allowed = _CELL_TYPES[datatype]
    if set(map(type, cells)) <= allowed and (
        datatype not in _INTEGERS or all(_whole(cell, datatype) for cell in cells)
    ):
        return
    for position, cell in enumerate(cells):
        if type(cell) not in allowed:
            words = _CELL_WORDS.get(datatype, "numbers")
            problem = f"{datatype} data holds {words}, got {_json_type(cell)}"
        elif datatype in _INTEGERS and not _whole(cell, datatype):
            problem = f"{cell!r} is not a value of {datatype}"
        else:
            continue
        raise OipError(400, f"input {name!r}, element {_index(position, shape)}: {problem}")
    raise AssertionError("unreachable: a cell failed the check but none is at fault")


def _index(position: int, shape: tuple[int, ...]) -> str:
    """A flat position as the element's index: ``3``, or ``[1, 0]`` in a 2-D tensor."""
    if len(shape) == 1:
        return str(position)
    return str([int(i) for i in np.unravel_index(position, shape)])


def _whole(cell: Any, datatype: str) -> bool:
    if cell is None:
        return True
    return bool(cell.is_integer()) and (cell >= 0 or not datatype.startswith("U"))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, float):
        return "a number"
    return "an object"


def _requested_outputs(value: Any, served: Served) -> tuple[str, ...]:
    """The outputs asked for by name (all of them when none is named), each once."""
    known = output_names(served)
    if value is None or value == []:
        return known
    if not isinstance(value, list):
        raise OipError(400, 'outputs must be a list of {"name": ...} objects')
    asked: list[str] = []
    for index, item in enumerate(value):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise OipError(400, f"outputs[{index}] needs a name (a string)")
        if name not in known:
            raise OipError(
                400,
                f"unknown output {name!r}: model {served.schema.name!r} answers {', '.join(known)}",
            )
        if name not in asked:
            asked.append(name)
    return tuple(asked)


def _features(raw: list[Any], served: Served, max_rows: int) -> np.ndarray:
    """The inputs as the encoded feature matrix: one per feature, or one 2-D number tensor.
    Their names are checked first (a request meant for another model is told so), then each
    tensor, then their rows, then the cells (``parse_columns``)."""
    parser = served.rows
    names = [_input_name(item, index) for index, item in enumerate(raw)]
    if len(names) == 1 and names[0] not in parser.keys:
        return _matrix_tensor(_tensor(raw[0], names[0]), served, max_rows)
    given: set[str] = set()
    for name in names:
        if name not in parser.keys:
            raise OipError(400, f"unknown input {name!r}: {_expected_inputs(served)}")
        if name in given:
            raise OipError(400, f"input {name!r} is given twice")
        given.add(name)
    for name in parser.features:
        if name not in given:
            raise OipError(400, f"missing input {name!r}: {_expected_inputs(served)}")
    tensors = [_tensor(item, name) for item, name in zip(raw, names, strict=True)]
    seen = {tensor.name: tensor for tensor in tensors}
    first = tensors[0]
    rows = _column_rows(first)
    for tensor in tensors[1:]:
        if _column_rows(tensor) != rows:
            raise OipError(
                400,
                f"input {tensor.name!r} has {_column_rows(tensor)} rows and input "
                f"{first.name!r} has {rows}: every input holds one element per row",
            )
    _check_rows(rows, first.name, max_rows)
    columns = {name: seen[name].cells for name in parser.features}

    def locate(index: int, name: str) -> Loc:
        return ["inputs", name, index]

    return _parse(columns, rows, served, locate)


def _column_rows(tensor: _Tensor) -> int:
    """The rows of a per-feature tensor: shape [n] or [n, 1]."""
    if len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1):
        return tensor.shape[0]
    raise OipError(
        400,
        f"input {tensor.name!r}: shape {list(tensor.shape)} is not [n] or [n, 1] "
        "(one tensor per feature, one element per row)",
    )


def _matrix_tensor(tensor: _Tensor, served: Served, max_rows: int) -> np.ndarray:
    """One ``[n, features]`` number tensor of an all-numeric schema, rows in feature order."""
    parser = served.rows
    width = len(parser.features)
    if not parser.all_numeric:
        raise OipError(
            400,
            f"unknown input {tensor.name!r}: {_expected_inputs(served)} (a single 2-D tensor "
            "is taken only when every feature is numeric)",
        )
    if tensor.datatype not in _NUMBERS:
        raise OipError(
            400, f"input {tensor.name!r}: a 2-D tensor of rows holds numbers, not {tensor.datatype}"
        )
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise OipError(
            400,
            f"input {tensor.name!r}: shape {list(tensor.shape)} is not [n, {width}]: a single "
            f"tensor holds rows of the {width} features in order, or send one tensor per feature "
            f"({', '.join(parser.features)})",
        )
    rows = tensor.shape[0]
    _check_rows(rows, tensor.name, max_rows)
    columns = {name: tensor.cells[j::width] for j, name in enumerate(parser.features)}

    def locate(index: int, name: str) -> Loc:
        return ["inputs", tensor.name, index, name]

    return _parse(columns, rows, served, locate)


def _check_rows(rows: int, name: str, max_rows: int) -> None:
    if rows == 0:
        raise OipError(400, f"input {name!r} has no rows")
    if rows > max_rows:
        raise OipError(413, f"a batch of {rows} rows exceeds the limit of {max_rows} rows")


def _expected_inputs(served: Served) -> str:
    features = served.rows.features
    text = (
        f"model {served.schema.name!r} takes one tensor per feature, named after it: "
        f"{', '.join(features)}"
    )
    if served.rows.all_numeric:
        text += f"; or one [n, {len(features)}] number tensor of rows"
    return text


def _parse(columns: dict[str, list[Any]], rows: int, served: Served, locate: Locate) -> np.ndarray:
    """The shared check of every request's cells (``validation.parse_columns``), its error
    said in the protocol's words. NaN (only a float tensor holds one) is a missing cell where the
    feature allows one, as null is; elsewhere it stays the non-finite number it is."""
    for column in served.schema.columns:
        cells = columns[column.name]
        if column.missing and any(map(_is_nan, cells)):
            columns[column.name] = [None if _is_nan(cell) else cell for cell in cells]
    try:
        return parse_columns(columns, rows, served.rows, locate)
    except InputError as exc:
        _refuse(exc)


def _is_nan(cell: Any) -> bool:
    return type(cell) is float and math.isnan(cell)


def _refuse(exc: InputError) -> NoReturn:
    loc = exc.loc
    if len(loc) == 3:
        where = f"input {loc[1]!r}, element {loc[2]}"
    else:  # a 2-D tensor's cell: ["inputs", tensor, row, feature]
        where = f"input {loc[1]!r}, row {loc[2]}, feature {loc[3]!r}"
    raise OipError(400, f"{where}: {exc.msg}") from None


# ----- the routes ---------------------------------------------------------------------------


class _OipRoute(APIRoute):
    """A route whose ``OipError`` and model faults are answered in the protocol's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except OipError as exc:
                return error_response(exc.status_code, exc.message)
            except ModelOutputError as exc:
                logger.opt(exception=exc).error("{} {}: {}", request.method, request.url.path, exc)
                return error_response(500, str(exc))

        return guarded


def oip_router(
    settings: ServiceSettings,
    store: ModelStore,
    batcher: Batcher,
    answer: AnswerRows,
    inline_parse_bytes: int = 16_384,
) -> APIRouter:
    """The protocol's routes around ``store``; ``answer`` is the app's prediction path (the one
    ``/predict`` takes). Bodies up to ``inline_parse_bytes`` are parsed on the event loop, larger
    ones in the threadpool (as ``/predict`` does)."""
    router = APIRouter(prefix=PREFIX, route_class=_OipRoute, include_in_schema=False)

    def resolve(name: str, version: str | None) -> Served:
        served = store.current()
        if served is None:
            raise OipError(503, NO_MODEL)
        if name != served.schema.name:
            raise OipError(
                404, f"unknown model {name!r}: this server serves {served.schema.name!r}"
            )
        if version is not None and version != served.version:
            raise OipError(
                404,
                f"model {name!r} has no version {version!r} here: it serves {served.version}",
            )
        return served

    @router.get("/health/live")
    async def server_live() -> dict[str, Any]:
        return {"live": True}

    @router.get("/health/ready")
    async def server_ready() -> Response:
        ready = store.current() is not None
        return JSONResponse({"ready": ready}, status_code=200 if ready else 400)

    @router.get("")
    async def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": []}

    @router.get("/models/{name}")
    async def model(name: str) -> dict[str, Any]:
        return model_metadata(resolve(name, None))

    @router.get("/models/{name}/versions/{version}")
    async def model_version(name: str, version: str) -> dict[str, Any]:
        return model_metadata(resolve(name, version))

    def readiness(name: str, version: str | None) -> Response:
        if store.current() is None:
            return JSONResponse({"name": name, "ready": False}, status_code=400)
        resolve(name, version)
        return JSONResponse({"name": name, "ready": True})

    @router.get("/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        return readiness(name, None)

    @router.get("/models/{name}/versions/{version}/ready")
    async def model_version_ready(name: str, version: str) -> Response:
        return readiness(name, version)

    async def infer(request: Request, name: str, version: str | None) -> Response:
        if "inference-header-content-length" in request.headers:
            raise OipError(400, BINARY_REFUSED)
        served = resolve(name, version)  # one snapshot for the whole request, as /predict
        batcher.arriving()
        try:
            body = await request.body()  # bounded by BodyLimitMiddleware
            if len(body) <= inline_parse_bytes:
                decoded = parse_infer_body(body, served, settings.max_batch_rows)
            else:
                decoded = await run_in_threadpool(
                    parse_infer_body, body, served, settings.max_batch_rows
                )
        except BaseException:
            batcher.abandoned()
            raise
        header = request.headers.get("x-request-id")
        wanted = header if header is not None and valid_request_id(header) else decoded.id
        answered = await answer(served, decoded.features, wanted)
        echoed = decoded.id if decoded.id is not None else answered.request_id
        return JSONResponse(
            infer_response(served, answered.answer, decoded.outputs, echoed),
            headers={"X-Request-ID": answered.request_id},
        )

    @router.post("/models/{name}/infer")
    async def model_infer(request: Request, name: str) -> Response:
        return await infer(request, name, None)

    @router.post("/models/{name}/versions/{version}/infer")
    async def model_version_infer(request: Request, name: str, version: str) -> Response:
        return await infer(request, name, version)

    return router


# ----- errors answered before a route runs ---------------------------------------------------


class OipErrorBodies:
    """ASGI middleware: under ``/v2``, an error answered as ``{"detail": ...}`` (an unknown path,
    a wrong method, the body limiter's 400 and 413) is sent as the protocol's ``{"error": ...}``.

    Only a JSON error response with a Content-Length is rewritten, once its whole body has
    passed (a response that goes on after it, as the limiter's early 413 does while it drains the
    request, goes on unchanged); the status and the other headers are kept.
    """

    def __init__(self, app: ASGIApp, prefix: str = PREFIX) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        expected = 0
        chunks: list[bytes] = []

        async def rewriting_send(message: Message) -> None:
            nonlocal held, expected
            if message["type"] == "http.response.start":
                length = _error_json_length(message)
                if length is None:
                    await send(message)
                    return
                held, expected = message, length
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body", False))
            body = b"".join(chunks)
            if more and len(body) < expected:
                return
            start, held = held, None
            rewritten = _as_error_body(body)
            if rewritten is not None:
                body = rewritten
                start = {**start, "headers": _with_length(start["headers"], len(body))}
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": more})

        await self.app(scope, receive, rewriting_send)


def _error_json_length(start: Message) -> int | None:
    """The Content-Length of a JSON error response, else None (not one to rewrite)."""
    if int(start["status"]) < 400:
        return None
    headers = {key.lower(): value for key, value in start.get("headers", [])}
    if not headers.get(b"content-type", b"").startswith(b"application/json"):
        return None
    length = headers.get(b"content-length", b"")
    return int(length) if length.isdigit() else None


def _as_error_body(body: bytes) -> bytes | None:
    """``{"detail": ...}`` as ``{"error": "..."}``; None for any other body."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict) or "detail" not in document or "error" in document:
        return None
    detail = document["detail"]
    if isinstance(detail, list):  # FastAPI's validation errors
        message = "; ".join(
            f"{'.'.join(map(str, item.get('loc', [])))}: {item.get('msg', '')}"
            if isinstance(item, dict)
            else str(item)
            for item in detail
        )
    else:
        message = str(detail)
    return json.dumps({"error": message}).encode()


def _with_length(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    kept = [(key, value) for key, value in headers if key.lower() != b"content-length"]
    return [*kept, (b"content-length", str(length).encode())]
