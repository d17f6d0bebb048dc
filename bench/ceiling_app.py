"""The ceiling of bench/peers.py: selfheal's HTTP stack answering a route that does no work.

FastAPI on uvicorn, as selfheal's workers run them (the same versions, from bench/.venv; access
log off), ``POST /predict`` reading the whole body and answering a constant JSON prediction: no
parsing, no validation, no model. ``uvicorn bench.ceiling_app:app --workers 2`` gives it the same
worker count. What selfheal serves on top of this is its own request path: parsing and validating
the rows, the batcher, the model (or its flattened trees), the capture and the metrics.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

ANSWER = b'{"predictions": [0.0], "model_version": "ceiling"}'

app = FastAPI(title="no-work ceiling")


@app.post("/predict")
async def predict(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")
