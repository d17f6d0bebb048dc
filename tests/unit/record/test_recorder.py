"""The recorder: incidents linked from detection to resolution, and written through one funnel."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from selfheal_daemon.record.audit import (
    AuditLog,
    format_ts,
    parse_ts,
    read_records,
)
from selfheal_daemon.record.metrics import DaemonMetrics
from selfheal_daemon.record.recorder import IncidentBook, Recorder
from tests.fakes import FakeClock

ROOT = Path(__file__).resolve().parents[3]
ROTATED = re.compile(r"audit\.\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d{6}\.jsonl(\.gz)?")


# --- IncidentBook -------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def book(clock: FakeClock) -> IncidentBook:
    return IncidentBook(clock)


def test_one_incident_keeps_its_id_from_detection_to_resolution(
    book: IncidentBook, clock: FakeClock
) -> None:
    """Every step of an incident carries the same id; the resolution carries the time it took."""
    detected = book.record("service_crash", 1, detection="worker_exit", action="observe")
    clock.advance(2.0)
    acted = book.record("service_crash", 1, detection="worker_exit", action="restart")
    clock.advance(10.5)
    resolved = book.record(
        "service_crash", 1, detection="worker_exit", action="restart", outcome="resolved"
    )
    assert detected["incident_id"] == acted["incident_id"] == resolved["incident_id"]
    assert resolved["time_to_resolution_s"] == 12.5
    assert "time_to_resolution_s" not in detected
    assert detected["outcome"] is None
    assert resolved["outcome"] == "resolved"
    assert book.open_incidents() == []
    again = book.record("service_crash", 1, detection="worker_exit", action="observe")
    assert again["incident_id"] != detected["incident_id"]


def test_resume_continues_a_previous_daemons_incident_under_its_id(
    book: IncidentBook, clock: FakeClock
) -> None:
    """The next records carry the old id; its resolution time counts from its first record."""
    since = format_ts(clock.utcnow() - timedelta(seconds=30))
    book.resume("data_drift", None, "20261127T100000-abcdef", since, drill=True)
    clock.advance(5.0)
    done = book.record("data_drift", None, detection="x", action="deployed", outcome="resolved")
    assert done["incident_id"] == "20261127T100000-abcdef"
    assert done["time_to_resolution_s"] == 35.0
    assert done["drill"] is True
    book.resume("service_crash", 0, "old", "not a time")
    assert book.record("service_crash", 0, detection="x", action="y")["incident_id"] == "old"


def test_close_ends_an_escalated_incident_for_good(book: IncidentBook) -> None:
    """After close, the next record of that key opens a new incident."""
    first = book.record("data_drift", None, detection="x", action="none", outcome="escalated")
    assert (
        book.record("data_drift", None, detection="y", action="z")["incident_id"]
        == (first["incident_id"])
    )  # escalated alone keeps it open (a crash loop resolves later)
    book.close("data_drift", None)
    book.close("data_drift", None)  # twice is harmless
    assert (
        book.record("data_drift", None, detection="y", action="z")["incident_id"]
        != (first["incident_id"])
    )


def test_a_failed_outcome_closes_the_incident_without_a_resolution_time(
    book: IncidentBook,
) -> None:
    """failed ends the incident: no time_to_resolution_s, and the next report opens a new one."""
    first = book.record("service_crash", None, detection="probe", action="restart_all")
    failed = book.record(
        "service_crash", None, detection="probe", action="restart_all", outcome="failed"
    )
    assert failed["incident_id"] == first["incident_id"]
    assert "time_to_resolution_s" not in failed
    assert book.open_incidents() == []
    assert (
        book.record("service_crash", None, detection="probe", action="x")["incident_id"]
        != (first["incident_id"])
    )


@pytest.mark.parametrize("outcome", ["skipped", "escalated"])
def test_skipped_and_escalated_keep_the_incident_open(
    book: IncidentBook, clock: FakeClock, outcome: str
) -> None:
    """skipped and escalated leave the incident open, so its resolution links back to the start."""
    first = book.record("data_drift", None, detection="psi", action="retrain", outcome=outcome)
    assert [o["incident_id"] for o in book.open_incidents()] == [first["incident_id"]]
    clock.advance(30.0)
    resolved = book.record(
        "data_drift", None, detection="psi", action="retrain", outcome="resolved"
    )
    assert resolved["incident_id"] == first["incident_id"]
    assert resolved["time_to_resolution_s"] == 30.0


def test_expect_drill_marks_the_next_incident_of_that_key_only(book: IncidentBook) -> None:
    """A drill flag goes to the next incident opened for (issue, scope) and to no other one."""
    book.expect_drill("service_crash", 1)
    other_worker = book.record("service_crash", 0, detection="worker_exit", action="restart")
    other_issue = book.record("worker_hang", 1, detection="probe", action="restart")
    drilled = book.record("service_crash", 1, detection="worker_exit", action="restart")
    drilled_end = book.record(
        "service_crash", 1, detection="worker_exit", action="restart", outcome="resolved"
    )
    after = book.record("service_crash", 1, detection="worker_exit", action="restart")
    assert "drill" not in other_worker
    assert "drill" not in other_issue
    assert drilled["drill"] is True
    assert drilled_end["drill"] is True
    assert drilled_end["incident_id"] == drilled["incident_id"]
    assert "drill" not in after


def test_open_incidents_lists_what_is_open_oldest_first(
    book: IncidentBook, clock: FakeClock
) -> None:
    """open_incidents gives id, issue, worker (or None), a named scope (a manual action's, a Ray
    replica's, or None) and since, in the order they opened."""
    a = book.record("service_crash", 2, detection="worker_exit", action="restart")
    clock.advance(5.0)
    b = book.record("data_drift", None, detection="psi", action="retrain")
    clock.advance(5.0)
    c = book.record("rollback", "rollback", detection="operator", action="rollback", manual=True)
    clock.advance(5.0)
    book.record("service_crash", 2, detection="worker_exit", action="restart", outcome="resolved")
    d = book.record("service_crash", 2, detection="worker_exit", action="restart")
    start = FakeClock().utcnow()
    assert book.open_incidents() == [
        {
            "incident_id": b["incident_id"],
            "issue": "data_drift",
            "worker": None,
            "scope": None,
            "since": format_ts(start + timedelta(seconds=5)),
        },
        {
            "incident_id": c["incident_id"],
            "issue": "rollback",
            "worker": None,
            "scope": "rollback",
            "since": format_ts(start + timedelta(seconds=10)),
        },
        {
            "incident_id": d["incident_id"],
            "issue": "service_crash",
            "worker": 2,
            "scope": None,
            "since": format_ts(start + timedelta(seconds=15)),
        },
    ]
    assert a["incident_id"] != d["incident_id"]


def test_an_unknown_outcome_raises_and_opens_nothing(book: IncidentBook) -> None:
    """An outcome outside the four known ones is a ValueError, raised before anything opens."""
    with pytest.raises(ValueError, match="outcome must be one of"):
        book.record("service_crash", 1, detection="worker_exit", action="restart", outcome="done")
    assert book.open_incidents() == []


def test_worker_goes_into_details_only_for_a_worker_scope(book: IncidentBook) -> None:
    """An int scope adds details.worker; a manual action's name and the whole service do not."""
    manual = book.record(
        "rollback",
        "rollback",
        detection="operator",
        action="rollback",
        details={"to": "v3"},
        manual=True,
    )
    service = book.record("data_drift", None, detection="psi", action="retrain")
    worker = book.record("service_crash", 3, detection="worker_exit", action="restart")
    assert manual["details"] == {"to": "v3"}
    assert manual["manual"] is True
    assert service["details"] == {}
    assert worker["details"] == {"worker": 3}


def test_incident_records_round_trip_through_the_trail(tmp_path: Path, clock: FakeClock) -> None:
    """Records of one incident written through the Recorder read back linked by their id."""
    audit_dir = tmp_path / "audit"
    log = AuditLog(audit_dir, clock=clock)
    recorder = Recorder(log, clock, DaemonMetrics())
    recorder.record("service_crash", 0, detection="worker_exit", action="restart")
    clock.advance(1.25)
    recorder.record(
        "service_crash", 0, detection="worker_exit", action="restart", outcome="resolved"
    )
    log.close()
    first, last = read_records(audit_dir)
    assert first["incident_id"] == last["incident_id"]
    assert last["time_to_resolution_s"] == 1.25
    assert parse_ts(last["ts"]) - parse_ts(first["ts"]) == timedelta(seconds=1.25)
