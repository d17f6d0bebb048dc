"""The baseline for bench/serving.py: the FastAPI app a user would write to serve the same model.

A pydantic model of the eight features, ``POST /predict`` taking one object or
``{"instances": [...]}``, a plain ``def`` endpoint (FastAPI runs it in its threadpool) that calls
``model.predict`` on a numpy array. No capture, no metrics, no batching, no body limits; OpenMP
threads are left at their default. The model is the registry's, loaded with its checksum check:

    BARE_APP_REGISTRY=STATE/registry BARE_APP_VERSION=v1 \\
        uvicorn bench.bare_app:app --workers 2 --host 127.0.0.1 --port 8124

``BARE_APP_VERSION`` defaults to the registry's ``current`` alias. Each process prints one line to
stderr once its model is loaded (the benchmark waits for it and records the OpenMP thread count);
that line is the only thing here a user's app would not have.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

from selfheal_daemon.model.registry import ModelRegistry

COLUMNS = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)


class Features(BaseModel):
    MedInc: float
    HouseAge: float
    AveRooms: float
    AveBedrms: float
    Population: float
    AveOccup: float
    Latitude: float
    Longitude: float


class Batch(BaseModel):
    instances: list[Features]


def _load() -> tuple[Any, str]:
    registry = ModelRegistry(Path(os.environ["BARE_APP_REGISTRY"]))
    version = os.environ.get("BARE_APP_VERSION") or registry.alias("current")
    if version is None:
        raise SystemExit("bare_app: BARE_APP_VERSION is not set and the registry has no current")
    return registry.load(version).model, version


model, model_version = _load()
app = FastAPI(title="bare model service")


@app.post("/predict")
def predict(body: Batch | Features) -> dict[str, Any]:
    rows = body.instances if isinstance(body, Batch) else [body]
    x = np.array([[getattr(row, name) for name in COLUMNS] for row in rows], dtype=np.float64)
    return {"predictions": model.predict(x).tolist(), "model_version": model_version}


def _openmp_threads() -> str:
    """OpenMP threads this process would use (benchmark bookkeeping, not part of the app)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    found = sorted({str(i["num_threads"]) for i in threadpool_info() if i["user_api"] == "openmp"})
    return ",".join(found) or "none loaded"


print(
    f"bare_app ready: pid {os.getpid()}, model {model_version}, "
    f"OpenMP threads {_openmp_threads()}, "
    f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')}",
    file=sys.stderr,
    flush=True,
)
