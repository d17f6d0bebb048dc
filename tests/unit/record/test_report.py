"""The report and history computations over hand-written audit trails, and their text rendering."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from selfheal_daemon.cli.report_format import (
    format_duration,
    format_history,
    format_report,
    short_id,
    summarise_details,
)
from selfheal_daemon.record.report import build_report, filter_history, parse_since

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def rec(
    ts: str,
    incident_id: str | None,
    issue: str,
    *,
    detection: str = "d",
    action: str = "a",
    outcome: str | None = None,
    ttr: float | None = None,
    manual: bool = False,
    drill: bool | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One audit record as the daemon writes it."""
    record: dict[str, Any] = {
        "ts": ts,
        "incident_id": incident_id,
        "issue": issue,
        "detection": detection,
        "action": action,
        "details": details or {},
        "outcome": outcome,
        "manual": manual,
    }
    if ttr is not None:
        record["time_to_resolution_s"] = ttr
    if drill is not None:
        record["drill"] = drill
    return record


def incident(
    iid: str, issue: str, start: str, end: str, ttr: float, **kw: Any
) -> list[dict[str, Any]]:
    """A detection followed by the record that resolves it."""
    return [
        rec(start, iid, issue, detection="seen", action="restart", **kw),
        rec(
            end, iid, issue, detection="seen", action="verified", outcome="resolved", ttr=ttr, **kw
        ),
    ]


# Three production incidents resolving in 2.0, 4.0 and 9.0 s, one drill resolving in 100 s.
TRAIL = [
    rec("2026-11-26T08:00:00.000Z", None, "lifecycle", detection="daemon_start", action="start"),
    *incident(
        "i-crash-1", "service_crash", "2026-11-26T09:00:00.000Z", "2026-11-26T09:00:02Z", 2.0
    ),
    *incident("i-crash-2", "service_crash", "2026-11-26T10:00:00Z", "2026-11-26T10:00:04Z", 4.0),
    *incident("i-dq-1", "data_quality", "2026-11-27T09:00:00Z", "2026-11-27T09:00:09Z", 9.0),
    *incident(
        "drill-1", "service_hang", "2026-11-27T10:00:00Z", "2026-11-27T10:01:40Z", 100.0, drill=True
    ),
]


def test_mttr_mean_and_median_computed_by_hand() -> None:
    """Incidents resolving in 2, 4 and 9 s give MTTR mean 5 s and median 4 s; per kind too."""
    report = build_report(TRAIL, now=NOW, days=None)
    assert report.mttr.resolved == 3
    assert report.mttr.mean_s == pytest.approx(5.0)
    assert report.mttr.median_s == pytest.approx(4.0)
    crash = report.mttr_by_kind["service_crash"]
    assert (crash.resolved, crash.mean_s, crash.median_s) == (2, 3.0, 3.0)
    assert report.mttr_by_kind["data_quality"].mean_s == pytest.approx(9.0)


def test_drills_are_counted_apart_from_production() -> None:
    """A drill shows in the drills count only: not in incidents, kinds, recoveries or MTTR."""
    report = build_report(TRAIL, now=NOW, days=None)
    assert report.drills == 1
    assert report.incidents == 3
    assert "service_hang" not in report.by_kind
    assert report.recoveries == 2
    assert report.auto_fixes == 3


def test_final_outcome_is_last_non_null_and_open_without_one() -> None:
    """An incident's outcome is the last non-null outcome of its records, else open."""
    trail = [
        rec("2026-11-27T01:00:00Z", "a", "data_drift", outcome="skipped"),
        rec("2026-11-27T01:00:01Z", "a", "data_drift", action="retrain", outcome="failed"),
        rec("2026-11-27T01:00:02Z", "a", "data_drift"),
        rec("2026-11-27T02:00:00Z", "b", "data_drift"),
        rec("2026-11-27T03:00:00Z", "c", "performance_drop", action="rollback", outcome="resolved"),
    ]
    report = build_report(trail, now=NOW, days=None)
    assert report.by_kind == {"data_drift": 2, "performance_drop": 1}
    assert report.by_kind_outcome["data_drift"]["failed"] == 1
    assert report.by_kind_outcome["data_drift"]["open"] == 1
    assert report.by_outcome == {
        "resolved": 1,
        "failed": 1,
        "skipped": 0,
        "escalated": 0,
        "open": 1,
    }
    # resolved without a time_to_resolution_s: counted as resolved, left out of MTTR
    assert report.mttr_by_kind["performance_drop"].resolved == 0
    assert (report.rollbacks, report.retrains) == (1, 1)


def test_kind_comes_from_the_first_record() -> None:
    """An incident whose later records name another issue keeps the kind of its first record."""
    trail = [
        rec("2026-11-27T01:00:00Z", "x", "service_hang"),
        rec("2026-11-27T01:00:05Z", "x", "crash_loop", outcome="resolved", ttr=5.0),
    ]
    assert build_report(trail, now=NOW, days=None).by_kind == {"service_hang": 1}


