"""Audit records the notification tests share: an escalated incident, and one day's trail."""

from __future__ import annotations

from typing import Any

ESCALATED: dict[str, Any] = {
    "ts": "2026-11-27T10:00:00.123Z",
    "incident_id": "inc-42",
    "issue": "crash_loop",
    "detection": "restart_budget_exceeded",
    "action": "rollback",
    "details": {"worker": 1, "restarts": 6, "window_s": 60.0, "next": "rollback to v3"},
    "outcome": "escalated",
    "manual": False,
}
ESCALATED_TEXT = (
    "selfheal on vm1: crash_loop escalated on worker 1 (restart budget exceeded):"
    " 6 restarts in 60 s; next: rollback to v3"
)
SUBJECT = "[selfheal] escalated: crash_loop (restart_budget_exceeded)"


def rec(ts: str, incident: str, issue: str, outcome: str | None, **extra: Any) -> dict[str, Any]:
    """A record at ``2026-11-<ts>Z`` of incident ``incident``."""
    return {
        "ts": f"2026-11-{ts}Z",
        "incident_id": incident,
        "issue": issue,
        "detection": "x",
        "action": "y",
        "details": {},
        "outcome": outcome,
        "manual": False,
    } | extra


DAY_RECORDS = [
    rec("26T23:59:00", "late", "service_hang", None),  # began the day before: not counted
    rec("27T00:00:30", "late", "service_hang", "resolved"),
    rec("27T01:00:00", "q1", "data_quality", None),
    rec("27T01:00:01", "q1", "data_quality", "resolved"),
    rec("27T02:00:00", "q2", "data_quality", "resolved"),
    rec("27T03:00:00", "c1", "service_crash", None),
    rec("27T03:00:02", "c1", "service_crash", "resolved"),
    rec("27T04:00:00", "loop", "crash_loop", "escalated"),
    rec("27T05:00:00", "drill", "service_crash", "resolved", drill=True),
    rec("28T00:00:01", "next", "data_drift", "failed"),  # the next day
]
DAY_TEXT = (
    "handled 4 issues on 2026-11-27: 2 data fixes, 1 crash recovery, 1 crash loop;"
    " escalated: 1 crash loop; also 1 drill"
)
