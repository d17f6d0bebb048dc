"""`make bench`: every benchmark of selfheal against what users would pick instead, in one run.

Runs each part as a subprocess (``python3 -m bench.<part>`` in the repository root), one after the
other on the same machine (each script builds and re-enters its own venv: bench/.venv with
supervisor, bench/.venv-drift with Evidently; neither is a dependency of the project), with
settings that fit the time budget:

- ``recovery`` (bench/recovery.py): ``kill -9`` MTTR and failed requests under load, selfheal with 1
  and 2 workers against supervisord with its defaults and against the cold start (the floor); a
  hung worker against the configured detection bound;
- ``swap`` (bench/swap.py): a model change under load, in place against replacing the workers;
- ``drift`` (bench/drift.py): the drift check at 10k, 100k and 1M rows against Evidently;
- ``drift_adult`` (bench/drift_adult.py): the drift check on the Adult example's 14 mixed columns
  at 1M rows against Evidently configured to the same statistics, and against its defaults;
- ``serving`` (bench/serving.py): throughput and latency against a bare FastAPI app, the raw
  in-process ``predict`` rate as the limit, and what capture and metrics cost;
- ``serving_adult`` (bench/serving.py ``--model adult``): the same on the Adult example's
  classifier (trained here, with examples/adult/config.toml) against the FastAPI app a user
  would write for it (bench/bare_app_adult.py: pydantic, a DataFrame, ``predict_proba``);
- ``footprint`` (bench/footprint.py): the daemon at idle against supervisord, CPU and memory;
- ``growth`` (bench/growth.py): drift check and report time as data and trail grow tenfold;
- ``training`` (bench/training.py): the first model trained as ``selfheal run`` trains it, the
  Adult example against the bundled California model;
- ``peers`` and ``peers_adult`` (bench/peers.py, ``--model adult`` for the second): serving against
  the servers a user would pick instead, MLServer (its scikit-learn runtime, adaptive batching)
  and BentoML (a batchable API), each in its own venv (bench/.venv-mlserver, bench/.venv-bentoml),
  and against the ceiling, a no-work route on the same FastAPI and uvicorn; their cold starts,
  recovery from ``kill -9`` of a worker and memory at idle beside selfheal's.

The default model (bundled data, default settings) is trained once, first, and handed to the parts
that serve it (``--registry``) instead of each training the same model again. Each part writes its
JSON to ``bench/out/suite/<part>.json`` and its output to ``<part>.log`` beside it; its lines are
echoed to stderr with the suite's elapsed time. Then the suite writes one
document, ``bench/results.json`` (machine, date, versions, settings, the summary rows with their
ratios, and per part its status, wall time, a compact summary of its JSON and the JSON's path), and
the block between ``<!-- make bench: begin -->`` and ``<!-- make bench: end -->`` in
docs/BENCHMARKS.md (inserted after the intro when missing; the rest of the file is left as it is).
A part that fails is recorded as failed with the end of its log, the others still run, and the
suite exits 1 at the end. Nothing here is a test: no figure is asserted anywhere.

``--quick`` runs every comparison, tiny (a few cycles, one short run each, Evidently on 10k and
100k rows only): a check that everything works, in a few minutes; its figures are not worth
quoting, so it writes ``bench/out/results-quick.json`` and ``bench/out/summary-quick.md`` instead
of the committed files unless ``--results``/``--doc`` say otherwise.

``--merge`` with ``--parts`` runs only those parts and keeps every other part of the existing
results document as it was: their rows are replaced in place, and the summary says which parts
were run again, when (``reruns`` in the JSON).

    python3 -m bench.suite [--quick] [--parts recovery,swap,...] [--merge] [--results PATH]
        [--doc PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import suite_doc
from bench.suite_rows import SUMMARISE, missing, rows_for

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "suite"
RESULTS = ROOT / "bench" / "results.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
QUICK_RESULTS = ROOT / "bench" / "out" / "results-quick.json"
QUICK_DOC = ROOT / "bench" / "out" / "summary-quick.md"
STOP_GRACE_S = 60.0  # a part told to stop gets this long to stop what it started

# part -> (module, arguments of the default run, of the quick run, time limit in seconds)
PARTS: dict[str, tuple[str, list[str], list[str], float]] = {
    "recovery": (
        "bench.recovery",
        ["--cycles", "10", "--hang-cycles", "3", "--floor-runs", "5"],
        ["--cycles", "2", "--hang-cycles", "1", "--floor-runs", "2"],
        900,
    ),
    "swap": ("bench.swap", ["--cycles", "3"], ["--cycles", "1"], 900),
    "drift": ("bench.drift", ["--runs", "3"], ["--quick", "--runs", "1"], 1200),
    "drift_adult": ("bench.drift_adult", ["--runs", "3"], ["--quick", "--runs", "1"], 900),
    "serving": (
        "bench.serving",
        ["--duration", "4", "--runs", "3"],
        ["--quick", "--duration", "1", "--runs", "1"],
        900,
    ),
    "serving_adult": (
        "bench.serving",
        ["--model", "adult", "--duration", "4", "--runs", "3"],
        ["--model", "adult", "--quick", "--duration", "1", "--runs", "1"],
        900,
    ),
    # 4 windows of 15 s: the span holds exactly one of the daemon's 60 s monitoring passes.
    "footprint": (
        "bench.footprint",
        ["--settle", "10", "--window", "15", "--windows", "4"],
        ["--quick"],
        600,
    ),
    "growth": ("bench.growth", [], ["--quick"], 600),
    "training": ("bench.training", ["--runs", "3"], ["--quick"], 600),
    "peers": ("bench.peers", ["--duration", "4", "--runs", "3"], ["--quick"], 1500),
    "peers_adult": (
        "bench.peers",
        ["--model", "adult", "--duration", "4", "--runs", "3"],
        ["--model", "adult", "--quick"],
        1500,
    ),
    # needs root (a loopback-only network namespace for the Ray cluster)
    "ray": ("bench.ray_backend", ["--duration", "4", "--runs", "3"], ["--quick"], 1200),
}

# parts that take --registry (the default model, trained once, here)
SEEDED = ("recovery", "serving", "footprint", "peers", "ray")
TRAIN_CODE = r"""
import sys
from pathlib import Path
from selfheal_daemon.model.bootstrap import ensure_model
from selfheal_daemon.config import parse_config
from selfheal_daemon.model.registry import ModelRegistry
state = Path(sys.argv[1])
cfg = parse_config({"state_dir": str(state)}, state / "config.toml")
print("trained", ensure_model(cfg, ModelRegistry(cfg.registry_dir), print), flush=True)
"""

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[suite {time.monotonic() - _T0:7.1f} s] {message}", file=sys.stderr, flush=True)


# ----- running one part -------------------------------------------------------------------------


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the part's process group (the script and what runs in its group), then KILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def run_part(name: str, argv: list[str], limit_s: float, log: Path) -> dict[str, Any]:
    """Run one part, echoing its lines; its status, return code, wall time and log tail."""
    started = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,  # so that a time-out or Ctrl-C stops the part and nothing else
        )

        def pump() -> None:
            assert proc.stdout is not None  # noqa: S101 - set by stdout=PIPE
            for raw in proc.stdout:
                sink.write(raw)
                sink.flush()
                line = raw.decode(errors="replace").rstrip()
                if line:
                    progress(f"{name} | {line}")

        reader = threading.Thread(target=pump, name=f"{name}-output", daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            progress(f"{name}: over its limit of {limit_s:.0f} s; stopping it")
            stop_group(proc)
        except BaseException:  # Ctrl-C or SIGTERM: stop the part before the suite goes
            stop_group(proc)
            raise
        reader.join(timeout=10)
    result: dict[str, Any] = {
        "returncode": proc.returncode,
        "wall_s": round(time.monotonic() - started, 1),
    }
    if timed_out:
        result["error"] = f"stopped after its time limit of {limit_s:.0f} s"
    elif proc.returncode != 0:
        result["error"] = f"exited with {proc.returncode}"
    return result


def log_tail(log: Path, lines: int = 25) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return ""


def collect(name: str, outcome: dict[str, Any], out_json: Path, hang_bound_s: float | None) -> list:
    """Read the part's JSON into a compact summary and rows; record what went wrong."""
    rows: list[dict[str, Any]] = []
    if not out_json.exists():
        outcome.setdefault("error", "wrote no JSON")
        return rows
    try:
        raw = json.loads(out_json.read_text())
        outcome["summary"] = SUMMARISE[name](raw)
        rows = rows_for(name, outcome["summary"], hang_bound_s)
        gaps = missing(name, outcome["summary"])
        if gaps:
            outcome.setdefault("error", f"measured nothing for {', '.join(gaps)}")
        if isinstance(raw, dict) and raw.get("failure"):
            outcome.setdefault("error", str(raw["failure"])[:2000])
    except (ValueError, KeyError, TypeError, ZeroDivisionError, StopIteration) as exc:
        outcome.setdefault("error", f"its JSON could not be summarised: {exc!r}")
    return rows


