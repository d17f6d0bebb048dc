"""What `selfheal report` and `selfheal history` compute from the audit trail: pure functions only.

The caller reads the trail (every rotated file, oldest first) and hands the decoded JSON lines in,
with ``now`` as an aware datetime; nothing here touches files or clocks. Text rendering lives in
``report_format``.

Definitions (all over the records whose ``ts`` falls in the window ``[now - days, +inf)``):

- an *incident* is every record sharing a non-empty ``incident_id`` (bookkeeping kinds
  ``availability`` and ``lifecycle`` never form one); its kind is the ``issue`` of its first record,
  its outcome the last non-null ``outcome`` of its records, or ``open``;
- a *drill* incident has any record with ``drill: true``; drills and their records are left out of
  every figure except the ``drills`` count (the same goes for availability records marked drill);
- an *auto-fix* is a resolved production incident without any ``manual: true`` record; a
  *recovery* is a resolved incident of a process kind (crash, hang, resource limit, crash loop);
- per-day rows (UTC) count an incident on the day of its first record, a recovery or auto-fix on the
  day of the record that resolved it, rollbacks and retrains on the day of the record;
- MTTR uses ``time_to_resolution_s`` of the last ``resolved`` record carrying one; a resolved
  incident without it counts as resolved but not in MTTR;
- MTBF is the observed span (first record in the window, else ``now - days``, up to ``now``) divided
  by the number of failure incidents.

A record that is not a mapping, lacks ``ts``/``issue``/``detection``/``action``, has a ``ts`` that
does not parse, or has a field of the wrong type is counted as ``unreadable`` and otherwise ignored.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

PROCESS_KINDS = ("service_crash", "service_hang", "resource_limit", "crash_loop")
_DATA_KINDS = ("data_quality", "data_drift", "performance_drop", "test_failure")
INCIDENT_KINDS = (*PROCESS_KINDS, *_DATA_KINDS, "deployment_failure", "manual_action")
BOOKKEEPING_KINDS = ("availability", "lifecycle")
OUTCOMES = ("resolved", "failed", "skipped", "escalated")
FINAL_OUTCOMES = (*OUTCOMES, "open")
RECOVERY_KINDS = frozenset(PROCESS_KINDS)
FAILURE_KINDS = RECOVERY_KINDS | {"deployment_failure"}

_REQUIRED_STR = ("issue", "detection", "action")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SINCE_FORMS = (
    "a duration such as 90s, 30m, 2h, 7d or 2w, "
    "or an ISO date or datetime such as 2026-11-27 or 2026-11-27T10:00:00Z"
)


@dataclass(frozen=True)
class Mttr:
    """Mean and median time to resolution (seconds) over ``resolved`` incidents that report one."""

    resolved: int
    mean_s: float | None
    median_s: float | None


@dataclass(frozen=True)
class DayRow:
    """Activity on one UTC calendar day (``day`` is ``YYYY-MM-DD``)."""

    day: str
    incidents: int = 0
    recoveries: int = 0
    rollbacks: int = 0
    retrains: int = 0
    auto_fixes: int = 0


@dataclass(frozen=True)
class Availability:
    """Health probes answered out of probes sent, summed over availability records."""

    probes: int
    answered: int
    ratio: float | None


@dataclass(frozen=True)
class Mtbf:
    """Mean time between failures: ``span_s / failures`` (None when there were no failures)."""

    failures: int
    span_s: float
    mtbf_s: float | None


@dataclass(frozen=True)
class Savings:
    """Engineer time (and money, when a rate is given) not spent on auto-handled incidents."""

    auto_handled: int
    minutes_per_incident: float
    hours: float
    hourly_rate: float
    cost: float | None


@dataclass(frozen=True)
class Report:
    """The self-healing summary of one window of the audit trail; ``to_json()`` for ``--json``."""

    generated_at: str
    days: int | None
    since: str | None
    first_ts: str | None
    last_ts: str | None
    records_read: int
    records_in_range: int
    unreadable: int
    incidents: int
    by_outcome: dict[str, int]
    by_kind: dict[str, int]
    by_kind_outcome: dict[str, dict[str, int]]
    mttr: Mttr
    mttr_by_kind: dict[str, Mttr]
    auto_fixes: int
    recoveries: int
    rollbacks: int
    retrains: int
    manual_interventions: int
    drills: int
    per_day: tuple[DayRow, ...]
    availability: Availability | None
    mtbf: Mtbf
    savings: Savings | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (nested dicts, lists, numbers, strings, nulls)."""
        out = asdict(self)
        out["per_day"] = list(out["per_day"])
        return out


