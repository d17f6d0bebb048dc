"""The pure decision core of model healing: monitoring verdicts in, retrain / deploy / rollback out.

``decide_model(event, state, now, cfg)`` never touches the world. ``now`` is wall-clock epoch
seconds (cooldowns and the daily budget are read by people as times of day, and they survive a
restart of the daemon through ``ModelState.durable()``). Rules:

- ``data_drift``: every check is noted (its scores go into the audit and the charts). Drift must
  persist over ``drift.consecutive`` judged checks in a row (hysteresis) before it is an incident;
  then a retrain is started, unless one is running, healing is paused, the cooldown since the last
  retrain has not passed (``retrain.cooldown_s``) or the day's budget is used
  (``retrain.daily_budget`` automatic retrains per UTC day): those are recorded ``skipped`` with
  the reason and the time it lifts, once per reason, and the retrain is tried again at the next
  check that still sees drift. The incident resolves when a promoted model serves on every
  worker, or when the drift subsides by itself.
- the gate runs inside the retrain job; its verdict comes back here. A candidate that passed is
  deployed in place on every worker (``Deploy``), with ``rollback_to`` the version it replaces. A
  failed model test (``test_failure``) was already repaired and retried once by the job: recorded
  as resolved if the retry passed, else escalated. A rejected candidate fails the incident that
  asked for it (escalated: nothing automatic is left to try).
- ``deployment_failure``: the deployer rolls every worker back to ``rollback_to`` by itself and
  says whether that worked; recorded resolved (rolled back) or escalated.
- ``performance_drop``: a judged live metric (the model's own, over a window of feedback on the
  serving version) past its bar in the metric's own direction (``performance.threshold``;
  ``min_r2`` for R2): if a deployment is recent (``recent_deploy_s``) roll back to the
  version it replaced, else retrain. Never flap: after one such action, another drop within
  ``hold_s`` is escalated once and not acted on.
- a manual retrain bypasses cooldown and budget (a person asked) but starts the cooldown.
- a retrain that failed for a reason of the environment (a full disk, its process died) is
  retried after ``retrain.retry_s`` under the same incident, up to ``retrain.max_attempts``; what a
  previous daemon left in flight is continued (``Resumed``): both in ``lifecycle.retry``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from selfheal_daemon.config import RetrainConfig
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
from selfheal_daemon.lifecycle.retry import (
    Failure,
    Result,
    closed,
    deploying,
    job_ended,
    resumed,
    retrain_failed,
    retry_if_due,
    superseded,
)
from selfheal_daemon.record.recorder import Report

DAY_S = 86_400.0


@dataclass(frozen=True)
class ModelDecision:
    state: ModelState
    actions: tuple[ModelAction, ...] = ()


def clock_time(epoch: float) -> str:
    """``14:05 UTC``: how a person reads a cooldown's end."""
    return time.strftime("%H:%M UTC", time.gmtime(epoch))


def decide_model(
    event: ModelEvent, state: ModelState, now: float, cfg: ModelPolicyConfig
) -> ModelDecision:
    new, actions = _apply(event, state, now, cfg)
    # Everything recorded about a retrain a person asked for is marked manual.
    marked = [
        replace(a, manual=True) if isinstance(a, Report) and a.issue == "manual_action" else a
        for a in actions
    ]
    return ModelDecision(new, tuple(marked))


def _apply(event: ModelEvent, state: ModelState, now: float, cfg: ModelPolicyConfig) -> Result:  # noqa: PLR0911
    match event:
        case DriftChecked():
            return _drift_checked(state, event, now, cfg)
        case PerformanceChecked():
            return _performance_checked(state, event, now, cfg)
        case RetrainRequested():
            state, dropped = superseded(state)
            new, actions = _start_retrain(state, now, "manual_action", event.reason, manual=True)
            asked = Report(
                "manual_action",
                "operator_request",
                None,
                {"reason": event.reason},
                action="retrain",
            )
            return new, [*dropped, asked, *actions]
        case RetrainFinished():
            return _retrain_finished(state, event, now, cfg)
        case DeployFinished():
            return _deploy_finished(state, event, now)
        case ServingChanged():
            return _serving_changed(state, event)
        case HealingPaused():
            return replace(state, paused=event.paused), []
        case DeployRequested():
            deploy = Deploy(event.version, state.serving, event.issue, event.reason)
            return deploying(state, deploy), [deploy]
        case ModelTick():
            return retry_if_due(state, now, cfg)
        case Resumed():
            return resumed(state, event, now, cfg)
    raise TypeError(f"unknown event {event!r}")  # pragma: no cover - exhaustive match above


# ----- helpers --------------------------------------------------------------------------------


