"""How cost grows: the drift check as the window grows tenfold, the report as the audit trail does.

- **drift check**: ``drift.check`` with a ``ReferenceSummary`` of 5,000 reference rows (built
  once, as at training time) on current windows of 10k, 100k and 1M rows: the data and drift of
  bench/drift.py (``make_data``), timed as bench/drift.py times selfheal (``run_selfheal``: the
  frame to numpy, then the check), here all in one process: one unmeasured warm-up on 2,000 rows,
  then ``--runs`` timed runs per size, more for a small size until its runs add up to 1 s (a run
  of a few milliseconds is at the mercy of a shared machine); medians with min and max.
  bench/drift.py times the same check once per fresh process, against Evidently.
- **report**: ``selfheal report`` over audit trails of 1k, 10k and 100k records. Each trail is
  written into a temp dir by the real writer (``audit.AuditLog``, with its default 10 MiB rotation
  and gzip compression, and ``IncidentBook`` linking each incident's records) on a simulated clock,
  a minute per monitoring pass (so the larger trails are mostly in rotated, gzip-compressed files,
  slower to read per record than the live file, as in the daemon's own trail), in the daemon's
  proportions: a ``no_drift`` record with the eight features' scores every pass, an availability
  record every 5 minutes, and at random (seeded) worker crashes and hangs with their recovery,
  repaired data batches, drift incidents with a retrain and an in-place deployment, manual
  retrains, daemon restarts, the odd drill. Timed, in this process: reading the trail
  (``audit.read_records``, every rotated file), ``build_report`` and ``format_report``, one
  warm-up then runs as for the drift check; and the CLI, ``selfheal report`` on the same state dir
  in a fresh process (what a user waits for, interpreter start and imports included).

For each tenfold step the time ratio is printed: about 10 means linear, less means a fixed cost
still dominates. ``--quick``: trails of 100, 1k and 10k records, fewer runs. Uses the benchmark
venv bench/.venv (bench/venvs.py; the script re-runs itself in it). Progress to stdout,
markdown tables at the end, ``--json PATH`` writes the figures.

    python3 -m bench.growth [--runs 5 | --quick] [--json bench/out/growth.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.harness import progress, write_json
from bench.venvs import BENCH_BIN, enter_bench_venv

DRIFT_SIZES = (10_000, 100_000, 1_000_000)
TRAIL_SIZES = (1_000, 10_000, 100_000)
QUICK_TRAIL_SIZES = (100, 1_000, 10_000)
DEFAULT_RUNS = 5
QUICK_RUNS = 3
DEFAULT_CLI_RUNS = 3
QUICK_CLI_RUNS = 1
WARMUP_ROWS = 2000
MIN_TIMED_S = 1.0  # small sizes are run until their runs add up to this
MAX_RUNS = 100
SEED = 20261127
TRAIL_START = datetime(2026, 1, 1, tzinfo=UTC)
FEATURES = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)


def spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
    }


def steps(sizes: tuple[int, ...], medians: list[float]) -> list[dict[str, Any]]:
    """The time ratio of each step between consecutive sizes (tenfold here)."""
    pairs = list(zip(sizes, medians, strict=True))
    return [
        {"from": a, "to": b, "size_ratio": b / a, "time_ratio": tb / ta}
        for (a, ta), (b, tb) in itertools.pairwise(pairs)
    ]


def repeat(run: Callable[[], float], runs: int) -> list[float]:
    """Times of at least ``runs`` runs, and more while they add up to less than MIN_TIMED_S (at
    most MAX_RUNS): a run of a few milliseconds is noise on a shared machine, a hundred are not."""
    times = [run() for _ in range(runs)]
    while sum(times) < MIN_TIMED_S and len(times) < MAX_RUNS:
        times.append(run())
    return times


# ----- the drift check --------------------------------------------------------------------------


def drift_growth(runs: int) -> dict[str, Any]:
    import numpy as np

    from bench.drift import make_data, run_selfheal
    from selfheal_daemon.model.drift import ReferenceSummary
    from selfheal_daemon.model.schema import Schema

    reference, warm = make_data(WARMUP_ROWS)
    summary = ReferenceSummary.build(reference.to_numpy(dtype=np.float64), Schema.california())
    run_selfheal(summary, warm)  # lazy imports and first-call set-up: not counted
    out: dict[str, Any] = {"sizes": list(DRIFT_SIZES), "seconds": {}, "flagged": {}}
    for rows in DRIFT_SIZES:
        _, current = make_data(rows)
        verdicts: list[dict[str, Any]] = []

        def check(current: Any = current, verdicts: list[dict[str, Any]] = verdicts) -> float:
            started = time.perf_counter()
            verdicts.append(run_selfheal(summary, current))
            return time.perf_counter() - started

        times = repeat(check, runs)
        out["seconds"][str(rows)] = spread(times)
        out["flagged"][str(rows)] = verdicts[-1]["flagged"]
        progress(
            f"drift check, {rows:>9,} rows: median {statistics.median(times) * 1000:.1f} ms "
            f"over {len(times)} runs (flagged {', '.join(verdicts[-1]['flagged'])})"
        )
        del current
    medians = [out["seconds"][str(r)]["median"] for r in DRIFT_SIZES]
    out["steps"] = steps(DRIFT_SIZES, medians)
    return out


# ----- an audit trail, as the daemon writes it --------------------------------------------------


class SimClock:
    """A clock that moves when the generator says: a trail of weeks is written in seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def utcnow(self) -> datetime:
        return TRAIL_START + timedelta(seconds=self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TrailWriter:
    """Writes ``size`` records through AuditLog and IncidentBook in the daemon's proportions."""

    def __init__(self, directory: Path, size: int) -> None:
        from selfheal_daemon.record.audit import AuditLog
        from selfheal_daemon.record.recorder import IncidentBook

        self.clock = SimClock()
        self.log = AuditLog(directory, clock=self.clock)
        self.book = IncidentBook(self.clock)
        self.size = size
        self.written = 0
        self.rng = random.Random(SEED)
        self.pid = 4000
        self.version = 1

    def write(self, record: dict[str, Any]) -> None:
        self.log.write(record)
        self.written += 1

    def note(self, issue: str, detection: str, details: dict[str, Any]) -> None:
        from selfheal_daemon.record.audit import bookkeeping_record

        self.write(bookkeeping_record(issue, detection, details))

    def drift_details(self, drifted: bool) -> dict[str, Any]:
        rng = self.rng
        features = {}
        for i, name in enumerate(FEATURES):
            hit = drifted and i % 2 == 0
            psi = round(rng.uniform(0.25, 0.8) if hit else rng.uniform(0.001, 0.02), 4)
            ks = round(rng.uniform(0.12, 0.4) if hit else rng.uniform(0.005, 0.04), 4)
            features[name] = {"psi": psi, "ks": ks, "drifted": hit}
        share = 0.5 if drifted else 0.0
        return {
            "version": f"v{self.version}",
            "rows": 5000,
            "judged": True,
            "score": round(share * 1.9, 4),
            "share": share,
            "weighted_share": round(share * 1.9, 4),
            "dataset_drift": drifted,
            "reason": (
                "4 of 8 features drifted (MedInc, AveRooms, Population, Latitude), weighted share "
                "0.95 >= 0.50"
                if drifted
                else "0 of 8 features drifted, weighted share 0.00 < 0.50"
            ),
            "features": features,
        }

    def process_incident(self, issue: str) -> None:
        slot = self.rng.randrange(2)
        old, self.pid = self.pid, self.pid + 7
        if issue == "service_crash":
            first = self.book.record(
                issue,
                slot,
                detection="worker_exit",
                action="restart",
                details={"pid": old, "returncode": -9, "state_before": "ready", "restart_in_s": 0},
            )
        else:
            first = self.book.record(
                issue,
                slot,
                detection="liveness_probe_failed",
                action="kill_and_restart",
                details={"pid": old, "consecutive_failures": 3, "last_error": "timed out"},
            )
        self.write(first)
        took = self.rng.uniform(0.11, 0.2)
        self.clock.advance(took)
        self.write(
            self.book.record(
                issue,
                slot,
                detection="worker_ready",
                action="confirmed_ready",
                details={"pid": self.pid, "time_to_recover_s": round(took, 3)},
                outcome="resolved",
            )
        )

    def data_quality(self) -> None:
        rows = self.rng.randrange(500, 5000)
        self.write(
            self.book.record(
                "data_quality",
                f"batch-{self.written}.csv",
                detection="outliers",
                action="auto_fix_applied",
                details={
                    "file": f"batch-{self.written}.csv",
                    "rows_in": rows,
                    "rows_kept": rows,
                    "rows_quarantined": 0,
                    "fixes": [
                        f"Capped {self.rng.randrange(1, 30)} outliers in MedInc to [0, 21.54]"
                    ],
                    "detections": ["outliers"],
                },
                outcome="resolved",
            )
        )

    def deployment(self, issue: str, first: dict[str, Any]) -> None:
        """A retrain's three records: the decision, the gate, every worker on the new version."""
        manual = issue == "manual_action"
        self.write(self.book.record(issue, None, manual=manual, **first))
        self.clock.advance(self.rng.uniform(20, 60))
        candidate = f"v{self.version + 1}"
        metrics = {"mae": 0.288, "r2": 0.852, "rmse": 0.44}
        self.write(
            self.book.record(
                issue,
                None,
                detection="candidate_passed_gate",
                action="deploy",
                details={
                    "candidate": candidate,
                    "verdict": {"candidate": metrics, "champion": metrics, "failed_tests": []},
                },
                manual=manual,
            )
        )
        seconds = round(self.rng.uniform(0.7, 1.5), 3)
        self.clock.advance(seconds)
        self.write(
            self.book.record(
                issue,
                None,
                detection="all_workers_on_version",
                action="deployed",
                details={"version": candidate, "from": f"v{self.version}", "seconds": seconds},
                outcome="resolved",
                manual=manual,
            )
        )
        self.version += 1

    def restart_daemon(self) -> None:
        self.note("lifecycle", "daemon_stop", {"pid": self.pid, "uptime_s": 86400.0})
        self.clock.advance(2.0)
        self.note("lifecycle", "daemon_start", {"pid": self.pid + 1, "adopted": 2})

    def one_pass(self) -> None:
        """One simulated minute: a monitoring pass and whatever happened around it."""
        self.clock.advance(60.0 + self.rng.uniform(-0.05, 0.05))
        left = self.size - self.written
        events: list[tuple[float, int, Callable[[], None]]] = [
            (1 / 120, 2, lambda: self.process_incident("service_crash")),
            (1 / 600, 2, lambda: self.process_incident("service_hang")),
            (1 / 240, 1, self.data_quality),
            (
                1 / 1440,
                3,
                lambda: self.deployment(
                    "data_drift",
                    {
                        "detection": "dataset_drift",
                        "action": "retrain",
                        "details": self.drift_details(drifted=True),
                    },
                ),
            ),
            (
                1 / 2880,
                3,
                lambda: self.deployment(
                    "manual_action",
                    {
                        "detection": "operator_request",
                        "action": "retrain",
                        "details": {"reason": "manual retrain (control endpoint)"},
                    },
                ),
            ),
            (1 / 1440, 2, self.restart_daemon),
        ]
        for chance, records, happen in events:
            if self.rng.random() < chance and records <= left - 1:
                if self.rng.random() < 0.02 and records == 2:  # the odd drill
                    self.book.expect_drill("service_crash", 0)
                happen()
                left = self.size - self.written
        if left <= 0:
            return
        if round(self.clock.now / 60) % 5 == 0 and left > 1:
            self.note("availability", "probe_window", {"probes": 300, "answered": 300,
                                                       "window_s": 300.0})  # fmt: skip
        self.note("data_drift", "no_drift", self.drift_details(drifted=False))

    def fill(self) -> None:
        while self.written < self.size:
            self.one_pass()
        self.log.close()


def make_trail(state_dir: Path, size: int) -> dict[str, Any]:
    audit_dir = state_dir / "audit"
    started = time.perf_counter()
    writer = TrailWriter(audit_dir, size)
    writer.fill()
    took = time.perf_counter() - started
    files = sorted(audit_dir.iterdir())
    with (audit_dir / "audit.jsonl").open("rb") as live:
        plain = sum(1 for _ in live)
    return {
        "records": writer.written,
        "in_gzip": writer.written - plain,  # rotated and compressed: slower to read per record
        "write_s": took,
        "files": len(files),
        "bytes_on_disk": sum(f.stat().st_size for f in files),
        "span_days": writer.clock.now / 86400,
        "end": writer.clock.utcnow(),
    }


def time_report(audit_dir: Path, now: datetime) -> dict[str, Any]:
    from selfheal_daemon.cli.report_format import format_report
    from selfheal_daemon.record.audit import ReadStats, read_records
    from selfheal_daemon.record.report import build_report

    started = time.perf_counter()
    stats = ReadStats()
    records = list(read_records(audit_dir, stats))
    read = time.perf_counter()
    report = build_report(records, now=now, days=None)
    format_report(report)
    done = time.perf_counter()
    return {
        "read_s": read - started,
        "build_s": done - read,
        "total_s": done - started,
        "records": stats.records,
        "incidents": report.incidents,
    }


def time_cli(config: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(BENCH_BIN / "selfheal"), "report", "--config", str(config)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return time.perf_counter() - started


def report_growth(sizes: tuple[int, ...], runs: int, cli_runs: int) -> dict[str, Any]:
    from loguru import logger

    logger.remove()  # loguru's default stderr sink would echo every audit line
    out: dict[str, Any] = {"sizes": list(sizes), "trails": {}, "in_process": {}, "cli": {}}
    with tempfile.TemporaryDirectory(prefix="selfheal-growth-") as tmp:
        for size in sizes:
            state_dir = Path(tmp) / f"trail-{size}"
            progress(f"report: writing an audit trail of {size:,} records ...")
            trail = make_trail(state_dir, size)
            now = trail.pop("end") + timedelta(minutes=1)
            out["trails"][str(size)] = trail
            progress(
                f"report: {trail['records']:,} records over {trail['span_days']:.1f} simulated "
                f"days written in {trail['write_s']:.1f} s "
                f"({trail['records'] / trail['write_s']:,.0f} records/s), "
                f"{trail['files']} file(s), {trail['bytes_on_disk'] / 2**20:.1f} MiB, "
                f"{trail['in_gzip']:,} records in gzip-compressed rotated files"
            )
            time_report(state_dir / "audit", now)  # warm-up: page cache, imports
            timed: list[dict[str, Any]] = []

            def report(
                audit: Path = state_dir / "audit",
                at: datetime = now,
                timed: list[dict[str, Any]] = timed,
            ) -> float:
                timed.append(time_report(audit, at))
                return float(timed[-1]["total_s"])

            repeat(report, runs)
            if timed[0]["records"] != trail["records"]:
                raise RuntimeError(
                    f"read {timed[0]['records']} records of the {trail['records']} written"
                )
            out["in_process"][str(size)] = {
                key: spread([t[key] for t in timed]) for key in ("read_s", "build_s", "total_s")
            }
            out["in_process"][str(size)]["incidents"] = timed[0]["incidents"]
            config = state_dir / "config.toml"
            config.write_text(f"state_dir = {json.dumps(str(state_dir))}\n")
            out["cli"][str(size)] = spread([time_cli(config) for _ in range(cli_runs)])
            progress(
                f"report: {size:,} records: read + build + format "
                f"{out['in_process'][str(size)]['total_s']['median'] * 1000:.0f} ms median "
                f"({timed[0]['incidents']:,} incidents); `selfheal report` "
                f"{out['cli'][str(size)]['median']:.2f} s"
            )
    totals = [out["in_process"][str(s)]["total_s"]["median"] for s in sizes]
    out["in_process_steps"] = steps(sizes, totals)
    out["cli_steps"] = steps(sizes, [out["cli"][str(s)]["median"] for s in sizes])
    return out


# ----- main -------------------------------------------------------------------------------------


def tables(data: dict[str, Any]) -> list[str]:
    drift, report = data["drift"], data["report"]
    lines = [
        "| drift check, current rows | median ms (min-max) | x the previous size's time |",
        "| ---: | ---: | ---: |",
    ]
    ratios = {s["to"]: s["time_ratio"] for s in drift["steps"]}
    for rows in drift["sizes"]:
        s = drift["seconds"][str(rows)]
        ratio = f"{ratios[rows]:.1f}" if rows in ratios else "-"
        lines.append(
            f"| {rows:,} | {s['median'] * 1000:.1f} ({s['min'] * 1000:.1f}-"
            f"{s['max'] * 1000:.1f}) | {ratio} |"
        )
    lines += [
        "",
        "| audit records | MiB on disk (files) | share gzipped | read ms | build + format ms "
        "| total ms "
        "| x previous | `selfheal report` s | x previous |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    in_proc = {s["to"]: s["time_ratio"] for s in report["in_process_steps"]}
    cli = {s["to"]: s["time_ratio"] for s in report["cli_steps"]}
    for size in report["sizes"]:
        trail, t = report["trails"][str(size)], report["in_process"][str(size)]
        lines.append(
            f"| {size:,} | {trail['bytes_on_disk'] / 2**20:.1f} ({trail['files']}) "
            f"| {trail['in_gzip'] / trail['records']:.0%} "
            f"| {t['read_s']['median'] * 1000:.0f} | {t['build_s']['median'] * 1000:.0f} "
            f"| {t['total_s']['median'] * 1000:.0f} "
            f"| {f'{in_proc[size]:.1f}' if size in in_proc else '-'} "
            f"| {report['cli'][str(size)]['median']:.2f} "
            f"| {f'{cli[size]:.1f}' if size in cli else '-'} |"
        )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=None, help=f"default {DEFAULT_RUNS}")
    parser.add_argument("--cli-runs", type=int, default=None, help=f"default {DEFAULT_CLI_RUNS}")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_RUNS} runs, {QUICK_CLI_RUNS} CLI run, trails of {QUICK_TRAIL_SIZES}",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = QUICK_RUNS if args.quick else DEFAULT_RUNS
    if args.cli_runs is None:
        args.cli_runs = QUICK_CLI_RUNS if args.quick else DEFAULT_CLI_RUNS
    if args.runs < 1 or args.cli_runs < 1:
        parser.error("--runs and --cli-runs must be at least 1")
    return args


def main() -> None:
    from importlib.metadata import version as dist_version

    args = parse_args()
    if args.json:
        args.json = args.json.resolve()
    enter_bench_venv()
    data: dict[str, Any] = {"runs": args.runs, "cli_runs": args.cli_runs}
    data["drift"] = drift_growth(args.runs)
    trails = QUICK_TRAIL_SIZES if args.quick else TRAIL_SIZES
    data["report"] = report_growth(trails, args.runs, args.cli_runs)
    data["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {dist_version('numpy')}, loguru {dist_version('loguru')}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    print()
    print(f"machine: {data['machine']}")
    for line in tables(data):
        print(line)
    if args.json:
        write_json(args.json, data, "figures")


if __name__ == "__main__":
    main()