@dataclass(frozen=True)
class _Rec:
    """One readable audit record, parsed."""

    ts: datetime
    incident_id: str
    issue: str
    action: str
    details: Mapping[str, Any]
    outcome: str | None
    ttr: float | None
    manual: bool
    drill: bool


@dataclass
class _Incident:
    kind: str
    records: list[_Rec]

    @property
    def drill(self) -> bool:
        return any(r.drill for r in self.records)

    @property
    def manual(self) -> bool:
        return any(r.manual for r in self.records)

    @property
    def outcome(self) -> str:
        final = [r.outcome for r in self.records if r.outcome is not None]
        return final[-1] if final else "open"

    def resolution(self) -> _Rec | None:
        """The last record saying ``resolved``, if the incident ended resolved."""
        if self.outcome != "resolved":
            return None
        return [r for r in self.records if r.outcome == "resolved"][-1]


def parse_ts(value: object) -> datetime | None:
    """An audit ``ts`` as an aware UTC datetime (naive means UTC), or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def format_ts(ts: datetime) -> str:
    """``2026-11-27T10:00:00.123Z``: the audit trail's own timestamp form."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _parse(raw: object) -> _Rec | None:
    """The record, or None when it is not a valid audit record."""
    if not isinstance(raw, Mapping):
        return None
    ts = parse_ts(raw.get("ts"))
    if ts is None or any(not isinstance(raw.get(key), str) for key in _REQUIRED_STR):
        return None
    incident_id = raw.get("incident_id") or ""
    details = raw.get("details") or {}
    outcome = raw.get("outcome")
    ttr_raw = raw.get("time_to_resolution_s")
    manual, drill = raw.get("manual", False), raw.get("drill", False)
    if (
        not isinstance(incident_id, str)
        or not isinstance(details, Mapping)
        or (outcome is not None and outcome not in OUTCOMES)
        or (ttr_raw is not None and _number(ttr_raw) is None)
        or not isinstance(manual, bool)
        or not isinstance(drill, bool)
    ):
        return None
    if raw["issue"] == "availability":
        probes, answered = details.get("probes"), details.get("answered")
        if not (isinstance(probes, int) and isinstance(answered, int)) or min(probes, answered) < 0:
            return None
    ttr = _number(ttr_raw)
    if ttr is not None and not (math.isfinite(ttr) and ttr >= 0):
        ttr = None  # a torn clock, not a torn record: keep the record, drop the figure
    return _Rec(ts, incident_id, raw["issue"], raw["action"], details, outcome, ttr, manual, drill)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime (UTC)")


def _mttr(values: list[float]) -> Mttr:
    if not values:
        return Mttr(resolved=0, mean_s=None, median_s=None)
    return Mttr(len(values), statistics.fmean(values), float(statistics.median(values)))


def _group(records: list[_Rec]) -> dict[str, _Incident]:
    incidents: dict[str, _Incident] = {}
    for rec in records:
        if rec.incident_id and rec.issue not in BOOKKEEPING_KINDS:
            incident = incidents.setdefault(rec.incident_id, _Incident(rec.issue, []))
            incident.records.append(rec)
    return incidents


