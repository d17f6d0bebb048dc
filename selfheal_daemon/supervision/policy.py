"""The pure decision core of process supervision: an event and the state in; state and actions out.

``decide(event, state, now, cfg)`` never touches the world: no processes, sockets, files or clocks.
``now`` is monotonic seconds; randomness (backoff jitter) comes from ``cfg.uniform``. Rules:

- ``service_crash``: a worker that exits on its own is restarted at once the first time, then after
  ``backoff_initial_s`` doubling up to ``backoff_max_s``, plus up to ``jitter`` of that at random;
  the streak is forgotten once the worker has been ready for ``stable_after_s``.
- ``service_hang``: ``failure_threshold`` failed liveness probes in a row (or no ``/ready`` within
  ``start_timeout_s``) stop the worker, TERM then KILL, and start a new one at once.
- ``resource_limit``: memory or CPU over its limit in every sample for ``sustained_s`` starts a
  successor beside the worker; once the successor is ready the old one is stopped (it drains).
- ``crash_loop``: more than ``budget`` restarts within ``window_s`` is escalated once; restarts
  go on at the slow ``crash_loop_retry_s`` cadence, never given up. If the model being served is
  not yet confirmed good (a recent change), it is rolled back to ``last_good`` once and retried.
  The loop clears when every worker has been ready for ``stable_after_s``, or on a manual restart.
- A model that served with every worker ready for ``stable_after_s`` is confirmed as ``last_good``.
- Every incident of a slot is reported when detected and again, ``resolved`` with the time it took,
  when that slot is ready again.
- ``deployment_failure``: a successor started on a newly deployed model exits before it is ready
  and the model is not yet confirmed: every worker is rolled back to ``last_good`` (once).
- pause: while paused, every detection is still reported (``skipped``, "healing paused") but no
  automatic action is taken; resume restarts what waits and replaces what hung meanwhile.
- shutdown: every live process is stopped and nothing is restarted.
"""

from __future__ import annotations

from dataclasses import replace

from selfheal_daemon.record.recorder import Report
from selfheal_daemon.supervision.events import (
    Action,
    ConfirmModel,
    Event,
    ManualRestart,
    ModelChanged,
    PauseHealing,
    ProbeResult,
    ResourceSample,
    ResumeHealing,
    RollbackModel,
    ShutdownRequested,
    StartRequested,
    StartWorker,
    StopWorker,
    Tick,
    WorkerAdopted,
    WorkerExited,
    WorkerReady,
    WorkerSpawned,
    WorkerStartTimedOut,
)
from selfheal_daemon.supervision.state import (
    Decision,
    PolicyConfig,
    SupervisorState,
    WorkerSlot,
    backoff_delay,
)
from selfheal_daemon.supervision.states import ALIVE_STATES, WorkerState

__all__ = ["Decision", "PolicyConfig", "SupervisorState", "WorkerSlot", "backoff_delay", "decide"]

Result = tuple[SupervisorState, list[Action]]


def decide(event: Event, state: SupervisorState, now: float, cfg: PolicyConfig) -> Decision:
    """Return the next state and the actions that ``event`` calls for at monotonic time ``now``."""
    new, actions = _apply(event, state, now, cfg)
    return Decision(new, tuple(actions))


def _apply(event: Event, state: SupervisorState, now: float, cfg: PolicyConfig) -> Result:  # noqa: PLR0911, PLR0912
    match event:
        case StartRequested():
            return _start_all(state)
        case ShutdownRequested():
            return _shutdown(state, event.reason)
        case ManualRestart():
            return _manual_restart(state, event.reason)
        case PauseHealing():
            return replace(state, paused=True), []
        case ResumeHealing():
            return _resume(state, now, cfg)
        case Tick():
            return _tick(state, now, cfg)
        case WorkerSpawned():
            return _spawned(state, event, now)
        case WorkerAdopted():
            slot = replace(
                state.slot(event.worker),
                state=WorkerState.READY,
                pid=event.pid,
                started_at=now,
                ready_at=now,
            )
            return state.with_slot(slot), []
        case WorkerReady():
            return _ready(state, event, now)
        case WorkerExited():
            return _exited(state, event, now, cfg)
        case WorkerStartTimedOut():
            return _start_timed_out(state, event, now, cfg)
        case ProbeResult():
            return _probed(state, event, now, cfg)
        case ResourceSample():
            return _sampled(state, event, now, cfg)
        case ModelChanged():
            return _model_changed(state, event, now)
    raise TypeError(f"unknown event {event!r}")  # pragma: no cover - exhaustive match above


