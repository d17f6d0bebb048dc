"""Cold start of one service worker: process spawn to first ready, the floor of every restart.

Runs the real worker (``python -m service.worker``) the way the daemon does: an inherited TCP
listener and a private unix socket. For each run it measures, from ``Popen``:

- ``ready_s``: the first 200 from ``/ready`` on the worker's unix socket (the daemon's wait),
- ``predict_s``: the first 200 from ``/predict`` on the shared TCP port (what a client sees),

and, apart, the parts: importing the worker's modules; loading, verifying, smoke-testing the model.
Prints progress, then a markdown table of medians, min and max; ``--json PATH`` writes the raw runs.

    python -m bench.cold_start [--runs 9] [--json bench/out/cold_start.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from selfheal_daemon import contracts
from selfheal_daemon.config import parse_config
from selfheal_daemon.model.bootstrap import ensure_model
from selfheal_daemon.model.registry import ModelRegistry
from service.model_store import PROBE_ROW

ROOT = Path(__file__).resolve().parents[1]

ROW = PROBE_ROW  # the row the service smoke-tests every model with
POLL_S = 0.002


def one_run(registry: Path, version: str, workdir: Path) -> dict[str, float]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.set_inheritable(True)
    port = listener.getsockname()[1]
    uds = workdir / "bench-worker.sock"
    argv = [
        sys.executable,
        "-m",
        contracts.WORKER_MODULE,
        "--fd",
        str(listener.fileno()),
        "--uds",
        str(uds),
        "--registry",
        str(registry),
        "--version",
        version,
        "--log-level",
        "WARNING",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # Clients first, so their setup is not counted in the worker's start.
    private = httpx.Client(transport=httpx.HTTPTransport(uds=str(uds)), timeout=1.0)
    client = httpx.Client(timeout=1.0)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        pass_fds=(listener.fileno(),),
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    result: dict[str, float] = {}
    try:
        while "ready_s" not in result:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}")
            try:
                if private.get("http://worker/ready").status_code == 200:
                    result["ready_s"] = time.monotonic() - started
            except httpx.HTTPError:
                time.sleep(POLL_S)
        while "predict_s" not in result:
            try:
                if client.post(f"http://127.0.0.1:{port}/predict", json=ROW).status_code == 200:
                    result["predict_s"] = time.monotonic() - started
            except httpx.HTTPError:
                time.sleep(POLL_S)
    finally:
        private.close()
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
        listener.close()
    return result


def time_python(code: str) -> float:
    """Seconds a fresh interpreter takes to run ``code`` (it prints its own measurement)."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="selfheal-bench-") as tmp:
        workdir = Path(tmp)
        cfg = parse_config({"state_dir": str(workdir / "state")}, workdir / "config.toml")
        registry = ModelRegistry(cfg.registry_dir)
        print("training the model to serve (bundled data, default settings)...", flush=True)
        version = ensure_model(cfg, registry, lambda m: print(f"  {m}", flush=True))
        one_run(cfg.registry_dir, version, workdir)  # warm the page cache; not counted
        runs = []
        for i in range(args.runs):
            run = one_run(cfg.registry_dir, version, workdir)
            runs.append(run)
            print(
                f"run {i + 1}/{args.runs}: ready {run['ready_s'] * 1000:.0f} ms, "
                f"first predict {run['predict_s'] * 1000:.0f} ms",
                flush=True,
            )
        print("measuring the parts...", flush=True)
        # The parts, each in a fresh interpreter: what the worker imports at start, then loading
        # the model (which imports the scikit-learn modules the pickle needs, as a worker does).
        imports = [
            time_python(
                "import time; t=time.monotonic(); import service.worker; print(time.monotonic()-t)"
            )
            for _ in range(5)
        ]
        load_code = (
            "import service.worker, time; from pathlib import Path; "
            "from service.model_store import ModelStore; "
            "from selfheal_daemon.model.registry import ModelRegistry; t=time.monotonic(); "
            f"ModelStore().load(ModelRegistry(Path({str(cfg.registry_dir)!r})), {version!r}); "
            "print(time.monotonic()-t)"
        )
        loads = [time_python(load_code) for _ in range(5)]
        warm_code = load_code.replace(
            "import service.worker,", "import sklearn.ensemble, sklearn.pipeline, service.worker,"
        )
        warm_loads = [time_python(warm_code) for _ in range(5)]

    def row(name: str, values: list[float]) -> str:
        ms = [v * 1000 for v in values]
        return (
            f"| {name} | {statistics.median(ms):.0f} | {min(ms):.0f} | {max(ms):.0f} | {len(ms)} |"
        )

    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    print("| measure | median ms | min ms | max ms | runs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(row("spawn to `/ready` (daemon's view)", [r["ready_s"] for r in runs]))
    print(row("spawn to first `/predict` 200 (client's view)", [r["predict_s"] for r in runs]))
    print(row("import the worker module (uvicorn, FastAPI, pandas, ...)", imports))
    print(row("load + verify + smoke-test the model (incl. its sklearn imports)", loads))
    print(row("the same with scikit-learn already imported", warm_loads))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "runs": runs,
                    "imports_s": imports,
                    "model_load_s": loads,
                    "model_load_warm_s": warm_loads,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
