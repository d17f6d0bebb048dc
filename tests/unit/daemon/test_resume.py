"""A starting daemon and the incidents a previous run left without an outcome: which are open,
who ran before, and the pure decision (continue, watch, close), then the records it writes."""

from __future__ import annotations

import queue
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from selfheal_daemon.config import parse_config
from selfheal_daemon.daemon import resume
from selfheal_daemon.daemon.loop import Daemon
from selfheal_daemon.daemon.resume import Found, Previous, Unfinished
from selfheal_daemon.lifecycle.events import ModelState, Resumed, RetrainFinished
from selfheal_daemon.record.audit import AuditLog, read_records
from selfheal_daemon.record.metrics import DaemonMetrics
from selfheal_daemon.record.recorder import Recorder
from selfheal_daemon.supervision.probe import HealthProbe
from tests.fakes import FakeClock, FakeNotifier, FakePool, FakeRegistry

START = {"ts": "2026-11-27T10:00:00.000Z", "incident_id": None, "issue": "lifecycle"}


def rec(incident: str | None, issue: str, detection: str, action: str = "none", **kw: Any) -> Any:
    return {
        "ts": kw.pop("ts", "2026-11-27T10:00:01.000Z"),
        "incident_id": incident,
        "issue": issue,
        "detection": detection,
        "action": action,
        "details": kw.pop("details", {}),
        "outcome": kw.pop("outcome", None),
        "manual": kw.pop("manual", False),
        **kw,
    }


TRAIL = [
    {**START, "detection": "daemon_start", "action": "none", "details": {"pid": 11}},
    rec("a", "service_crash", "worker_exit", "restart", details={"worker": 1}),
    rec("a", "service_crash", "worker_ready", "restart", details={"worker": 1}, outcome="resolved"),
    rec("b", "manual_action", "operator_request", "retrain", manual=True),
    rec("c", "data_drift", "dataset_drift", "none", outcome="skipped"),
    rec("c", "data_drift", "dataset_drift", "retrain"),
    rec("d", "manual_action", "operator_request", "rollback", details={"to": "v1"}, manual=True),
    rec("e", "service_hang", "probe_failed", "kill", details={"worker": 0}, drill=True),
    rec(None, "availability", "probe_window"),
]


def test_an_incident_is_unfinished_while_its_last_record_has_no_outcome() -> None:
    """Resolved ones are done; one skipped and then retrained again is not; bookkeeping is none."""
    found = {u.incident_id: u for u in resume.unfinished(TRAIL)}
    assert list(found) == ["b", "c", "d", "e"]
    assert (found["b"].scope, found["b"].manual) == (None, True)
    assert found["d"].scope == "rollback"  # the key the IncidentBook wrote it under
    assert (found["e"].scope, found["e"].drill) == (0, True)
    assert found["c"].since == "2026-11-27T10:00:01.000Z"
    assert found["c"].last["action"] == "retrain"


def test_the_previous_daemon_is_the_last_one_started_and_stopped_only_if_it_said_so() -> None:
    """The pid of the last daemon_start; stopped only with a daemon_stop of the same pid."""
    assert resume.previous_run(TRAIL) == Previous(11, stopped=False)
    stop = rec(None, "lifecycle", "daemon_stop", details={"pid": 11})
    assert resume.previous_run([*TRAIL, stop]) == Previous(11, stopped=True)
    assert resume.previous_run([]) == Previous(None, stopped=False)
    assert Previous(11).details()["previous_daemon"] == "killed or crashed"


def incident(
    ident: str, issue: str, scope: Any = None, last: dict[str, Any] | None = None, **first: Any
) -> Unfinished:
    opened = {"action": "none", "details": {}, **first}
    return Unfinished(ident, issue, scope, "2026-11-27T10:00:00.000Z", opened, last or opened)


FOUND = Found(current="v2", workers=2, adopted=2)


def kinds(decided: resume.Plan) -> list[tuple[str, str, str]]:
    return [(s.incident.incident_id, s.kind, s.outcome) for s in decided.steps]


def test_what_was_in_flight_is_continued_and_an_older_twin_closed() -> None:
    """Only the newest open incident of the retrain's issue is continued."""
    found = Found(retrain_issue="manual_action", current="v2", workers=2, adopted=2)
    old, new = incident("old", "manual_action"), incident("new", "manual_action")
    decided = resume.plan([old, new], found, Previous(11))
    assert kinds(decided) == [("old", "close", "escalated"), ("new", "continue", "")]
    assert decided.open_issues == {"manual_action"}
    assert decided.details["previous_pid"] == 11


def test_a_deployment_in_flight_is_continued() -> None:
    """The durable state's deployment continues the incident it served."""
    found = Found(deploy_issue="data_drift", deploying="v3", current="v2", workers=2, adopted=1)
    decided = resume.plan([incident("x", "data_drift")], found, Previous(11))
    assert kinds(decided) == [("x", "continue", "")]
    assert decided.open_issues == {"data_drift"}


@pytest.mark.parametrize("issue", sorted(resume.SUPERVISION))
def test_supervision_incidents_are_watched_until_every_worker_is_ready(issue: str) -> None:
    """The new daemon took over or restarted the workers: resolved once all are ready."""
    (step,) = resume.plan([incident("w", issue, 1)], FOUND, Previous(11)).steps
    assert (step.kind, step.version) == ("watch", None)
    assert step.details["daemon_restarted"] is True
    assert "2 of 2 worker(s) still serving v2 taken over" in step.details["found"]


