"""The model-healing decision core: hysteresis, cooldown, budget, the gate's verdicts, deployments,
performance drops and the flap guard. Pure: events in, actions out, time handed in."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from selfheal_daemon.config import DriftConfig, PerformanceConfig, RetrainConfig
from selfheal_daemon.lifecycle.events import (
    Deploy,
    DeployFinished,
    DeployRequested,
    DriftChecked,
    HealingPaused,
    ModelAction,
    ModelEvent,
    ModelPolicyConfig,
    ModelState,
    ModelTick,
    Note,
    PerformanceChecked,
    Resumed,
    RetrainFinished,
    RetrainRequested,
    ServingChanged,
    StartRetrain,
)
from selfheal_daemon.lifecycle.policy import DAY_S, decide_model
from selfheal_daemon.record.recorder import Report

CFG = ModelPolicyConfig(
    drift=DriftConfig(consecutive=2),
    retrain=RetrainConfig(cooldown_s=600.0, daily_budget=2),
    performance=PerformanceConfig(min_r2=0.5, recent_deploy_s=3600.0, hold_s=1800.0),
)
T0 = 20 * DAY_S + 10 * 3600.0  # 10:00 UTC on some day
DRIFT = DriftChecked(judged=True, dataset_drift=True, details={"score": 0.8})
CALM = DriftChecked(judged=True, dataset_drift=False, details={"score": 0.1})


class Model:
    def __init__(self, state: ModelState | None = None, cfg: ModelPolicyConfig = CFG) -> None:
        self.state = state or ModelState(serving="v1", last_good="v1")
        self.now = T0
        self.cfg = cfg

    def feed(self, event: ModelEvent, after_s: float = 0.0) -> list[ModelAction]:
        self.now += after_s
        decision = decide_model(event, self.state, self.now, self.cfg)
        self.state = decision.state
        return list(decision.actions)


def reports(actions: list[ModelAction]) -> list[Report]:
    return [a for a in actions if isinstance(a, Report)]


def only(actions: list[ModelAction], kind: type[Any]) -> Any:
    found = [a for a in actions if isinstance(a, kind)]
    assert len(found) == 1, actions
    return found[0]


def promoted(candidate: str = "v2") -> RetrainFinished:
    return RetrainFinished(promote=True, candidate=candidate, verdict={"promote": True})


def test_drift_must_persist_before_a_retrain() -> None:
    m = Model()
    first = m.feed(DRIFT)
    assert [type(a) for a in first] == [Note]
    assert first[0].details["streak"] == 1  # type: ignore[union-attr]
    second = m.feed(DRIFT, 60)
    start = only(second, StartRetrain)
    assert start.issue == "data_drift"
    report = only(second, Report)
    assert (report.issue, report.action, report.outcome) == ("data_drift", "retrain", "")
    assert m.state.drift_open
    assert m.state.job_issue == "data_drift"


def test_a_calm_check_resets_the_streak() -> None:
    m = Model()
    m.feed(DRIFT)
    m.feed(CALM, 60)
    assert not any(isinstance(a, StartRetrain) for a in m.feed(DRIFT, 60))


def test_unjudged_checks_neither_count_nor_reset() -> None:
    m = Model()
    m.feed(DRIFT)
    few = m.feed(DriftChecked(judged=False, dataset_drift=False, details={}), 60)
    assert [a.detection for a in few if isinstance(a, Note)] == ["too_few_rows"]
    assert not any(a.audit for a in few if isinstance(a, Note))  # not a line every minute
    assert any(isinstance(a, StartRetrain) for a in m.feed(DRIFT, 60))


def drift_retrain(m: Model) -> None:
    m.feed(DRIFT, 60)
    actions = m.feed(DRIFT, 60)
    assert any(isinstance(a, StartRetrain) for a in actions)


def test_promotion_deploys_and_its_success_resolves_the_drift() -> None:
    m = Model()
    drift_retrain(m)
    actions = m.feed(promoted("v2"), 120)
    deploy = only(actions, Deploy)
    assert (deploy.version, deploy.rollback_to, deploy.issue) == ("v2", "v1", "data_drift")
    done = reports(m.feed(DeployFinished("v2", ok=True), 5))
    assert [(r.issue, r.outcome, r.action) for r in done] == [
        ("data_drift", "resolved", "deployed")
    ]
    assert m.state.serving == "v2"
    assert m.state.deployed_from == "v1"
    assert not m.state.drift_open
    assert not m.state.busy
    assert m.state.drift_streak == 0


def test_cooldown_is_an_audited_skip_recorded_once() -> None:
    m = Model()
    drift_retrain(m)
    m.feed(RetrainFinished(promote=False, verdict={"reasons": ["R2 0.6 < 0.7"]}), 60)
    m.feed(DRIFT, 60)
    again = m.feed(DRIFT, 60)
    skipped = only(again, Report)
    assert skipped.outcome == "skipped"
    assert skipped.details["reason"].startswith("cooldown until ")
    assert skipped.details["reason"].endswith("UTC")
    assert m.feed(DRIFT, 60) == []  # the same reason is not written again
    after = m.feed(DRIFT, 600)  # the cooldown has passed: retrained now
    assert any(isinstance(a, StartRetrain) for a in after)


def test_daily_budget_counts_automatic_retrains_per_utc_day() -> None:
    m = Model(
        cfg=ModelPolicyConfig(
            CFG.drift, RetrainConfig(cooldown_s=0, daily_budget=2), CFG.performance
        )
    )
    for _ in range(2):
        drift_retrain(m)
        m.feed(RetrainFinished(promote=False), 10)
    m.feed(DRIFT, 10)
    skipped = only(m.feed(DRIFT, 10), Report)
    assert skipped.outcome == "skipped"
    assert "daily retrain budget used (2 of 2)" in skipped.details["reason"]
    assert "next after 00:00 UTC" in skipped.details["reason"]
    m.now = (T0 // DAY_S + 1) * DAY_S + 60  # the next UTC day
    assert any(isinstance(a, StartRetrain) for a in m.feed(DRIFT))


def test_paused_healing_skips_the_retrain() -> None:
    m = Model()
    m.feed(HealingPaused(paused=True))
    m.feed(DRIFT)
    skipped = only(m.feed(DRIFT, 60), Report)
    assert (skipped.outcome, skipped.details["reason"]) == ("skipped", "healing paused")
    m.feed(HealingPaused(paused=False))
    assert any(isinstance(a, StartRetrain) for a in m.feed(DRIFT, 60))


def test_rejected_candidate_escalates_the_drift_incident() -> None:
    m = Model()
    drift_retrain(m)
    actions = m.feed(RetrainFinished(promote=False, verdict={"reasons": ["worse"]}), 30)
    rejected = only(actions, Report)
    assert (rejected.issue, rejected.detection, rejected.outcome) == (
        "data_drift",
        "candidate_rejected",
        "escalated",
    )
    assert not any(isinstance(a, Deploy) for a in actions)
    assert not m.state.drift_open
    assert not m.state.busy


def test_test_failure_repaired_and_passed_is_resolved_and_deployed() -> None:
    m = Model()
    drift_retrain(m)
    finished = RetrainFinished(
        promote=True,
        candidate="v3",
        test_failure={"failed_tests": ["golden"]},
        repaired={"quarantined_rows": 40},
    )
    actions = m.feed(finished, 30)
    assert [(r.issue, r.outcome) for r in reports(actions)] == [
        ("test_failure", ""),
        ("test_failure", "resolved"),
        ("data_drift", ""),
    ]
    assert only(actions, Deploy).version == "v3"


def test_test_failure_that_fails_again_is_rejected_and_escalated() -> None:
    m = Model()
    drift_retrain(m)
    finished = RetrainFinished(promote=False, test_failure={"failed_tests": ["directional"]})
    outcomes = [(r.issue, r.outcome, r.action) for r in reports(m.feed(finished, 30))]
    assert outcomes == [
        ("test_failure", "", "repair_and_retrain"),
        ("test_failure", "escalated", "rejected"),
        ("data_drift", "escalated", "kept_champion"),
    ]


def test_a_crashed_or_timed_out_job_escalates() -> None:
    m = Model()
    drift_retrain(m)
    failed = only(
        m.feed(RetrainFinished(promote=False, error="timed out after 900 s"), 900), Report
    )
    assert (failed.detection, failed.outcome) == ("retrain_failed", "escalated")
    assert failed.details["error"] == "timed out after 900 s"
    assert not m.state.busy


def test_deployment_failure_rolled_back_is_resolved_and_fails_the_origin() -> None:
    m = Model()
    drift_retrain(m)
    m.feed(promoted("v2"), 30)
    actions = m.feed(
        DeployFinished("v2", ok=False, rolled_back=True, details={"detection": "smoke_test"}), 2
    )
    assert [(r.issue, r.detection, r.outcome) for r in reports(actions)] == [
        ("deployment_failure", "smoke_test", ""),
        ("deployment_failure", "rolled_back", "resolved"),
        ("data_drift", "deployment_failed", "escalated"),
    ]
    assert m.state.serving == "v1"
    assert not m.state.busy


def deployed(m: Model) -> None:
    drift_retrain(m)
    m.feed(promoted("v2"), 30)
    m.feed(DeployFinished("v2", ok=True), 2)


def perf(version: str, r2: float, rows: int = 300) -> PerformanceChecked:
    return PerformanceChecked(version=version, rows=rows, value=r2, judged=True, threshold=0.5)


def test_performance_drop_after_a_recent_deployment_rolls_back() -> None:
    m = Model()
    deployed(m)
    actions = m.feed(perf("v2", 0.1), 300)
    deploy = only(actions, Deploy)
    assert (deploy.version, deploy.rollback_to, deploy.issue) == ("v1", "v2", "performance_drop")
    assert only(actions, Report).action == "rollback"
    done = only(m.feed(DeployFinished("v1", ok=True), 2), Report)
    assert (done.issue, done.outcome, done.action) == ("performance_drop", "resolved", "rollback")
    assert m.state.serving == "v1"


def test_performance_drop_long_after_a_deployment_retrains() -> None:
    m = Model()
    deployed(m)
    actions = m.feed(perf("v2", 0.1), 4000)
    assert only(actions, StartRetrain).issue == "performance_drop"


def test_never_flap_a_second_drop_within_hold_is_escalated_once() -> None:
    m = Model()
    deployed(m)
    m.feed(perf("v2", 0.1), 300)
    m.feed(DeployFinished("v1", ok=True), 2)
    held = only(m.feed(perf("v1", 0.2), 120), Report)
    assert (held.issue, held.outcome) == ("performance_drop", "escalated")
    assert "never flap" in held.details["reason"]
    assert m.feed(perf("v1", 0.2), 120) == []
    assert not any(isinstance(a, StartRetrain | Deploy) for a in m.feed(perf("v1", 0.2), 60))


def test_performance_of_another_version_or_too_few_rows_is_only_noted() -> None:
    m = Model()
    assert [type(a) for a in m.feed(perf("v9", 0.0))] == [Note]
    small = PerformanceChecked(version="v1", rows=5, value=None, judged=False)
    assert [type(a) for a in m.feed(small)] == [Note]


def test_manual_retrain_bypasses_cooldown_and_budget_and_is_marked_manual() -> None:
    m = Model(
        cfg=ModelPolicyConfig(
            CFG.drift, RetrainConfig(cooldown_s=600, daily_budget=0), CFG.performance
        )
    )
    actions = m.feed(RetrainRequested(reason="operator"))
    assert only(actions, StartRetrain).manual
    asked = only(actions, Report)
    assert (asked.issue, asked.manual, asked.action) == ("manual_action", True, "retrain")
    final = reports(m.feed(promoted("v2"), 30))
    assert all(r.manual for r in final if r.issue == "manual_action")
    done = only(m.feed(DeployFinished("v2", ok=True), 1), Report)
    assert (done.issue, done.manual, done.outcome) == ("manual_action", True, "resolved")


def test_drift_that_subsides_by_itself_resolves_the_open_incident() -> None:
    m = Model(
        cfg=ModelPolicyConfig(
            CFG.drift, RetrainConfig(cooldown_s=600, daily_budget=0), CFG.performance
        )
    )
    m.feed(DRIFT)
    skipped = only(m.feed(DRIFT, 60), Report)
    assert skipped.outcome == "skipped"
    calm = reports(m.feed(CALM, 60))
    assert [(r.detection, r.outcome) for r in calm] == [("drift_subsided", "resolved")]


def test_durable_fields_survive_a_restart() -> None:
    m = Model()
    deployed(m)
    restored = ModelState(serving="v2").restore(m.state.durable())
    assert restored.last_retrain_at == m.state.last_retrain_at
    assert restored.retrain_times == m.state.retrain_times
    assert restored.deployed_from == "v1"
    again = Model(restored)
    again.now = m.now
    again.feed(DRIFT)
    assert only(again.feed(DRIFT), Report).details["reason"].startswith("cooldown")


@pytest.mark.parametrize("bad", [{}, {"retrain_times": "x", "deployed_at": "soon"}])
def test_restore_ignores_garbage(bad: dict[str, Any]) -> None:
    restored = ModelState(serving="v1").restore(bad)
    assert restored.retrain_times == ()
    assert restored.deployed_at is None


def test_serving_changes_from_the_supervisor_are_followed() -> None:
    m = Model()
    m.feed(DRIFT)
    m.feed(ServingChanged(serving="v0", last_good="v0"))
    assert (m.state.serving, m.state.last_good, m.state.drift_streak) == ("v0", "v0", 0)


def test_a_drill_deployment_records_only_the_deployment_failure() -> None:
    m = Model()
    deploy = only(m.feed(DeployRequested("v9", "drill", "drill: bad-model")), Deploy)
    assert (deploy.version, deploy.rollback_to) == ("v9", "v1")
    assert m.state.busy
    actions = m.feed(DeployFinished("v9", ok=False, rolled_back=True, details={}), 1)
    assert [(r.issue, r.outcome) for r in reports(actions)] == [
        ("deployment_failure", ""),
        ("deployment_failure", "resolved"),
    ]
    assert m.state.serving == "v1"
    assert not m.state.busy


def test_replacing_a_damaged_version_is_a_rollback_not_a_deployment_to_roll_back_from() -> None:
    """The registry re-check deploys a valid version in place of a damaged one: a later
    performance drop must not roll back to the damaged version."""
    m = Model()
    deployed(m)
    m.feed(DeployRequested("v1", "deployment_failure", "v2 fails its checksum"), 10)
    done = only(m.feed(DeployFinished("v1", ok=True), 1), Report)
    assert (done.issue, done.outcome, done.action) == ("deployment_failure", "resolved", "rollback")
    assert m.state.serving == "v1"
    assert m.state.deployed_from != "v2"


def test_a_rollback_that_does_not_complete_is_escalated() -> None:
    m = Model()
    m.feed(DeployRequested("v9", "drill", "x"))
    actions = m.feed(DeployFinished("v9", ok=False, rolled_back=False, details={}), 1)
    assert reports(actions)[-1].outcome == "escalated"


# ----- failures of the environment: retried; a daemon restart: continued ------------------------

FULL = RetrainFinished(
    promote=False, error="OSError: [Errno 28] No space left on device", transient=True
)


def test_a_full_disk_keeps_the_incident_open_and_retries_after_retry_s() -> None:
    """A transient failure is recorded with action retry; the first tick after retry_s retries."""
    m = Model()
    drift_retrain(m)
    failed = only(m.feed(FULL, 30), Report)
    assert (failed.issue, failed.detection, failed.action, failed.outcome) == (
        "data_drift",
        "retrain_failed",
        "retry",
        "",
    )
    assert failed.details["attempt"] == 1
    assert failed.details["max_attempts"] == 3
    assert failed.details["retry_in_s"] == 60.0
    assert failed.details["transient"] is True
    assert m.state.drift_open
    assert m.state.busy
    assert m.feed(ModelTick(), 59) == []
    retried = m.feed(ModelTick(), 1)
    start = only(retried, StartRetrain)
    assert start.issue == "data_drift"
    assert "retry 2 of 3" in start.reason
    report = only(retried, Report)
    assert (report.detection, report.action, report.details["attempt"]) == (
        "retrain_retry",
        "retrain",
        2,
    )
    assert m.state.job_issue == "data_drift"
    assert m.state.job_attempt == 2
    # the retry is the same retrain: the cooldown (600 s) and the budget do not hold it back
    assert len(m.state.retrain_times) == 1
    done = reports(m.feed(promoted("v2"), 30) + m.feed(DeployFinished("v2", ok=True), 1))
    assert [(r.issue, r.outcome) for r in done][-1] == ("data_drift", "resolved")
    assert not m.state.busy


def test_the_last_attempt_escalates_and_closes_the_incident() -> None:
    """After retrain.max_attempts transient failures, the incident is escalated, not retried."""
    m = Model()
    drift_retrain(m)
    for _attempt in (1, 2):
        assert only(m.feed(FULL, 10), Report).action == "retry"
        assert any(isinstance(a, StartRetrain) for a in m.feed(ModelTick(), 60))
    last = only(m.feed(FULL, 10), Report)
    assert (last.detection, last.outcome, last.action) == ("retrain_failed", "escalated", "none")
    assert last.details["attempt"] == 3
    assert "no attempt left" in last.details["reason"]
    assert not m.state.busy
    assert not m.state.drift_open
    assert m.feed(ModelTick(), 600) == []


@pytest.mark.parametrize(
    "error",
    ["timed out after 900 s and was killed", "ran out of memory (limit 4096 MiB)", "DataError: x"],
)
def test_a_failure_that_would_repeat_is_not_retried(error: str) -> None:
    """A timeout, the memory limit or bad data would fail the same way: escalated at once."""
    m = Model()
    drift_retrain(m)
    failed = only(m.feed(RetrainFinished(promote=False, error=error), 30), Report)
    assert (failed.outcome, failed.action) == ("escalated", "none")
    assert failed.details["transient"] is False
    assert not m.state.busy


def test_a_retry_waits_while_healing_is_paused() -> None:
    """A due retry does not start while paused; the first tick after resuming starts it."""
    m = Model()
    drift_retrain(m)
    m.feed(FULL, 10)
    m.feed(HealingPaused(paused=True))
    assert m.feed(ModelTick(), 120) == []
    m.feed(HealingPaused(paused=False))
    assert any(isinstance(a, StartRetrain) for a in m.feed(ModelTick(), 1))


def test_drift_while_a_retry_waits_starts_no_second_retrain() -> None:
    """The waiting retry is the incident's retrain: a drift check only notes that it persists."""
    m = Model(cfg=ModelPolicyConfig(CFG.drift, RetrainConfig(cooldown_s=0.0), CFG.performance))
    drift_retrain(m)
    m.feed(FULL, 10)
    actions = m.feed(DRIFT, 5) + m.feed(DRIFT, 5)
    assert not any(isinstance(a, StartRetrain) for a in actions)
    notes = [a.detection for a in actions if isinstance(a, Note)]
    assert notes == ["drift_pending", "drift_persists"]