def retrain_blocked(state: ModelState, now: float, cfg: RetrainConfig) -> str:
    """Why an automatic retrain may not start now ("" when it may), with when that lifts."""
    if state.paused:
        return "healing paused"
    if state.job_issue:
        return "a retrain is already running"
    if state.deploying:
        return f"a deployment of {state.deploying} is in progress"
    if state.last_retrain_at is not None and now - state.last_retrain_at < cfg.cooldown_s:
        return f"cooldown until {clock_time(state.last_retrain_at + cfg.cooldown_s)}"
    today = int(now // DAY_S)
    used = sum(1 for t in state.retrain_times if int(t // DAY_S) == today)
    if used >= cfg.daily_budget:
        return (
            f"daily retrain budget used ({used} of {cfg.daily_budget}); "
            f"next after {clock_time((today + 1) * DAY_S)}"
        )
    return ""


def _start_retrain(
    state: ModelState, now: float, issue: str, reason: str, *, manual: bool
) -> Result:
    started = replace(
        state,
        job_issue=issue,
        job_started_at=now,
        last_retrain_at=now,
        job_attempt=1,
        job_manual=manual,
        retry_issue="",
        retry_at=None,
    )
    if not manual:
        today = int(now // DAY_S)
        kept = tuple(t for t in state.retrain_times if int(t // DAY_S) == today)
        started = replace(started, retrain_times=(*kept, now))
    return started, [StartRetrain(issue, reason, manual=manual)]


def _try_retrain(
    state: ModelState,
    now: float,
    cfg: ModelPolicyConfig,
    *,
    issue: str,
    detection: str,
    details: dict[str, Any],
) -> Result:
    """Start a retrain for ``issue`` or record, once per reason, why it is skipped."""
    blocked = retrain_blocked(state, now, cfg.retrain)
    if blocked == "a retrain is already running" and state.job_issue == issue:
        return state, []
    if blocked:
        if blocked == state.skipped_reason:
            return state, []
        skipped = Report(
            issue,
            detection,
            None,
            {**details, "reason": blocked},
            outcome="skipped",
            action="none",
        )
        return replace(state, skipped_reason=blocked), [skipped]
    state, actions = _start_retrain(state, now, issue, details.get("why", detection), manual=False)
    report = Report(issue, detection, None, details, action="retrain")
    return replace(state, skipped_reason=""), [report, *actions]


# ----- rules ----------------------------------------------------------------------------------


def _drift_checked(
    state: ModelState, event: DriftChecked, now: float, cfg: ModelPolicyConfig
) -> Result:
    if not event.judged:
        return state, [Note("data_drift", "too_few_rows", event.details, audit=False)]
    if not event.dataset_drift:
        actions: list[ModelAction] = [Note("data_drift", "no_drift", event.details)]
        state = replace(state, drift_streak=0)
        if (
            state.drift_open
            and state.job_issue != "data_drift"
            and state.deploy_issue != ("data_drift")
        ):
            actions.append(
                Report(
                    "data_drift",
                    "drift_subsided",
                    None,
                    event.details,
                    outcome="resolved",
                    action="none",
                )
            )
            state = replace(state, drift_open=False, skipped_reason="")
        return state, actions
    streak = state.drift_streak + 1
    state = replace(state, drift_streak=streak)
    needed = cfg.drift.consecutive
    details = {**event.details, "streak": streak, "needed": needed}
    if streak < needed:
        return state, [Note("data_drift", "drift_pending", details)]
    if state.drift_open and state.busy:
        return state, [Note("data_drift", "drift_persists", details)]
    details["why"] = f"data drift over {streak} consecutive checks"
    new, actions = _try_retrain(
        state, now, cfg, issue="data_drift", detection="dataset_drift", details=details
    )
    if not state.drift_open and not actions:  # opened and nothing new to say: still record it
        actions = [Report("data_drift", "dataset_drift", None, details, action="none")]
    return replace(new, drift_open=True), actions


def _performance_checked(  # noqa: PLR0911 - one return per rule, in the docstring's order
    state: ModelState, event: PerformanceChecked, now: float, cfg: ModelPolicyConfig
) -> Result:
    perf = cfg.performance
    details = {
        **event.details,
        "version": event.version,
        "rows": event.rows,
        "metric": event.metric,
        event.metric: event.value,
        "threshold": event.threshold,
    }
    if not event.judged or event.value is None or event.version != state.serving:
        return state, [Note("performance", "too_few_rows", details, audit=False)]
    if not event.below:
        return replace(state, perf_escalated=False), [Note("performance", "ok", details)]
    details["threshold"] = event.threshold
    if event.metric == "r2":
        details["min_r2"] = event.threshold
    if state.busy:
        return state, [Note("performance", "drop_while_busy", details)]
    if state.perf_action_at is not None and now - state.perf_action_at < perf.hold_s:
        if state.perf_escalated:
            return state, []
        held = {
            **details,
            "reason": f"a {state.perf_action} for a performance drop was done "
            f"{now - state.perf_action_at:.0f} s ago; not acting again within "
            f"{perf.hold_s:.0f} s (never flap)",
        }
        report = Report(
            "performance_drop",
            "metric_below_threshold",
            None,
            held,
            outcome="escalated",
            action="none",
        )
        return replace(state, perf_escalated=True, perf_open=False), [report]
    recent = (
        state.deployed_at is not None
        and now - state.deployed_at <= perf.recent_deploy_s
        and state.deployed_from is not None
        and state.deployed_from != state.serving
    )
    if recent and state.deployed_from is not None:
        report = Report(
            "performance_drop",
            "metric_below_threshold",
            None,
            {**details, "deployed_s_ago": round(now - (state.deployed_at or now), 1)},
            action="rollback",
        )
        deploy = Deploy(
            state.deployed_from,
            state.serving,
            "performance_drop",
            f"{event.describe()} after deploying {state.serving}",
        )
        new = replace(
            deploying(state, deploy),
            perf_open=True,
            perf_action_at=now,
            perf_action="rollback",
        )
        return new, [report, deploy]
    details["why"] = event.describe()
    new, actions = _try_retrain(
        state,
        now,
        cfg,
        issue="performance_drop",
        detection="metric_below_threshold",
        details=details,
    )
    if new.job_issue == "performance_drop" and not state.job_issue:
        new = replace(new, perf_open=True, perf_action_at=now, perf_action="retrain")
    return new, actions


def _retrain_finished(
    state: ModelState, event: RetrainFinished, now: float, cfg: ModelPolicyConfig
) -> Result:
    issue = state.job_issue or "manual_action"
    attempt, manual = max(state.job_attempt, 1), state.job_manual
    state = job_ended(state)
    actions: list[ModelAction] = []
    if event.error:
        failure = Failure(issue, attempt, manual, event.error, transient=event.transient)
        return retrain_failed(state, failure, dict(event.details), now, cfg)
    if event.test_failure is not None:
        first = {**event.test_failure, "repaired": event.repaired or {}}
        actions.append(
            Report("test_failure", "model_tests_failed", None, first, action="repair_and_retrain")
        )
        retry = {"verdict": event.verdict}
        if event.promote:
            actions.append(
                Report(
                    "test_failure",
                    "retry_passed",
                    None,
                    retry,
                    outcome="resolved",
                    action="repaired_data_retrained",
                )
            )
        else:
            actions.append(
                Report(
                    "test_failure",
                    "retry_failed",
                    None,
                    retry,
                    outcome="escalated",
                    action="rejected",
                )
            )
    if event.promote and event.candidate:
        actions.append(
            Report(
                issue,
                "candidate_passed_gate",
                None,
                {"candidate": event.candidate, "verdict": event.verdict, **event.details},
                action="deploy",
            )
        )
        deploy = Deploy(event.candidate, state.serving, issue, f"promote {event.candidate}")
        actions.append(deploy)
        return deploying(state, deploy), actions
    actions.append(
        Report(
            issue,
            "candidate_rejected",
            None,
            {"verdict": event.verdict, **event.details},
            outcome="escalated",
            action="kept_champion",
        )
    )
    return closed(state, issue), actions


# Deployments that go back to a version known to be good: not a deployment to roll back from.
ROLLBACK_ISSUES = frozenset({"performance_drop", "deployment_failure"})


def _deploy_finished(state: ModelState, event: DeployFinished, now: float) -> Result:
    issue = state.deploy_issue or "manual_action"
    previous = state.deploy_from or state.serving
    state = replace(state, deploying="", deploy_issue="", deploy_from="")
    if event.ok:
        done = Report(
            issue,
            "all_workers_on_version",
            None,
            {"version": event.version, "from": previous, **event.details},
            outcome="resolved",
            action="rollback" if issue in ROLLBACK_ISSUES else "deployed",
        )
        new = replace(state, serving=event.version, drift_streak=0)
        if issue not in ROLLBACK_ISSUES:
            new = replace(new, deployed_at=now, deployed_from=previous)
        return closed(new, issue), [done]
    details = {"version": event.version, **event.details}
    detected = Report(
        "deployment_failure",
        str(event.details.get("detection", "swap_failed")),
        None,
        details,
        action="rollback",
    )
    ended = Report(
        "deployment_failure",
        "rolled_back" if event.rolled_back else "rollback_incomplete",
        None,
        details,
        outcome="resolved" if event.rolled_back else "escalated",
        action="rollback",
    )
    if issue == "drill":
        return state, [detected, ended]
    origin = Report(
        issue,
        "deployment_failed",
        None,
        {"version": event.version},
        outcome="escalated",
        action="none",
    )
    return closed(state, issue), [detected, ended, origin]


def _serving_changed(state: ModelState, event: ServingChanged) -> Result:
    new = replace(state, last_good=event.last_good)
    if event.serving != state.serving and not state.deploying:
        new = replace(new, serving=event.serving, drift_streak=0)
    return new, []
