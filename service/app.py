"""The model service's FastAPI app: ``create_app(settings, store, registry)``, no import-time state.

Public routes (on the shared TCP listener, and on the private socket too)::

    POST /predict   one object of features, or {"instances": [...]}, as the served version's
                    schema takes them (service.validation)
                    -> 200 {"predictions": [float, ...], "model_version": "v3",
                            "request_id": "3f9a1c0b2d4e-17"}
                    a classifier answers its class labels as predictions, and also
                    "classes": [label, ...] and "probabilities": [[p, ...], ...] (one row per
                    instance, in the order of classes).
                    request_id (also the X-Request-ID response header) is the client's
                    X-Request-ID header if it is 1-64 characters of [A-Za-z0-9._:-], else one
                    made here, unique across workers and restarts. The request is captured
                    (encoded rows; predictions as float64, class indices for a classifier) and
                    its unseen categories counted.
    POST /feedback  ground truth: one item or {"items": [item, ...]}; an item is
                    {"request_id": "...", "labels": [y, ...]} (or "label": y), or
                    {"features": {...}, "label": y}, or {"instances": [{...}], "labels": [...]}
                    (features may come with a request_id too). Features are checked as for
                    /predict and predicted now with the served model; labels are numbers for
                    a regression, class labels for a classifier (kept as class indices).
                    -> 202 {"accepted": <labelled rows>}; 503 when no model is served (there is
                    no schema to check the feedback against)
    GET  /health    liveness: 200 {"status": "ok", "pid": ..., "worker": ...} whenever we answer
    GET  /ready     200 when a smoke-tested model is served, else 503 with the reason
    GET  /model     200 {"version", "sha256", "metrics", "schema"} (Schema.to_dict()), 503 when
                    no model is served
    GET  /metrics   Prometheus exposition of this app's own registry
    /v2/...         the Open Inference Protocol (v2): health, server and model metadata, model
                    ready, infer; the same validation, batching, capture and metrics as /predict
                    (service.oip; not in /openapi.json, the protocol's own spec describes it)
    GET  /openapi.json
                    the schema; /docs and /redoc are off because they load Swagger UI / ReDoc
                    from a CDN, and the VM may have no internet

Admin routes, only on the worker's private unix socket (404 on TCP, as for a path that does not
exist, and absent from /openapi.json; see ``on_private_socket``)::

    GET  /admin/capture?after=<seq>&limit=<rows>
                    captured requests and feedback with seq > after (see service.capture):
                    200 {"worker", "pid", "after", "next", "dropped",
                         "predictions": [{"seq", "ts", "request_id", "model_version",
                                          "features": [[floats], ...], "predictions": [...]}],
                         "feedback": [{"seq", "ts", "request_id", "features": [[...]] | null,
                                       "labels": [...], "predictions": [...] | null,
                                       "model_version": str | null}]}
    POST /admin/model  {"version": "v3"}: load, verify, smoke-test and swap in-process (in the
                    threadpool; the loop keeps answering meanwhile)
                    -> 200 {"model_version", "sha256", "previous"}; 409 {"detail": why} and the
                    old model keeps serving (also when the version's schema would break the
                    clients of the served one: "cannot serve model v4: SchemaBreakError: ...");
                    503 when the app was built without a registry

Error bodies follow FastAPI: 422 is ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``;
400, 404, 409, 413, 500 and 503 are ``{"detail": "a sentence"}``. Bad input never yields a 500: a
500 means the served model itself misbehaved (raised, or returned a non-finite or misshapen
output). Feedback is accepted even then (its rows are kept without predictions).

Parsing and prediction run in the threadpool, so the event loop stays free for ``/health`` while
a large batch is being predicted. A small, well-formed ``/predict`` (the usual one) is answered by
``service.fast_path`` around the app, with the route's own functions, without going through
FastAPI's stack; anything else it hands to the route, which answers as described here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from loguru import logger
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from selfheal_daemon import contracts
from service.batching import Batcher, ModelOutputError
from service.body_limit import BodyLimitMiddleware
from service.capture import Capture, RequestIds, iter_slice_json
from service.fast_path import PredictFastPath
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.model_store import ModelSource, ModelStore, Served
from service.oip import Answered, OipErrorBodies, oip_router
from service.predictor import Answer
from service.schemas import (
    FeedbackResponse,
    HealthResponse,
    MessageErrorResponse,
    ModelResponse,
    ModelSwapRequest,
    PredictResponse,
    ReadyResponse,
    ValidationErrorResponse,
    feedback_request_body,
    predict_request_body,
)
from service.settings import ServiceSettings
from service.validation import (
    FeedbackItem,
    InputError,
    parse_feedback_body,
    parse_predict_body,
    valid_request_id,
)

NO_MODEL = "no model loaded"
INLINE_PARSE_BYTES = 16_384  # about 70 rows: parsed on the event loop; larger bodies on a thread


def create_app(
    settings: ServiceSettings, store: ModelStore, registry: ModelSource | None = None
) -> FastAPI:
    """Build one worker's app around ``store``; each call has its own metrics and capture.

    ``registry`` is where ``POST /admin/model`` loads versions from (``ModelRegistry``); without
    one that route answers 503. Build the app in the worker process itself (after a fork), so
    its request-id prefix is its own.
    """
    metrics = ServiceMetrics()
    capture = Capture(settings.capture_rows, settings.feedback_rows)
    metrics.watch_capture(capture.counters)
    request_ids = RequestIds()
    batcher = Batcher(max_rows=settings.batch_max_rows, window_s=settings.batch_window_ms / 1000.0)
    app = FastAPI(
        title="selfheal model service",
        summary="Predictions from the registry's current model.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.metrics = metrics
    app.state.batcher = batcher
    app.state.capture = capture
    app.state.registry = registry
    app.add_exception_handler(InputError, _input_error_handler)
    app.add_exception_handler(ModelOutputError, _model_output_error_handler)
    parts = _Parts(settings, store, registry, metrics, batcher, capture, request_ids)

    async def answer(served: Served, features: np.ndarray, wanted: str | None) -> Answered:
        return await _answer_rows(parts, served, features, wanted)

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses={
            413: {"model": MessageErrorResponse, "description": "Batch or body too large"},
            422: {"model": ValidationErrorResponse, "description": "Invalid input"},
            500: {"model": MessageErrorResponse, "description": "The model misbehaved"},
            503: {"model": MessageErrorResponse, "description": "No model loaded"},
        },
        openapi_extra={"requestBody": predict_request_body(settings.max_batch_rows)},
    )
    async def predict(request: Request) -> Response:
        """Predict one row or a batch with the model served when the request arrived."""
        served = store.current()  # one snapshot for the whole request, even if a swap happens
        if served is None:
            raise HTTPException(status_code=503, detail=NO_MODEL)
        batcher.arriving()
        try:
            body = await request.body()  # bounded by BodyLimitMiddleware
            if len(body) <= INLINE_PARSE_BYTES:  # cheaper than a hop to a thread
                features = parse_predict_body(body, settings.max_batch_rows, served.rows)
            else:  # a big batch: keep the event loop free for the other requests meanwhile
                features = await run_in_threadpool(
                    parse_predict_body, body, settings.max_batch_rows, served.rows
                )
        except BaseException:
            batcher.abandoned()
            raise
        answered = await answer(served, features, request.headers.get("x-request-id"))
        return Response(
            answer_json(served, answered.answer, answered.request_id),
            media_type="application/json",
            headers={"X-Request-ID": answered.request_id},
        )

    app.include_router(_probe_router(parts))
    app.include_router(oip_router(settings, store, batcher, answer, INLINE_PARSE_BYTES))
    app.include_router(_feedback_router(parts))
    app.include_router(_admin_router(parts))

    # Added after the routes so the metrics know their paths; the last added is outermost, so
    # the metrics also count the body limiter's 400s and 413s, and the admin guard's 404s (as
    # "unmatched": admin paths are not known paths to a request from TCP).
    app.add_middleware(PrivateOnlyMiddleware, prefix=contracts.ADMIN_PREFIX)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(OipErrorBodies)  # {"detail"} -> {"error"} under /v2, the limiter's too
    known_paths = frozenset(
        route.path
        for route in app.routes
        if isinstance(route, APIRoute) and not _under(route.path, contracts.ADMIN_PREFIX)
    )
    if settings.observe:
        app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=known_paths)
    app.add_middleware(  # outermost: what it answers skips every layer above (service.fast_path)
        PredictFastPath,
        store=store,
        batcher=batcher,
        answer=answer,
        encode=answer_json,
        on_model_error=_model_output_error_handler,
        max_rows=settings.max_batch_rows,
        max_body_bytes=settings.max_body_bytes,
        small_body_bytes=INLINE_PARSE_BYTES,
        metrics=metrics if settings.observe else None,
    )
    _describe_served_schema(app, store, settings.max_batch_rows)
    return app


async def _answer_rows(
    parts: _Parts, served: Served, features: np.ndarray, wanted: str | None
) -> Answered:
    """Predict validated rows through the batcher, then capture and count them: what /predict
    and the Open Inference Protocol's infer share. The request id is ``wanted`` when it is a
    valid one (``valid_request_id``), else one made here."""
    answer = await parts.batcher.submit(served, features)
    request_id = wanted if wanted is not None and valid_request_id(wanted) else None
    if request_id is None:
        request_id = parts.request_ids.next()
    if parts.settings.observe:
        parts.capture.record_prediction(request_id, served.version, features, answer.values)
        parts.metrics.predicted_rows.inc(len(answer.values))
        if served.rows.categorical.size:
            parts.metrics.count_unseen(served.rows.unseen_counts(features))
    return Answered(answer, request_id)


def answer_json(served: Served, answer: Answer, request_id: str) -> bytes:
    """The /predict answer as JSON bytes (orjson: 19 us for an answer of a thousand floats where
    ``json.dumps`` takes 540, 0.16 us against 2.9 for one; every value in it is finite,
    ``predict_checked`` saw to that, so orjson's NaN-as-null never arises)."""
    return orjson.dumps(_answer_body(served, answer, request_id))


def _answer_body(served: Served, answer: Answer, request_id: str) -> dict[str, Any]:
    """The /predict answer: values, or a classifier's labels, classes and probabilities."""
    if not served.schema.is_classifier or answer.proba is None:
        return {
            "predictions": answer.values.tolist(),
            "model_version": served.version,
            "request_id": request_id,
        }
    return {
        "predictions": served.class_labels(answer.values),
        "classes": list(served.schema.classes),
        "probabilities": answer.proba.tolist(),
        "model_version": served.version,
        "request_id": request_id,
    }


def _describe_served_schema(app: FastAPI, store: ModelStore, max_rows: int) -> None:
    """Make /openapi.json describe the request bodies of the schema served at the time it is
    asked for (rebuilt once per schema, not per request)."""
    build = app.openapi
    built: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        served = store.current()
        schema = served.schema if served is not None else None
        if built and built["schema"] is schema:
            document: dict[str, Any] = built["document"]
            return document
        app.openapi_schema = None  # FastAPI's own cache: build afresh for this schema
        document = build()
        paths = document.get("paths", {})
        if "/predict" in paths:
            paths["/predict"]["post"]["requestBody"] = predict_request_body(max_rows, schema)
        if "/feedback" in paths:
            paths["/feedback"]["post"]["requestBody"] = feedback_request_body(max_rows, schema)
        built.update(schema=schema, document=document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


@dataclass(frozen=True)
class _Parts:
    """What one app's route handlers share."""

    settings: ServiceSettings
    store: ModelStore
    registry: ModelSource | None
    metrics: ServiceMetrics
    batcher: Batcher
    capture: Capture
    request_ids: RequestIds


def _probe_router(parts: _Parts) -> APIRouter:
    """``/health``, ``/ready``, ``/model`` and ``/metrics``: what the daemon and scrapers poll."""
    router = APIRouter()
    settings, store, metrics = parts.settings, parts.store, parts.metrics

    @router.get(contracts.HEALTH_PATH, response_model=HealthResponse)
    async def health() -> dict[str, Any]:
        """Liveness: answers 200 whenever the process can answer at all."""
        return {"status": "ok", "pid": os.getpid(), "worker": settings.worker_id}

    @router.get(
        contracts.READY_PATH,
        response_model=ReadyResponse,
        responses={503: {"model": MessageErrorResponse, "description": "Not ready"}},
    )
    async def ready() -> dict[str, Any]:
        """Readiness: 200 with the served version, or 503 saying why not."""
        loaded = store.current()
        if loaded is None:
            reason = NO_MODEL if store.last_error is None else f"{NO_MODEL}: {store.last_error}"
            raise HTTPException(status_code=503, detail=reason)
        return {"status": "ready", contracts.READY_VERSION: loaded.version}

    @router.get(
        "/model",
        response_model=ModelResponse,
        responses={503: {"model": MessageErrorResponse, "description": "No model loaded"}},
    )
    async def model() -> dict[str, Any]:
        """The served model's version, artifact sha256, training metrics and schema."""
        served = store.current()
        if served is None:
            raise HTTPException(status_code=503, detail=NO_MODEL)
        return {
            "version": served.version,
            "sha256": served.sha256,
            "metrics": served.metrics,
            "schema": served.schema.to_dict(),
        }

    @router.get("/metrics", response_class=Response)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus text (or OpenMetrics, if the scraper asks) of this app's registry."""
        metrics.set_model(store.current())
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(content=body, headers={"Content-Type": content_type})

    return router


def _feedback_router(parts: _Parts) -> APIRouter:
    """``POST /feedback``: labels kept in the capture's feedback buffer."""
    router = APIRouter()
    settings, capture = parts.settings, parts.capture

    @router.post(
        "/feedback",
        status_code=202,
        response_model=FeedbackResponse,
        responses={
            413: {"model": MessageErrorResponse, "description": "Too many rows or body too large"},
            422: {"model": ValidationErrorResponse, "description": "Invalid input"},
            503: {"model": MessageErrorResponse, "description": "No model loaded"},
        },
        openapi_extra={"requestBody": feedback_request_body(settings.max_batch_rows)},
    )
    async def feedback(request: Request) -> Response:
        """Keep ground truth for the monitor; rows sent with features are predicted now."""
        served = parts.store.current()  # the schema the feedback is read by, and predicted with
        if served is None:
            raise HTTPException(status_code=503, detail=NO_MODEL)
        body = await request.body()  # bounded by BodyLimitMiddleware
        if len(body) <= INLINE_PARSE_BYTES:
            items = parse_feedback_body(body, settings.max_batch_rows, served.rows)
        else:
            items = await run_in_threadpool(
                parse_feedback_body, body, settings.max_batch_rows, served.rows
            )
        predicted = await _predict_feedback(parts, served, items)
        for item, (predictions, version) in zip(items, predicted, strict=True):
            capture.record_feedback(
                item.request_id, item.labels, item.features, predictions, version
            )
        return JSONResponse({"accepted": sum(len(i.labels) for i in items)}, status_code=202)

    return router


async def _predict_feedback(
    parts: _Parts, served: Served, items: list[FeedbackItem]
) -> list[tuple[np.ndarray | None, str | None]]:
    """Each item's predictions (float64: values or class indices) and the version that made
    them, through the batcher (off the event loop); (None, None) for an item without features,
    and for all when the model failed: the labels are worth keeping either way."""
    nothing: list[tuple[np.ndarray | None, str | None]] = [(None, None)] * len(items)
    matrices = [item.features for item in items if item.features is not None]
    if not matrices:
        return nothing
    parts.batcher.arriving()  # submit() counts it off again
    try:
        output = await parts.batcher.submit(
            served, matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
        )
    except ModelOutputError as exc:
        logger.warning("feedback kept without predictions: {}", exc)
        return nothing
    answers: list[tuple[np.ndarray | None, str | None]] = []
    start = 0
    for item in items:
        if item.features is None:
            answers.append((None, None))
            continue
        stop = start + item.features.shape[0]
        answers.append((output.values[start:stop], served.version))
        start = stop
    return answers


def _admin_router(parts: _Parts) -> APIRouter:
    """The daemon's routes; ``PrivateOnlyMiddleware`` hides them from the TCP listener."""
    router = APIRouter(include_in_schema=False)
    settings, store, registry, metrics = parts.settings, parts.store, parts.registry, parts.metrics

    @router.get(contracts.ADMIN_CAPTURE_PATH)
    async def admin_capture(
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int | None, Query(ge=1)] = None,
    ) -> Response:
        """Captured requests and feedback after seq ``after``, at most ``limit`` rows."""

        found = await run_in_threadpool(parts.capture.read, after, limit)
        # Rendered piece by piece in the threadpool: 20,000 rows are a few hundred ms of float
        # formatting that must not hold the event loop (or the GIL) in one go.
        pieces = iter_slice_json(found, settings.worker_id, os.getpid())
        return StreamingResponse(pieces, media_type="application/json")

    @router.post(contracts.ADMIN_MODEL_PATH)
    async def admin_model(swap: ModelSwapRequest) -> dict[str, Any]:
        """Serve another version: load, verify, smoke-test, swap; the old one serves meanwhile."""
        if registry is None:
            raise HTTPException(status_code=503, detail="this worker has no model registry")
        before = store.current()
        try:
            loaded = await run_in_threadpool(store.load, registry, swap.version)
        except Exception as exc:  # any failure to load is the version's, not this request's
            metrics.model_swaps.labels(outcome="failed").inc()
            reason = f"cannot serve model {swap.version}: {type(exc).__name__}: {exc}"
            logger.warning("worker {}: {}", settings.worker_id, reason)
            raise HTTPException(status_code=409, detail=reason) from None
        metrics.model_swaps.labels(outcome="ok").inc()
        previous = before.version if before is not None else None
        logger.info(
            "worker {}: now serving {} (was {})", settings.worker_id, loaded.version, previous
        )
        return {"model_version": loaded.version, "sha256": loaded.sha256, "previous": previous}

    return router


def on_private_socket(scope: Scope) -> bool:
    """True when the request came in on a unix socket: the worker's private one.

    uvicorn fills ``scope["server"]`` from the listening socket's ``getsockname()``: ``(host,
    port)`` for TCP; ``(path, None)`` for a unix socket (uvicorn 0.3x+; ``None`` in older ones,
    and the ASGI spec allows ``[path]``). Only TCP has an integer port, so a request from the
    TCP listener can never pass for private, whatever the client sends.
    """
    server = scope.get("server")
    if server is None:
        return True
    return len(server) < 2 or not isinstance(server[1], int)


class PrivateOnlyMiddleware:
    """ASGI middleware: paths under ``prefix`` exist only on the private socket.

    Anywhere else they get exactly the 404 of a path that does not exist, whatever the method.
    """

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and _under(scope["path"], self.prefix)
            and not on_private_socket(scope)
        ):
            await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


async def _input_error_handler(request: Request, exc: Exception) -> Response:
    """422 as FastAPI's list of errors; 413 (batch over the row limit) as a sentence."""
    if not isinstance(exc, InputError):  # registered for InputError only
        raise exc
    if exc.status_code == 422:
        return JSONResponse({"detail": [exc.as_detail()]}, status_code=422)
    return JSONResponse({"detail": exc.msg}, status_code=exc.status_code)


async def _model_output_error_handler(request: Request, exc: Exception) -> Response:
    """A model fault is a 500 with a sentence for the client; the traceback goes to the log."""
    logger.opt(exception=exc).error("{} {}: {}", request.method, request.url.path, exc)
    return JSONResponse({"detail": str(exc)}, status_code=500)
