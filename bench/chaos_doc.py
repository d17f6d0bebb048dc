"""The figures block of docs/RELIABILITY.md, from the report ``make chaos`` writes.

``python -m bench.chaos_doc bench/out/chaos.json docs/RELIABILITY.md`` renders the report of the
fault suite (tests/chaos/conftest.py: one entry per scenario) as a markdown table between two marker
comments and replaces that block in the document, leaving every other line as it was.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

BEGIN = "<!-- make chaos: begin (written by bench/chaos_doc.py: edit the script, not here) -->"
BEGIN_PREFIX = "<!-- make chaos: begin"
END = "<!-- make chaos: end -->"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _title(name: str) -> str:
    return name.removeprefix("test_").replace("_", " ")


def _rows(scenario: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per scenario, or one per kind of fault when the scenario broke them down. The
    audit burst counts records acknowledged and lost, not requests: kept out of the totals."""
    notes = scenario.get("notes", {})
    kinds = notes.get("by_kind")
    if not kinds:
        return [{**scenario, "name": _title(scenario["name"]), "records": "acknowledged" in notes}]
    rows = []
    for kind, figures in kinds.items():
        times = sorted(figures.get("recovery_s") or [])
        rows.append(
            {
                "name": f"{_title(scenario['name'])}: {kind}",
                **figures,
                "recovery_median_s": times[len(times) // 2] if times else None,
                "recovery_max_s": times[-1] if times else None,
                "violations": [],
            }
        )
    rows[-1]["violations"] = scenario["violations"]  # checked after every fault of the scenario
    return rows


def block(report: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        f"Run of {report['date']} on {platform.machine()}, "
        f"`make chaos` ({report.get('seconds', 0):.0f} s in all).",
        "",
        "| scenario | faults | requests sent | requests failed | recoveries | median recovery s "
        "| max recovery s | invariant violations |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    totals = {"faults": 0, "sent": 0, "failed": 0, "recoveries": 0, "violations": 0}
    for scenario in report["scenarios"]:
        for row in _rows(scenario):
            violations = len(row.get("violations") or [])
            unit = " records" if row.get("records") else ""
            lines.append(
                f"| {row['name']} | {row['faults']} | {row['requests_sent']}{unit} "
                f"| {row['requests_failed']}{unit} | {row['recoveries']} "
                f"| {_seconds(row.get('recovery_median_s'))} "
                f"| {_seconds(row.get('recovery_max_s'))} | {violations} |"
            )
            totals["faults"] += row["faults"]
            if not unit:
                totals["sent"] += row["requests_sent"]
                totals["failed"] += row["requests_failed"]
            totals["recoveries"] += row["recoveries"]
            totals["violations"] += violations
    lines.append(
        f"| **all** | **{totals['faults']}** | **{totals['sent']}** | **{totals['failed']}** "
        f"| **{totals['recoveries']}** | | | **{totals['violations']}** |"
    )
    lines.append(END)
    return "\n".join(lines)


def update(path: Path, new_block: str) -> None:
    """Replace the marked block of ``path`` (appended when it has none)."""
    text = path.read_text() if path.exists() else ""
    start = text.find(BEGIN_PREFIX)
    end = text.find(END, start) if start >= 0 else -1
    if start >= 0 and end >= 0:
        text = text[:start] + new_block + text[end + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + new_block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", type=Path, help="the JSON report of `make chaos`")
    parser.add_argument("doc", type=Path, help="the document to update (docs/RELIABILITY.md)")
    args = parser.parse_args()
    update(args.doc, block(json.loads(args.report.read_text())))
    print(f"updated the figures in {args.doc}")


if __name__ == "__main__":
    main()
