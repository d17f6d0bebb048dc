"""The BentoML peer of bench/peers.py: the service a BentoML user writes around the same pipeline.

One ``@bentoml.service`` with ``workers`` processes and one ``@bentoml.api(batchable=True)``
endpoint, ``POST /predict``, whose batch is a 2-D ``np.ndarray`` of rows in feature order
(``{"rows": [[...], ...]}``): BentoML's adaptive batching gathers the rows of concurrent requests
into one call, which builds the DataFrame the pipeline was fitted on (numeric columns as float64,
the rest as text) and answers ``model.predict`` for a regression, ``model.predict_proba`` for a
classifier (the class is the most probable one; asking both would run the pipeline twice).
``max_batch_size`` is 1000 rows, selfheal's ``max_batch_rows``, so that a 1000-row request is one
batch; ``max_latency_ms`` is left at BentoML's default.

Why not ``pd.DataFrame`` as the batch type, which would be the natural signature: in BentoML 1.4.40
its batch size is the frame's ``shape`` (a tuple), the dispatcher fails adding it to an int
("unsupported operand type(s) for +: 'int' and 'tuple'") and every request times out after 60 s.

Configured by environment, as bench/peers.py starts it (``bentoml serve
bench.peer_bentoml:Model`` from the repository root, in bench/.venv-bentoml): ``PEER_MODEL`` the
registry's ``model.joblib``, loaded with ``joblib.load``; ``PEER_FEATURES`` and ``PEER_NUMERIC``
JSON lists of column names; ``PEER_TASK`` ``regression`` or a classifier's task; ``PEER_WORKERS``.
Each worker prints one line to stderr once its model is loaded (the benchmark waits for them).
"""

from __future__ import annotations

import json
import os
import sys

import bentoml
import joblib
import numpy as np
import pandas as pd

FEATURES = json.loads(os.environ["PEER_FEATURES"])
NUMERIC = {name: "float64" for name in json.loads(os.environ["PEER_NUMERIC"])}
REGRESSION = os.environ["PEER_TASK"] == "regression"


@bentoml.service(workers=int(os.environ.get("PEER_WORKERS", "2")))
class Model:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["PEER_MODEL"])
        print(f"peer_bentoml ready: pid {os.getpid()}", file=sys.stderr, flush=True)

    @bentoml.api(batchable=True, max_batch_size=1000)
    def predict(self, rows: np.ndarray) -> np.ndarray:
        frame = pd.DataFrame(rows, columns=FEATURES).astype(NUMERIC)
        if REGRESSION:
            return np.asarray(self.model.predict(frame), dtype=np.float64)
        return np.asarray(self.model.predict_proba(frame), dtype=np.float64)
