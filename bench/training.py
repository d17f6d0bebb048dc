"""Training time: the first model, trained the way ``selfheal run`` trains it on an empty state dir.

Each run is a fresh process that calls ``bootstrap.ensure_model`` on an empty temp state directory,
which is what ``selfheal run`` does before its first worker starts: load the configured data
(``features.load_base``), learn its schema (``features.learn_schema``), then
``training.train_and_register``: the seeded train/holdout split, the built-in pipeline fitted
(HistGradientBoosting, native categorical splits for a categorical feature), the holdout metrics,
permutation importance, the gate's threshold, the drift reference summary, and the version written
to the registry with its checksums. Two models:

- **adult**: ``examples/adult/config.toml`` (the UCI Adult census income classifier: 32,561 rows,
  6 numeric and 8 categorical features, missing values written ``?``), its state dir replaced by
  the temp dir;
- **california**: the bundled default (no ``[model]`` table: the California housing regression,
  20,640 rows, 8 numeric features), for comparison.

Timed (``time.perf_counter``): ``ensure_model`` from its call to its return (what a user waits for
after the imports), and the whole process (interpreter start and imports included); each progress
line ``ensure_model`` writes is echoed with its time since the call, so the phases show. Runs
alternate between the models; medians with min and max over ``--runs`` (default 3). Runs in the
benchmark venv bench/.venv (bench/venvs.py; the script re-runs itself in it). Progress to stderr,
markdown to stdout, the figures to ``--json PATH``.

    python3 -m bench.training [--runs 3] [--quick] [--json bench/out/training.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import ROOT, progress
from bench.venvs import enter_bench_venv

EXAMPLE = ROOT / "examples" / "adult" / "config.toml"
MODELS = ("adult", "california")
DEFAULT_RUNS = 3
QUICK_RUNS = 1
TARGET_S = {"adult": 60.0}  # the target: training on Adult in under a minute
MARK = "@@"  # a worker's progress line: MARK seconds message


def config(model: str, state: Path) -> Any:
    """The model's config, its state in ``state``."""
    import tomllib

    from selfheal_daemon.config import parse_config

    if model == "adult":
        data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
        return parse_config({**data, "state_dir": str(state)}, EXAMPLE)
    return parse_config({"state_dir": str(state)}, state / "config.toml")


def worker(model: str) -> dict[str, Any]:
    """One fresh process: ensure_model on an empty state dir, timed, its progress echoed."""
    from selfheal_daemon.model.bootstrap import ensure_model
    from selfheal_daemon.model.registry import ModelRegistry

    lines: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"selfheal-train-{model}-") as tmp:
        cfg = config(model, Path(tmp))
        registry = ModelRegistry(cfg.registry_dir)
        started = time.perf_counter()

        def note(message: str) -> None:
            at = time.perf_counter() - started
            lines.append({"at": at, "message": message})
            print(f"{MARK} {at:.2f} {message}", file=sys.stderr, flush=True)

        version = ensure_model(cfg, registry, note)
        seconds = time.perf_counter() - started
        meta = json.loads((cfg.registry_dir / version / "meta.json").read_text())
    return {
        "model": model,
        "version": version,
        "seconds": seconds,
        "progress": lines,
        "metrics": meta.get("metrics", {}),
        "task": (meta.get("schema") or {}).get("task", "regression"),
    }


def spawn(model: str, threads: int | None) -> dict[str, Any]:
    """Run one worker, echoing its progress lines as they come; its figures and wall time.
    ``threads`` sets OMP_NUM_THREADS (scikit-learn's OpenMP threads); None leaves it as it is."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.training", "--worker", model],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None  # noqa: S101 - set by PIPE
    assert proc.stdout is not None  # noqa: S101 - set by PIPE
    tail: list[str] = []
    for line in proc.stderr:
        if line.startswith(MARK):
            _, at, message = line.rstrip("\n").split(" ", 2)
            progress(f"  {model} +{float(at):5.2f} s  {message}")
        else:
            tail = [*tail[-40:], line]
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise RuntimeError(f"training {model} failed:\n{''.join(tail)}")
    result = dict(json.loads(out.strip().splitlines()[-1]))
    result["process_seconds"] = time.monotonic() - started
    return result


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


PHASES = (  # (name, the start of the progress line that ends the phase)
    ("import scikit-learn, check the registry", "no model registered yet"),
    ("load data and learn the schema", "loaded "),
    ("fit", "evaluating "),
    ("evaluate on the holdout", "measuring each feature"),
    ("permutation importance", "registering the model"),
    ("drift summary and register", "registered "),
)


def phases(run: dict[str, Any]) -> dict[str, float]:
    """Seconds of each phase of one run, from its progress lines' times."""
    out, before = {}, 0.0
    for name, start in PHASES:
        at = next((p["at"] for p in run["progress"] if p["message"].startswith(start)), None)
        if at is not None:
            out[name], before = at - before, at
    return out


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in MODELS:
        runs = [r for r in results if r["model"] == model]
        if not runs:
            continue
        per_phase = [phases(r) for r in runs]
        target = TARGET_S.get(model)
        median = statistics.median(r["seconds"] for r in runs)
        out[model] = {
            "runs": len(runs),
            "seconds": spread([r["seconds"] for r in runs]),
            "process_seconds": spread([r["process_seconds"] for r in runs]),
            "phases": {
                name: statistics.median(p[name] for p in per_phase if name in p)
                for name, _ in PHASES
                if any(name in p for p in per_phase)
            },
            "metrics": runs[0]["metrics"],
            "task": runs[0]["task"],
            "loaded": next(
                (p["message"] for p in runs[0]["progress"] if p["message"].startswith("loaded ")),
                "",
            ),
            "target_s": target,
            "met": None if target is None else median < target,
        }
    if "adult" in out and "california" in out:
        out["adult_over_california"] = (
            out["adult"]["seconds"]["median"] / out["california"]["seconds"]["median"]
        )
    return out


