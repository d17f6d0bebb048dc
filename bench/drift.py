"""Data drift checks: selfheal's ``drift.check`` against Evidently's DataDriftPreset, side by side.

The data: the bundled California housing data (``features.load_dataset(None)``, the 8 FEATURES).
The reference is 5,000 rows drawn without replacement (as training draws its reference); each
current window (10k, 100k and 1M rows) is drawn with replacement from all 20,640 rows, with a fixed
seed, and then this drift is applied:

- ``MedInc`` x 1.3 (incomes up 30 %), ``Population`` x 1.5, ``HouseAge`` + 5 years, and
  ``AveOccup`` x exp(N(0, 1)) per row (multiplicative noise): clear drift, to be flagged;
- ``Latitude`` + 0.02 degrees (about 2 km): a tiny shift that should *not* be flagged;
- ``AveRooms``, ``AveBedrms``, ``Longitude``: unchanged (the same distribution, resampled).

What is measured, each run in a fresh subprocess (so that its peak memory is its own):

- **evidently**: ``Report([DataDriftPreset()]).run(current, reference)`` on the two pandas frames
  (wrapped with ``Dataset.from_pandas``, all 8 columns numerical), and reading the per-column
  scores from the snapshot. Its default for a numerical column with a reference of more than 1,000
  rows is the Wasserstein distance normed by the reference's standard deviation, drifted at >= 0.1;
  the dataset drifts when at least half of the columns do.
- **selfheal**: ``drift.check(summary, frame.to_numpy(), DriftConfig())`` with the default config.
  The summary (``ReferenceSummary.build(reference, Schema.california())``, equal importance for
  every feature so that the weighted share is Evidently's plain share) is built before the timing:
  the daemon builds it once per model version at training time. Its build time and file size are
  reported apart. Also timed, in the same process: the check on a C-order (row-major) copy of the
  window.
- **naive**: what a check costs that recomputes the reference each time: per feature, the
  reference's quantiles, ``np.histogram`` of both samples, PSI, and ``scipy.stats.ks_2samp``.

Each subprocess imports what it needs, builds the data, runs its tool once on a 2,000-row window
(lazy imports and first-call set-up are not counted) and then times one run on the real window
(``time.perf_counter``). Peak memory: just before the timed run the process's peak RSS is reset
(``echo 5 > /proc/self/clear_refs``, Linux) and its RSS read; the peak RSS (``VmHWM``) after the run
minus that RSS is what the run added. Where the reset is refused, ``ru_maxrss`` minus the RSS is
used instead (an upper bound: it includes the set-up's own peak); the JSON says which. The median
over the runs is reported, with min and max.

The benchmark has its own venv, ``bench/.venv-drift`` (``pip install -e .`` plus
``bench/requirements-drift.txt``: Evidently, never a dependency of the project), created on the
first run, re-used later, re-installed when pyproject.toml or the requirements change; the script
re-runs itself in it. No network is used (Evidently's telemetry is turned off with DO_NOT_TRACK).
Progress goes to stderr, a markdown table to stdout, the raw data to ``--json PATH``.

    python3 -m bench.drift [--quick] [--runs N] [--json bench/out/drift.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported at run time only inside bench/.venv-drift, after the re-exec
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = ROOT / "bench" / ".venv-drift"
REQUIREMENTS = ROOT / "bench" / "requirements-drift.txt"

SEED = 20261127
REFERENCE_ROWS = 5000  # training.reference_rows, the default
SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)
DEFAULT_RUNS = 5
QUICK_RUNS = 3
WARMUP_ROWS = 2000
TOOLS = ("evidently", "selfheal", "naive")
SHOULD_DRIFT = ("MedInc", "HouseAge", "Population", "AveOccup")
TINY_SHIFT = "Latitude"
NAIVE_PSI, NAIVE_KS = 0.2, 0.1  # the naive pass uses selfheal's rule and default thresholds
SWEEP_ROWS = 5000  # drift.window_rows, the default: the window the daemon checks
SWEEP_LEVELS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
SWEEP_NULL_WINDOWS = 20
SWEEP_RULES = ((0.2, 0.1), (0.2, 0.08), (0.2, 0.05), (0.1, 0.1), (1e9, 0.1), (0.2, 1e9))

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


# ----- the benchmark's own venv (the pattern of bench/venvs.py, for another venv) ----------------


def enter_bench_venv() -> None:
    """Re-run this benchmark (same arguments) in bench/.venv-drift unless already there."""
    from bench.venvs import ensure_venv, in_venv, rerun  # the measured workers need none of it

    python = ensure_venv(BENCH_VENV, REQUIREMENTS)
    if not in_venv(BENCH_VENV):
        progress(f"re-running this script in {BENCH_VENV.relative_to(ROOT)}")
        sys.stderr.flush()
        rerun(python)


# ----- the data ----------------------------------------------------------------------------------


def make_data(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reference (5,000 rows) and a current window of ``rows`` with the documented drift."""
    import numpy as np
    import pandas as pd

    from selfheal_daemon.defaults import FEATURES
    from selfheal_daemon.model.features import load_dataset

    data = load_dataset(None)[list(FEATURES)].to_numpy(dtype=np.float64)
    pick = np.random.default_rng(SEED).choice(len(data), size=REFERENCE_ROWS, replace=False)
    reference = pd.DataFrame(data[np.sort(pick)], columns=list(FEATURES))
    rng = np.random.default_rng([SEED, rows])
    index = rng.choice(len(data), size=rows)
    columns = {name: data[index, j] for j, name in enumerate(FEATURES)}  # column by column
    columns["MedInc"] *= 1.3
    columns["Population"] *= 1.5
    columns["HouseAge"] += 5.0
    columns["AveOccup"] *= np.exp(rng.normal(0.0, 1.0, size=rows))
    columns[TINY_SHIFT] += 0.02
    return reference, pd.DataFrame(columns)