# ----- helpers --------------------------------------------------------------------------------


def _pending_start(slot: WorkerSlot) -> WorkerSlot:
    """A slot whose StartWorker was just decided: STARTING, waiting for its WorkerSpawned."""
    return replace(
        slot, state=WorkerState.STARTING, pid=None, started_at=None, ready_at=None, retry_at=None
    )


def _open_incident(slot: WorkerSlot, issue: str, now: float) -> WorkerSlot:
    """Remember the first unresolved incident of a slot (later ones are part of the same outage)."""
    if slot.incident:
        return slot
    return replace(slot, incident=issue, incident_since=now)


def _close_incident(slot: WorkerSlot, now: float) -> tuple[WorkerSlot, list[Action]]:
    if not slot.incident or slot.incident_since is None:
        return slot, []
    report = Report(
        issue=slot.incident,
        detection="worker_ready",
        worker=slot.worker,
        details={"pid": slot.pid, "time_to_recover_s": round(now - slot.incident_since, 3)},
        outcome="resolved",
        action="confirmed_ready",
    )
    return replace(slot, incident="", incident_since=None), [report]


def _count_restart(state: SupervisorState, now: float, cfg: PolicyConfig) -> Result:
    """Record one restart; entering a crash loop escalates once and may roll the model back."""
    window = cfg.restart.window_s
    times = (*(t for t in state.restart_times if now - t < window), now)
    state = replace(state, restart_times=times)
    if state.in_crash_loop or len(times) <= cfg.restart.budget:
        return state, []
    rollback = (
        state.last_good is not None and state.serving != state.last_good and not state.rolled_back
    )
    actions: list[Action] = [
        Report(
            issue="crash_loop",
            detection="restart_budget_exceeded",
            worker=None,
            details={
                "restarts": len(times),
                "window_s": window,
                "budget": cfg.restart.budget,
                "serving": state.serving,
                "next": f"rollback to {state.last_good}" if rollback else "slow retries",
            },
            outcome="escalated",
            action="rollback" if rollback else "slow_retries",
        )
    ]
    state = replace(state, crash_loop_since=now)
    if rollback and state.last_good is not None:
        reason = f"crash loop after a change to {state.serving}"
        actions.append(RollbackModel(to=state.last_good, reason=reason))
        state = replace(state, rolled_back=True)
    return state, actions


def _restart_delay(slot: WorkerSlot, state: SupervisorState, cfg: PolicyConfig) -> float:
    if state.in_crash_loop:
        return cfg.restart.crash_loop_retry_s * (1.0 + cfg.restart.jitter * cfg.uniform())
    return backoff_delay(slot.backoff_level, cfg.restart, cfg.uniform())


def _stable(slot: WorkerSlot, now: float, cfg: PolicyConfig) -> bool:
    return (
        slot.state is WorkerState.READY
        and slot.ready_at is not None
        and now - slot.ready_at >= cfg.restart.stable_after_s
    )


def _promote_successor(slot: WorkerSlot, state: WorkerState, ready_at: float | None) -> WorkerSlot:
    """The successor started beside the slot's worker becomes the slot's worker."""
    return replace(
        slot,
        state=state,
        pid=slot.successor_pid,
        started_at=slot.successor_started_at,
        ready_at=ready_at,
        probe_failures=0,
        over_limit_since=None,
        replacing=False,
        successor_pid=None,
        successor_started_at=None,
        stale=False,
    )


def _surge(slot: WorkerSlot, reason: str) -> tuple[WorkerSlot, Action]:
    """Ask for a successor beside a ready worker."""
    action = StartWorker(slot.worker, reason=reason, surge=True)
    return replace(slot, replacing=True, replace_reason=reason), action


