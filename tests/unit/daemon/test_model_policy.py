"""The model-healing decision core: hysteresis, cooldown, budget, the gate's verdicts, deployments,
performance drops and the flap guard. Pure: events in, actions out, time handed in."""

from __future__ import annotations

from typing import Any

import pytest

from selfheal_daemon.config import DriftConfig, PerformanceConfig, RetrainConfig
from selfheal_daemon.events import Report
from selfheal_daemon.model_policy import (
    DAY_S,
    Deploy,
    DeployFinished,
    DeployRequested,
    DriftChecked,
    HealingPaused,
    ModelAction,
    ModelEvent,
    ModelPolicyConfig,
    ModelState,
    Note,
    PerformanceChecked,
    RetrainFinished,
    RetrainRequested,
    ServingChanged,
    StartRetrain,
    decide_model,
)

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
    return PerformanceChecked(version=version, rows=rows, r2=r2, judged=True)


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
    small = PerformanceChecked(version="v1", rows=5, r2=None, judged=False)
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


def test_a_rollback_that_does_not_complete_is_escalated() -> None:
    m = Model()
    m.feed(DeployRequested("v9", "drill", "x"))
    actions = m.feed(DeployFinished("v9", ok=False, rolled_back=False, details={}), 1)
    assert reports(actions)[-1].outcome == "escalated"
