"""Alerts: what the daemon hands the notifier, and the record of a message given up on."""

from __future__ import annotations

from pathlib import Path

from selfheal_daemon.config import NotifyConfig
from selfheal_daemon.record.alerts import Alerts
from selfheal_daemon.record.audit import AuditLog, read_records
from selfheal_daemon.record.metrics import DaemonMetrics
from selfheal_daemon.record.recorder import Recorder
from tests.fakes import FakeClock
from tests.helpers import free_port, wait_until
from tests.unit.record.records import ESCALATED

WAIT_S = 10.0


def test_a_message_given_up_on_is_recorded_through_the_recorder(tmp_path: Path) -> None:
    """A webhook nobody answers (a closed loopback port): the escalation is given up on, and that
    is one ``notification`` record with outcome failed, written through the Recorder, so the
    trail and the daemon's metrics both count it."""
    clock = FakeClock()
    audit = AuditLog(tmp_path / "audit", clock=clock)
    metrics = DaemonMetrics()
    recorder = Recorder(audit, clock, metrics)
    cfg = NotifyConfig(
        webhook_url=f"http://127.0.0.1:{free_port()}/hook",
        timeout_s=0.5,
        retries=1,
        backoff_initial_s=0.0,
        backoff_max_s=0.0,
    )
    alerts = Alerts(cfg, recorder=recorder, clock=clock, state_file=tmp_path / "notify.json")
    recorder.on_escalated = alerts.escalated
    try:
        recorder.write(dict(ESCALATED))  # an escalated record reaches the notifier
        wait_until(
            lambda: any(r["issue"] == "notification" for r in read_records(audit.directory)),
            WAIT_S,
            what="the record of the failed delivery",
        )
    finally:
        alerts.close(timeout_s=WAIT_S)
        audit.close()
    (failed,) = [r for r in read_records(tmp_path / "audit") if r["issue"] == "notification"]
    assert (failed["detection"], failed["action"], failed["outcome"]) == (
        "delivery_failed",
        "gave_up",
        "failed",
    )
    assert failed["incident_id"] is None
    assert failed["details"]["channel"] == "webhook"
    assert "crash_loop" in failed["details"]["subject"]
    counted = metrics.registry.get_sample_value(
        "selfheal_incidents_total", {"issue": "notification", "outcome": "failed"}
    )
    assert counted == 1.0