# ----- rules ----------------------------------------------------------------------------------


def _start_all(state: SupervisorState) -> Result:
    actions: list[Action] = []
    new = replace(state, shutting_down=False)
    for slot in state.workers:
        if slot.state is WorkerState.STOPPED:
            actions.append(StartWorker(slot.worker, reason="daemon start"))
            new = new.with_slot(_pending_start(slot))
    return new, actions


def _shutdown(state: SupervisorState, reason: str) -> Result:
    actions: list[Action] = []
    new = replace(state, shutting_down=True)
    for slot in state.workers:
        for pid in (slot.pid, slot.successor_pid):
            if pid is not None and slot.state is not WorkerState.STOPPING:
                actions.append(StopWorker(slot.worker, pid, reason=reason))
        if slot.state in ALIVE_STATES:  # a start in flight (pid None) is stopped when it lands
            stopping = replace(slot, state=WorkerState.STOPPING)
            new = new.with_slot(stopping)
        else:
            new = new.with_slot(replace(slot, state=WorkerState.STOPPED, retry_at=None))
    return new, actions


def _manual_restart(state: SupervisorState, reason: str) -> Result:
    actions: list[Action] = []
    if state.in_crash_loop:
        actions.append(
            Report(
                "crash_loop",
                "manual_restart",
                None,
                {"reason": reason},
                outcome="resolved",
                action="restart",
                manual=True,
            )
        )
    new = replace(state, restart_times=(), crash_loop_since=None, rolled_back=False)
    new, more = _restart_all(new, reason)
    return new, actions + more


def _restart_all(state: SupervisorState, reason: str) -> Result:
    """Replace every ready worker (a successor first, no gap) and retry every waiting slot now."""
    actions: list[Action] = []
    new = state
    for current in state.workers:
        slot = replace(current, backoff_level=0)
        if slot.state is WorkerState.BACKOFF:
            actions.append(StartWorker(slot.worker, reason=reason))
            slot = _pending_start(slot)
        elif slot.state is WorkerState.READY and not slot.replacing:
            slot, action = _surge(slot, reason)
            actions.append(action)
        new = new.with_slot(slot)
    return new, actions


def _tick(state: SupervisorState, now: float, cfg: PolicyConfig) -> Result:
    actions: list[Action] = []
    new = state
    if state.paused and not state.shutting_down:
        return state, []  # no timer acts while paused
    for slot in state.workers:
        if slot.state is WorkerState.BACKOFF and slot.retry_at is not None and now >= slot.retry_at:
            if state.shutting_down:
                new = new.with_slot(replace(slot, state=WorkerState.STOPPED, retry_at=None))
                continue
            actions.append(StartWorker(slot.worker, reason="backoff elapsed"))
            new = new.with_slot(_pending_start(slot))
        elif slot.backoff_level > 0 and _stable(slot, now, cfg):
            new = new.with_slot(replace(slot, backoff_level=0))
        elif (
            slot.state is WorkerState.STARTING
            and slot.pid is not None
            and slot.started_at is not None
            and now - slot.started_at >= cfg.start_timeout_s
        ):
            new, more = _start_timed_out(new, WorkerStartTimedOut(slot.worker, slot.pid), now, cfg)
            actions.extend(more)
        if (
            slot.successor_pid is not None
            and slot.successor_started_at is not None
            and now - slot.successor_started_at >= cfg.start_timeout_s
        ):
            actions.append(
                StopWorker(slot.worker, slot.successor_pid, "successor not ready in time")
            )
    if state.shutting_down:
        return new, actions
    every_stable = all(_stable(s, now, cfg) for s in new.workers)
    if new.in_crash_loop and every_stable:
        actions.append(
            Report(
                "crash_loop",
                "all_workers_stable",
                None,
                {},
                outcome="resolved",
                action="confirmed_ready",
            )
        )
        new = replace(new, crash_loop_since=None, restart_times=())
    elif (
        every_stable
        and not new.confirming
        and new.serving
        and new.serving != new.last_good
        and not any(s.stale for s in new.workers)  # confirmed only once every worker runs it
    ):
        actions.append(ConfirmModel(new.serving))
        new = replace(new, confirming=True)
    return new, actions


