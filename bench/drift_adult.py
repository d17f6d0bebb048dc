"""The drift check on Adult's 14 mixed columns: selfheal's ``drift.check`` against Evidently.

The data: the UCI Adult census data shipped in ``examples/adult/`` (32,561 rows; 6 numeric and 8
categorical features), loaded and typed the way ``selfheal run --config examples/adult/config.toml``
does it (``features.load_base``: missing-value tokens such as ``?`` read as missing;
``features.learn_schema``: the inferred schema). The rows are real throughout:

- **reference**: the 5,000 rows training keeps as the drift reference: the seeded train/holdout
  split (``training.split``), then 5,000 training rows drawn without replacement with the training
  seed, exactly as ``training.train`` draws them;
- **current window** (1M rows; 100k with ``--quick``): real rows drawn with replacement, half of
  them from all 32,561 rows and half from one group, women under 30 (``age < 30 and sex ==
  Female``, 3,986 rows), then shuffled. That moves what goes with age and sex (age, hours worked,
  marital status, relationship, occupation, sex) and leaves the rest near where it was (race,
  native country, final weight, capital gain and loss, education, workclass): some numeric and
  some categorical columns drift, others do not, by the data's own correlations.

What is measured, each run in a fresh subprocess (peak memory its own), the tools alternating:

- **selfheal**: ``drift.check(summary, window, DriftConfig())``, the default rule: a numeric column
  drifts at PSI >= 0.2 (on the reference's deciles) or KS >= 0.1; a categorical one at PSI >= 0.2
  (over its categories plus an unseen and a missing bin) or Jensen-Shannon distance >= 0.1 (log
  base 2); every feature weighs the same here, so the weighted share is the plain share. The window
  is the schema's float64 matrix (``Schema.encode``: categories as codes), in row-major order, the
  form the daemon's window has: each request's rows are encoded once when the service answers it
  (what encoding the 1M-row frame at once costs is timed apart and shown). The reference summary is
  built before the timing, as at training time; its build time and size are shown apart.
- **evidently** (configured to selfheal's statistics): one ``Report`` of Evidently's column drift
  metric, ``ValueDrift``, twice per column, on the two pandas frames (text categories, NaN where
  missing): numeric columns with Evidently's ``psi`` at 0.2 and the two-sample KS statistic at
  0.1 (a custom ``StatTest`` registered with Evidently: ``scipy.stats.ks_2samp(...).statistic``;
  Evidently's own ``ks`` is the KS test's p-value, which against a 5,000-row reference flags a KS
  distance of about 0.02);
  categorical columns with its ``psi`` at 0.2 and its ``jensenshannon`` at 0.1 x sqrt(ln 2) =
  0.0833 (Evidently passes scipy's default natural log, whose distance is the base-2 one times
  sqrt(ln 2): see ``selfheal_daemon/model/drift_stats.py``). A column is flagged when either of its
  two tests is, as in selfheal's rule. The timed run and the ratio are this configuration's.
- **evidently-default**: ``Report([DataDriftPreset()])`` with Evidently's defaults, for context:
  Wasserstein distance over the reference's standard deviation >= 0.1 for a numeric column,
  Jensen-Shannon distance (natural log) >= 0.1 for a categorical one (selfheal's 0.1201).

Where the two still differ by construction: Evidently's PSI bins a numeric column (more than 20
distinct values) into equal-width Sturges bins over both samples, selfheal into the reference's
deciles; Evidently drops missing cells before a categorical test, selfheal keeps them as a bin
(the model sees them); Evidently fills an empty bin with 1e-4 (or a millionth of the smallest
share), selfheal floors both shares at 1e-4. The per-column table shows every score side by side.

Each subprocess imports what it needs, builds the data, runs its tool once on a 2,000-row window
(lazy imports and first-call set-up are not counted), then times one run on the full window
(``time.perf_counter``); memory as bench/drift.py measures it (``measure``). Medians with min and
max over ``--runs`` runs (default 3). Runs in bench/.venv-drift (Evidently, never a dependency of
the project; bench/drift.py builds it, bench/venvs.py ``ensure_venv``); the script re-runs itself
there. No network is used (DO_NOT_TRACK). Progress to stderr, markdown to stdout, the figures to
``--json PATH``.

    python3 -m bench.drift_adult [--quick] [--runs N] [--json bench/out/drift_adult.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.drift import enter_bench_venv, measure

if TYPE_CHECKING:  # imported at run time only inside bench/.venv-drift, after the re-exec
    import numpy as np
    import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "adult" / "config.toml"

SEED = 20261203
ROWS = 1_000_000
QUICK_ROWS = 100_000
DEFAULT_RUNS = 3
WARMUP_ROWS = 2000
GROUP_SHARE = 0.5  # of the window drawn from the group; the rest from all rows
GROUP = "age < 30 and sex == Female"
TOOLS = ("evidently", "selfheal", "evidently-default")
PSI_THRESHOLD, KS_THRESHOLD, JS_THRESHOLD = 0.2, 0.1, 0.1  # DriftConfig's defaults
JS_NATURAL = math.sqrt(math.log(2))  # Evidently's distance (natural log) / selfheal's (base 2)
KS_METHOD = "ks_statistic"

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s] {message}", file=sys.stderr, flush=True)


# ----- the data ----------------------------------------------------------------------------------


def load_adult() -> tuple[Any, pd.DataFrame, Any]:
    """(config, frame, schema) as ``selfheal run --config examples/adult/config.toml`` has them."""
    from selfheal_daemon.config import load_config
    from selfheal_daemon.model.features import learn_schema, load_base

    cfg = load_config(EXAMPLE)
    frame = load_base(cfg)
    return cfg, frame, learn_schema(cfg, frame)


def make_data(rows: int) -> dict[str, Any]:
    """The reference and a current window of ``rows``, as frames and as the schema's matrices."""
    import numpy as np

    from selfheal_daemon.model.training import split

    cfg, frame, schema = load_adult()
    features = list(schema.features)
    # The reference exactly as training.train draws it: training rows, then the seeded sample.
    x_train, _, _, _, at_train, _ = split(frame, cfg.training, schema)
    rng = np.random.default_rng(cfg.training.seed)
    take = min(cfg.training.reference_rows, len(x_train))
    pick = np.sort(rng.choice(len(x_train), size=take, replace=False))
    reference = frame.iloc[at_train[pick]][features].reset_index(drop=True)
    group = np.flatnonzero(((frame["age"] < 30) & (frame["sex"] == "Female")).to_numpy())
    draw = np.random.default_rng([SEED, rows])
    from_group = round(rows * GROUP_SHARE)
    index = np.concatenate(
        [draw.choice(len(frame), size=rows - from_group), draw.choice(group, size=from_group)]
    )
    index = index[draw.permutation(rows)]
    encoded = schema.encode(frame)  # every real row once; the window's rows are copies of them
    return {
        "schema": schema,
        "reference": reference,
        "reference_x": x_train[pick],
        "current": frame.iloc[index][features].reset_index(drop=True),
        "current_x": np.ascontiguousarray(encoded[index]),  # row-major, as the daemon's window
        "group_rows": int(group.size),
        "data_rows": len(frame),
    }


