"""What a notification says: incident text, the digest, when it is due. Pure."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from selfheal_daemon.record.messages import (
    digest_due,
    digest_summary,
    digest_text,
    incident_text,
)
from tests.unit.record.records import DAY_RECORDS, DAY_TEXT, ESCALATED, ESCALATED_TEXT, rec

# ----- pure text ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "day", "expected"),
    [
        pytest.param(DAY_RECORDS, date(2026, 11, 27), DAY_TEXT, id="a-busy-day"),
        pytest.param(DAY_RECORDS, date(2026, 11, 25), None, id="a-quiet-day"),
        pytest.param([], date(2026, 11, 27), None, id="no-records"),
        pytest.param(
            [rec("28T00:00:01", "n", "data_drift", "failed")],
            date(2026, 11, 28),
            "handled 1 issue on 2026-11-28: 1 drift retrain; failed: 1 drift retrain",
            id="one-failed",
        ),
        pytest.param(
            [rec("28T08:00:00", "o", "data_drift", None), rec("28T09:00:00", "o", "", "skipped")],
            date(2026, 11, 28),
            "handled 1 issue on 2026-11-28: 1 drift retrain",
            id="skipped-is-handled",
        ),
        pytest.param(
            [rec("28T08:00:00", "o", "new_kind", None), rec("28T09:00:00", "p", "new_kind", None)],
            date(2026, 11, 28),
            "handled 2 issues on 2026-11-28: 2 new kind issues; still open: 2",
            id="unknown-kind-still-open",
        ),
        pytest.param(
            [rec("28T08:00:00", "d", "service_crash", "resolved", drill=True)],
            date(2026, 11, 28),
            "handled no issues on 2026-11-28; also 1 drill",
            id="only-a-drill",
        ),
        pytest.param(
            [
                {
                    "ts": "2026-11-28T08:00:00+02:00",
                    "issue": "service_crash",
                    "outcome": "resolved",
                },
                {"ts": "garbage", "issue": "service_crash"},
                {"issue": "service_crash"},
            ],
            date(2026, 11, 28),
            "handled 1 issue on 2026-11-28: 1 crash recovery",
            id="offsets-no-ids-and-bad-timestamps",
        ),
    ],
)
def test_digest_text(records: list[dict[str, Any]], day: date, expected: str | None) -> None:
    """The digest counts each incident of that UTC day once, by kind, naming the bad outcomes."""
    assert digest_text(records, day) == expected


def test_digest_summary_is_json_ready() -> None:
    """The structured digest the webhook carries round-trips through JSON unchanged."""
    summary = digest_summary(DAY_RECORDS, date(2026, 11, 27))
    assert summary is not None
    assert json.loads(json.dumps(summary)) == summary
    assert summary["incidents"] == 4
    assert summary["drills"] == 1


def _at(hour: int, minute: int = 0, day: int = 27) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("last_sent", "now", "hour", "due"),
    [
        pytest.param(None, _at(8), 8, True, id="never-sent-at-the-hour"),
        pytest.param(None, _at(7, 59), 8, False, id="before-the-hour"),
        pytest.param(None, _at(23), 8, True, id="never-sent-late-in-the-day"),
        pytest.param(date(2026, 11, 27), _at(9), 8, False, id="already-sent-today"),
        pytest.param(date(2026, 11, 26), _at(9), 8, True, id="sent-yesterday"),
        pytest.param(date(2026, 11, 26), _at(7), 8, False, id="sent-yesterday-not-yet-time"),
        pytest.param(None, _at(0), 0, True, id="midnight-hour"),
        pytest.param(None, _at(23), -1, False, id="disabled"),
        pytest.param(date(2026, 11, 28), _at(9), 8, False, id="clock-went-back"),
        pytest.param(
            date(2026, 11, 26),
            datetime(2026, 11, 27, 10, 30, tzinfo=timezone(timedelta(hours=5))),
            8,
            False,
            id="non-utc-now-is-converted",  # 05:30 UTC
        ),
    ],
)
def test_digest_due(last_sent: date | None, now: datetime, hour: int, due: bool) -> None:
    """A digest is due once per UTC day, from the configured hour on."""
    assert digest_due(last_sent, now, hour) is due


def test_digest_due_refuses_naive_time() -> None:
    """A naive datetime is ambiguous about the day, so it is refused."""
    with pytest.raises(ValueError, match="timezone-aware"):
        digest_due(None, datetime(2026, 11, 27, 9), 8)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(ESCALATED, ESCALATED_TEXT.removeprefix("selfheal on vm1: "), id="crash-loop"),
        pytest.param(
            {
                "issue": "data_quality",
                "detection": "missing_values",
                "outcome": "resolved",
                "details": {"fixes": ["Filled MedInc with median: 3.53 (12 rows)", "Capped 45"]},
            },
            "data_quality resolved (missing values): Filled MedInc with median: 3.53 (12 rows);"
            " Capped 45",
            id="fixes",
        ),
        pytest.param(
            {
                "issue": "service_hang",
                "detection": "start_timeout",
                "outcome": None,
                "details": {"pid": 7, "worker": 2, "nested": {"a": 1}},
            },
            "service_hang detected on worker 2 (start timeout): pid=7",
            id="unfamiliar-details",
        ),
        pytest.param({}, "unknown issue detected", id="empty"),
        pytest.param(
            {"issue": "x", "details": {"reason": "line one\nline two"}},
            "x detected: line one line two",
            id="newlines-flattened",
        ),
    ],
)
def test_incident_text(record: dict[str, Any], expected: str) -> None:
    """The one-line text names issue, outcome, worker, detection and the key details."""
    assert incident_text(record) == expected