# ----- one measured run, in a fresh subprocess ----------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(run: Callable[[], Any]) -> tuple[Any, float, float, str, float]:
    """Run ``run`` once: (its result, seconds, MiB of peak RSS it added, the memory method, MiB of
    RSS before it: the interpreter, the imports and the data)."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        method = "VmHWM after clear_refs"
    except OSError:
        method = "ru_maxrss (upper bound)"
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    if method.startswith("VmHWM"):
        peak = _status_kib("VmHWM")
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return result, seconds, max(peak - before, 0) / 1024, method, before / 1024


def run_evidently(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Any]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(reference.columns))
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    scores: dict[str, dict[str, Any]] = {}
    share = None
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            value, threshold = float(metric["value"]), float(config["threshold"])
            p_value = "p_value" in config["method"]
            drifted = value < threshold if p_value else value >= threshold
            scores[config["column"]] = {
                "method": config["method"],
                "score": value,
                "threshold": threshold,
                "drifted": drifted,
            }
        elif config.get("type", "").endswith("DriftedColumnsCount"):
            share = float(metric["value"]["share"])
            drift_share = float(config["drift_share"])
    return {
        "scores": scores,
        "flagged": [name for name, s in scores.items() if s["drifted"]],
        "share": share,
        "dataset_drift": share is not None and share >= drift_share,
    }


def run_selfheal(summary: Any, current: pd.DataFrame) -> dict[str, Any]:
    import numpy as np

    from selfheal_daemon.config import DriftConfig
    from selfheal_daemon.model.drift import check

    result = check(summary, current.to_numpy(dtype=np.float64), DriftConfig())
    return {
        "scores": {
            f.name: {"psi": f.psi, "ks": f.ks, "drifted": f.drifted} for f in result.features
        },
        "flagged": list(result.drifted_features()),
        "share": result.share,
        "dataset_drift": result.dataset_drift,
    }


def normed_wasserstein(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    """Evidently's score of a numerical column, by its formula (checks the sweep's copy)."""
    import numpy as np
    from scipy.stats import wasserstein_distance

    out = {}
    for name in reference.columns:
        ref, cur = reference[name].to_numpy(), current[name].to_numpy()
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        out[name] = float(wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))
    return out


def run_naive(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Any]:
    """Everything recomputed from both samples, the way a first version would do it."""
    import numpy as np
    from scipy.stats import ks_2samp

    scores = {}
    for name in reference.columns:
        ref, cur = reference[name].to_numpy(), current[name].to_numpy()
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)))
        edges[0], edges[-1] = -np.inf, np.inf
        r = np.histogram(ref, edges)[0] / ref.size
        c = np.histogram(cur, edges)[0] / cur.size
        r, c = np.maximum(r, 1e-4), np.maximum(c, 1e-4)
        psi = float(np.sum((c - r) * np.log(c / r)))
        ks = float(ks_2samp(ref, cur, method="asymp").statistic)
        scores[name] = {"psi": psi, "ks": ks, "drifted": psi >= NAIVE_PSI or ks >= NAIVE_KS}
    flagged = [name for name, s in scores.items() if s["drifted"]]
    share = len(flagged) / len(scores)
    return {"scores": scores, "flagged": flagged, "share": share, "dataset_drift": share >= 0.5}


def sweep(rows: int) -> dict[str, Any]:
    """Where the two rules part: synthetic drift of every feature at growing strength.

    Each feature of a window of ``rows`` is shifted by ``a`` reference standard deviations, scaled
    by ``1 + a`` about the reference median, or given Gaussian noise of ``a`` standard deviations;
    and ``NULL_WINDOWS`` windows get no drift at all. Evidently's verdict is computed with its own
    formula (``scipy.stats.wasserstein_distance`` / the reference's standard deviation, >= 0.1, as
    in ``evidently.legacy.calculations.stattests.wasserstein_distance_norm``) to keep this fast;
    the main runs check that formula against Evidently's reported scores.
    """
    import numpy as np
    from scipy.stats import wasserstein_distance

    from selfheal_daemon.config import DriftConfig
    from selfheal_daemon.defaults import FEATURES
    from selfheal_daemon.model.drift import ReferenceSummary, check
    from selfheal_daemon.model.features import load_dataset
    from selfheal_daemon.model.schema import Schema

    reference, _ = make_data(WARMUP_ROWS)
    ref = reference.to_numpy(dtype=np.float64)
    summary = ReferenceSummary.build(ref, Schema.california())
    pool = load_dataset(None)[list(FEATURES)].to_numpy(dtype=np.float64)
    rng = np.random.default_rng([SEED, 1])
    sd, med = np.nanstd(ref, axis=0), np.nanmedian(ref, axis=0)
    cases: list[dict[str, Any]] = []

    def judge(kind: str, level: float, window: np.ndarray) -> None:
        result = check(summary, window, DriftConfig(min_rows=10, window_rows=10))
        for j, f in enumerate(result.features):
            r, c = ref[:, j][np.isfinite(ref[:, j])], window[:, j][np.isfinite(window[:, j])]
            w = wasserstein_distance(r, c) / max(float(np.std(r)), 0.001)
            cases.append(
                {"kind": kind, "level": level, "feature": f.name, "wasserstein": w,
                 "psi": f.psi, "ks": f.ks}
            )  # fmt: skip

    for _ in range(SWEEP_NULL_WINDOWS):
        judge("none", 0.0, pool[rng.choice(len(pool), size=rows)])
    for kind in ("shift", "scale", "noise"):
        for level in SWEEP_LEVELS:
            window = pool[rng.choice(len(pool), size=rows)]
            if kind == "shift":
                window = window + level * sd
            elif kind == "scale":
                window = med + (window - med) * (1 + level)
            else:
                window = window + rng.normal(size=window.shape) * level * sd
            judge(kind, level, window)
    return {"tool": "sweep", "rows": rows, "cases": cases}


def agreement(cases: list[dict[str, Any]], psi: float, ks: float) -> dict[str, Any]:
    """How often selfheal's rule at (psi, ks) agrees with Evidently's on the sweep's features."""
    drifted = [c for c in cases if c["kind"] != "none"]
    null = [c for c in cases if c["kind"] == "none"]

    def ours(c: dict[str, Any]) -> bool:
        return bool(c["psi"] >= psi or c["ks"] >= ks)

    return {
        "psi": psi,
        "ks": ks,
        "agree": sum(ours(c) == (c["wasserstein"] >= 0.1) for c in drifted) / len(drifted),
        "only_selfheal": sum(ours(c) and c["wasserstein"] < 0.1 for c in drifted),
        "only_evidently": sum(not ours(c) and c["wasserstein"] >= 0.1 for c in drifted),
        "cases": len(drifted),
        "null_flags_selfheal": sum(ours(c) for c in null),
        "null_flags_evidently": sum(c["wasserstein"] >= 0.1 for c in null),
        "null_cases": len(null),
    }