def test_per_day_rows_split_across_midnight_utc() -> None:
    """An incident opened at 23:59:50 UTC and resolved at 00:00:05 is split across midnight."""
    trail = [
        *incident("m", "service_crash", "2026-11-25T23:59:50Z", "2026-11-26T00:00:05Z", 15.0),
        rec("2026-11-26T00:30:00+01:00", "r", "performance_drop", action="rollback"),
        rec("2026-11-27T11:00:00Z", "t", "data_drift", action="retrain"),
    ]
    report = build_report(trail, now=NOW, days=3)
    rows = {row.day: row for row in report.per_day}
    assert list(rows) == ["2026-11-24", "2026-11-25", "2026-11-26", "2026-11-27"]
    assert (rows["2026-11-25"].incidents, rows["2026-11-25"].recoveries) == (2, 0)
    assert (rows["2026-11-26"].recoveries, rows["2026-11-26"].auto_fixes) == (1, 1)
    assert rows["2026-11-26"].incidents == 0
    assert rows["2026-11-25"].rollbacks == 1  # 00:30+01:00 is 23:30 UTC the day before
    assert rows["2026-11-27"].retrains == 1
    assert rows["2026-11-24"].incidents == 0


def test_availability_sums_probes_and_ignores_drills() -> None:
    """Availability is answered/probes summed over production availability records; null if none."""
    trail = [
        rec(
            "2026-11-27T01:00:00Z",
            None,
            "availability",
            details={"probes": 60, "answered": 60, "window_s": 300.0},
        ),
        rec(
            "2026-11-27T01:05:00Z",
            "",
            "availability",
            details={"probes": 40, "answered": 38, "window_s": 300.0},
        ),
        rec(
            "2026-11-27T01:10:00Z",
            None,
            "availability",
            drill=True,
            details={"probes": 50, "answered": 0, "window_s": 300.0},
        ),
    ]
    avail = build_report(trail, now=NOW, days=None).availability
    assert avail is not None
    assert (avail.probes, avail.answered) == (100, 98)
    assert avail.ratio == pytest.approx(0.98)
    assert build_report(TRAIL, now=NOW, days=None).availability is None


def test_mtbf_is_observed_span_over_failure_incidents() -> None:
    """MTBF divides first-record-to-now by the failure incidents; data issues are not failures."""
    report = build_report(TRAIL, now=NOW, days=None)
    span = (NOW - datetime(2026, 11, 26, 8, tzinfo=UTC)).total_seconds()
    assert report.mtbf.failures == 2
    assert report.mtbf.span_s == pytest.approx(span)
    assert report.mtbf.mtbf_s == pytest.approx(span / 2)
    quiet = [rec("2026-11-27T01:00:00Z", "q", "data_quality", outcome="resolved", ttr=1.0)]
    assert build_report(quiet, now=NOW, days=None).mtbf.mtbf_s is None


def test_mtbf_span_falls_back_to_the_window_when_empty() -> None:
    """With no records in range the observed span is the whole window and MTBF is null."""
    report = build_report([], now=NOW, days=2)
    assert report.mtbf.span_s == pytest.approx(2 * 86400)
    assert report.mtbf.mtbf_s is None
    assert report.incidents == 0
    assert report.mttr.mean_s is None


def test_cost_saved_counts_only_auto_handled_production_incidents() -> None:
    """Minutes x auto-handled incidents (no manual record, no drill) give hours; x rate, cost."""
    trail = [
        *TRAIL,
        rec("2026-11-27T11:00:00Z", "man", "service_crash"),
        rec(
            "2026-11-27T11:00:30Z",
            "man",
            "manual_action",
            action="restart",
            manual=True,
            outcome="resolved",
            ttr=30.0,
        ),
    ]
    report = build_report(
        trail, now=NOW, days=None, manual_minutes_per_incident=30, hourly_rate=80.0
    )
    assert report.savings is not None
    assert report.savings.auto_handled == 3
    assert report.savings.hours == pytest.approx(1.5)
    assert report.savings.cost == pytest.approx(120.0)
    assert report.manual_interventions == 1
    assert report.auto_fixes == 3
    assert report.recoveries == 3  # the manual restart still recovered a crash

    no_rate = build_report(trail, now=NOW, days=None, manual_minutes_per_incident=30)
    assert no_rate.savings is not None
    assert no_rate.savings.cost is None
    assert build_report(trail, now=NOW, days=None).savings is None