def train_model(doc: dict[str, Any]) -> Path | None:
    """The default model (bundled data, default settings), trained once for the parts that serve
    it; None (each part then trains its own) if that fails."""
    from bench.venvs import ensure_bench_venv

    python = ensure_bench_venv()
    state = OUT / "model"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    progress("training the model every serving part uses (once, in bench/.venv) ...")
    outcome = run_part("model", [str(python), "-c", TRAIN_CODE, str(state)], 900, OUT / "model.log")
    registry = state / "registry"
    ok = "error" not in outcome and (registry / "current").exists()
    doc["model"] = {"wall_s": outcome["wall_s"], "status": "ok" if ok else "failed"}
    if not ok:
        progress("training failed: each part trains its own model")
        doc["model"]["log_tail"] = log_tail(OUT / "model.log")
    return registry if ok else None


# ----- machine and versions ---------------------------------------------------------------------

VERSIONS_CODE = r"""
import json, platform, sys
from importlib.metadata import PackageNotFoundError, version
out = {"python": platform.python_version()}
for name in sys.argv[1:]:
    try:
        out[name] = version(name)
    except PackageNotFoundError:
        pass
try:
    from selfheal_daemon.config import ProbeConfig
    p = ProbeConfig()
    out["_hang_bound_s"] = p.failure_threshold * p.interval_s + p.timeout_s
except Exception:
    pass
print(json.dumps(out))
"""
PEER_PACKAGES = {  # bench/peers.py's venvs: the peer, and the uvicorn it serves on
    ".venv-mlserver": ("MLServer", ("mlserver", "mlserver-sklearn", "uvicorn")),
    ".venv-bentoml": ("BentoML", ("bentoml", "uvicorn")),
}
BENCH_PACKAGES = (
    "selfheal",
    "scikit-learn",
    "numpy",
    "scipy",
    "pandas",
    "fastapi",
    "uvicorn",
    "pydantic",
    "httpx",
    "psutil",
    "loguru",
    "supervisor",
)