def worker(tool: str, rows: int) -> dict[str, Any]:
    """One fresh process: set up, warm up on a small window, then measure one run."""
    import numpy as np

    from selfheal_daemon.model import drift
    from selfheal_daemon.model.schema import Schema

    if tool == "sweep":
        return sweep(rows)
    reference, current = make_data(rows)
    warm = current.iloc[:WARMUP_ROWS].copy()
    out: dict[str, Any] = {"tool": tool, "rows": rows}
    if tool == "evidently":
        run_evidently(reference, warm)
        verdict, seconds, mib, method, before = measure(lambda: run_evidently(reference, current))
    elif tool == "naive":
        run_naive(reference, warm)
        verdict, seconds, mib, method, before = measure(lambda: run_naive(reference, current))
        out["wasserstein_formula"] = normed_wasserstein(reference, current)
    else:
        ref = reference.to_numpy(dtype=np.float64)
        schema = Schema.california()
        builds = [measure(lambda: drift.ReferenceSummary.build(ref, schema)) for _ in range(5)]
        summary = builds[0][0]
        out["build_seconds"] = statistics.median(b[1] for b in builds)
        out["build_mib"] = max(b[2] for b in builds)
        with tempfile.TemporaryDirectory(prefix="selfheal-drift-") as tmp:
            path = Path(tmp) / "drift.npz"
            summary.save(path)
            out["summary_bytes"] = path.stat().st_size
        run_selfheal(summary, warm)
        out["window_f_order"] = bool(current.to_numpy(dtype=np.float64).flags.f_contiguous)
        verdict, seconds, mib, method, before = measure(lambda: run_selfheal(summary, current))
        row_major_array = np.ascontiguousarray(current.to_numpy(dtype=np.float64))

        def c_order() -> Any:
            from selfheal_daemon.config import DriftConfig

            return drift.check(summary, row_major_array, DriftConfig())

        # Time only: memory freed by the runs before is re-used (glibc raises its mmap threshold).
        out["c_order_seconds"] = measure(c_order)[1]
    out.update(verdict)
    out.update(
        {"seconds": seconds, "peak_mib": mib, "memory_method": method, "rss_before_mib": before}
    )
    return out