@dataclass
class _Tally:
    """Running totals over production incidents and records."""

    by_kind_outcome: dict[str, dict[str, int]] = field(default_factory=dict)
    by_outcome: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINAL_OUTCOMES, 0))
    ttrs: dict[str, list[float]] = field(default_factory=dict)
    auto_fixes: int = 0
    recoveries: int = 0
    failures: int = 0
    rollbacks: int = 0
    retrains: int = 0
    manual: int = 0
    probes: int = 0
    answered: int = 0
    availability_records: int = 0
    days: dict[date, dict[str, int]] = field(default_factory=dict)

    def bump(self, ts: datetime, name: str) -> None:
        """Count one ``name`` on the UTC day of ``ts``."""
        row = self.days.setdefault(ts.date(), {})
        row[name] = row.get(name, 0) + 1

    def day_rows(self, first: date, last: date) -> tuple[DayRow, ...]:
        """One row per day from ``first`` to ``last`` inclusive, quiet days as zeros."""
        days = (first + timedelta(days=i) for i in range((last - first).days + 1))
        return tuple(DayRow(day=d.isoformat(), **self.days.get(d, {})) for d in days)

    def add_incident(self, inc: _Incident) -> None:
        outcome = inc.outcome
        per_kind = self.by_kind_outcome.setdefault(inc.kind, dict.fromkeys(FINAL_OUTCOMES, 0))
        per_kind[outcome] += 1
        self.by_outcome[outcome] += 1
        self.bump(inc.records[0].ts, "incidents")
        self.manual += inc.manual  # interventions: incidents a person acted on
        self.failures += inc.kind in FAILURE_KINDS
        resolution = inc.resolution()
        if resolution is None:
            return
        ttrs = [r.ttr for r in inc.records if r.outcome == "resolved" and r.ttr is not None]
        if ttrs and inc.kind != "manual_action":  # MTTR is about failures, not requests
            self.ttrs.setdefault(inc.kind, []).append(ttrs[-1])
        if not inc.manual:
            self.auto_fixes += 1
            self.bump(resolution.ts, "auto_fixes")
        if inc.kind in RECOVERY_KINDS:
            self.recoveries += 1
            self.bump(resolution.ts, "recoveries")

    def add_record(self, rec: _Rec) -> None:
        if rec.action == "rollback":
            self.rollbacks += 1
            self.bump(rec.ts, "rollbacks")
        elif rec.action == "retrain":
            self.retrains += 1
            self.bump(rec.ts, "retrains")
        if rec.issue == "availability":
            self.availability_records += 1
            self.probes += rec.details["probes"]
            self.answered += rec.details["answered"]

    def availability(self) -> Availability | None:
        if not self.availability_records:
            return None
        ratio = self.answered / self.probes if self.probes else None
        return Availability(self.probes, self.answered, ratio)


def _read(
    records: Iterable[Mapping[str, Any]], since: datetime | None
) -> tuple[list[_Rec], int, int]:
    """Readable records at or after ``since``, oldest first; with counts read and unreadable."""
    read = unreadable = 0
    parsed: list[_Rec] = []
    for raw in records:
        read += 1
        rec = _parse(raw)
        if rec is None:
            unreadable += 1
        elif since is None or rec.ts >= since:
            parsed.append(rec)
    parsed.sort(key=lambda r: r.ts)  # stable: equal stamps keep trail order
    return parsed, read, unreadable


