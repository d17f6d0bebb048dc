"""Helpers of the CI workflow (deploy/ci/github-actions.yml): a demo batch, and the Markdown the
stages write to the job summary. Every decision stays with the ``selfheal`` commands and their
exit codes; this only makes a sample and renders their JSON.

    python deploy/ci/pipeline.py sample-batch OUT [--rows N] [--seed S]
    python deploy/ci/pipeline.py data FIX_JSON [--min-kept-share X]    (exit 1 below the share)
    python deploy/ci/pipeline.py once STAGE ONCE_JSON EXIT_CODE
    python deploy/ci/pipeline.py drifted ONCE_JSON                    (exit 0 if it saw drift)
    python deploy/ci/pipeline.py served VERIFY_JSON LIST_JSON         (exit 1 if one is broken)
    python deploy/ci/pipeline.py report REPORT_JSON [LIST_JSON]
    python deploy/ci/pipeline.py stages                 (the stages' results from $NEEDS)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ONCE_OUTCOMES = {
    0: "promoted",
    10: "kept the champion (the gate's metrics)",
    11: "rejected (model tests failed after the repair); champion kept",
    12: "current failed verification: last_good restored",
}


def _load(path: str) -> Any:
    return json.loads(Path(path).read_text())


def sample_batch(out: Path, rows: int, seed: int) -> None:
    """A labelled batch of the bundled data as the drift drill shifts it (richer, more crowded,
    north-east), with what a real feed brings: missing cells, an impossible value, a duplicate."""
    import numpy as np
    import pandas as pd

    from selfheal_daemon.daemon.drills import drifted_frame
    from selfheal_daemon.model.features import load_dataset

    frame = drifted_frame(load_dataset(None), rows, seed=seed)
    rng = np.random.default_rng(seed)
    gaps = rng.choice(len(frame), size=max(1, rows // 100), replace=False)
    frame.loc[gaps, "AveOccup"] = np.nan  # repaired: filled with the training median
    frame.loc[int(rng.integers(len(frame))), "HouseAge"] = -40.0  # impossible: quarantined
    frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)  # a duplicate: quarantined
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    print(f"wrote a sample batch of {len(frame):,} labelled rows to {out}")


def data_summary(path: str, min_kept_share: float) -> int:
    fixed = _load(path)
    rows_in, kept = int(fixed["rows_in"]), int(fixed["rows_kept"])
    share = kept / rows_in if rows_in else 0.0
    lines = [
        f"**data**: checked {rows_in:,} rows: kept {kept:,}, "
        f"quarantined {int(fixed['rows_quarantined']):,}",
        *(f"- {fix}" for fix in fixed.get("fixes", [])),
    ]
    if share < min_kept_share:
        lines.append(f"- **failed**: kept {share:.0%} of the rows, need {min_kept_share:.0%}")
    print("\n".join(lines) + "\n")
    return 0 if share >= min_kept_share else 1


def once_summary(stage: str, path: str, code: int) -> None:
    result = _load(path)
    verdict = result.get("verdict") or {}
    metric = str(verdict.get("metric") or "r2")
    cand, champ = verdict.get("candidate") or {}, verdict.get("champion") or {}
    line = f"**{stage}**: `selfheal once` exit {code}: {ONCE_OUTCOMES.get(code, 'error')}"
    if result.get("candidate"):
        line += f" {result['candidate']} over {result['champion']}"
    elif result.get("champion"):
        line += f" (serving {result['champion']})"
    lines = [line]
    if metric in cand and metric in champ:
        lines.append(
            f"- {metric}: candidate {cand[metric]:.3f}, champion {champ[metric]:.3f} "
            "on the same holdout"
        )
    if result.get("rolled_back_from"):
        lines.append(
            f"- self-healed: {result['rolled_back_from']} failed verification, "
            f"rolled back to {result['champion']}"
        )
    drift = result.get("drift")
    if drift is not None:
        state = "**drift detected**" if drift.get("dataset_drift") else "no dataset drift"
        lines.append(f"- {state}: {drift.get('reason', '')}")
        if drift.get("dataset_drift"):
            lines.append("- self-healed: retrained on the new rows and gated (see the outcome)")
    elif stage == "drift":
        lines.append("- no new rows: drift not checked")
    lines.extend(f"- {reason}" for reason in verdict.get("reasons", []))
    print("\n".join(lines) + "\n")


def drifted(path: str) -> int:
    drift = _load(path).get("drift") or {}
    return 0 if drift.get("dataset_drift") else 1


def stages(needs_json: str) -> None:
    """The result of every stage, from ``${{ toJSON(needs) }}``."""
    needs = json.loads(needs_json or "{}")
    lines = ["## Stages", "", "| stage | result |", "| --- | --- |"]
    lines += [f"| {job} | {need.get('result', '?')} |" for job, need in needs.items()]
    print("\n".join(lines) + "\n")


def served(verify_path: str, list_path: str) -> int:
    """Exit 0 when the versions served or fallen back to (current, last_good) verify."""
    ok = {entry["version"]: entry for entry in _load(verify_path)}
    aliases = {
        alias: entry["version"] for entry in _load(list_path) for alias in entry.get("aliases", [])
    }
    bad = 0
    for alias in ("current", "last_good"):
        version = aliases.get(alias)
        if version is None:
            continue
        entry = ok.get(version, {"ok": False, "problem": "not in the registry"})
        state = "verified" if entry["ok"] else f"FAILED: {entry['problem']}"
        print(f"- {alias} = {version}: {state}")
        bad += not entry["ok"]
    others = [v for v, e in ok.items() if not e["ok"] and v not in aliases.values()]
    if others:
        print(f"- kept in the registry, failing verification, never served: {', '.join(others)}")
    print()
    return 1 if bad or "current" not in aliases else 0


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value < 120 else f"{value / 60:.1f} min"


def report(path: str, list_path: str | None) -> None:
    data = _load(path)
    mttr, mtbf, avail = data["mttr"], data.get("mtbf") or {}, data.get("availability") or {}
    ratio = avail.get("ratio")
    rows = [
        ("incidents", str(data["incidents"])),
        (
            "resolved / escalated / failed / open",
            "{resolved} / {escalated} / {failed} / {open}".format(**data["by_outcome"]),
        ),
        ("auto-fixes", str(data["auto_fixes"])),
        ("recoveries", str(data["recoveries"])),
        ("rollbacks", str(data["rollbacks"])),
        ("retrains", str(data["retrains"])),
        ("manual interventions", str(data["manual_interventions"])),
        ("drills", str(data["drills"])),
        (
            "MTTR (mean / median)",
            f"{_seconds(mttr['mean_s'])} / {_seconds(mttr['median_s'])} "
            f"over {mttr['resolved']} resolved",
        ),
        ("MTBF", _seconds(mtbf.get("mtbf_s"))),
        (
            "availability",
            "-" if ratio is None else f"{ratio:.3%} ({avail['answered']}/{avail['probes']} probes)",
        ),
    ]
    lines = [
        "## Self-healing metrics (`selfheal report --json`)",
        "",
        "| metric | value |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
        "",
        "| incident kind | total | resolved | escalated | failed | MTTR mean |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, outcomes in sorted(data["by_kind_outcome"].items()):
        mean = (data.get("mttr_by_kind", {}).get(kind) or {}).get("mean_s")
        lines.append(
            f"| {kind} | {data['by_kind'].get(kind, 0)} | {outcomes['resolved']} | "
            f"{outcomes['escalated']} | {outcomes['failed']} | {_seconds(mean)} |"
        )
    if list_path:
        lines += ["", "| model | aliases | origin |", "| --- | --- | --- |"]
        lines += [
            f"| {m['version']} | {', '.join(m.get('aliases', [])) or '-'} | {m.get('origin', '')} |"
            for m in _load(list_path)
        ]
    print("\n".join(lines) + "\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pipeline.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sample = sub.add_parser("sample-batch")
    sample.add_argument("out", type=Path)
    sample.add_argument("--rows", type=int, default=2000)
    sample.add_argument("--seed", type=int, default=17)
    data = sub.add_parser("data")
    data.add_argument("fix_json")
    data.add_argument("--min-kept-share", type=float, default=0.5)
    once = sub.add_parser("once")
    once.add_argument("stage")
    once.add_argument("once_json")
    once.add_argument("code", type=int)
    srv = sub.add_parser("served")
    srv.add_argument("verify_json")
    srv.add_argument("list_json")
    sub.add_parser("drifted").add_argument("once_json")
    sub.add_parser("stages")
    rep = sub.add_parser("report")
    rep.add_argument("report_json")
    rep.add_argument("list_json", nargs="?")
    args = parser.parse_args(argv)
    if args.command == "sample-batch":
        sample_batch(args.out, args.rows, args.seed)
    elif args.command == "data":
        return data_summary(args.fix_json, args.min_kept_share)
    elif args.command == "once":
        once_summary(args.stage, args.once_json, args.code)
    elif args.command == "drifted":
        return drifted(args.once_json)
    elif args.command == "stages":
        stages(os.environ.get("NEEDS", ""))
    elif args.command == "served":
        return served(args.verify_json, args.list_json)
    else:
        report(args.report_json, args.list_json)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