def _spawned(state: SupervisorState, event: WorkerSpawned, now: float) -> Result:
    slot = state.slot(event.worker)
    if state.shutting_down:  # spawned as the shutdown began: stop it straight away
        if slot.pid is None:
            slot = replace(slot, state=WorkerState.STOPPING, pid=event.pid)
        else:
            slot = replace(slot, successor_pid=event.pid, successor_started_at=now)
        return state.with_slot(slot), [StopWorker(event.worker, event.pid, reason="shutdown")]
    if slot.replacing and slot.successor_pid is None and slot.pid is not None:
        return state.with_slot(replace(slot, successor_pid=event.pid, successor_started_at=now)), []
    spawned = replace(
        slot, state=WorkerState.STARTING, pid=event.pid, started_at=now, ready_at=None
    )
    return state.with_slot(spawned), []


def _ready(state: SupervisorState, event: WorkerReady, now: float) -> Result:
    slot = state.slot(event.worker)
    actions: list[Action] = []
    if slot.successor_pid is not None and event.pid == slot.successor_pid:
        if slot.pid is not None:
            actions.append(StopWorker(slot.worker, slot.pid, f"replaced ({slot.replace_reason})"))
        slot = _promote_successor(slot, WorkerState.READY, ready_at=now)
    elif slot.pid == event.pid and slot.state is WorkerState.STARTING:
        slot = replace(slot, state=WorkerState.READY, ready_at=now, probe_failures=0, stale=False)
    else:
        return state, []  # stale news about a process that is gone or being stopped
    slot, closing = _close_incident(slot, now)
    return state.with_slot(slot), actions + closing


def _exited(state: SupervisorState, event: WorkerExited, now: float, cfg: PolicyConfig) -> Result:
    slot = state.slot(event.worker)
    if event.pid is not None and event.pid == slot.successor_pid:
        return _successor_exited(state, slot, event, now, cfg)
    if event.pid != slot.pid:
        if event.pid is None and slot.replacing and slot.successor_pid is None:
            return _surge_spawn_failed(state, slot, event)
        return state, []  # an older process of this slot; its successor is already running
    if slot.state is WorkerState.STOPPING or state.shutting_down:
        return state.with_slot(replace(slot, state=WorkerState.STOPPED, pid=None)), []
    return _crashed(state, slot, event, now, cfg)


def _surge_spawn_failed(state: SupervisorState, slot: WorkerSlot, event: WorkerExited) -> Result:
    """A successor asked for beside a running worker could not even be started."""
    slot = replace(slot, replacing=False)
    details = {"detail": event.detail, "worker": slot.worker}
    if _deploying(state, slot):
        return _deployment_failed(state.with_slot(slot), "successor_spawn_failed", details)
    if _rolling_back(state, slot):
        return _deployment_failed_again(state.with_slot(slot), "successor_spawn_failed", details)
    failed = Report(
        "resource_limit" if slot.replace_reason == "resource_limit" else "service_crash",
        "successor_spawn_failed",
        slot.worker,
        {"detail": event.detail, "replacing_for": slot.replace_reason},
        outcome="failed",
        action="keep_serving",
    )
    return state.with_slot(replace(slot, replacing=False)), [failed]