def test_a_manual_retrain_that_failed_is_retried_as_manual() -> None:
    """The retry of a retrain a person asked for is still marked manual."""
    m = Model()
    m.feed(RetrainRequested(reason="operator"))
    failed = only(m.feed(FULL, 10), Report)
    assert (failed.issue, failed.manual) == ("manual_action", True)
    retried = m.feed(ModelTick(), 60)
    assert only(retried, StartRetrain).manual
    assert only(retried, Report).manual


def in_flight(**fields: Any) -> ModelState:
    """A state as restored from model_state.json after a restart."""
    return ModelState(serving="v1", last_good="v1").restore(
        ModelState(serving="v1", **fields).durable()
    )


PREVIOUS = {"previous_pid": 4242, "previous_daemon": "killed or crashed"}


def test_a_retrain_that_died_with_the_daemon_is_started_again_under_its_incident() -> None:
    """The job died with the daemon: one attempt lost, the next started at once."""
    m = Model(in_flight(job_issue="data_drift", job_attempt=1, job_started_at=None))
    actions = m.feed(Resumed(frozenset({"data_drift"}), PREVIOUS))
    said, retry = reports(actions)
    assert (said.issue, said.detection, said.action, said.outcome) == (
        "data_drift",
        "daemon_restarted",
        "retry",
        "",
    )
    assert said.details["previous_pid"] == 4242
    assert "was running" in said.details["found"]
    assert retry.detection == "retrain_retry"
    assert only(actions, StartRetrain).issue == "data_drift"
    assert (m.state.job_issue, m.state.job_attempt, m.state.drift_open) == ("data_drift", 2, True)