def report(agg: dict[str, Any], runs: int) -> list[str]:
    def cell(s: dict[str, float]) -> str:
        return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"

    lines = [
        "| model | ensure_model s, median (min-max) | whole process s (imports included) "
        "| target | met | holdout metrics |",
        "| --- | ---: | ---: | --- | --- | --- |",
    ]
    for model in MODELS:
        if model not in agg:
            continue
        m = agg[model]
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in m["metrics"].items())
        target = f"< {m['target_s']:.0f} s" if m["target_s"] else "-"
        met = "-" if m["met"] is None else ("yes" if m["met"] else "**no**")
        lines.append(
            f"| {model} | {cell(m['seconds'])} | {cell(m['process_seconds'])} | {target} | "
            f"{met} | {metrics} |"
        )
    lines += ["", "| model | " + " | ".join(name for name, _ in PHASES) + " |"]
    lines.append("| --- |" + " ---: |" * len(PHASES))
    for model in MODELS:
        if model in agg:
            ph = agg[model]["phases"]
            cells = " | ".join(f"{ph[n]:.2f}" if n in ph else "-" for n, _ in PHASES)
            lines.append(f"| {model} | {cells} |")
    lines.append("")
    lines.append(f"(phases in seconds, medians over {runs} runs, from ensure_model's progress)")
    if "adult_over_california" in agg:
        lines.append(f"Adult / California training time: {agg['adult_over_california']:.2f}")
    return lines


def benchmark(args: argparse.Namespace) -> None:
    from importlib.metadata import version as dist_version

    results: list[dict[str, Any]] = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    threads = (
        "OpenMP threads as selfheal run has them"
        if args.threads is None
        else f"OMP_NUM_THREADS={args.threads}"
    )
    progress(f"{args.runs} runs of {', '.join(args.models)}; {threads}; load {load_before}")
    for run in range(args.runs):
        for model in args.models:
            progress(f"run {run + 1}/{args.runs}: training {model} (ensure_model, empty state) ...")
            result = spawn(model, args.threads)
            results.append(result)
            progress(
                f"  {model}: {result['seconds']:.2f} s in ensure_model, "
                f"{result['process_seconds']:.2f} s the whole process"
            )
    agg = aggregate(results)
    load_after = [round(x, 2) for x in os.getloadavg()]
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"scikit-learn {dist_version('scikit-learn')}, numpy {dist_version('numpy')}, "
        f"pandas {dist_version('pandas')}, {time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    print(f"machine: {machine}")
    print(f"{threads}; load average (1, 5, 15 min): {load_before} at the start, {load_after} after")
    for model in args.models:
        print(f"{model}: {agg[model]['loaded']}")
    print()
    for line in report(agg, args.runs):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": machine,
            "runs": args.runs,
            "omp_num_threads": args.threads,
            "load_average": {"start": load_before, "end": load_after},
            "aggregated": agg,
            "raw": results,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        progress(f"figures written to {args.json}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=None, help=f"default {DEFAULT_RUNS}")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} run of each model")
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="OMP_NUM_THREADS for the training (default: as it is, as for selfheal run)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runs is None:
        args.runs = QUICK_RUNS if args.quick else DEFAULT_RUNS
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    if args.json:
        args.json = args.json.resolve()
    enter_bench_venv()
    benchmark(args)


if __name__ == "__main__":
    main()
