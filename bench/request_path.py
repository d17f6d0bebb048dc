"""What one ``POST /predict`` costs a worker's process, its HTTP server taken away.

The service's app is called as uvicorn calls it (ASGI, on a uvloop loop in this process, a
Content-Length and the whole body in one message), ``--concurrency`` one-row requests at a time,
each of the real rows of bench/serving.py's single body, for ``--requests`` requests per run.
Three apps, alternating, ``--runs`` runs each:

- ``selfheal``: ``service.app.create_app`` as a worker builds it (the default service settings,
  the model of ``--model`` loaded and smoke-tested as a worker loads it, capture and metrics on):
  a small well-formed body is answered by ``service.fast_path``;
- ``selfheal, route only``: the same app with its fast path taken out, so that FastAPI's route
  answers every request (what the service did before the fast path);
- ``ceiling``: bench/ceiling_app.py, FastAPI answering a constant without reading the body.

For each: CPU time per request (``time.process_time``, every thread: the event loop and the
batcher's prediction thread) and the event loop's thread alone (``time.thread_time``), in
microseconds, medians over the runs; the batches' mean size shows the batching was the same. No
socket and no uvicorn: bench/peers.py measures the whole server (uvicorn's share is the same for
all three apps here, so the differences are the request path's own).

    python3 -m bench.request_path [--model california|adult] [--runs 5] [--requests 16000]
        [--concurrency 16] [--json bench/out/request_path.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import model_to_serve, progress, write_json
from bench.serving import MODELS, adult_model_to_serve, write_bodies
from bench.venvs import enter_bench_venv

WARMUP_REQUESTS = 1600
APPS = ("selfheal", "selfheal, route only", "ceiling")


def build_apps(model: str, workdir: Path) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """The three apps, the one-row body, and the batchers of the two selfheal apps."""
    import bench.ceiling_app
    from service.app import create_app
    from service.settings import ServiceSettings
    from service.worker import load_store

    state = workdir / "state"
    if model == "adult":
        cfg, version = adult_model_to_serve(state, None)
    else:
        cfg, version = model_to_serve(state, workdir, None)
    bodies, _scripts = write_bodies(workdir, model, cfg)
    store = load_store(cfg.registry_dir, version, "bench")
    if store is None:
        raise RuntimeError(f"model {version} could not be loaded")
    settings = ServiceSettings()
    served = create_app(settings, store)
    route_only = without_fast_path(create_app(settings, store))
    apps = {
        "selfheal": served,
        "selfheal, route only": route_only,
        "ceiling": bench.ceiling_app.app,
    }
    batchers = {"selfheal": served.state.batcher, "selfheal, route only": route_only.state.batcher}
    return apps, bodies["single"], batchers


def without_fast_path(app: Any) -> Any:
    """``app`` (a service app not yet called) with its fast path taken out: the route answers."""
    from service.fast_path import PredictFastPath

    app.user_middleware = [m for m in app.user_middleware if m.cls is not PredictFastPath]
    app.middleware_stack = None  # built on the first call, now without it
    return app


def request_scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def one_request(app: Any, body: bytes) -> None:
    done = False

    async def receive() -> dict[str, Any]:
        nonlocal done
        if done:  # the app asks again only to watch for a disconnect: none comes
            await asyncio.Event().wait()
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(request_scope(body), receive, send)
    if status != 200:
        raise RuntimeError(f"the app answered {status}")


async def run(app: Any, body: bytes, requests: int, concurrency: int) -> tuple[float, float]:
    """(process, event-loop thread) CPU microseconds per request."""

    async def client(count: int) -> None:
        for _ in range(count):
            await one_request(app, body)

    each = requests // concurrency
    process, thread = time.process_time(), time.thread_time()
    await asyncio.gather(*(client(each) for _ in range(concurrency)))
    n = each * concurrency
    return (time.process_time() - process) / n * 1e6, (time.thread_time() - thread) / n * 1e6


async def measure(
    args: argparse.Namespace, apps: dict[str, Any], body: bytes, batchers: dict
) -> dict:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in apps}
    for app in apps.values():
        await run(app, body, WARMUP_REQUESTS, args.concurrency)
    for i in range(args.runs):
        order = list(apps) if i % 2 == 0 else list(reversed(apps))
        for name in order:
            batcher = batchers.get(name)
            before = (batcher.batches, batcher.batched_rows) if batcher else (0, 0)
            process, loop = await run(apps[name], body, args.requests, args.concurrency)
            result = {"process_us": round(process, 1), "loop_us": round(loop, 1)}
            if batcher is not None:
                batches = batcher.batches - before[0]
                result["rows_per_batch"] = round((batcher.batched_rows - before[1]) / batches, 1)
            runs[name].append(result)
            progress(f"run {i + 1}/{args.runs}, {name}: {result}")
    return runs


def report(data: dict[str, Any]) -> None:
    medians = data["medians"]
    print(f"\n{data['model']}: {data['concurrency']} one-row requests at a time, CPU per request")
    print(f"{'app':<24}{'process us':>12}{'event loop us':>15}{'rows/batch':>12}")
    for name in APPS:
        m = medians[name]
        rows = f"{m['rows_per_batch']:.1f}" if "rows_per_batch" in m else "-"
        print(f"{name:<24}{m['process_us']:>12.1f}{m['loop_us']:>15.1f}{rows:>12}")
    fast, route = medians["selfheal"]["process_us"], medians["selfheal, route only"]["process_us"]
    print(f"the fast path: {fast / route:.2f} of the route's CPU per request")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=MODELS, default="california")
    parser.add_argument("--runs", type=int, default=5, help="runs per app (default 5)")
    parser.add_argument("--requests", type=int, default=16_000, help="requests per run")
    parser.add_argument("--concurrency", type=int, default=16, help="requests at a time")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.runs < 1 or args.requests < args.concurrency or args.concurrency < 1:
        parser.error("--runs >= 1, --concurrency >= 1 and --requests >= --concurrency")
    return args


def main() -> None:
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the daemon sets for its workers
    enter_bench_venv()
    import uvloop

    with tempfile.TemporaryDirectory(prefix="selfheal-request-path-") as tmp:
        apps, body, batchers = build_apps(args.model, Path(tmp))
        runs = uvloop.run(measure(args, apps, body, batchers))
        for batcher in batchers.values():
            batcher.close()
    data = {
        "model": args.model,
        "concurrency": args.concurrency,
        "requests_per_run": args.requests,
        "runs": runs,
        "medians": {
            name: {key: statistics.median(r[key] for r in results) for key in results[0]}
            for name, results in runs.items()
        },
        "machine": f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}",
    }
    report(data)
    if args.json:
        write_json(args.json, data)


if __name__ == "__main__":
    main()
