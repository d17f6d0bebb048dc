"""The summary block of docs/BENCHMARKS.md that `make bench` writes, and only that block.

``block(results)`` renders the results document of bench/suite.py as markdown between two marker
comments; ``update(path, block)`` replaces the marked block in the file, or, when the file has none,
inserts it after the intro (before the first ``## `` heading), leaving every other line as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.suite_rows import ratio_text

BEGIN = "<!-- make bench: begin (written by bench/suite.py: edit the script, not this block) -->"
BEGIN_PREFIX = "<!-- make bench: begin"
END = "<!-- make bench: end -->"
PART_TITLES = {
    "recovery": "recovery",
    "swap": "model swap",
    "drift": "drift check",
    "drift_adult": "drift check, Adult",
    "serving": "serving",
    "serving_adult": "serving, Adult",
    "footprint": "footprint",
    "growth": "growth",
    "training": "training",
    "peers": "against MLServer and BentoML",
    "peers_adult": "against MLServer and BentoML, Adult",
    "ray": "Ray Serve backend",
}
VERSION_ORDER = (
    "python",
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
    "evidently",
    "pandas (Evidently's venv)",
    "mlserver",
    "mlserver-sklearn",
    "uvicorn (MLServer's venv)",
    "bentoml",
    "uvicorn (BentoML's venv)",
    "wrk",
)


def _met(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "**no**")


def _cell(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def _machine(results: dict[str, Any]) -> str:
    m = results["machine"]
    parts = [f"{m.get('arch', '?')}, {m.get('cores', '?')} cores"]
    if m.get("cpu"):
        parts.append(m["cpu"])
    if m.get("memory_gib"):
        parts.append(f"{m['memory_gib']:g} GiB")
    parts.append(f"Linux {m.get('kernel', '?')}")
    return ", ".join(parts)


def _versions(results: dict[str, Any]) -> str:
    versions = results.get("versions", {})
    names = [n for n in VERSION_ORDER if n in versions]
    names += sorted(n for n in versions if n not in VERSION_ORDER)
    return ", ".join(f"{'Python' if n == 'python' else n} {versions[n]}" for n in names)


def _notes(results: dict[str, Any]) -> list[str]:
    """What a reader needs to read some rows right, from the figures of this run."""
    notes = []
    footprint = results["parts"].get("footprint", {}).get("summary")
    if footprint and footprint.get("selfheal_defaults"):
        d = footprint["selfheal_defaults"]
        span = footprint["window_s"] * footprint["windows"]
        notes.append(
            f"- *footprint*: idle means no requests, not no work. With its defaults the daemon "
            f"probes each worker every {d['probe.interval_s']:g} s, samples each worker's CPU "
            f"and memory every {d['resources.interval_s']:g} s and runs a monitoring pass every "
            f"{d['monitor.interval_s']:g} s (the {span:g} s sampled held "
            f"{int(span // d['monitor.interval_s'])}): that is what it is for, and supervisord "
            "does none of it. PSS counts pages shared between processes once (selfheal's "
            "workers are forked from one template); RSS counts them in every process."
        )
    growth = results["parts"].get("growth", {}).get("summary")
    if growth:
        notes.append(
            "- *growth*: the audit trail rotates at 10 MiB into gzip-compressed files, so the "
            "larger trails are read mostly from compressed files (the share is in each row), as "
            "on a long-running daemon's disk; the command-line figures include the start of the "
            "interpreter and its imports."
        )
    return ["", "Notes:", "", *notes] if notes else []


def block(results: dict[str, Any]) -> str:
    """The marked block: when, where, with what; the table; how it was run; what failed."""
    date = results["date"].replace("T", " ").removesuffix("Z")
    load = (
        results.get("load_average_at_start", ["?"])[0],
        results.get("load_average_at_end", ["?"])[0],
    )
    lines = [
        BEGIN,
        "## Summary (make bench)",
        "",
        f"`make bench{' QUICK=1' if results['mode'] == 'quick' else ''}` on {date} UTC, "
        f"{results['wall_s'] / 60:.1f} min on {_machine(results)} (1-minute load average "
        f"{load[0]} at the start, {load[1]} at the end: the machine is shared). Versions: "
        f"{_versions(results)}.",
        "",
    ]
    for rerun in results.get("reruns", []):
        current = [n for n in rerun["parts"] if n not in rerun.get("superseded", [])]
        names = " and ".join(f'"{PART_TITLES.get(n, n)}"' for n in current)
        when = rerun["date"].replace("T", " ").removesuffix("Z")
        lines += [
            f"Run again on {when} UTC, alone ({rerun['wall_s'] / 60:.1f} min, `python3 -m "
            f"bench.suite --parts {','.join(rerun['parts'])} --merge`): the rows of {names} "
            "are from that run.",
            "",
        ]
    if results["mode"] == "quick":
        lines += [
            "**Quick run**: every comparison with tiny settings (a few cycles, one short run "
            "each, no 1M-row Evidently run), to check that everything works. Not figures to quote.",
            "",
        ]
    lines += [
        "Each row is selfheal against its baseline in this one run, on this one machine; the "
        "ratio is the quotient named in the row (medians over the run's repetitions). A target "
        "is the one set by the issue behind the row; `-` where there is none.",
        "",
        "| part | row | ratio | target | met | selfheal | baseline |",
        "| --- | --- | ---: | --- | --- | --- | --- |",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {PART_TITLES.get(row['part'], row['part'])} | {_cell(row['row'])} "
            f"| {ratio_text(row['ratio'])} | {_cell(row['target'])} | {_met(row['met'])} "
            f"| {_cell(row['selfheal'])} | {_cell(row['baseline'])} |"
        )
    met = [r["met"] for r in results["rows"] if r["met"] is not None]
    lines += ["", f"Targets met: {sum(met)} of {len(met)}.", *_notes(results), ""]
    lines += [
        "How each part was run (its own venv; raw JSON and log in bench/out/suite/, gitignored; "
        "the compact figures with min and max in `bench/results.json`):",
        "",
    ]
    for name, part in results["parts"].items():
        status = f"{part['wall_s'] / 60:.1f} min" if part["status"] == "ok" else "**FAILED**"
        lines.append(f"- {PART_TITLES.get(name, name)}: `{part['command']}` ({status})")
    failed = {n: p for n, p in results["parts"].items() if p["status"] != "ok"}
    if failed:
        lines += ["", "Failed parts (details and the end of each log in bench/results.json):", ""]
        lines += [f"- {name}: {_cell(p.get('error', '?'))}" for name, p in failed.items()]
    lines += [
        "",
        "The sections below explain what each part measures and how; their tables come from "
        "separate, longer runs of each script (dated in each section), not from this run.",
        END,
    ]
    return "\n".join(lines)


def update(path: Path, new_block: str) -> None:
    """Replace the marked block of ``path``, else insert it after the intro; write a new file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new_block + "\n")
        return
    text = path.read_text()
    start = text.find(BEGIN_PREFIX)
    end = text.find(END, start) if start >= 0 else -1
    if start >= 0 and end >= 0:
        text = text[:start] + new_block + text[end + len(END) :]
    else:
        heading = text.find("\n## ")
        if heading < 0:
            text = text.rstrip("\n") + "\n\n" + new_block + "\n"
        else:
            text = text[: heading + 1] + new_block + "\n\n" + text[heading + 1 :]
    path.write_text(text)