def spawn(tool: str, rows: int) -> dict[str, Any]:
    env = {**os.environ, "DO_NOT_TRACK": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.drift", "--worker", tool, "--rows", str(rows)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{tool} at {rows:,} rows failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ----- the report --------------------------------------------------------------------------------


def summarise(runs: list[dict[str, Any]], key: str) -> dict[str, float]:
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def aggregate(results: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    by_tool = {t: [r for r in results if r["tool"] == t and r["rows"] == rows] for t in TOOLS}
    out: dict[str, Any] = {"rows": rows}
    for tool, runs in by_tool.items():
        flags = {tuple(r["flagged"]) for r in runs}
        out[tool] = {
            "runs": len(runs),
            "seconds": summarise(runs, "seconds"),
            "peak_mib": summarise(runs, "peak_mib"),
            "rss_before_mib": summarise(runs, "rss_before_mib"),
            "flagged": list(runs[0]["flagged"]),
            "flags_stable": len(flags) == 1,
            "share": runs[0]["share"],
            "dataset_drift": runs[0]["dataset_drift"],
            "scores": runs[0]["scores"],
        }
    sh = by_tool["selfheal"]
    for key in ("build_seconds", "build_mib", "c_order_seconds"):
        out["selfheal"][key] = summarise(sh, key)
    out["selfheal"]["summary_bytes"] = sh[0]["summary_bytes"]
    out["selfheal"]["window_f_order"] = sh[0]["window_f_order"]
    formula = by_tool["naive"][0]["wasserstein_formula"]
    out["wasserstein_formula_max_error"] = max(
        abs(formula[name] - s["score"]) for name, s in out["evidently"]["scores"].items()
    )
    ev, us = out["evidently"], out["selfheal"]
    out["time_ratio"] = ev["seconds"]["median"] / us["seconds"]["median"]
    out["memory_ratio"] = us["peak_mib"]["median"] / ev["peak_mib"]["median"]
    out["same_flags"] = sorted(ev["flagged"]) == sorted(us["flagged"])
    return out


def table(rows: list[dict[str, Any]]) -> list[str]:
    def cell(tool: dict[str, Any], key: str, scale: float = 1.0) -> str:
        s = {k: v * scale for k, v in tool[key].items()}
        return f"{s['median']:,.1f} ({s['min']:,.1f}-{s['max']:,.1f})"

    lines = [
        "| current rows | tool | time ms, median (min-max) | peak MiB added, median (min-max) "
        "| RSS before, MiB | flagged | dataset drift (share) |",
        "| ---: | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for agg in rows:
        for tool in TOOLS:
            t = agg[tool]
            lines.append(
                f"| {agg['rows']:,} | {tool} | {cell(t, 'seconds', 1000)} | "
                f"{cell(t, 'peak_mib')} | {t['rss_before_mib']['median']:,.0f} | "
                f"{', '.join(t['flagged']) or '-'} | "
                f"{'yes' if t['dataset_drift'] else 'no'} ({t['share']:.3f}) |"
            )
    lines += [
        "",
        "| current rows | Evidently / selfheal time | selfheal / Evidently peak memory "
        "| same features flagged | selfheal on a C-order window, ms |",
        "| ---: | ---: | ---: | --- | ---: |",
    ]
    for agg in rows:
        us = agg["selfheal"]
        lines.append(
            f"| {agg['rows']:,} | {agg['time_ratio']:,.1f} | {agg['memory_ratio']:.3f} | "
            f"{'yes' if agg['same_flags'] else 'NO'} | "
            f"{us['c_order_seconds']['median'] * 1000:.1f} |"
        )
    us = rows[0]["selfheal"]
    lines += [
        "",
        f"summary build (once per model version, at training time): "
        f"{us['build_seconds']['median'] * 1000:.1f} ms median, "
        f"{us['build_mib']['median']:.1f} MiB peak, {us['summary_bytes'] / 1024:.0f} KiB on disk "
        f"({REFERENCE_ROWS:,} reference rows x 8 features)",
    ]
    return lines


def scores_table(agg: dict[str, Any]) -> list[str]:
    lines = [
        f"per-feature scores at {agg['rows']:,} rows:",
        "| feature | Evidently normed Wasserstein | selfheal PSI | selfheal KS "
        "| Evidently | selfheal |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    ev, us = agg["evidently"]["scores"], agg["selfheal"]["scores"]
    for name in us:
        verdicts = ["drift" if s[name]["drifted"] else "-" for s in (ev, us)]
        lines.append(
            f"| {name} | {ev[name]['score']:.3f} | {us[name]['psi']:.3f} | {us[name]['ks']:.3f} "
            f"| {verdicts[0]} | {verdicts[1]} |"
        )
    return lines


def sweep_table(
    cases: list[dict[str, Any]], rules: list[dict[str, Any]], aggregated: list[dict[str, Any]]
) -> list[str]:
    def rule(psi: float, ks: float) -> str:
        parts = [f"{name} >= {v:g}" for name, v in (("PSI", psi), ("KS", ks)) if v < 1e9]
        return " or ".join(parts) + (" only" if len(parts) == 1 else "")

    first = rules[0]
    lines = [
        f"sweep ({SWEEP_ROWS:,}-row windows; {first['cases']} drifted feature cases: shift, scale "
        f"and noise at {', '.join(map(str, SWEEP_LEVELS))} reference sd; "
        f"{first['null_cases']} undrifted ones):",
        "| selfheal rule | agrees with Evidently | only selfheal flags | only Evidently flags "
        "| false alarms, selfheal | false alarms, Evidently |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rules:
        lines.append(
            f"| {rule(r['psi'], r['ks'])} | {r['agree']:.1%} | "
            f"{r['only_selfheal']} | {r['only_evidently']} | {r['null_flags_selfheal']} | "
            f"{r['null_flags_evidently']} |"
        )
    null = [c for c in cases if c["kind"] == "none"]
    lines.append(
        "largest score without drift: "
        + ", ".join(
            f"{key} {max(c[key] for c in null):.3f}" for key in ("psi", "ks", "wasserstein")
        )
    )
    worst = max(a["wasserstein_formula_max_error"] for a in aggregated)
    lines.append(
        f"(Evidently's formula as used here vs its reported scores: max error {worst:.1e})"
    )
    return lines


def benchmark(args: argparse.Namespace) -> None:
    from importlib.metadata import version as dist_version

    sizes = QUICK_SIZES if args.quick else SIZES
    results: list[dict[str, Any]] = []
    for rows in sizes:
        for run in range(args.runs):
            for tool in TOOLS:  # alternating, so that the machine's mood hits all three alike
                progress(f"{rows:>9,} rows, run {run + 1}/{args.runs}: {tool} ...")
                result = spawn(tool, rows)
                results.append(result)
                progress(
                    f"{'':>9}  {tool}: {result['seconds']:.3f} s, {result['peak_mib']:.1f} MiB, "
                    f"flagged {', '.join(result['flagged']) or 'none'}"
                )
    aggregated = [aggregate(results, rows) for rows in sizes]
    progress(f"sweep: synthetic drift of every feature, {SWEEP_ROWS:,}-row windows ...")
    cases = spawn("sweep", SWEEP_ROWS)["cases"]
    rules = [agreement(cases, psi, ks) for psi, ks in SWEEP_RULES]
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {dist_version('numpy')}, scipy {dist_version('scipy')}, "
        f"pandas {dist_version('pandas')}, evidently {dist_version('evidently')}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    print(f"machine: {machine}")
    print(
        f"data: reference {REFERENCE_ROWS:,} rows; drift: MedInc x1.3, Population x1.5, "
        f"HouseAge +5, AveOccup x exp(N(0,1)); tiny shift {TINY_SHIFT} +0.02; {args.runs} runs"
    )
    print()
    for line in table(aggregated):
        print(line)
    print()
    for line in scores_table(aggregated[-1]):
        print(line)
    print()
    for line in sweep_table(cases, rules, aggregated):
        print(line)
    largest = aggregated[-1]
    print()
    print(
        f"at {largest['rows']:,} rows: Evidently / selfheal time {largest['time_ratio']:.1f} "
        f"(target >= 30), selfheal / Evidently peak memory {largest['memory_ratio']:.3f} "
        f"(target <= 0.5), same features flagged: {largest['same_flags']}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": machine,
            "seed": SEED,
            "reference_rows": REFERENCE_ROWS,
            "drift": {
                "MedInc": "x1.3",
                "Population": "x1.5",
                "HouseAge": "+5",
                "AveOccup": "x exp(N(0,1)) per row",
                TINY_SHIFT: "+0.02 (should not be flagged)",
            },
            "runs": args.runs,
            "aggregated": aggregated,
            "sweep": {"rows": SWEEP_ROWS, "levels": SWEEP_LEVELS, "rules": rules, "cases": cases},
            "raw": results,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        progress(f"raw data written to {args.json}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_RUNS} runs, no 1M-row window")
    parser.add_argument("--runs", type=int, default=None, help=f"default {DEFAULT_RUNS}")
    parser.add_argument("--json", type=Path, default=None, help="write the raw data here")
    parser.add_argument("--worker", choices=(*TOOLS, "sweep"), help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runs is None:
        args.runs = QUICK_RUNS if args.quick else DEFAULT_RUNS
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.rows)))
        return
    if args.json:
        args.json = args.json.resolve()
    enter_bench_venv()
    benchmark(args)


if __name__ == "__main__":
    main()