# ----- the tools ---------------------------------------------------------------------------------


def _register_ks() -> None:
    """Evidently's own ``ks`` is a p-value; this is the KS statistic, selfheal's effect size."""
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType
    from scipy.stats import ks_2samp

    def ks_statistic(
        reference: pd.Series, current: pd.Series, _kind: Any, threshold: float
    ) -> tuple[float, bool]:
        value = float(ks_2samp(reference.to_numpy(), current.to_numpy()).statistic)
        return value, value >= threshold

    register_stattest(
        StatTest(
            name=KS_METHOD,
            display_name="Kolmogorov-Smirnov statistic",
            allowed_feature_types=[ColumnType.Numerical],
            default_threshold=KS_THRESHOLD,
        ),
        ks_statistic,
    )


def run_evidently(
    schema: Any, reference: pd.DataFrame, current: pd.DataFrame, *, matched: bool
) -> dict[str, Any]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    numeric = [c.name for c in schema.columns if c.is_numeric]
    categorical = [c.name for c in schema.columns if not c.is_numeric]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    if matched:
        metrics: list[Any] = []
        for col in schema.columns:
            metrics.append(ValueDrift(column=col.name, method="psi", threshold=PSI_THRESHOLD))
            if col.is_numeric:
                metrics.append(
                    ValueDrift(column=col.name, method=KS_METHOD, threshold=KS_THRESHOLD)
                )
            else:
                metrics.append(
                    ValueDrift(
                        column=col.name, method="jensenshannon", threshold=JS_THRESHOLD * JS_NATURAL
                    )
                )
        report = Report(metrics)
    else:
        report = Report([DataDriftPreset()])
    snapshot = report.run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    scores: dict[str, dict[str, Any]] = {name: {} for name in schema.features}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if not config.get("type", "").endswith("ValueDrift"):
            continue
        value, threshold = float(metric["value"]), float(config["threshold"])
        method = str(config["method"])
        drifted = value < threshold if "p_value" in method else value >= threshold
        scores[config["column"]][method] = {
            "score": value,
            "threshold": threshold,
            "drifted": drifted,
        }
    flagged = [name for name in schema.features if any(t["drifted"] for t in scores[name].values())]
    return {"scores": scores, "flagged": flagged, "share": len(flagged) / len(schema.features)}