def _crashed(
    state: SupervisorState, slot: WorkerSlot, event: WorkerExited, now: float, cfg: PolicyConfig
) -> Result:
    detection = "worker_exit" if event.pid is not None else "spawn_failed"
    if state.paused and slot.successor_pid is None and not slot.replacing:
        paused = {"pid": event.pid, "returncode": event.returncode, "reason": "healing paused"}
        report = Report(
            "service_crash", detection, slot.worker, paused, outcome="skipped", action="none"
        )
        down = replace(
            _open_incident(slot, "service_crash", now),
            state=WorkerState.BACKOFF,
            pid=None,
            retry_at=None,
            ready_at=None,
            probe_failures=0,
            over_limit_since=None,
        )
        return state.with_slot(down), [report]
    state, actions = _count_restart(state, now, cfg)
    delay = 0.0 if slot.successor_pid or slot.replacing else _restart_delay(slot, state, cfg)
    details: dict[str, object] = {
        "pid": event.pid,
        "returncode": event.returncode,
        "state_before": slot.state.value,
        "restart_in_s": round(delay, 3),
    }
    if event.detail:
        details["detail"] = event.detail
    action = "restart" if delay == 0 else "restart_after_backoff"
    actions.insert(0, Report("service_crash", detection, slot.worker, details, action=action))
    crashed = replace(
        _open_incident(slot, "service_crash", now),
        pid=None,
        restarts=slot.restarts + 1,
        backoff_level=slot.backoff_level + 1,
        probe_failures=0,
        ready_at=None,
        over_limit_since=None,
    )
    if slot.successor_pid is not None:  # the successor, already starting, takes over the slot
        crashed = _promote_successor(crashed, WorkerState.STARTING, ready_at=None)
        return state.with_slot(crashed), actions
    if slot.replacing:  # a surge start is in flight: it becomes the slot's worker when it lands
        return state.with_slot(replace(_pending_start(crashed), replacing=False)), actions
    if delay == 0:
        actions.append(StartWorker(slot.worker, reason="restart after crash"))
        return state.with_slot(_pending_start(crashed)), actions
    waiting = replace(crashed, state=WorkerState.BACKOFF, retry_at=now + delay)
    return state.with_slot(waiting), actions


def _successor_exited(
    state: SupervisorState, slot: WorkerSlot, event: WorkerExited, now: float, cfg: PolicyConfig
) -> Result:
    slot = replace(slot, successor_pid=None, successor_started_at=None, replacing=False)
    if state.shutting_down:
        return state.with_slot(slot), []
    details = {
        "pid": event.pid,
        "returncode": event.returncode,
        "replacing_for": slot.replace_reason,
    }
    deployment: dict[str, object] = {**details, "worker": slot.worker}
    if _deploying(state, slot):
        return _deployment_failed(state.with_slot(slot), "successor_exited", deployment)
    if _rolling_back(state, slot):
        return _deployment_failed_again(state.with_slot(slot), "successor_exited", deployment)
    state, actions = _count_restart(state, now, cfg)
    issue = "resource_limit" if slot.replace_reason == "resource_limit" else "service_crash"
    failed = Report(
        issue, "successor_exited", slot.worker, details, outcome="failed", action="keep_serving"
    )
    return state.with_slot(slot), [failed, *actions]


def _deploying(state: SupervisorState, slot: WorkerSlot) -> bool:
    """Was ``slot`` being moved to a newly deployed, unconfirmed model that can be rolled back?"""
    return (
        slot.replace_reason == f"serve {state.serving}"
        and state.last_good is not None
        and state.serving != state.last_good
        and not state.rolled_back
    )


def _rolling_back(state: SupervisorState, slot: WorkerSlot) -> bool:
    """Was ``slot`` being moved to the deployment that another worker's failure rolls back?"""
    return slot.replace_reason == f"serve {state.serving}" and state.rolled_back


def _deployment_failed_again(
    state: SupervisorState, detection: str, details: dict[str, object]
) -> Result:
    """Another worker of a deployment already being rolled back: recorded, no second rollback."""
    more = Report("deployment_failure", detection, None, details, action="rollback")
    return state, [more]


def _deployment_failed(
    state: SupervisorState, detection: str, details: dict[str, object]
) -> Result:
    """A worker could not come up on the new model: every worker goes back to ``last_good``."""
    assert state.last_good is not None  # noqa: S101 - checked by _deploying
    report = Report(
        "deployment_failure",
        detection,
        None,
        {**details, "version": state.serving, "rollback_to": state.last_good},
        action="rollback",
    )
    reason = f"a worker could not start on {state.serving}"
    rollback = RollbackModel(to=state.last_good, reason=reason, issue="deployment_failure")
    return replace(state, rolled_back=True), [report, rollback]


def _start_timed_out(
    state: SupervisorState, event: WorkerStartTimedOut, now: float, cfg: PolicyConfig
) -> Result:
    slot = state.slot(event.worker)
    if slot.pid != event.pid or slot.state is not WorkerState.STARTING:
        return state, []
    return _replace_hung(
        state, slot, now, cfg, pid=event.pid, detection="start_timeout", details={"pid": event.pid}
    )


