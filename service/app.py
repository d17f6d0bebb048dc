"""The model service's FastAPI app: ``create_app(settings, store)``, with no import-time state.

Routes::

    POST /predict   one object of features, or {"instances": [...]}
                    -> 200 {"predictions": [float, ...], "model_version": "v3"}
    GET  /health    liveness: 200 {"status": "ok", "pid": ..., "worker": ...} whenever we answer
    GET  /ready     200 when a smoke-tested model is served, else 503 with the reason
    GET  /model     200 {"version", "sha256", "metrics"}, 503 when no model is served
    GET  /metrics   Prometheus exposition of this app's own registry
    GET  /openapi.json
                    the schema; /docs and /redoc are off because they load Swagger UI / ReDoc
                    from a CDN, and the VM may have no internet

Error bodies follow FastAPI: 422 is ``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``;
400, 413, 500 and 503 are ``{"detail": "a sentence"}``. Bad input never yields a 500: a 500 means
the served model itself misbehaved (raised, or returned a non-finite or misshapen output).

Parsing and prediction run in the threadpool, so the event loop stays free for ``/health`` while
a large batch is being predicted.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from loguru import logger
from starlette.concurrency import run_in_threadpool

from service.batching import Batcher, ModelOutputError
from service.body_limit import BodyLimitMiddleware
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.model_store import ModelStore
from service.schemas import (
    HealthResponse,
    MessageErrorResponse,
    ModelResponse,
    PredictResponse,
    ReadyResponse,
    ValidationErrorResponse,
    predict_request_body,
)
from service.settings import ServiceSettings
from service.validation import InputError, parse_predict_body

NO_MODEL = "no model loaded"
INLINE_PARSE_BYTES = 16_384  # about 70 rows: parsed on the event loop; larger bodies on a thread


def create_app(settings: ServiceSettings, store: ModelStore) -> FastAPI:
    """Build one worker's app around ``store``; each call has its own metrics registry."""
    metrics = ServiceMetrics()
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
    app.add_exception_handler(InputError, _input_error_handler)
    app.add_exception_handler(ModelOutputError, _model_output_error_handler)

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
        loaded = store.current()  # one snapshot for the whole request, even if a swap happens
        if loaded is None:
            raise HTTPException(status_code=503, detail=NO_MODEL)
        batcher.arriving()
        try:
            body = await request.body()  # bounded by BodyLimitMiddleware
            if len(body) <= INLINE_PARSE_BYTES:  # cheaper than a hop to a thread
                features = parse_predict_body(body, settings.max_batch_rows)
            else:  # a big batch: keep the event loop free for the other requests meanwhile
                features = await run_in_threadpool(
                    parse_predict_body, body, settings.max_batch_rows
                )
        except BaseException:
            batcher.abandoned()
            raise
        predictions = await batcher.submit(loaded, features)
        metrics.predicted_rows.inc(len(predictions))
        return JSONResponse({"predictions": predictions.tolist(), "model_version": loaded.version})

    @app.get("/health", response_model=HealthResponse)
    async def health() -> dict[str, Any]:
        """Liveness: answers 200 whenever the process can answer at all."""
        return {"status": "ok", "pid": os.getpid(), "worker": settings.worker_id}

    @app.get(
        "/ready",
        response_model=ReadyResponse,
        responses={503: {"model": MessageErrorResponse, "description": "Not ready"}},
    )
    async def ready() -> dict[str, Any]:
        """Readiness: 200 with the served version, or 503 saying why not."""
        loaded = store.current()
        if loaded is None:
            reason = NO_MODEL if store.last_error is None else f"{NO_MODEL}: {store.last_error}"
            raise HTTPException(status_code=503, detail=reason)
        return {"status": "ready", "model_version": loaded.version}

    @app.get(
        "/model",
        response_model=ModelResponse,
        responses={503: {"model": MessageErrorResponse, "description": "No model loaded"}},
    )
    async def model() -> dict[str, Any]:
        """The served model's version, artifact sha256 and training metrics."""
        loaded = store.current()
        if loaded is None:
            raise HTTPException(status_code=503, detail=NO_MODEL)
        return {"version": loaded.version, "sha256": loaded.sha256, "metrics": loaded.metrics}

    @app.get("/metrics", response_class=Response)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus text (or OpenMetrics, if the scraper asks) of this app's registry."""
        metrics.set_model(store.current())
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(content=body, headers={"Content-Type": content_type})

    # Added after the routes so the metrics know their paths; the last added is outermost, so
    # the metrics also count the body limiter's 400s and 413s.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    known_paths = frozenset(route.path for route in app.routes if isinstance(route, APIRoute))
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=known_paths)
    return app


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
