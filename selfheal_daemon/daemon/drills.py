"""``selfheal drill KIND``: inject a real fault into the running system, on the daemon's side.

Each drill names the incident it causes (issue and scope) before it injects the fault, so the audit
marks that incident ``drill: true``; the CLI then follows the trail to print detection time and
time to recovery. The faults are the real ones:

- ``crash``: SIGKILL to a ready worker;
- ``hang``: SIGSTOP to a ready worker (it stops answering its liveness probe);
- ``leak``: SIGUSR2 to a ready worker until its RSS passes ``resources.max_rss_mb`` (the service
  keeps 64 MiB more per signal);
- ``bad-model``: a new version whose every prediction is NaN, deployed (it fails its smoke test);
- ``corrupt-artifact``: a copy of the serving model registered, then its bytes damaged on disk, and
  deployed (the checksum refuses it).
- ``drift``: a labelled batch of shifted data (richer, more crowded districts further north-east)
  dropped into ``data/incoming/``, and as many shifted rows sent to ``/predict`` on the service's
  port; the monitor detects it at its next passes, retrains, gates and deploys.

The two model drills leave their version in the registry, marked in its origin.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pandas as pd
import psutil
from loguru import logger

from selfheal_daemon.config import Config
from selfheal_daemon.defaults import FEATURES
from selfheal_daemon.model.features import load_dataset
from selfheal_daemon.model.quality_io import write_table
from selfheal_daemon.model.registry import MODEL_FILE, ModelRegistry
from selfheal_daemon.supervision.pool import WorkerHandle

if TYPE_CHECKING:
    from sklearn.linear_model import LinearRegression

KINDS = ("crash", "hang", "leak", "bad-model", "corrupt-artifact", "drift")
LEAK_STEP_MB = 64
LEAK_MAX_SIGNALS = 256


class DrillRefused(Exception):
    """The drill cannot run in the system's present state (the message says why)."""


@dataclass(frozen=True)
class Plan:
    """What a drill will cause: the incident to mark, and the fault to inject."""

    kind: str
    issue: str
    scope: int | None
    inject: Callable[[], dict[str, Any]]


def nan_model() -> LinearRegression:
    """A fitted-looking regressor whose every prediction is NaN."""
    from sklearn.linear_model import LinearRegression  # only a drill needs it, not every start

    model = LinearRegression()
    model.coef_ = np.full(8, np.nan)
    model.intercept_ = 0.0
    model.n_features_in_ = 8
    return model


def register_bad_version(registry: ModelRegistry, serving: str, *, corrupt: bool) -> str:
    """Register the drill's broken version beside ``serving`` and return its name."""
    reference = registry.load_reference(serving)
    if corrupt:
        model: Any = registry.load(serving).model
        origin = "drill: corrupt-artifact (bytes damaged after registration)"
    else:
        model = nan_model()
        origin = "drill: bad-model (predicts NaN)"
    version = registry.register(
        model,
        metrics=registry.info(serving).metrics,
        reference=reference,
        data_fingerprint="drill",
        data_rows=0,
        parent=serving,
        origin=origin,
    )
    if corrupt:
        path = registry.root / version / MODEL_FILE
        blob = bytearray(path.read_bytes())
        middle = len(blob) // 2
        blob[middle : middle + 64] = bytes(64)
        path.write_bytes(bytes(blob))
    return version


def leak_until_over(handle: WorkerHandle, limit_mb: float) -> threading.Thread:
    """SIGUSR2 one at a time (such signals do not queue) until RSS passes ``limit_mb``."""

    def run() -> None:
        try:
            proc = psutil.Process(handle.pid)
            for _ in range(LEAK_MAX_SIGNALS):
                rss = proc.memory_info().rss / 2**20
                if rss > limit_mb:
                    return
                if not handle.send(signal.SIGUSR2):
                    return
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:
                    if proc.memory_info().rss / 2**20 >= rss + LEAK_STEP_MB * 0.9:
                        break
                    time.sleep(0.02)
        except psutil.Error:
            return  # the worker is gone; the drill's incident is whatever that caused

    thread = threading.Thread(target=run, name="drill-leak", daemon=True)
    thread.start()
    return thread


def pick_worker(ready: list[tuple[int, int]]) -> tuple[int, int]:
    """The lowest ready slot, so that repeated drills are predictable."""
    if not ready:
        raise DrillRefused("no worker is ready; wait until the service is up")
    return min(ready)


def signal_plan(kind: str, worker: int, handle: WorkerHandle, sig: int, issue: str) -> Plan:
    def inject() -> dict[str, Any]:
        if not handle.send(sig):
            raise DrillRefused(f"worker {worker} (pid {handle.pid}) is already gone")
        return {"worker": worker, "pid": handle.pid, "signal": signal.Signals(sig).name}

    return Plan(kind, issue, worker, inject)


def log_injected(kind: str, details: dict[str, Any]) -> None:
    logger.warning("drill {}: fault injected: {}", kind, details)


DRIFT_ROWS = 3000
# The districts move north-east and grow richer and more crowded: the features the model leans on
# most (location, income) shift, so the importance-weighted share of drifted features is high.
DRIFT_SCALE = {"MedInc": 1.5, "AveOccup": 1.4}
DRIFT_OFFSET = {"Latitude": 1.0, "Longitude": 1.0}


def drifted_frame(base: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """``rows`` complete rows of ``base``, features shifted by the drill's drift (labels kept)."""
    complete = base.dropna()
    sample = complete.sample(n=rows, replace=len(complete) < rows, random_state=seed)
    out = sample.reset_index(drop=True).copy()
    for name, factor in DRIFT_SCALE.items():
        out[name] = out[name] * factor
    for name, offset in DRIFT_OFFSET.items():
        out[name] = out[name] + offset
    return out


def describe_shift() -> str:
    scaled = [f"{k} x{v:g}" for k, v in DRIFT_SCALE.items()]
    moved = [f"{k} {v:+g}" for k, v in DRIFT_OFFSET.items()]
    return ", ".join(scaled + moved)


def inject_drift(cfg: Config, rows: int = DRIFT_ROWS, seed: int | None = None) -> dict[str, Any]:
    """Drop a drifted labelled batch into ``data/incoming/`` and send as many drifted requests."""
    seed = int(time.time()) if seed is None else seed
    frame = drifted_frame(load_dataset(cfg.training_data), rows, seed)
    cfg.incoming_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = cfg.incoming_dir / f"drill-drift-{stamp}.csv"
    write_table(frame, path)
    url = f"http://{cfg.service.host}:{cfg.service.port}/predict"
    batch = min(cfg.service.max_batch_rows, 500)
    instances = frame[list(FEATURES)].to_dict(orient="records")

    def send() -> None:
        with httpx.Client(timeout=10.0) as client:
            for start in range(0, len(instances), batch):
                body = json.dumps({"instances": instances[start : start + batch]})
                try:
                    client.post(url, content=body, headers={"content-type": "application/json"})
                except httpx.HTTPError as exc:
                    logger.warning("drift drill: a request failed: {}", exc)

    threading.Thread(target=send, name="drill-drift", daemon=True).start()
    return {"incoming": path.name, "rows": rows, "requests_rows": rows, "shift": describe_shift()}
