"""Response models and the OpenAPI description of the hand-parsed ``/predict`` body.

The response models document the API and type the answers; handlers serialise plain dicts with
the same shape (no per-request pydantic validation on the hot path).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from selfheal_daemon.features import FEATURES


class PredictResponse(BaseModel):
    """Predictions in request row order (units of the target, $100,000 for California)."""

    predictions: list[float]
    model_version: str


class HealthResponse(BaseModel):
    """Liveness: the process answers."""

    status: str
    pid: int
    worker: int


class ReadyResponse(BaseModel):
    """Readiness: a smoke-tested model is served."""

    status: str
    model_version: str


class ModelResponse(BaseModel):
    """The served model's identity and its training-time metrics."""

    version: str
    sha256: str
    metrics: dict[str, float]


class ErrorItem(BaseModel):
    """One input problem: where (FastAPI-style ``loc``), what, and its machine-readable type."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """422: the first problem found in the request body."""

    detail: list[ErrorItem]


class MessageErrorResponse(BaseModel):
    """413, 503 (and 500 for a model fault): a sentence saying why."""

    detail: str


def predict_request_body(max_rows: int) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of ``POST /predict``: one row, or up to ``max_rows`` rows."""
    row = {
        "title": "Row",
        "type": "object",
        "properties": {name: {"type": "number"} for name in FEATURES},
        "required": list(FEATURES),
        "additionalProperties": False,
    }
    batch = {
        "title": "Batch",
        "type": "object",
        "properties": {
            "instances": {"type": "array", "items": row, "minItems": 1, "maxItems": max_rows}
        },
        "required": ["instances"],
        "additionalProperties": False,
    }
    return {
        "required": True,
        "description": "JSON whatever the Content-Type header says.",
        "content": {"application/json": {"schema": {"oneOf": [row, batch]}}},
    }