def test_a_retrain_killed_on_its_last_attempt_is_escalated() -> None:
    """A daemon killed during every attempt does not retrain forever."""
    m = Model(in_flight(job_issue="manual_action", job_attempt=3, job_manual=True))
    said = only(m.feed(Resumed(frozenset({"manual_action"}), PREVIOUS)), Report)
    assert (said.detection, said.outcome, said.manual) == ("daemon_restarted", "escalated", True)
    assert not m.state.busy


def test_what_was_in_flight_without_an_open_incident_is_forgotten() -> None:
    """No open incident in the trail to continue: nothing is started, nothing recorded."""
    m = Model(in_flight(job_issue="data_drift", job_attempt=1))
    assert m.feed(Resumed(frozenset(), PREVIOUS)) == []
    m = Model(in_flight(deploying="v3", deploy_issue="drill", deploy_from="v1"))
    assert m.feed(Resumed(frozenset(), PREVIOUS)) == []
    assert not m.state.busy


def test_an_interrupted_deployment_is_run_again_with_its_rollback_target() -> None:
    """Even if ``current`` already moved, the deployment rolls back to what it replaced."""
    state = in_flight(deploying="v2", deploy_issue="manual_action", deploy_from="v1")
    m = Model(replace(state, serving="v2"))
    actions = m.feed(Resumed(frozenset({"manual_action"}), PREVIOUS))
    deploy = only(actions, Deploy)
    assert (deploy.version, deploy.rollback_to, deploy.issue) == ("v2", "v1", "manual_action")
    said = only(actions, Report)
    assert (said.detection, said.action, said.manual) == ("daemon_restarted", "deploy", True)
    done = only(m.feed(DeployFinished("v2", ok=True), 1), Report)
    assert (done.outcome, done.details["from"]) == ("resolved", "v1")
    assert m.state.deployed_from == "v1"


