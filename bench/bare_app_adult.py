"""The Adult baseline of bench/serving.py: the FastAPI app a user would write for the Adult model.

A pydantic model of the 14 columns as the CSV names them (numbers; text for the categories;
``Optional`` where the data has ``?``, sent as ``null``), ``POST /predict`` taking one object or
``{"instances": [...]}``, a plain ``def`` endpoint (FastAPI runs it in its threadpool) that builds
a pandas DataFrame from the request and calls ``model.predict_proba`` on it; the predicted class is
the most probable one (what ``predict`` answers; calling both would predict twice). No capture, no
metrics, no batching, no body limits; OpenMP threads are left at their default. The model is the
registry's artifact itself, loaded the way a user loads a scikit-learn model, ``joblib.load``:

    BARE_APP_MODEL=STATE/registry/v1/model.joblib \\
        uvicorn bench.bare_app_adult:app --workers 2 --host 127.0.0.1 --port 8124

Each process prints one line to stderr once its model is loaded (the benchmark waits for it and
records the OpenMP thread count); that line is the only thing here a user's app would not have.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field


class Person(BaseModel):
    """One row of the Adult census data, its columns named as in the CSV."""

    model_config = ConfigDict(populate_by_name=True)

    age: float
    workclass: str | None
    fnlwgt: float
    education: str
    education_num: float = Field(alias="education-num")
    marital_status: str = Field(alias="marital-status")
    occupation: str | None
    relationship: str
    race: str
    sex: str
    capital_gain: float = Field(alias="capital-gain")
    capital_loss: float = Field(alias="capital-loss")
    hours_per_week: float = Field(alias="hours-per-week")
    native_country: str | None = Field(alias="native-country")


class Batch(BaseModel):
    instances: list[Person]


model_path = Path(os.environ["BARE_APP_MODEL"])
model_version = os.environ.get("BARE_APP_VERSION") or model_path.parent.name
model = joblib.load(model_path)
classes = [str(c) for c in model.classes_]
app = FastAPI(title="bare Adult model service")


@app.post("/predict")
def predict(body: Batch | Person) -> dict[str, Any]:
    rows = body.instances if isinstance(body, Batch) else [body]
    frame = pd.DataFrame([row.model_dump(by_alias=True) for row in rows])
    proba = model.predict_proba(frame)
    return {
        "predictions": [classes[i] for i in proba.argmax(axis=1).tolist()],
        "classes": classes,
        "probabilities": proba.tolist(),
        "model_version": model_version,
    }


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