def test_a_manual_rollback_is_watched_if_it_took_effect_else_failed() -> None:
    """A rollback to ``current`` is finishing; one to another version never took effect."""
    done = incident("r", "manual_action", "rollback", details={"to": "v2"})
    (step,) = resume.plan([done], FOUND, Previous()).steps
    assert (step.kind, step.version) == ("watch", "v2")
    lost = incident("r", "manual_action", "rollback", details={"to": "v1"})
    (step,) = resume.plan([lost], FOUND, Previous()).steps
    assert (step.kind, step.outcome) == ("close", "failed")
    assert "current is v2" in step.details["found"]


def test_a_manual_restart_cut_short_failed() -> None:
    """The workers the person wanted replaced were taken over, not replaced: failed, say so."""
    (step,) = resume.plan([incident("s", "manual_action", "restart")], FOUND, Previous()).steps
    assert (step.kind, step.outcome) == ("close", "failed")
    assert "ask again" in step.details["reason"]


def test_a_deployment_that_finished_unrecorded_is_watched_to_its_resolution() -> None:
    """The gate passed v2 and current is v2: the success only waits to be recorded."""
    gate = {
        "detection": "candidate_passed_gate",
        "action": "deploy",
        "details": {"candidate": "v2"},
    }
    (step,) = resume.plan([incident("g", "data_drift", None, gate)], FOUND, Previous()).steps
    assert (step.kind, step.version) == ("watch", "v2")
    other = {**gate, "details": {"candidate": "v3"}}
    (step,) = resume.plan([incident("g", "data_drift", None, other)], FOUND, Previous()).steps
    assert (step.kind, step.outcome) == ("close", "escalated")


def test_a_model_incident_with_nothing_in_flight_is_escalated() -> None:
    """Nothing continues it and nothing shows it was done: a person should look."""
    (step,) = resume.plan([incident("m", "performance_drop")], FOUND, Previous(7)).steps
    assert (step.kind, step.outcome) == ("close", "escalated")
    assert step.details["previous_pid"] == 7
    assert "nothing of it was running" in step.details["found"]


# ----- the adapter: records under the incident's own id ----------------------------------------


def daemon_with(tmp: Path, clock: FakeClock) -> Daemon:
    cfg = parse_config({"service": {"workers": 2}, "state_dir": str(tmp)})
    return Daemon(
        cfg,
        clock=clock,
        recorder=Recorder(AuditLog(cfg.audit_dir, clock=clock), clock, DaemonMetrics()),
        pool=FakePool(version="v2"),  # type: ignore[arg-type]
        probe=HealthProbe(0.1),
        registry=FakeRegistry(),  # type: ignore[arg-type]
        notifier=FakeNotifier(),  # type: ignore[arg-type]
        events=queue.SimpleQueue(),
    )


class Ready:
    all_ready = True


def test_carry_out_writes_each_step_under_the_old_id_and_hands_the_rest_to_the_policy(
    tmp_path: Path,
) -> None:
    """Closed, watched and continued incidents keep their ids; a watch resolves when ready."""
    clock = FakeClock()
    daemon = daemon_with(tmp_path, clock)
    since = "2026-11-27T10:16:00.000Z"  # 40 s before the fake clock's now (10:16:40)
    crash = Unfinished("crash-1", "service_crash", 1, since, {}, {})
    drift = Unfinished("drift-1", "data_drift", None, since, {}, {})
    retrain = Unfinished("man-1", "manual_action", None, since, {}, {}, manual=True)
    found = Found(retrain_issue="manual_action", current="v2", workers=2, adopted=2)
    decided = resume.plan([crash, drift, retrain], found, Previous(11))
    handed: list[Any] = []
    resume.carry_out(
        decided, recorder=daemon.recorder, operations=daemon.operations, model=handed.append
    )
    assert handed == [Resumed(frozenset({"manual_action"}), Previous(11).details())]
    clock.advance(2.0)
    daemon.operations.check_follow_ups(Ready())  # type: ignore[arg-type]
    written = list(read_records(daemon.cfg.audit_dir))
    assert [(r["incident_id"], r["detection"], r["outcome"]) for r in written] == [
        ("crash-1", "daemon_restarted", None),
        ("drift-1", "daemon_restarted", "escalated"),
        ("crash-1", "all_workers_ready", "resolved"),
    ]
    assert written[0]["details"]["worker"] == 1
    assert written[2]["time_to_resolution_s"] == pytest.approx(42.0)
    # the continued incident keeps its id for the policy's next record; the closed one is over
    assert daemon.recorder.book.incident_for("manual_action", None).incident_id == "man-1"
    assert daemon.recorder.book.incident_for("data_drift", None).incident_id != "drift-1"


def test_the_restored_state_says_what_was_in_flight() -> None:
    """Found.of reads the retrain (or its waiting retry) and the deployment from the state."""
    state = ModelState(serving="v2", retry_issue="data_drift", deploying="", deploy_issue="x")
    found = Found.of(state, "v2", 2, 1)
    assert (found.retrain_issue, found.deploy_issue) == ("data_drift", "")
    assert "the others start on v2" in found.workers_text()


def test_an_escalated_model_incident_is_over_a_new_retrain_opens_a_new_one(
    tmp_path: Path,
) -> None:
    """The model policy's escalations are final: the next retrain gets an incident of its own."""
    daemon = daemon_with(tmp_path, FakeClock())
    first = daemon.recorder.book.incident_for("manual_action", None).incident_id
    daemon.healing.state = replace(daemon.healing.state, job_issue="manual_action", job_attempt=1)
    daemon.healing.handle(RetrainFinished(promote=False, error="timed out after 900 s"))
    (failed,) = [r for r in read_records(daemon.cfg.audit_dir) if r["issue"] == "manual_action"]
    assert (failed["incident_id"], failed["outcome"]) == (first, "escalated")
    assert daemon.recorder.book.incident_for("manual_action", None).incident_id != first
