"""Where a selfheal worker's CPU goes under load: py-spy on every worker while wrk runs.

Starts the real daemon (as bench/peers.py does: 2 workers on loopback, a temporary state dir, no
retraining) for ``--model`` (the bundled California model, or the Adult example), warms it up,
then runs wrk with one body (``--body single`` or ``batch``, the 1000 real rows of
bench/serving.py) at ``--connections`` for ``--duration`` seconds while ``py-spy record`` samples
each worker (``--rate`` per second, without pausing it). Each sample is put in the first bucket
its stack matches, by its innermost frame a bucket matches (the first bucket, in this order,
when a frame matches several):

- ``model: scikit-learn``: the pipeline's own ``predict``/``predict_proba`` (sklearn frames);
- ``model: flattened trees``: service/compiled.py, the small-batch path of a tree ensemble;
- ``batching``: the rest of the prediction thread (service/batching.py, the executor);
- ``JSON decode`` and ``validation``: service/validation.py's ``decode_json`` and the rest of it
  (and the Open Inference Protocol's parser, service/oip.py);
- ``capture and metrics``: service/capture.py, service/metrics.py's own frames;
- ``response``: encoding the answer (json.encoder, the response classes);
- ``ASGI stack``: FastAPI, Starlette and the service's middleware around the route;
- ``HTTP (uvicorn)``: uvicorn's protocol, reading requests and writing responses;
- ``waiting``: a thread with nothing to do (the event loop's ``select``, an idle executor);
- ``other``.

Prints the share of each bucket (of all samples, and of the busy ones: all but ``waiting``), the
request rate reached under the profiler, and the heaviest leaf frames. ``--json`` writes it all.
py-spy slows the process it samples a little (``--nonblocking`` avoids pausing it): the shares are
what to read, not the rate. Needs ``py-spy`` (bench/requirements.txt installs it in bench/.venv)
and the permission to trace the workers (root, or ``ptrace_scope`` 0).

    python3 -m bench.profile_worker [--model california|adult] [--body single|batch]
        [--connections 16] [--duration 8] [--rate 200] [--json bench/out/profile.json]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import Processes, model_to_serve, progress, write_json
from bench.peers import selfheal_app, start, workers_of, write_script
from bench.serving import (
    MODELS,
    Scenario,
    adult_model_to_serve,
    ensure_wrk,
    run_wrk,
    write_bodies,
)
from bench.venvs import BENCH_BIN, enter_bench_venv

WARMUP_S = 2
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (  # (bucket, substrings of a stack's frames)
    ("model: scikit-learn", ("sklearn/",)),
    ("model: flattened trees", ("service/compiled.py",)),
    ("batching", ("service/batching.py", "concurrent/futures/thread.py:58")),
    ("JSON decode", ("decode_json",)),
    ("validation", ("service/validation.py", "service/oip.py")),
    ("capture and metrics", ("service/capture.py", "service/metrics.py")),
    ("response", ("json/encoder.py", "responses.py", "render")),
    ("ASGI stack", ("starlette/", "fastapi/", "service/app.py", "service/body_limit.py")),
    ("HTTP (uvicorn)", ("uvicorn/protocols",)),
)
WAITING_LEAVES = (  # a leaf frame that means the thread had nothing to do
    "Runner.run (asyncio/runners.py",
    "_worker (concurrent/futures/thread.py:81)",
    "Condition.wait",
    "Queue.get",
    "select (selectors.py",
    "_run_once (asyncio/base_events.py",
)


def bucket(frames: list[str]) -> str:
    """The bucket of one stack (outermost frame first; the thread's name is frames[0]): that of
    its innermost frame any bucket matches (the middleware around every request is in every
    stack; what runs inside it decides)."""
    leaf = frames[-1]
    if any(leaf.startswith(w) for w in WAITING_LEAVES):
        return "waiting"
    for frame in reversed(frames[1:]):
        for name, marks in BUCKETS:
            if any(mark in frame for mark in marks):
                return name
    return "other"


def tally(raw_files: list[Path]) -> dict[str, Any]:
    """Samples per bucket and per leaf frame of py-spy's ``raw`` (collapsed stack) output."""
    buckets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    by_bucket: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for path in raw_files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            name = bucket(frames)
            buckets[name] += int(count)
            leaves[frames[-1]] += int(count)
            by_bucket[name][frames[-1]] += int(count)
    total = sum(buckets.values())
    busy = total - buckets["waiting"]
    order = [name for name, _ in BUCKETS] + ["other", "waiting"]
    return {
        "samples": total,
        "buckets": {
            name: {
                "samples": buckets[name],
                "share": buckets[name] / total if total else 0.0,
                "busy_share": (buckets[name] / busy if busy and name != "waiting" else None),
                "top_leaves": [f for f, _n in by_bucket[name].most_common(3)],
            }
            for name in order
            if buckets[name]
        },
        "leaves": [{"frame": f, "share": n / total} for f, n in leaves.most_common(15)],
    }


def profile(args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    spy = shutil.which("py-spy", path=str(BENCH_BIN)) or shutil.which("py-spy")
    if spy is None:
        raise RuntimeError("py-spy is not installed (bench/requirements.txt installs it)")
    wrk = ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="selfheal-profile-") as tmp:
        workdir = Path(tmp)
        state = workdir / "state"
        if args.model == "adult":
            cfg, _version = adult_model_to_serve(state, None)
        else:
            cfg, _version = model_to_serve(state, workdir, None)
        bodies, _paths = write_bodies(workdir, args.model, cfg)
        app = selfheal_app(state, workdir, args.model, bodies, "profiled")
        progress(f"selfheal: starting `selfheal run` on {app.url} ...")
        start(procs, app, workdir / "selfheal.log")
        script = write_script(workdir, app, args.body)
        scenario = Scenario(args.body, 2 if args.connections > 1 else 1, args.connections)
        run_wrk(wrk, app.url, script, scenario, WARMUP_S, app.path)
        pids = [pid for pid, _created in workers_of(app)]
        progress(f"profiling workers {pids} for {args.duration} s under wrk ({scenario.label})")
        outs = [workdir / f"worker-{pid}.txt" for pid in pids]
        spies = [
            subprocess.Popen(
                [
                    *(spy, "record", "--pid", str(pid), "--duration", str(args.duration)),
                    *("--rate", str(args.rate), "--format", "raw", "--output", str(out)),
                    *("--nonblocking", "--threads"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for pid, out in zip(pids, outs, strict=True)
        ]
        measured = run_wrk(wrk, app.url, script, scenario, args.duration + 2, app.path)
        for spied in spies:
            _out, err = spied.communicate(timeout=args.duration + 60)
            if spied.returncode != 0:
                raise RuntimeError(f"py-spy exited {spied.returncode}: {err.strip()[-400:]}")
        result = tally([out for out in outs if out.exists()])
    result.update(
        model=args.model,
        body=args.body,
        connections=args.connections,
        duration_s=args.duration,
        requests_s=measured["requests_s"],
        latency_ms=measured["latency_ms"],
        errors=measured["errors"],
        workers=len(pids),
    )
    return result


def report(result: dict[str, Any]) -> None:
    print()
    print(
        f"{result['model']}, {result['body']} body, c={result['connections']}: "
        f"{result['requests_s']:,.0f} req/s under the profiler, p99 "
        f"{result['latency_ms']['p99']:.2f} ms, {result['errors']} errors; "
        f"{result['samples']:,} samples of {result['workers']} workers"
    )
    print()
    print("| where | share of all samples | share of the busy ones |")
    print("| --- | ---: | ---: |")
    for name, b in result["buckets"].items():
        busy = "-" if b["busy_share"] is None else f"{b['busy_share']:.1%}"
        print(f"| {name} | {b['share']:.1%} | {busy} |")
    print()
    print("heaviest leaf frames:")
    for leaf in result["leaves"]:
        print(f"  {leaf['share']:6.1%}  {leaf['frame'][:110]}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=MODELS, default="california")
    parser.add_argument("--body", choices=("single", "batch"), default="single")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=int, default=8, help="seconds sampled")
    parser.add_argument("--rate", type=int, default=200, help="samples per second per worker")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args()
    for name in ("connections", "duration", "rate"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    if args.json:
        args.json = args.json.resolve()
    enter_bench_venv()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    procs = Processes(settle_s=2.0)
    try:
        result = profile(args, procs)
    except RuntimeError as exc:
        progress(f"FAILED: {exc}")
        sys.exit(1)
    finally:
        procs.stop_all()
    report(result)
    if args.json:
        write_json(args.json, result, "result")


if __name__ == "__main__":
    main()