def run_selfheal(summary: Any, window: np.ndarray) -> dict[str, Any]:
    from selfheal_daemon.config import DriftConfig
    from selfheal_daemon.model.drift import check

    result = check(summary, window, DriftConfig())
    return {
        "scores": {
            f.name: {"kind": f.kind, "psi": f.psi, "ks": f.ks, "js": f.js, "drifted": f.drifted}
            for f in result.features
        },
        "flagged": list(result.drifted_features()),
        "share": result.share,
        "dataset_drift": result.dataset_drift,
    }


def worker(tool: str, rows: int) -> dict[str, Any]:
    """One fresh process: set up, warm up on a small window, then measure one run."""
    import numpy as np

    from selfheal_daemon.model import drift

    data = make_data(rows)
    schema, reference, current = data["schema"], data["reference"], data["current"]
    out: dict[str, Any] = {
        "tool": tool,
        "rows": rows,
        "group_rows": data["group_rows"],
        "data_rows": data["data_rows"],
    }
    if tool.startswith("evidently"):
        _register_ks()
        matched = tool == "evidently"
        warm = current.iloc[:WARMUP_ROWS].copy()
        run_evidently(schema, reference, warm, matched=matched)
        verdict, seconds, mib, method, before = measure(
            lambda: run_evidently(schema, reference, current, matched=matched)
        )
    else:
        ref = data["reference_x"]
        builds = [measure(lambda: drift.ReferenceSummary.build(ref, schema)) for _ in range(5)]
        summary = builds[0][0]
        out["build_seconds"] = statistics.median(b[1] for b in builds)
        with tempfile.TemporaryDirectory(prefix="selfheal-drift-") as tmp:
            path = Path(tmp) / "drift.npz"
            summary.save(path)
            out["summary_bytes"] = path.stat().st_size
        window = data["current_x"]
        run_selfheal(summary, window[:WARMUP_ROWS])
        verdict, seconds, mib, method, before = measure(lambda: run_selfheal(summary, window))
        column_major = np.asfortranarray(window)
        out["f_order_seconds"] = measure(lambda: run_selfheal(summary, column_major))[1]
        del column_major
        # What the daemon pays per request at serving time, here for the whole window at once.
        encoded, out["encode_seconds"] = measure(lambda: schema.encode(current))[:2]
        out["encode_matches"] = bool(np.array_equal(encoded, window, equal_nan=True))
    out.update(verdict)
    out.update(
        {"seconds": seconds, "peak_mib": mib, "memory_method": method, "rss_before_mib": before}
    )
    return out


