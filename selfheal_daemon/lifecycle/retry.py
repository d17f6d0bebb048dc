"""The model policy's rules for failures of the environment and for a restart of the daemon.

Part of the pure core (``lifecycle.policy.decide_model`` dispatches here); events in, actions out,
``now`` handed in (wall-clock epoch seconds, as the whole model policy).

- A retrain that failed for a reason of the environment (``RetrainFinished.transient``: a full
  disk, an I/O error, the job's process died or could not start) keeps its incident open: it is
  recorded ``retrain_failed`` with action ``retry``, the attempt and the time of the retry, and
  started again (``retrain_retry``) by the first ``ModelTick`` after ``retrain.retry_s``. Neither
  cooldown nor budget apply (it is the same retrain); it waits while healing is paused or another
  job or deployment runs. After ``retrain.max_attempts`` attempts in all it is escalated. Any other
  failure (a timeout, the memory limit, bad data) is escalated at once: it would fail again. A
  retrain a person asks for meanwhile runs instead: the awaited retry ends ``skipped``.
- ``Resumed`` (the daemon started): a retrain, a retry or a deployment the previous daemon left in
  flight (the durable state says so) is continued under its incident when the audit trail still
  has that incident open (``Resumed.open_issues``), else forgotten. The retrain's job died with
  the daemon: that counts as a failed attempt, retried at once (or escalated if it was the last);
  the deployment is run again from the start (every worker to the version, or every worker back).
  Each is recorded ``daemon_restarted`` with what was found.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from selfheal_daemon.lifecycle.events import (
    Deploy,
    ModelAction,
    ModelPolicyConfig,
    ModelState,
    Resumed,
    StartRetrain,
)
from selfheal_daemon.record.recorder import Report

Result = tuple[ModelState, list[ModelAction]]


@dataclass(frozen=True)
class Failure:
    """One failed attempt of the retrain of incident ``issue``."""

    issue: str
    attempt: int
    manual: bool
    error: str
    transient: bool


def closed(state: ModelState, issue: str) -> ModelState:
    """The incident of ``issue`` ended (its final record was just written)."""
    if issue == "data_drift":
        return replace(state, drift_open=False, skipped_reason="")
    if issue == "performance_drop":
        return replace(state, perf_open=False)
    return state


def job_ended(state: ModelState) -> ModelState:
    """No retrain job runs any more. Drift must persist over fresh checks again before the next
    retrain is asked for."""
    return replace(
        state, job_issue="", job_started_at=None, job_attempt=0, job_manual=False, drift_streak=0
    )


def deploying(state: ModelState, deploy: Deploy) -> ModelState:
    return replace(
        state, deploying=deploy.version, deploy_issue=deploy.issue, deploy_from=deploy.rollback_to
    )


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def retrain_failed(
    state: ModelState,
    failure: Failure,
    details: dict[str, Any],
    now: float,
    cfg: ModelPolicyConfig,
    *,
    delay_s: float | None = None,
    detection: str = "retrain_failed",
) -> Result:
    """Record a failed attempt: a retry after ``delay_s`` (default ``retrain.retry_s``) or, when
    the failure is not transient or that was the last attempt, escalate and close the incident."""
    limit = cfg.retrain.max_attempts
    details = {
        **details,
        "error": failure.error,
        "transient": failure.transient,
        "attempt": failure.attempt,
        "max_attempts": limit,
    }
    if failure.transient and failure.attempt < limit:
        delay = cfg.retrain.retry_s if delay_s is None else delay_s
        details["retry_in_s"] = delay
        details["retry_at"] = _utc(now + delay)
        waiting = replace(
            state,
            retry_issue=failure.issue,
            retry_at=now + delay,
            job_attempt=failure.attempt,
            job_manual=failure.manual,
        )
        return waiting, [Report(failure.issue, detection, None, details, action="retry")]
    if failure.transient:
        details["reason"] = f"failed {failure.attempt} time(s); no attempt left"
    failed = Report(failure.issue, detection, None, details, outcome="escalated", action="none")
    return closed(state, failure.issue), [failed]


def retry_if_due(state: ModelState, now: float, cfg: ModelPolicyConfig) -> Result:
    """Start the awaited retry once its time has come and nothing else runs (not while paused)."""
    if not state.retry_issue or state.retry_at is None or now < state.retry_at:
        return state, []
    if state.paused or state.job_issue or state.deploying:
        return state, []  # tried again at a later tick
    issue, attempt = state.retry_issue, state.job_attempt + 1
    limit = cfg.retrain.max_attempts
    started = replace(
        state,
        retry_issue="",
        retry_at=None,
        job_issue=issue,
        job_started_at=now,
        last_retrain_at=now,
        job_attempt=attempt,
    )
    details = {"attempt": attempt, "max_attempts": limit}
    report = Report(issue, "retrain_retry", None, details, action="retrain")
    reason = f"retry {attempt} of {limit} for {issue}"
    return started, [report, StartRetrain(issue, reason, manual=state.job_manual)]


def superseded(state: ModelState) -> Result:
    """A retrain a person asked for runs instead of an awaited retry: the retry's incident ends
    (``skipped``, with the reason); a drift that persists opens the next one."""
    if not state.retry_issue:
        return state, []
    issue = state.retry_issue
    details = {"attempt": state.job_attempt, "reason": "a retrain a person asked for runs instead"}
    report = Report(issue, "retry_superseded", None, details, outcome="skipped", action="none")
    waiting_no_more = replace(state, retry_issue="", retry_at=None, job_attempt=0)
    return closed(waiting_no_more, issue), [report]


def resumed(state: ModelState, event: Resumed, now: float, cfg: ModelPolicyConfig) -> Result:
    """Continue what the previous daemon left in flight, where its incident is still open."""
    actions: list[ModelAction] = []
    found = dict(event.details)
    if state.job_issue:
        lost = Failure(
            state.job_issue,
            max(state.job_attempt, 1),
            state.job_manual,
            "the retrain job died with the previous daemon",
            transient=True,
        )
        state = job_ended(state)
        if lost.issue in event.open_issues:
            found["found"] = f"a retrain for {lost.issue} (attempt {lost.attempt}) was running"
            state, actions = retrain_failed(
                state, lost, found, now, cfg, delay_s=0.0, detection="daemon_restarted"
            )
    elif state.retry_issue in event.open_issues:
        waiting = {
            **found,
            "found": f"a retry of the retrain for {state.retry_issue} was waiting",
            "attempt": state.job_attempt,
            "retry_at": _utc(state.retry_at or now),
        }
        actions.append(Report(state.retry_issue, "daemon_restarted", None, waiting, action="retry"))
    elif state.retry_issue:
        state = replace(state, retry_issue="", retry_at=None, job_attempt=0, job_manual=False)
    if state.deploying and state.deploy_issue in event.open_issues:
        deploy = Deploy(
            state.deploying,
            state.deploy_from or state.serving,
            state.deploy_issue,
            f"finish the deployment of {state.deploying} a daemon restart interrupted",
        )
        details = {
            **event.details,
            "found": f"a deployment of {deploy.version} was in progress",
            "version": deploy.version,
            "rollback_to": deploy.rollback_to,
        }
        action = "rollback" if deploy.issue == "performance_drop" else "deploy"
        actions += [Report(deploy.issue, "daemon_restarted", None, details, action=action), deploy]
    elif state.deploying:
        state = replace(state, deploying="", deploy_issue="", deploy_from="")
    state = _reopened(state)
    state, started = retry_if_due(state, now, cfg)
    return state, [*actions, *started]


def _reopened(state: ModelState) -> ModelState:
    """The incidents a continued retrain or deployment serves are open again."""
    issues = {state.job_issue, state.retry_issue, state.deploy_issue}
    return replace(
        state,
        drift_open=state.drift_open or "data_drift" in issues,
        perf_open=state.perf_open or "performance_drop" in issues,
    )
