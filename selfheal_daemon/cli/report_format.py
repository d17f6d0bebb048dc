"""Plain-text rendering of `selfheal report` and `selfheal history` for a person at a terminal.

Aligned columns, no colour, no table library; numbers right-aligned, text left-aligned, anything too
wide cut with ``...``. ``--json`` output does not come through here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from selfheal_daemon.record.report import FINAL_OUTCOMES, DayRow, Mttr, Report, parse_ts

HISTORY_WIDTH = 160
_MIN_DETAILS = 20
_ELLIPSIS = "..."
_STAMPED_ID = re.compile(r"^\d{8}T\d{6}-(\w+)$")  # audit.new_incident_id: time, then random hex


def short_id(incident_id: object) -> str:
    """The part of an incident id that tells incidents apart: the random suffix, else 8 chars."""
    if not isinstance(incident_id, str) or not incident_id:
        return "-"
    stamped = _STAMPED_ID.match(incident_id)
    return stamped.group(1)[:8] if stamped else incident_id[:8]


def format_duration(seconds: float | None) -> str:
    """``0.4 s``, ``12.5 s``, ``3 min``, ``2.5 h``, ``1.2 d``; ``-`` for None."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if abs(seconds) >= size:
            return f"{_short(seconds / size)} {unit}"
    return f"{_short(seconds)} s"


def _short(value: float) -> str:
    """One decimal below 10, none above; ``3.0`` prints as ``3``."""
    text = f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"
    return text[:-2] if text.endswith(".0") else text


def _cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= len(_ELLIPSIS):
        return text[:width]
    return text[: width - len(_ELLIPSIS)] + _ELLIPSIS


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    right: Iterable[int] = (),
    max_widths: Mapping[int, int] | None = None,
    indent: str = "",
) -> list[str]:
    """Lines of an aligned table, columns two spaces apart; ``right`` lists right-aligned ones."""
    limits = dict(max_widths or {})
    body = [[_cut(cell, limits.get(i, len(cell))) for i, cell in enumerate(row)] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    right_set = set(right)

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if i in right_set else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return (indent + "  ".join(parts)).rstrip()

    return [line(headers), *(line(row) for row in body)]


def _mttr_text(mttr: Mttr) -> str:
    if mttr.resolved == 0:
        return "- (no resolved incident with a time to resolution)"
    return (
        f"{format_duration(mttr.mean_s)} mean, {format_duration(mttr.median_s)} median "
        f"over {mttr.resolved} resolved"
    )


def _window(report: Report) -> str:
    if report.days is None:
        return "whole audit trail"
    unit = "day" if report.days == 1 else "days"
    return f"last {report.days} {unit} (since {report.since})"


def format_report(report: Report) -> str:
    """The report as text: summary, incidents by kind and outcome, then one row per active day."""
    covered = f"{report.first_ts} to {report.last_ts}" if report.first_ts else "no records"
    lines = [
        f"selfheal report: {_window(report)}, generated {report.generated_at}",
        f"records read {report.records_read}, in range {report.records_in_range}, "
        f"unreadable {report.unreadable}; covering {covered}",
        "",
    ]
    summary = [
        ("incidents", str(report.incidents)),
        ("auto-fixes", str(report.auto_fixes)),
        ("recoveries", str(report.recoveries)),
        ("rollbacks", str(report.rollbacks)),
        ("retrains", str(report.retrains)),
        ("manual interventions", str(report.manual_interventions)),
        ("drills (not counted)", str(report.drills)),
        ("MTTR", _mttr_text(report.mttr)),
    ]
    mtbf = report.mtbf
    if mtbf.mtbf_s is None:
        summary.append(("MTBF", f"- (no failures in {format_duration(mtbf.span_s)})"))
    else:
        summary.append(
            (
                "MTBF",
                f"{format_duration(mtbf.mtbf_s)} ({mtbf.failures} failures in "
                f"{format_duration(mtbf.span_s)})",
            )
        )
    avail = report.availability
    if avail is None or avail.ratio is None:
        summary.append(("availability", "- (no probe summaries)"))
    else:
        summary.append(
            ("availability", f"{avail.ratio:.3%} ({avail.answered}/{avail.probes} probes answered)")
        )
    if report.savings is not None:
        sav = report.savings
        saved = (
            f"{sav.hours:.1f} h ({sav.auto_handled} auto-handled x "
            f"{_short(sav.minutes_per_incident)} min)"
        )
        if sav.cost is not None:
            saved += f", cost saved {sav.cost:,.2f} at {sav.hourly_rate:,.2f}/h"
        summary.append(("engineer time saved", saved))
    width = max(len(label) for label, _ in summary)
    lines += [f"  {label.ljust(width)}  {value}" for label, value in summary]

    lines += ["", "Incidents by kind and outcome"]
    if report.by_kind:
        headers = ["KIND", "TOTAL", *(o.upper() for o in FINAL_OUTCOMES), "MTTR MEAN", "MEDIAN"]
        rows = []
        for kind, total in report.by_kind.items():
            outcomes = report.by_kind_outcome[kind]
            mttr = report.mttr_by_kind[kind]
            rows.append(
                [
                    kind,
                    str(total),
                    *(str(outcomes[o]) for o in FINAL_OUTCOMES),
                    format_duration(mttr.mean_s),
                    format_duration(mttr.median_s),
                ]
            )
        lines += table(headers, rows, right=range(1, len(headers)), indent="  ")
    else:
        lines.append("  (none)")

    lines += ["", "Per day (UTC)"]
    active = [row for row in report.per_day if _active(row)]
    if active:
        headers = ["DAY", "INCIDENTS", "RECOVERIES", "ROLLBACKS", "RETRAINS", "AUTO-FIXES"]
        rows = [
            [
                row.day,
                *map(str, (row.incidents, row.recoveries, row.rollbacks, row.retrains)),
                str(row.auto_fixes),
            ]
            for row in active
        ]
        lines += table(headers, rows, right=range(1, len(headers)), indent="  ")
    quiet = len(report.per_day) - len(active)
    if quiet:
        lines.append(f"  ({quiet} quiet {'day' if quiet == 1 else 'days'} not shown)")
    return "\n".join(lines) + "\n"


def _active(row: DayRow) -> bool:
    return any((row.incidents, row.recoveries, row.rollbacks, row.retrains, row.auto_fixes))


def summarise_details(details: object) -> str:
    """The ``fixes`` list joined with ``; ``, else ``key=value`` pairs; compact JSON for nesting.

    Details that name their ``metric`` (a performance check, a gate verdict) lead with it, under
    its own name, so the figure that matters is not cut off: ``roc_auc=0.81, threshold=0.7, ...``,
    ``roc_auc candidate=0.81 champion=0.83, ...``.
    """
    if not isinstance(details, Mapping) or not details:
        return ""
    fixes = details.get("fixes")
    if isinstance(fixes, list) and fixes:
        return "; ".join(str(fix) for fix in fixes)
    lead, used = _metric_lead(details)
    rest = [f"{key}={_value(value)}" for key, value in details.items() if key not in used]
    return ", ".join([*lead, *rest])


def _metric_lead(details: Mapping[str, Any]) -> tuple[list[str], set[str]]:
    """The metric's figures first, and the keys they came from (left out of the rest)."""
    metric = details.get("metric")
    if isinstance(metric, str) and metric and details.get(metric) is not None:
        lead = [f"{metric}={_value(details[metric])}"]
        used = {"metric", metric}
        if details.get("threshold") is not None:
            lead.append(f"threshold={_value(details['threshold'])}")
            used.add("threshold")
        return lead, used
    verdict = details.get("verdict")
    if isinstance(verdict, Mapping) and isinstance(verdict.get("metric"), str):
        name = verdict["metric"]
        figures = [
            f"{side}={_value(scores[name])}"
            for side in ("candidate", "champion")
            if isinstance(scores := verdict.get(side), Mapping) and scores.get(name) is not None
        ]
        if figures:
            return [f"{name} {' '.join(figures)}"], set()
    return [], set()


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, separators=(",", ":"), default=str)
    except ValueError:  # circular structure: never from a JSON line, but do not crash on it
        return repr(value)


