"""Recovery from a crashed service process: selfheal's daemon against supervisord, kill after kill.

What is measured, each scenario on its own free loopback port, with the same model:

- **selfheal**: the real daemon (``selfheal run``, 1 and then 2 workers, default probe settings).
  Each cycle sends ``kill -9`` to one worker, the pid taken from ``run/workers.json``, and measures
  MTTR from the kill to when ``workers.json`` lists a new pid for that slot *and* that new worker
  answers: with one worker, a ``POST /predict`` on the shared port returns 200; with two, ``GET
  /ready`` on the new worker's private unix socket returns 200 and ``GET /health`` there reports
  the new pid (the other worker keeps the shared port answering meanwhile). The socket is the
  ``uds`` of the worker's record in workers.json when it has one, else ``run/worker-<slot>.sock``.
- **supervisord**: the same model served by one plain uvicorn process that binds the port itself
  (``bench/standalone_app.py``), under supervisord (autorestart, startsecs=1, startretries=3).
  Each cycle sends ``kill -9`` to the child (pid from ``supervisorctl status``) and measures MTTR
  from the kill to the first ``GET /health`` 200 that reports a new pid.
- **a hung worker**: the daemon with 2 workers; each cycle sends SIGSTOP to one worker and measures
  from the signal to a new worker in that slot answering ``/ready``: detection by failed liveness
  probes (at most ``failure_threshold`` x ``interval_s`` + ``timeout_s``, 7 s with the defaults,
  printed as the configured bound) plus the replacement. The stopped process is killed by the
  daemon (TERM cannot reach it; KILL after the grace period).
- **the floor**: the cold start of ``bench/standalone_app.py``, ``Popen`` to the first ``/health``
  200 (one unmeasured warm-up start, then the median of a few): what any restart that starts a
  fresh interpreter pays. ``bench/cold_start.py`` breaks the same cost down for a daemon worker.

During every scenario a client thread POSTs ``/predict`` every 10 ms (httpx, one pooled client,
connect timeout 1 s, read timeout 5 s) and counts requests, refused connections
(``httpx.ConnectError``), other failures (non-200 or any other exception) and the longest time one
request took to get an answer (or its error). Cycles are 1 s of steady state apart; a cycle that has
not recovered 30 s after its kill is recorded as a failure and the run goes on.

The daemon runs with ``restart.stable_after_s = 0.2`` (default 30) and ``restart.budget = 1000``
(default 5 per 60 s): every kill then hits a worker that has been ready for longer than that, so
each cycle measures the daemon's first-crash path (restart at once) rather than its backoff and
crash-loop policy, which 20 kills in half a minute would rightly trigger; supervisord likewise
restarts a RUNNING process at once, with no budget. Everything else is the default configuration.

The benchmark has its own venv, ``bench/.venv`` (``pip install -e .`` plus
``bench/requirements.txt``, i.e. supervisor): it is created on the first run, re-used (and
re-installed when pyproject.toml or the requirements change) later, and the script re-runs itself
in it, so supervisord is never a dependency of the project. Every process it starts is stopped at
the end (SIGTERM, then SIGKILL by pid). Only 127.0.0.1 is used. Prints progress, then a markdown
table; ``--json PATH`` writes the raw per-cycle data. ``--registry DIR`` serves a copy of a registry
trained before (bench/suite.py trains one for every part) instead of training the model here.

    python3 -m bench.recovery [--cycles 20 | --quick] [--hang-cycles 6] [--floor-runs 5]
        [--registry DIR] [--json bench/out/recovery.json]

The scenarios themselves are in bench/recovery_scenarios.py, supervisord's configuration in
bench/supervisord_baseline.py, the venv in bench/venvs.py, what every benchmark shares in
bench/harness.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import CLIENT_PERIOD_S, Processes, model_to_serve, progress
from bench.recovery_scenarios import (
    CYCLE_TIMEOUT_S,
    STEADY_S,
    run_floor,
    run_selfheal,
    run_supervisord,
)
from bench.venvs import enter_bench_venv

DEFAULT_CYCLES = 20
QUICK_CYCLES = 5
FLOOR_RUNS = 5
QUICK_FLOOR_RUNS = 3
HANG_CYCLES = 6  # each takes the probe schedule's detection time (up to 7 s by default)
QUICK_HANG_CYCLES = 2


# ----- reporting ---------------------------------------------------------------------------------


def mttrs(result: dict[str, Any]) -> list[float]:
    return [c["mttr_s"] for c in result.get("cycles", []) if "mttr_s" in c]


def table(results: list[dict[str, Any]], floor: dict[str, Any] | None) -> list[str]:
    lines = [
        "| scenario | workers | cycles recovered | MTTR median ms | MTTR max ms | requests "
        "| refused | failed | longest wait ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        times = [t * 1000 for t in mttrs(result)]
        client = result.get("client", {})
        median = f"{statistics.median(times):.0f}" if times else "-"
        worst = f"{max(times):.0f}" if times else "-"
        longest = f"{client['longest_s'] * 1000:.0f}" if client else "-"
        lines.append(
            f"| {result['scenario']} | {result['workers']} "
            f"| {len(times)}/{len(result.get('cycles', []))} | {median} | {worst} "
            f"| {client.get('requests', '-')} | {client.get('refused', '-')} "
            f"| {client.get('failed', '-')} | {longest} |"
        )
    if floor and floor.get("spawn_to_health_s"):
        starts = [t * 1000 for t in floor["spawn_to_health_s"]]
        lines.append(
            f"| floor: cold start of standalone_app.py, spawn to /health 200 | 1 "
            f"| {len(starts)} runs | {statistics.median(starts):.0f} | {max(starts):.0f} "
            "| - | - | - | - |"
        )
    return lines


def ratios(results: list[dict[str, Any]]) -> list[str]:
    baseline = next((r for r in results if r["scenario"] == "supervisord" and mttrs(r)), None)
    if baseline is None:
        return ["ratio: no supervisord MTTR to compare with"]
    base = statistics.median(mttrs(baseline))
    return [
        f"selfheal median MTTR / supervisord median MTTR, {r['workers']} worker(s): "
        f"{statistics.median(mttrs(r)) / base:.2f}"
        for r in results
        if r["scenario"] == "selfheal" and mttrs(r)
    ]


# ----- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=None, help=f"default {DEFAULT_CYCLES}")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_CYCLES} cycles, {QUICK_FLOOR_RUNS} floor runs"
    )
    parser.add_argument(
        "--hang-cycles",
        type=int,
        default=None,
        help=f"default {HANG_CYCLES} ({QUICK_HANG_CYCLES} with --quick); 0 skips the scenario",
    )
    parser.add_argument(
        "--floor-runs",
        type=int,
        default=None,
        help=f"default {FLOOR_RUNS} ({QUICK_FLOOR_RUNS} with --quick)",
    )
    parser.add_argument(
        "--registry", type=Path, default=None, help="serve a copy of this trained registry"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the raw data here")
    args = parser.parse_args()
    if args.cycles is None:
        args.cycles = QUICK_CYCLES if args.quick else DEFAULT_CYCLES
    if args.hang_cycles is None:
        args.hang_cycles = QUICK_HANG_CYCLES if args.quick else HANG_CYCLES
    if args.floor_runs is None:
        args.floor_runs = QUICK_FLOOR_RUNS if args.quick else FLOOR_RUNS
    if args.cycles < 1 or args.floor_runs < 1 or args.hang_cycles < 0:
        parser.error("--cycles and --floor-runs must be at least 1, --hang-cycles at least 0")
    return args


def scenario(results: list[dict[str, Any]], name: str, run: Callable[[], dict]) -> None:
    """Run one scenario; a scenario that cannot start is reported and the others still run."""
    try:
        results.append(run())
    except RuntimeError as exc:
        progress(f"{name}: FAILED: {exc}")


def benchmark(args: argparse.Namespace) -> None:
    from importlib.metadata import version as dist_version

    from selfheal_daemon.config import ProbeConfig

    procs = Processes()
    results: list[dict[str, Any]] = []
    floor: dict[str, Any] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="selfheal-recovery-") as tmp:
            workdir = Path(tmp)
            state_dir = workdir / "state"
            cfg, version = model_to_serve(state_dir, workdir, args.registry)
            registry = cfg.registry_dir
            try:
                floor = run_floor(args.floor_runs, registry, version, workdir, procs)
            except RuntimeError as exc:
                progress(f"floor: FAILED: {exc}")
            for workers in (1, 2):
                scenario(
                    results,
                    f"selfheal, {workers} worker(s)",
                    lambda w=workers: run_selfheal(w, args.cycles, state_dir, workdir, procs),
                )
            if args.hang_cycles:
                scenario(
                    results,
                    "selfheal, hung worker",
                    lambda: run_selfheal(
                        2, args.hang_cycles, state_dir, workdir, procs, signal.SIGSTOP
                    ),
                )
            scenario(
                results,
                "supervisord",
                lambda: run_supervisord(args.cycles, registry, version, workdir, procs),
            )
    finally:
        procs.stop_all()

    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"supervisor {dist_version('supervisor')}, uvicorn {dist_version('uvicorn')}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    print()
    print(f"machine: {machine}")
    for line in table(results, floor):
        print(line)
    probe = ProbeConfig()
    bound = probe.failure_threshold * probe.interval_s + probe.timeout_s
    print(
        f"hung worker: configured detection bound {bound:.1f} s (failure_threshold "
        f"{probe.failure_threshold} x interval_s {probe.interval_s:g} "
        f"+ timeout_s {probe.timeout_s:g})"
    )
    print()
    for line in ratios(results):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "cycles": args.cycles,
                    "steady_s": STEADY_S,
                    "client_period_s": CLIENT_PERIOD_S,
                    "cycle_timeout_s": CYCLE_TIMEOUT_S,
                    "scenarios": results,
                    "floor": floor,
                },
                indent=2,
            )
        )
        progress(f"raw data written to {args.json}")


def main() -> None:
    args = parse_args()
    if args.json:
        args.json = args.json.resolve()
    enter_bench_venv()
    benchmark(args)


if __name__ == "__main__":
    main()