def test_a_waiting_retry_survives_a_restart() -> None:
    """A retry that was waiting is still due at its time after a restart."""
    m = Model(in_flight(retry_issue="data_drift", retry_at=T0 + 30, job_attempt=1))
    said = only(m.feed(Resumed(frozenset({"data_drift"}), PREVIOUS)), Report)
    assert (said.detection, said.action) == ("daemon_restarted", "retry")
    assert m.state.drift_open
    assert m.feed(ModelTick(), 10) == []
    assert only(m.feed(ModelTick(), 20), StartRetrain).issue == "data_drift"


def test_in_flight_fields_survive_a_restart() -> None:
    """model_state.json carries what was in flight."""
    fields = {
        "job_issue": "data_drift",
        "job_attempt": 2,
        "job_manual": True,
        "retry_issue": "performance_drop",
        "retry_at": 123.0,
        "deploying": "v4",
        "deploy_issue": "manual_action",
        "deploy_from": "v3",
    }
    restored = in_flight(**fields)
    assert {k: getattr(restored, k) for k in fields} == fields
    garbage = ModelState(serving="v1").restore({"job_attempt": True, "deploying": 7})
    assert (garbage.job_attempt, garbage.deploying) == (0, "")


def test_a_manual_retrain_runs_instead_of_an_awaited_retry() -> None:
    """The retry's incident ends (skipped, with the reason) and the person's retrain starts."""
    m = Model()
    drift_retrain(m)
    m.feed(FULL, 10)
    actions = m.feed(RetrainRequested(reason="operator"), 5)
    dropped, asked = reports(actions)
    assert (dropped.issue, dropped.detection, dropped.outcome) == (
        "data_drift",
        "retry_superseded",
        "skipped",
    )
    assert (asked.issue, asked.detection) == ("manual_action", "operator_request")
    assert only(actions, StartRetrain).issue == "manual_action"
    assert (m.state.retry_issue, m.state.drift_open, m.state.job_attempt) == ("", False, 1)
    assert m.feed(ModelTick(), 600) == []


def test_a_lower_is_better_metric_drops_when_it_rises_above_its_ceiling() -> None:
    """A live log loss above its ceiling is a drop, below it not: the metric's own direction."""
    high = PerformanceChecked(
        "v1", 300, 0.9, True, metric="log_loss", threshold=0.5, higher_is_better=False
    )
    low = PerformanceChecked(
        "v1", 300, 0.3, True, metric="log_loss", threshold=0.5, higher_is_better=False
    )
    assert high.below
    assert not low.below
    assert high.describe() == "live log_loss 0.900 above 0.50"
