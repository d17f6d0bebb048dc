"""``selfheal drill KIND``: inject a real fault into the running system, on the daemon's side.

Each drill names the incident it causes (issue and scope) before it injects the fault, so the audit
marks that incident ``drill: true``; the CLI then follows the trail to print detection time and
time to recovery. The faults are the real ones:

- ``crash``: SIGKILL to a ready worker;
- ``hang``: SIGSTOP to a ready worker (it stops answering its liveness probe);
- ``leak``: SIGUSR2 to a ready worker until its RSS passes ``resources.max_rss_mb`` (the service
  keeps 64 MiB more per signal);
- ``bad-model``: a new version of the same task whose every prediction (and probability) is NaN,
  deployed (it fails its smoke test);
- ``corrupt-artifact``: a copy of the serving model registered, then its bytes damaged on disk, and
  deployed (the checksum refuses it).
- ``drift``: a labelled batch of shifted rows of the model's own data dropped into
  ``data/incoming/``, and as many shifted rows sent to ``/predict`` on the service's port; the
  monitor detects it at its next passes, retrains, gates and deploys. The bundled model's
  districts move north-east and grow richer and more crowded; a model of your own has its most
  important numeric features scaled and moved, and its most important categorical feature
  concentrated on its rarest category.

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
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psutil
from loguru import logger

from selfheal_daemon.config import Config
from selfheal_daemon.model.broken import NaNModel
from selfheal_daemon.model.features import load_base
from selfheal_daemon.model.quality_io import write_table
from selfheal_daemon.model.registry import MODEL_FILE, ModelRegistry
from selfheal_daemon.model.schema import Schema
from selfheal_daemon.supervision.pool import WorkerHandle

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
    scope: int | str | None  # a worker slot, ``replica:<id>`` on Ray, or the whole service
    inject: Callable[[], dict[str, Any]]


def nan_model(schema: Schema) -> NaNModel:
    """A model of the schema's task whose every prediction and probability is NaN."""
    return NaNModel(list(schema.classes))


def register_bad_version(registry: ModelRegistry, serving: str, *, corrupt: bool) -> str:
    """Register the drill's broken version beside ``serving`` and return its name."""
    reference = registry.load_reference(serving)
    info = registry.info(serving)
    if corrupt:
        model: Any = registry.load(serving).model
        origin = "drill: corrupt-artifact (bytes damaged after registration)"
    else:
        model = nan_model(info.schema)
        origin = "drill: bad-model (predicts NaN)"
    version = registry.register(
        model,
        metrics=info.metrics,
        reference=reference,
        data_fingerprint="drill",
        data_rows=0,
        parent=serving,
        origin=origin,
        extra={"schema": info.schema.to_dict()},
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


@dataclass(frozen=True)
class Shift:
    """The drill's drift: numeric features scaled and moved, categorical ones concentrated."""

    scale: dict[str, float]
    offset: dict[str, float]
    concentrate: dict[str, str]  # categorical feature -> the category every row takes

    def describe(self) -> str:
        scaled = [f"{k} x{v:g}" for k, v in self.scale.items()]
        moved = [f"{k} {v:+g}" for k, v in self.offset.items()]
        made = [f"{k} = {v!r}" for k, v in self.concentrate.items()]
        return ", ".join(scaled + moved + made)


# The bundled model's districts move north-east and grow richer and more crowded: the features
# the model leans on most (location, income) shift, so the importance-weighted share is high.
CALIFORNIA_SHIFT = Shift(
    scale={"MedInc": 1.5, "AveOccup": 1.4},
    offset={"Latitude": 1.0, "Longitude": 1.0},
    concentrate={},
)


def plan_shift(schema: Schema, importance: dict[str, float], base: pd.DataFrame) -> Shift:
    """The shift for a model of your own: its two most important numeric features scaled by 1.5
    and moved by one standard deviation, its most important categorical feature concentrated on
    its rarest category in ``base``. The bundled model keeps its own shift."""
    if (
        schema.features == Schema.california().features
        and schema.target == Schema.california().target
    ):
        return CALIFORNIA_SHIFT
    ranked = sorted(schema.columns, key=lambda c: -float(importance.get(c.name, 0.0)))
    numeric = [c.name for c in ranked if c.is_numeric][:2]
    categorical = [c.name for c in ranked if not c.is_numeric][:1]
    scale = dict.fromkeys(numeric, 1.5)
    offset = {}
    for name in numeric:
        spread = float(pd.to_numeric(base[name], errors="coerce").std())
        offset[name] = round(spread if np.isfinite(spread) and spread > 0 else 1.0, 3)
    concentrate = {}
    for name in categorical:
        counts = base[name].dropna().astype(str).str.strip().value_counts()
        if len(counts) > 1:
            concentrate[name] = str(counts.index[-1])
    return Shift(scale, offset, concentrate)


def drifted_frame(
    base: pd.DataFrame, rows: int, seed: int, shift: Shift = CALIFORNIA_SHIFT
) -> pd.DataFrame:
    """``rows`` complete rows of ``base``, features shifted by the drill's drift (labels kept)."""
    complete = base.dropna()
    if len(complete) < max(1, len(base) // 10):
        complete = base  # most rows have a gap somewhere (user data): keep them, gaps and all
    sample = complete.sample(n=rows, replace=len(complete) < rows, random_state=seed)
    out = sample.reset_index(drop=True).copy()
    for name, factor in shift.scale.items():
        out[name] = pd.to_numeric(out[name], errors="coerce") * factor
    for name, offset in shift.offset.items():
        out[name] = out[name] + offset
    for name, category in shift.concentrate.items():
        out[name] = category
    return out


def describe_shift(shift: Shift = CALIFORNIA_SHIFT) -> str:
    return shift.describe()


def inject_drift(
    cfg: Config,
    rows: int = DRIFT_ROWS,
    seed: int | None = None,
    registry: ModelRegistry | None = None,
) -> dict[str, Any]:
    """Drop a drifted labelled batch into ``data/incoming/`` and send as many drifted requests."""
    seed = int(time.time()) if seed is None else seed
    base = load_base(cfg)
    registry = registry or ModelRegistry(cfg.registry_dir)
    serving = registry.alias("current")
    info = registry.info(serving) if serving else None
    schema = info.schema if info is not None else Schema.california()
    shift = plan_shift(schema, (info.meta.get("importance") or {}) if info else {}, base)
    frame = drifted_frame(base[[*schema.features, schema.target]], rows, seed, shift)
    cfg.incoming_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = cfg.incoming_dir / f"drill-drift-{stamp}.csv"
    write_table(frame, path)
    url = f"http://{cfg.service.host}:{cfg.service.port}/predict"
    batch = min(cfg.service.max_batch_rows, 500)
    instances = json.loads(frame[list(schema.features)].to_json(orient="records"))

    def send() -> None:
        with httpx.Client(timeout=10.0) as client:
            for start in range(0, len(instances), batch):
                body = json.dumps({"instances": instances[start : start + batch]})
                try:
                    client.post(url, content=body, headers={"content-type": "application/json"})
                except httpx.HTTPError as exc:
                    logger.warning("drift drill: a request failed: {}", exc)

    threading.Thread(target=send, name="drill-drift", daemon=True).start()
    return {"incoming": path.name, "rows": rows, "requests_rows": rows, "shift": shift.describe()}