def spawn(tool: str, rows: int) -> dict[str, Any]:
    env = {**os.environ, "DO_NOT_TRACK": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.drift_adult", "--worker", tool, "--rows", str(rows)],
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


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def aggregate(results: list[dict[str, Any]], rows: int, kinds: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": rows}
    for tool in TOOLS:
        runs = [r for r in results if r["tool"] == tool]
        out[tool] = {
            "runs": len(runs),
            "seconds": spread([r["seconds"] for r in runs]),
            "peak_mib": spread([r["peak_mib"] for r in runs]),
            "rss_before_mib": spread([r["rss_before_mib"] for r in runs]),
            "flagged": list(runs[0]["flagged"]),
            "flags_stable": len({tuple(r["flagged"]) for r in runs}) == 1,
            "share": runs[0]["share"],
            "scores": runs[0]["scores"],
        }
    sh = [r for r in results if r["tool"] == "selfheal"]
    us = out["selfheal"]
    for key in ("build_seconds", "f_order_seconds", "encode_seconds"):
        us[key] = spread([r[key] for r in sh])
    us["summary_bytes"] = sh[0]["summary_bytes"]
    us["encode_matches"] = all(r["encode_matches"] for r in sh)
    us["dataset_drift"] = sh[0]["dataset_drift"]
    ev, default = out["evidently"], out["evidently-default"]
    out["time_ratio"] = ev["seconds"]["median"] / us["seconds"]["median"]
    out["default_time_ratio"] = default["seconds"]["median"] / us["seconds"]["median"]
    out["memory_ratio"] = us["peak_mib"]["median"] / ev["peak_mib"]["median"]
    out["with_encode_ratio"] = ev["seconds"]["median"] / (
        us["seconds"]["median"] + us["encode_seconds"]["median"]
    )
    out["same_flags"] = set(ev["flagged"]) == set(us["flagged"])
    out["default_same_flags"] = set(default["flagged"]) == set(us["flagged"])
    out["only_selfheal"] = sorted(set(us["flagged"]) - set(ev["flagged"]))
    out["only_evidently"] = sorted(set(ev["flagged"]) - set(us["flagged"]))
    out["default_only_selfheal"] = sorted(set(us["flagged"]) - set(default["flagged"]))
    out["default_only_evidently"] = sorted(set(default["flagged"]) - set(us["flagged"]))
    out["kinds"] = kinds
    return out


def _cell(spread_: dict[str, float], scale: float = 1.0) -> str:
    s = {k: v * scale for k, v in spread_.items()}
    return f"{s['median']:,.1f} ({s['min']:,.1f}-{s['max']:,.1f})"


def table(agg: dict[str, Any]) -> list[str]:
    lines = [
        "| tool | time ms, median (min-max) | peak MiB added, median (min-max) | RSS before, MiB "
        "| columns flagged | share |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for tool in TOOLS:
        t = agg[tool]
        lines.append(
            f"| {tool} | {_cell(t['seconds'], 1000)} | {_cell(t['peak_mib'])} | "
            f"{t['rss_before_mib']['median']:,.0f} | {', '.join(t['flagged']) or '-'} | "
            f"{t['share']:.3f} |"
        )
    us = agg["selfheal"]
    lines += [
        "",
        f"Evidently (selfheal's statistics) / selfheal, time: {agg['time_ratio']:,.1f}; "
        f"Evidently's defaults / selfheal: {agg['default_time_ratio']:,.1f}; "
        f"selfheal / Evidently peak memory added: {agg['memory_ratio']:.3f}",
        f"the same columns flagged: {'yes' if agg['same_flags'] else 'NO'} (Evidently with "
        f"selfheal's statistics); {'yes' if agg['default_same_flags'] else 'NO'} "
        f"(Evidently's defaults)",
        f"selfheal on a column-major (F-order) window: "
        f"{us['f_order_seconds']['median'] * 1000:.1f} ms; encoding the {agg['rows']:,}-row frame "
        f"with schema.encode (paid per request at serving time, not by a check): "
        f"{us['encode_seconds']['median']:.2f} s (equal to the window: {us['encode_matches']}); "
        f"check + encode against Evidently: {agg['with_encode_ratio']:.1f}",
        f"summary build (once per model version, at training time): "
        f"{us['build_seconds']['median'] * 1000:.1f} ms median, "
        f"{us['summary_bytes'] / 1024:.0f} KiB on disk",
    ]
    return lines


def _num(value: Any) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def scores_table(agg: dict[str, Any]) -> list[str]:
    us, ev = agg["selfheal"]["scores"], agg["evidently"]["scores"]
    default = agg["evidently-default"]["scores"]
    lines = [
        f"per-column scores at {agg['rows']:,} rows (selfheal: PSI >= {PSI_THRESHOLD}, KS >= "
        f"{KS_THRESHOLD}, JS base 2 >= {JS_THRESHOLD}; Evidently configured: PSI >= "
        f"{PSI_THRESHOLD}, KS >= {KS_THRESHOLD}, JS natural log >= "
        f"{JS_THRESHOLD * JS_NATURAL:.4f}; "
        "Evidently's defaults: normed Wasserstein >= 0.1, JS natural log >= 0.1):",
        "| column | kind | selfheal PSI | selfheal KS / JS | Evidently PSI | Evidently KS / JS "
        "| Evidently default (method: score) | selfheal | Evidently | Evidently default |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- |",
    ]
    for name, s in us.items():
        e, d = ev[name], default[name]
        other = KS_METHOD if s["kind"] == "numeric" else "jensenshannon"
        d_method, d_score = next(iter(d.items()))  # the preset tests each column once
        verdicts = [
            "drift" if s["drifted"] else "-",
            "drift" if any(t["drifted"] for t in e.values()) else "-",
            "drift" if d_score["drifted"] else "-",
        ]
        ours = s["ks"] if s["kind"] == "numeric" else s["js"]
        lines.append(
            f"| {name} | {s['kind']} | {_num(s['psi'])} | {_num(ours)} | "
            f"{_num(e['psi']['score'])} | {_num(e[other]['score'])} | "
            f"{d_method}: {d_score['score']:.3f} | {' | '.join(verdicts)} |"
        )
    return lines


def benchmark(args: argparse.Namespace) -> None:
    from importlib.metadata import version as dist_version

    rows = QUICK_ROWS if args.quick else ROWS
    results: list[dict[str, Any]] = []
    progress(
        f"Adult drift check: {rows:,}-row windows of real rows, {GROUP_SHARE:.0%} from "
        f"{GROUP}; {args.runs} runs of {', '.join(TOOLS)}, each in a fresh process"
    )
    for run in range(args.runs):
        for tool in TOOLS:  # alternating, so that the machine's mood hits all of them alike
            progress(f"{rows:>9,} rows, run {run + 1}/{args.runs}: {tool} ...")
            result = spawn(tool, rows)
            results.append(result)
            progress(
                f"{'':>9}  {tool}: {result['seconds']:.3f} s, {result['peak_mib']:.1f} MiB, "
                f"flagged {', '.join(result['flagged']) or 'none'}"
            )
    ours = next(r for r in results if r["tool"] == "selfheal")
    kinds = {name: s["kind"] for name, s in ours["scores"].items()}
    agg = aggregate(results, rows, kinds)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {dist_version('numpy')}, scipy {dist_version('scipy')}, "
        f"pandas {dist_version('pandas')}, evidently {dist_version('evidently')}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    first = results[0]
    print(f"machine: {machine}")
    print(
        f"data: examples/adult ({first['data_rows']:,} rows, 14 features); reference 5,000 "
        f"training rows; window {rows:,} real rows, {GROUP_SHARE:.0%} from {GROUP} "
        f"({first['group_rows']:,} rows); {args.runs} runs"
    )
    print()
    for line in table(agg):
        print(line)
    print()
    for line in scores_table(agg):
        print(line)
    print()
    differs = ""
    if not agg["same_flags"]:
        differs = (
            f" (only selfheal: {', '.join(agg['only_selfheal']) or '-'}; only Evidently: "
            f"{', '.join(agg['only_evidently']) or '-'})"
        )
    print(
        f"at {rows:,} rows: Evidently / selfheal time {agg['time_ratio']:.1f} (target >= 30), "
        f"same columns flagged: {agg['same_flags']}{differs}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "machine": machine,
            "seed": SEED,
            "reference_rows": 5000,
            "window": {"rows": rows, "group": GROUP, "group_share": GROUP_SHARE},
            "thresholds": {
                "psi": PSI_THRESHOLD,
                "ks": KS_THRESHOLD,
                "js_base2": JS_THRESHOLD,
                "js_natural_evidently": JS_THRESHOLD * JS_NATURAL,
            },
            "runs": args.runs,
            "aggregated": agg,
            "raw": results,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        progress(f"figures written to {args.json}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_ROWS:,}-row window")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"default {DEFAULT_RUNS}")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--worker", choices=TOOLS, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
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