@pytest.mark.parametrize(
    "bad",
    [
        {"incident_id": "x", "issue": "service_crash", "detection": "d", "action": "a"},
        {
            "ts": "yesterday",
            "incident_id": "x",
            "issue": "service_crash",
            "detection": "d",
            "action": "a",
        },
        {"ts": "2026-11-27T01:00:00Z", "issue": "service_crash", "action": "a"},
        {
            "ts": "2026-11-27T01:00:00Z",
            "issue": "x",
            "detection": "d",
            "action": "a",
            "details": ["not", "a", "dict"],
        },
        {
            "ts": "2026-11-27T01:00:00Z",
            "issue": "x",
            "detection": "d",
            "action": "a",
            "outcome": "maybe",
        },
        {
            "ts": "2026-11-27T01:00:00Z",
            "issue": "x",
            "detection": "d",
            "action": "a",
            "time_to_resolution_s": "fast",
        },
        {
            "ts": "2026-11-27T01:00:00Z",
            "issue": "availability",
            "detection": "probe",
            "action": "none",
            "details": {"probes": "many"},
        },
        ["a", "list"],
        "a string",
        None,
    ],
)
def test_malformed_records_count_as_unreadable(bad: Any) -> None:
    """A record missing keys or with wrong types is counted as unreadable and otherwise ignored."""
    report = build_report([*TRAIL, bad], now=NOW, days=None)
    assert report.unreadable == 1
    assert report.records_read == len(TRAIL) + 1
    assert report.records_in_range == len(TRAIL)
    assert report.incidents == 3


def test_days_window_and_range_covered() -> None:
    """Only records within the last N days count; the range names the first and last in range."""
    report = build_report(TRAIL, now=NOW, days=1)
    assert report.since == "2026-11-26T12:00:00.000Z"
    assert report.first_ts == "2026-11-27T09:00:00.000Z"
    assert report.last_ts == "2026-11-27T10:01:40.000Z"
    assert report.records_read == len(TRAIL)
    assert report.records_in_range == 4
    assert report.by_kind == {"data_quality": 1}
    assert [row.day for row in report.per_day] == ["2026-11-26", "2026-11-27"]


def test_report_json_is_serialisable() -> None:
    """to_json() gives plain JSON types with the documented top-level keys."""
    report = build_report(TRAIL, now=NOW, days=7, manual_minutes_per_incident=15, hourly_rate=60)
    data = json.loads(json.dumps(report.to_json()))
    assert data["mttr"] == {"resolved": 3, "mean_s": 5.0, "median_s": 4.0}
    assert data["per_day"][-1]["day"] == "2026-11-27"
    assert data["availability"] is None
    assert data["savings"]["cost"] == pytest.approx(45.0)


def test_build_report_rejects_bad_arguments() -> None:
    """A naive now, days below 1 or negative cost figures are refused."""
    with pytest.raises(ValueError, match="timezone-aware"):
        build_report([], now=NOW.replace(tzinfo=None), days=None)
    with pytest.raises(ValueError, match="at least 1"):
        build_report([], now=NOW, days=0)
    with pytest.raises(ValueError, match="year 1"):
        build_report([], now=NOW, days=10**7)
    with pytest.raises(ValueError, match="negative"):
        build_report([], now=NOW, days=None, hourly_rate=-1)


def test_filter_history_newest_first_with_filters() -> None:
    """History is newest first, filtered by since and issue, cut to limit, availability hidden."""
    trail = [
        *TRAIL,
        rec("2026-11-27T11:00:00Z", None, "availability", details={"probes": 1, "answered": 1}),
        {"broken": True},
    ]
    rows = filter_history(trail, since=None, issue=None, limit=None)
    assert [r["ts"] for r in rows][:2] == ["2026-11-27T10:01:40Z", "2026-11-27T10:00:00Z"]
    assert len(rows) == len(TRAIL)
    assert rows[-1]["issue"] == "lifecycle"
    crashes = filter_history(trail, since=None, issue="service_crash", limit=3)
    assert [r["incident_id"] for r in crashes] == ["i-crash-2", "i-crash-2", "i-crash-1"]
    recent = filter_history(trail, since=NOW - timedelta(hours=3), issue=None, limit=None)
    assert {r["incident_id"] for r in recent} == {"i-dq-1", "drill-1"}
    assert len(filter_history(trail, since=None, issue="availability", limit=None)) == 1
    assert (
        len(filter_history(trail, since=None, issue=None, limit=None, include_availability=True))
        == len(TRAIL) + 1
    )