def _probed(state: SupervisorState, event: ProbeResult, now: float, cfg: PolicyConfig) -> Result:
    slot = state.slot(event.worker)
    if slot.pid != event.pid or slot.state is not WorkerState.READY:
        return state, []
    if event.ok:
        closing: list[Action] = []
        slot = replace(slot, probe_failures=0)
        if slot.incident == "service_hang":  # a hang skipped while paused, answering again
            slot, closing = _close_incident(slot, now)
        return state.with_slot(slot), closing
    failures = slot.probe_failures + 1
    if failures < cfg.probe.failure_threshold:
        return state.with_slot(replace(slot, probe_failures=failures)), []
    details: dict[str, object] = {
        "pid": slot.pid,
        "consecutive_failures": failures,
        "last_error": event.detail,
    }
    if state.paused:  # reported once when the threshold is reached; replaced on resume
        slot = replace(slot, probe_failures=failures)
        if failures > cfg.probe.failure_threshold:
            return state.with_slot(slot), []
        skipped = Report(
            "service_hang",
            "liveness_probe_failed",
            slot.worker,
            {**details, "reason": "healing paused"},
            outcome="skipped",
            action="none",
        )
        return state.with_slot(_open_incident(slot, "service_hang", now)), [skipped]
    return _replace_hung(
        state, slot, now, cfg, pid=event.pid, detection="liveness_probe_failed", details=details
    )


def _replace_hung(
    state: SupervisorState,
    slot: WorkerSlot,
    now: float,
    cfg: PolicyConfig,
    *,
    pid: int,
    detection: str,
    details: dict[str, object],
) -> Result:
    """Kill a hung worker (TERM, then KILL) and start its replacement now, not after it is gone:
    it serves nothing, and the shared socket's backlog holds connections for the others."""
    state, actions = _count_restart(state, now, cfg)
    actions[:0] = [
        Report("service_hang", detection, slot.worker, details, action="kill_and_restart"),
        StopWorker(slot.worker, pid, reason=detection.replace("_", " ")),
    ]
    hung = replace(
        _open_incident(slot, "service_hang", now),
        restarts=slot.restarts + 1,
        backoff_level=slot.backoff_level + 1,
        probe_failures=0,
    )
    if state.in_crash_loop:
        retry_at = now + _restart_delay(hung, state, cfg)
        waiting = replace(hung, state=WorkerState.BACKOFF, pid=None, retry_at=retry_at)
        return state.with_slot(waiting), actions
    actions.append(StartWorker(slot.worker, reason="replacing a hung worker"))
    return state.with_slot(_pending_start(hung)), actions


def _sampled(
    state: SupervisorState, event: ResourceSample, now: float, cfg: PolicyConfig
) -> Result:
    slot = state.slot(event.worker)
    if (
        state.shutting_down
        or slot.pid != event.pid
        or slot.state is not WorkerState.READY
        or slot.replacing
    ):
        return state, []
    limits = cfg.resources
    over: list[str] = []
    if limits.max_rss_mb and event.rss_mb > limits.max_rss_mb:
        over.append("rss_over_limit")
    if limits.max_cpu_percent and event.cpu_percent > limits.max_cpu_percent:
        over.append("cpu_over_limit")
    if not over:
        return state.with_slot(replace(slot, over_limit_since=None)), []
    since = slot.over_limit_since if slot.over_limit_since is not None else now
    slot = replace(slot, over_limit_since=since)
    if now - since < limits.sustained_s:
        return state.with_slot(slot), []
    if state.paused and slot.incident:  # one skipped report per slot while paused
        return state.with_slot(slot), []  # already reported as skipped
    report = Report(
        "resource_limit",
        over[0],
        slot.worker,
        {
            "pid": slot.pid,
            "rss_mb": round(event.rss_mb, 1),
            "max_rss_mb": limits.max_rss_mb,
            "cpu_percent": round(event.cpu_percent, 1),
            "max_cpu_percent": limits.max_cpu_percent,
            "sustained_s": round(now - since, 1),
        },
        action="graceful_replace",
    )
    if state.paused:
        skipped = replace(
            report,
            outcome="skipped",
            action="none",
            details={**report.details, "reason": "healing paused"},
        )
        return state.with_slot(_open_incident(slot, "resource_limit", now)), [skipped]
    slot, start = _surge(_open_incident(slot, "resource_limit", now), "resource_limit")
    return state.with_slot(slot), [report, start]