def build_report(
    records: Iterable[Mapping[str, Any]],
    *,
    now: datetime,
    days: int | None,
    manual_minutes_per_incident: float = 0.0,
    hourly_rate: float = 0.0,
) -> Report:
    """Summarise the trail over the last ``days`` days before ``now`` (None: the whole trail).

    Raises ValueError for a naive ``now``, ``days`` below 1 or absurdly large, or a negative
    minutes/rate figure.
    """
    _require_aware(now)
    if days is not None and days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if manual_minutes_per_incident < 0 or hourly_rate < 0:
        raise ValueError("manual_minutes_per_incident and hourly_rate must not be negative")
    now = now.astimezone(UTC)
    try:
        since = now - timedelta(days=days) if days is not None else None
    except OverflowError:
        raise ValueError(f"days={days} reaches back before year 1") from None
    parsed, read, unreadable = _read(records, since)

    incidents = _group(parsed)
    drill_ids = {iid for iid, inc in incidents.items() if inc.drill}
    tally = _Tally()
    for iid, inc in incidents.items():
        if iid not in drill_ids:
            tally.add_incident(inc)
    for rec in parsed:
        if not rec.drill and rec.incident_id not in drill_ids:
            tally.add_record(rec)

    start = parsed[0].ts if parsed else (since or now)
    span_s = max(0.0, (now - start).total_seconds())
    last_day = max(now.date(), parsed[-1].ts.date()) if parsed else now.date()
    savings = None
    if manual_minutes_per_incident > 0:
        hours = tally.auto_fixes * manual_minutes_per_incident / 60.0
        cost = hours * hourly_rate if hourly_rate > 0 else None
        minutes, rate = float(manual_minutes_per_incident), float(hourly_rate)
        savings = Savings(tally.auto_fixes, minutes, hours, rate, cost)
    kinds = sorted(tally.by_kind_outcome)
    return Report(
        generated_at=format_ts(now),
        days=days,
        since=format_ts(since) if since is not None else None,
        first_ts=format_ts(parsed[0].ts) if parsed else None,
        last_ts=format_ts(parsed[-1].ts) if parsed else None,
        records_read=read,
        records_in_range=len(parsed),
        unreadable=unreadable,
        incidents=len(incidents) - len(drill_ids),
        by_outcome=tally.by_outcome,
        by_kind={kind: sum(tally.by_kind_outcome[kind].values()) for kind in kinds},
        by_kind_outcome={kind: tally.by_kind_outcome[kind] for kind in kinds},
        mttr=_mttr([t for values in tally.ttrs.values() for t in values]),
        mttr_by_kind={kind: _mttr(tally.ttrs.get(kind, [])) for kind in kinds},
        auto_fixes=tally.auto_fixes,
        recoveries=tally.recoveries,
        rollbacks=tally.rollbacks,
        retrains=tally.retrains,
        manual_interventions=tally.manual,
        drills=len(drill_ids),
        per_day=tally.day_rows(since.date() if since else start.date(), last_day),
        availability=tally.availability(),
        mtbf=Mtbf(tally.failures, span_s, span_s / tally.failures if tally.failures else None),
        savings=savings,
    )


def filter_history(
    records: Iterable[Mapping[str, Any]],
    *,
    since: datetime | None,
    issue: str | None,
    limit: int | None,
    include_availability: bool = False,
) -> list[dict[str, Any]]:
    """Readable records at or after ``since`` of kind ``issue``, newest first, at most ``limit``.

    Periodic ``availability`` summaries are left out unless asked for (``include_availability``
    or ``issue="availability"``); unreadable records are skipped. Returns shallow copies.
    """
    if since is not None:
        _require_aware(since)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    kept: list[tuple[datetime, int, dict[str, Any]]] = []
    for index, raw in enumerate(records):
        rec = _parse(raw)
        if rec is None or (since is not None and rec.ts < since):
            continue
        if issue is not None and rec.issue != issue:
            continue
        if issue is None and rec.issue == "availability" and not include_availability:
            continue
        kept.append((rec.ts, index, dict(raw)))
    kept.sort(key=lambda item: (item[0], item[1]), reverse=True)
    rows = [row for _, _, row in kept]
    return rows if limit is None else rows[:limit]


def parse_since(text: str, now: datetime) -> datetime:
    """The instant ``--since TEXT`` means: a duration back from ``now``, or an ISO date/datetime.

    Durations: a number and a unit s, m, h, d or w (``90s``, ``30m``, ``2h``, ``1.5d``). A date
    means midnight UTC; a datetime without an offset is UTC. Raises ValueError naming the forms.
    """
    _require_aware(now)
    cleaned = text.strip()
    match = _DURATION.match(cleaned)
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        try:
            return now.astimezone(UTC) - timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"--since {text!r} reaches back too far") from None
    parsed = parse_ts(cleaned) if cleaned[:1].isdigit() else None
    if parsed is None:
        raise ValueError(f"cannot read --since {text!r}: expected {SINCE_FORMS}")
    return parsed