def test_filter_history_keeps_trail_order_for_equal_timestamps() -> None:
    """Records with the same ts come out in reverse trail order, so newest-first stays true."""
    trail = [rec("2026-11-27T01:00:00Z", "s", "data_drift", detection=str(i)) for i in range(3)]
    rows = filter_history(trail, since=None, issue=None, limit=None)
    assert [r["detection"] for r in rows] == ["2", "1", "0"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("30m", NOW - timedelta(minutes=30)),
        ("7d", NOW - timedelta(days=7)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2w", NOW - timedelta(weeks=2)),
        (" 1.5H ", NOW - timedelta(hours=1.5)),
        ("2026-11-27", datetime(2026, 11, 27, tzinfo=UTC)),
        ("2026-11-27T10:00:00Z", datetime(2026, 11, 27, 10, tzinfo=UTC)),
        ("2026-11-27T10:00:00", datetime(2026, 11, 27, 10, tzinfo=UTC)),
        ("2026-11-27T11:00:00+01:00", datetime(2026, 11, 27, 10, tzinfo=UTC)),
    ],
)
def test_parse_since_accepts_durations_dates_and_datetimes(text: str, expected: datetime) -> None:
    """Durations count back from now; dates are UTC midnight; naive datetimes are UTC."""
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2x", "-2h", "h", "2026-13-01", "99999999999w"])
def test_parse_since_rejects_other_text_naming_the_forms(text: str) -> None:
    """Anything else raises ValueError whose message shows the accepted forms."""
    with pytest.raises(ValueError, match=r"since") as info:
        parse_since(text, NOW)
    if "far" not in str(info.value):
        assert "90s, 30m, 2h, 7d" in str(info.value)
        assert "2026-11-27" in str(info.value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.35, "0.3 s"),
        (1.23, "1.2 s"),
        (4.0, "4 s"),
        (15.2, "15 s"),
        (180.0, "3 min"),
        (150.0, "2.5 min"),
        (9000.0, "2.5 h"),
        (3 * 86400.0, "3 d"),
    ],
)
def test_format_duration_reads_naturally(seconds: float | None, text: str) -> None:
    """Durations print in the largest unit that fits, one decimal below ten."""
    assert format_duration(seconds) == text


def test_format_report_shows_the_figures_in_aligned_tables() -> None:
    """The text report names MTTR, drills, savings and lines up its per-kind table columns."""
    report = build_report(TRAIL, now=NOW, days=3, manual_minutes_per_incident=30, hourly_rate=80)
    text = format_report(report)
    assert "5 s mean, 4 s median over 3 resolved" in text
    assert "drills (not counted)  1" in text
    assert "1.5 h (3 auto-handled x 30 min), cost saved 120.00" in text
    assert "availability          - (no probe summaries)" in text
    assert "(2 quiet days not shown)" in text
    lines = text.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("KIND"))
    crash = next(line for line in lines if line.lstrip().startswith("service_crash"))
    assert len(header) == len(crash)  # right-aligned numbers end in the same column
    assert "\x1b" not in text


def test_format_report_without_records() -> None:
    """An empty trail renders without errors and says there is nothing."""
    text = format_report(build_report([], now=NOW, days=None))
    assert "no records" in text
    assert "(none)" in text


def test_format_history_fits_the_terminal_and_flags_records() -> None:
    """History rows keep to 160 columns, shorten ids, flag manual/drill and join the fixes list."""
    long_fix = "Filled MedInc with median: 3.53 (12 rows) " * 10
    rows = [
        rec(
            "2026-11-27T10:00:00.123Z",
            "0123456789abcdef",
            "data_quality",
            detection="missing_values",
            action="auto_fix_applied",
            outcome="resolved",
            ttr=15.2,
            details={"fixes": [long_fix, "Capped 45 outliers"]},
        ),
        rec(
            "2026-11-27T09:00:00Z",
            "fedcba9876543210",
            "manual_action",
            action="restart",
            manual=True,
            drill=True,
            details={"reason": "operator", "workers": [1, 2]},
        ),
    ]
    text = format_history(rows)
    lines = text.splitlines()
    assert lines[0].startswith("TS (UTC)")
    assert all(len(line) <= 160 for line in lines)
    assert "2026-11-27 10:00:00  01234567  data_quality" in lines[1]
    assert "15 s" in lines[1]
    assert lines[1].endswith("...")
    assert " MD " in lines[2]
    assert "reason=operator, workers=[1,2]" in lines[2]
    assert format_history([]) == "no audit records match\n"


def test_summarise_details_prefers_fixes() -> None:
    """The fixes list is joined; other details print as key=value pairs; empty gives ''."""
    assert summarise_details({"fixes": ["a", "b"], "n": 1}) == "a; b"
    assert summarise_details({"psi": 0.312345, "feature": "MedInc"}) == "psi=0.3123, feature=MedInc"
    assert summarise_details(None) == ""


@pytest.mark.parametrize(
    ("incident_id", "short"),
    [
        ("20261127T100000-3fa2c1", "3fa2c1"),
        ("0123456789abcdef", "01234567"),
        ("", "-"),
        (None, "-"),
    ],
)
def test_short_id_keeps_the_part_that_differs(incident_id: str | None, short: str) -> None:
    """Time-stamped ids shorten to their random suffix, other ids to their first 8 characters."""
    assert short_id(incident_id) == short