def venv_versions(venv: str, packages: tuple[str, ...]) -> dict[str, str]:
    python = ROOT / "bench" / venv / "bin" / "python"
    if not python.exists():
        return {}
    done = subprocess.run(
        [str(python), "-c", VERSIONS_CODE, *packages],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        return {}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def wrk_version() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        wrk = shutil.which("wrk")
        if wrk is None:
            return None
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout or out.stderr).split(" [", 1)[0].removeprefix("wrk ").strip() or None
    return None


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "suite_python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    return info


# ----- main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="every comparison, tiny")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated, in this order")
    parser.add_argument("--results", type=Path, default=None, help="the results document")
    parser.add_argument("--doc", type=Path, default=None, help="the markdown file to update")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other parts of the existing results document, replacing only these",
    )
    args = parser.parse_args()
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown or not args.parts:
        parser.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    if args.results is None:
        args.results = QUICK_RESULTS if args.quick else RESULTS
    if args.doc is None:
        args.doc = QUICK_DOC if args.quick else DOC
    args.results, args.doc = args.results.resolve(), args.doc.resolve()
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else "full"
    started_at = datetime.now(UTC)
    doc: dict[str, Any] = {
        "generated_by": "bench/suite.py (make bench)",
        "mode": mode,
        "date": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "parts": {},
        "rows": [],
    }
    progress(f"{mode} run of {len(args.parts)} part(s): {', '.join(args.parts)}")
    trained = train_model(doc) if any(p in SEEDED for p in args.parts) else None
    hang_bound = venv_versions(".venv", ()).get("_hang_bound_s")
    for i, name in enumerate(args.parts, 1):
        module, full, quick, limit = PARTS[name]
        out_json, log = OUT / f"{name}.json", OUT / f"{name}.log"
        out_json.unlink(missing_ok=True)  # never report an older run's figures
        argv = [sys.executable, "-m", module, *(quick if args.quick else full)]
        if trained is not None and name in SEEDED:
            argv += ["--registry", str(trained)]
        argv += ["--json", str(out_json)]
        shown = " ".join(["python3", *argv[1:]]).replace(str(ROOT) + "/", "")
        progress(f"part {i}/{len(args.parts)}: {name}: {shown}")
        outcome = run_part(name, argv, limit, log)
        outcome.update(command=shown, raw_json=str(out_json.relative_to(ROOT)))
        outcome["log"] = str(log.relative_to(ROOT))
        rows = collect(name, outcome, out_json, hang_bound)
        outcome["status"] = "failed" if "error" in outcome else "ok"
        if outcome["status"] == "failed":
            outcome["log_tail"] = log_tail(log)
            progress(f"part {name}: FAILED ({outcome['error']}); going on")
        else:
            progress(f"part {name}: done in {outcome['wall_s']:.0f} s, {len(rows)} summary rows")
        doc["parts"][name] = outcome
        doc["rows"].extend(rows)
    versions = venv_versions(".venv", BENCH_PACKAGES)
    versions.pop("_hang_bound_s", None)
    drift_versions = venv_versions(".venv-drift", ("evidently", "pandas"))
    if "evidently" in drift_versions:
        versions["evidently"] = drift_versions["evidently"]
        versions["pandas (Evidently's venv)"] = drift_versions["pandas"]
    for venv, (peer, packages) in PEER_PACKAGES.items():
        for name, version in venv_versions(venv, packages).items():
            if not name.startswith("_"):  # the hang bound, read from the checkout: not a peer's
                versions[f"uvicorn ({peer}'s venv)" if name == "uvicorn" else name] = version
    wrk = wrk_version()
    if wrk:
        versions["wrk"] = wrk
    doc["versions"] = versions
    doc["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["wall_s"] = round(time.monotonic() - _T0, 1)
    doc["hang_bound_s"] = hang_bound
    doc["failures"] = [name for name, part in doc["parts"].items() if part["status"] != "ok"]
    first = ("generated_by", "mode", "date", "wall_s", "failures", "machine", "versions")
    return {**{key: doc[key] for key in first}, **doc}  # the headline first, then the rest


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with the parts ``new`` ran replaced by ``new``'s (rows in PARTS order); the
    headline stays the old run's, and ``reruns`` says which parts were run again, when, and how
    long each run took."""
    if old.get("mode") != new["mode"]:
        raise SystemExit(
            f"--merge: the results document is a {old.get('mode')} run, not {new['mode']}"
        )
    rerun = list(new["parts"])
    parts = {**old.get("parts", {}), **new["parts"]}
    rows = [r for r in old.get("rows", []) if r["part"] not in rerun] + new["rows"]
    order = {name: i for i, name in enumerate(PARTS)}
    rows.sort(key=lambda r: order.get(r["part"], len(order)))  # stable: each part's own order
    reruns = []
    for earlier in old.get("reruns", []):  # what a later run replaced is no longer its figures
        superseded = sorted({*earlier.get("superseded", []), *(set(earlier["parts"]) & set(rerun))})
        if set(superseded) < set(earlier["parts"]):
            reruns.append({**earlier, "superseded": superseded} if superseded else earlier)
    reruns.append({"parts": rerun, "date": new["date"], "wall_s": new["wall_s"]})
    merged = {**old, "parts": {n: parts[n] for n in sorted(parts, key=lambda n: order.get(n, 99))}}
    merged.update(
        rows=rows,
        reruns=reruns,
        versions={**old.get("versions", {}), **new["versions"]},
        failures=[name for name, part in merged["parts"].items() if part["status"] != "ok"],
    )
    return merged


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))  # unwind: stop the part
    doc = run(args)
    if args.merge and args.results.exists():
        doc = merge(json.loads(args.results.read_text()), doc)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(doc, indent=1) + "\n")
    block = suite_doc.block(doc)
    suite_doc.update(args.doc, block)
    print(block)
    progress(f"wrote {args.results.relative_to(ROOT)} and the summary in {args.doc}")
    minutes = doc["wall_s"] / 60
    progress(
        f"{doc['mode']} run done in {minutes:.1f} min"
        + (f"; FAILED: {', '.join(doc['failures'])}" if doc["failures"] else "")
    )
    if doc["failures"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