def _history_row(record: Mapping[str, Any]) -> list[str]:
    ts = parse_ts(record.get("ts"))
    ttr = record.get("time_to_resolution_s")
    flags = ("M" if record.get("manual") is True else "") + (
        "D" if record.get("drill") is True else ""
    )
    return [
        ts.strftime("%Y-%m-%d %H:%M:%S") if ts else str(record.get("ts", "?")),
        short_id(record.get("incident_id")),
        str(record.get("issue", "?")),
        str(record.get("detection", "?")),
        str(record.get("action", "?")),
        str(record.get("outcome") or "-"),
        format_duration(ttr) if isinstance(ttr, int | float) and not isinstance(ttr, bool) else "-",
        flags,
        summarise_details(record.get("details")),
    ]


def format_history(records: Iterable[Mapping[str, Any]], *, width: int = HISTORY_WIDTH) -> str:
    """Records as a table, in the order given (``filter_history`` gives newest first).

    Columns: TS (UTC), INCIDENT (``short_id``), ISSUE, DETECTION, ACTION, OUTCOME,
    TTR, FLAGS (``M`` manual, ``D`` drill) and DETAILS, cut so a line fits in ``width`` columns.
    """
    headers = ["TS (UTC)", "INCIDENT", "ISSUE", "DETECTION", "ACTION", "OUTCOME", "TTR", "FLAGS"]
    rows = [_history_row(record) for record in records]
    if not rows:
        return "no audit records match\n"
    caps = {0: 24, 2: 18, 3: 22, 4: 22}  # ts (when unparsable), issue, detection, action
    fixed = [
        max(len(headers[i]), *(min(len(row[i]), caps.get(i, len(row[i]))) for row in rows))
        for i in range(len(headers))
    ]
    details_width = max(_MIN_DETAILS, width - sum(fixed) - 2 * len(fixed))
    lines = table(
        [*headers, "DETAILS"],
        rows,
        right=(6,),
        max_widths={**caps, len(headers): details_width},
    )
    return "\n".join(lines) + "\n"