def _resume(state: SupervisorState, now: float, cfg: PolicyConfig) -> Result:
    """Healing again: start the slots left down while paused, replace the workers that hung."""
    new = replace(state, paused=False)
    actions: list[Action] = []
    for slot in state.workers:
        if slot.state is WorkerState.BACKOFF and slot.retry_at is None and not state.shutting_down:
            actions.append(StartWorker(slot.worker, reason="healing resumed"))
            new = new.with_slot(_pending_start(slot))
        elif (
            slot.state is WorkerState.READY
            and slot.pid is not None
            and slot.probe_failures >= cfg.probe.failure_threshold
        ):
            details: dict[str, object] = {
                "pid": slot.pid,
                "consecutive_failures": slot.probe_failures,
            }
            new, more = _replace_hung(
                new,
                slot,
                now,
                cfg,
                pid=slot.pid,
                detection="liveness_probe_failed",
                details=details,
            )
            actions.extend(more)
    return new, actions


def _model_changed(state: SupervisorState, event: ModelChanged, now: float) -> Result:
    rolled = event.serving != state.serving
    new = replace(state, serving=event.serving, last_good=event.last_good, confirming=False)
    if rolled and event.serving != event.last_good:
        new = replace(new, rolled_back=False)  # a new deployment may be rolled back once
    if not rolled:
        return new, []
    reason = f"serve {event.serving}"
    if event.in_place:
        return _model_swapped(new, state.serving, reason, now)
    actions: list[Action] = []
    for current in new.workers:
        slot = replace(current, stale=True)
        if slot.replacing and slot.successor_pid is None:
            # a start still in flight now serves the new model (or fails as its deployment)
            slot = replace(slot, replace_reason=reason)
        elif not new.shutting_down:
            # A process already forked runs the old model: once ready it would clear ``stale`` and
            # serve the old model on (after a rollback: the model rolled back from). Start again.
            old = f"started on {state.serving or 'the previous model'}, now {reason}"
            if slot.successor_pid is not None:
                actions.append(StopWorker(slot.worker, slot.successor_pid, old))
                slot = replace(slot, replacing=False, successor_pid=None, successor_started_at=None)
            elif slot.state is WorkerState.STARTING and slot.pid is not None:
                actions += [
                    StopWorker(slot.worker, slot.pid, old),
                    StartWorker(slot.worker, reason),
                ]
                slot = _pending_start(slot)
        new = new.with_slot(slot)
    # The workers that run the old model are replaced; slots waiting in backoff are retried now.
    new, more = _restart_all(new, reason)
    return new, actions + more


def _model_swapped(state: SupervisorState, old_version: str, reason: str, now: float) -> Result:
    """The ready workers were swapped in place: they count as ready on the new model from now (it
    is confirmed only after ``stable_after_s`` of that). Processes still starting were forked on
    the old model: a successor is stopped (the slot keeps its swapped worker), a starting worker is
    started again from the new template."""
    actions: list[Action] = []
    new = state
    old = f"started on {old_version or 'the previous model'}, now {reason}"
    for current in state.workers:
        if state.shutting_down:
            break
        slot = replace(current, ready_at=now) if current.state is WorkerState.READY else current
        new = new.with_slot(slot)
        if slot.successor_pid is not None:
            actions.append(StopWorker(slot.worker, slot.successor_pid, old))
            new = new.with_slot(
                replace(slot, replacing=False, successor_pid=None, successor_started_at=None)
            )
        elif slot.state is WorkerState.STARTING and slot.pid is not None:
            actions += [StopWorker(slot.worker, slot.pid, old), StartWorker(slot.worker, reason)]
            new = new.with_slot(_pending_start(slot))
    return new, actions
