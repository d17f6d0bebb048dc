"""What request capture and metrics cost a worker, in CPU per request, measured in one process.

The end-to-end comparison in bench/serving.py (selfheal against the same daemon with
``service.observe = false``, under wrk) measures throughput, which on a shared 2-core machine moves
by more than the 5% it is meant to resolve. This measures the cost itself: the same worker app
(``service.app.create_app``) built twice around one loaded model, with ``observe`` on and off,
driven in-process through httpx's ASGI transport (no sockets, no uvicorn), and the CPU time of this
process (``time.process_time``: every thread, so the prediction thread too) per request. Blocks of
requests alternate between the two apps; medians over the blocks.

Without uvicorn's HTTP parsing the per-request total is smaller than a real worker's, so the share
reported is an upper bound of the share in a served request; the absolute microseconds are what
capture and the metrics middleware add.

    python3 -m bench.observe_cost [--blocks 15] [--json bench/out/observe_cost.json]

Runs in the project's venv (.venv): it needs nothing beyond the project.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the daemon runs its workers

BODIES = {"1 row": 1, "1000 rows": 1000}
PER_BLOCK = {"1 row": 400, "1000 rows": 20}
_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


def bodies() -> dict[str, bytes]:
    from selfheal_daemon.defaults import FEATURES
    from selfheal_daemon.model.features import load_dataset

    rows = load_dataset(None)[list(FEATURES)].dropna().sample(n=1000, random_state=0)
    records = rows.to_dict(orient="records")
    return {
        "1 row": json.dumps(records[0]).encode(),
        "1000 rows": json.dumps({"instances": records}).encode(),
    }


async def block(app: Any, body: bytes, n: int) -> tuple[float, float]:
    """CPU seconds and wall seconds for ``n`` sequential requests."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            response = await client.post("/predict", content=body, headers=headers)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        return time.process_time() - cpu, time.perf_counter() - wall


def components() -> dict[str, float]:
    """Microseconds per call of what observing adds to one request, each timed alone (best of 5
    repeats of 20,000 calls): little affected by other load on the machine."""
    import timeit

    import numpy as np

    from service.capture import Capture
    from service.metrics import MetricsMiddleware, ServiceMetrics

    metrics = ServiceMetrics()
    middleware = MetricsMiddleware(app=None, metrics=metrics)  # type: ignore[arg-type]
    capture = Capture(20_000, 20_000)
    x, y = np.zeros((1, 8)), np.zeros(1)

    def record_metrics() -> None:
        middleware._record("/predict", 200, 0.001)
        metrics.predicted_rows.inc(1)

    def record_capture() -> None:
        capture.record_prediction("0123456789ab-1", "v1", x, y)

    calls = 20_000
    return {
        name: min(timeit.repeat(func, number=calls, repeat=5)) / calls * 1e6
        for name, func in (("metrics", record_metrics), ("capture", record_capture))
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=15, help="blocks per app and body")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from selfheal_daemon.config import parse_config
    from selfheal_daemon.model.bootstrap import ensure_model
    from selfheal_daemon.model.registry import ModelRegistry
    from service.app import create_app
    from service.model_store import ModelStore
    from service.settings import ServiceSettings

    with tempfile.TemporaryDirectory(prefix="selfheal-observe-") as tmp:
        cfg = parse_config({"state_dir": tmp})
        progress("training the model to serve (bundled data, default settings) ...")
        registry = ModelRegistry(cfg.registry_dir)
        version = ensure_model(cfg, registry, lambda m: None)
        store = ModelStore()
        store.load(registry, version)
        progress(f"serving {version}; small batches use {store.predict_path}")
        apps = {
            "observed": create_app(ServiceSettings(observe=True), store),
            "unobserved": create_app(ServiceSettings(observe=False), store),
        }
        payloads = bodies()
        cpu: dict[str, dict[str, list[float]]] = {b: {a: [] for a in apps} for b in BODIES}

        async def run() -> None:
            for name, payload in payloads.items():
                for app in apps.values():  # warm-up: first calls pay lazy imports and caches
                    await block(app, payload, max(5, PER_BLOCK[name] // 10))
                for i in range(args.blocks):
                    order = list(apps) if i % 2 == 0 else list(reversed(apps))
                    for label in order:
                        used, _wall = await block(apps[label], payload, PER_BLOCK[name])
                        cpu[name][label].append(used / PER_BLOCK[name] * 1e6)
                    progress(
                        f"{name}, block {i + 1}/{args.blocks}: "
                        + ", ".join(f"{a} {cpu[name][a][-1]:,.0f} us" for a in apps)
                    )

        asyncio.run(run())

    results: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d', time.gmtime())}",
        "blocks": args.blocks,
        "requests_per_block": PER_BLOCK,
        "cpu_us_per_request": cpu,
    }
    print("\n| body | observed, CPU us/request | unobserved | added by capture and metrics |")
    print("| --- | ---: | ---: | ---: |")
    for name in BODIES:
        on = statistics.median(cpu[name]["observed"])
        off = statistics.median(cpu[name]["unobserved"])
        added = on - off
        results[name] = {"observed_us": on, "unobserved_us": off, "added_us": added}
        print(f"| {name} | {on:,.0f} | {off:,.0f} | {added:+,.0f} us ({added / off:+.1%}) |")
    parts = components()
    results["components_us"] = parts
    print(
        "\ntimed alone: the metrics middleware's record and the row counter "
        f"{parts['metrics']:.1f} us, the capture of one request {parts['capture']:.1f} us"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
