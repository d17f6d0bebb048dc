"""The policy's healing rules beyond a single crash: crash loops, rollback, resource limits,
surge replacement, manual restart, model confirmation, incident resolution."""

from __future__ import annotations

from dataclasses import replace

import pytest

from selfheal_daemon.config import ProbeConfig, ResourcesConfig, RestartConfig
from selfheal_daemon.record.recorder import Report
from selfheal_daemon.supervision.events import (
    ConfirmModel,
    ManualRestart,
    ModelChanged,
    ResourceSample,
    RollbackModel,
    ShutdownRequested,
    StartRequested,
    StartWorker,
    StopWorker,
    Tick,
    WorkerAdopted,
    WorkerExited,
    WorkerReady,
)
from selfheal_daemon.supervision.state import PolicyConfig, SupervisorState, backoff_delay
from selfheal_daemon.supervision.states import WorkerState
from tests.unit.supervision.driver import Driver

CFG = PolicyConfig(
    restart=RestartConfig(
        backoff_initial_s=0.5,
        backoff_max_s=4.0,
        stable_after_s=10.0,
        budget=3,
        window_s=60.0,
        crash_loop_retry_s=20.0,
        jitter=0.5,
    ),
    probe=ProbeConfig(interval_s=1.0, timeout_s=0.5, failure_threshold=3),
    start_timeout_s=10.0,
    resources=ResourcesConfig(max_rss_mb=500.0, max_cpu_percent=90.0, sustained_s=30.0),
    uniform=lambda: 0.0,
)


def driver(workers: int = 1, serving: str = "v2", last_good: str | None = "v2") -> Driver:
    d = Driver(workers=workers, cfg=CFG)
    d.state = SupervisorState.initial(workers, serving=serving, last_good=last_good)
    return d


def reports(actions: tuple[object, ...], outcome: str | None = None) -> list[Report]:
    return [
        a for a in actions if isinstance(a, Report) and (outcome is None or a.outcome == outcome)
    ]


def crash_until_loop(d: Driver, pid: int) -> list[object]:
    """Crash the only worker budget+1 times, spawning it again each time; all actions seen."""
    seen: list[object] = []
    for _ in range(CFG.restart.budget + 1):
        seen.extend(d.feed(WorkerExited(0, pid, 1)).actions)
        d.clock.advance(5)
        seen.extend(d.feed(Tick()).actions)
        pid = d.spawn(0)
    return seen


def test_jitter_adds_up_to_its_share_of_the_delay() -> None:
    """With jitter 0.5 the delay lies between the base and 1.5 times the base."""
    assert backoff_delay(2, CFG.restart, 0.0) == 1.0
    assert backoff_delay(2, CFG.restart, 0.999) == pytest.approx(1.4995)
    assert backoff_delay(0, CFG.restart, 0.999) == 0.0


def test_crash_loop_escalates_once_then_retries_slowly() -> None:
    """Past the budget: one escalated crash_loop report; later restarts at the slow cadence."""
    d = driver()
    (pid,) = d.all_ready()
    seen = crash_until_loop(d, pid)
    escalations = [r for r in reports(tuple(seen)) if r.issue == "crash_loop"]
    assert len(escalations) == 1
    assert escalations[0].outcome == "escalated"
    assert escalations[0].details["next"] == "slow retries"
    assert d.state.in_crash_loop
    current = d.state.slot(0).pid
    decision = d.feed(WorkerExited(0, current, 1))
    assert [r.issue for r in reports(decision.actions)] == ["service_crash"]  # no second alert
    assert d.state.slot(0).retry_at == pytest.approx(d.clock.now + 20.0)


def test_restarts_outside_the_window_do_not_count() -> None:
    """Crashes spread wider than window_s never make a crash loop."""
    d = driver()
    (pid,) = d.all_ready()
    for _ in range(10):
        d.feed(WorkerExited(0, pid, 1))
        d.clock.advance(61)
        d.feed(Tick())
        pid = d.spawn(0)
        d.feed(WorkerReady(0, pid))
    assert not d.state.in_crash_loop


def test_crash_loop_after_a_model_change_rolls_back_once() -> None:
    """When the served model is not last_good, the loop triggers one rollback to last_good."""
    d = driver(serving="v3", last_good="v2")
    (pid,) = d.all_ready()
    seen = crash_until_loop(d, pid)
    rollbacks = [a for a in seen if isinstance(a, RollbackModel)]
    assert rollbacks == [RollbackModel(to="v2", reason="crash loop after a change to v3")]
    more = crash_until_loop(d, d.state.slot(0).pid or 0)
    assert not [a for a in more if isinstance(a, RollbackModel)]


def test_rollback_replaces_ready_workers_and_retries_waiting_ones() -> None:
    """A ModelChanged to another version starts a successor beside each ready worker and
    retries slots in backoff at once."""
    d = driver(workers=2, serving="v3", last_good="v2")
    pids = d.all_ready()
    d.feed(WorkerExited(1, pids[1], 1))
    p = d.spawn(1)
    d.feed(WorkerExited(1, p, 1))  # slot 1 now waits in backoff
    assert d.state.slot(1).state is WorkerState.BACKOFF
    decision = d.feed(ModelChanged(serving="v2", last_good="v2"))
    starts = [a for a in decision.actions if isinstance(a, StartWorker)]
    assert starts == [
        StartWorker(0, reason="serve v2", surge=True),
        StartWorker(1, reason="serve v2", surge=False),
    ]
    assert d.state.serving == "v2"


def test_crash_loop_clears_when_every_worker_is_stable() -> None:
    """After the loop, all workers ready for stable_after_s resolve it with a report."""
    d = driver()
    (pid,) = d.all_ready()
    crash_until_loop(d, pid)
    current = d.state.slot(0).pid
    assert current is not None
    d.feed(WorkerReady(0, current))
    d.clock.advance(9)
    assert d.state.in_crash_loop
    assert not reports(d.feed(Tick()).actions, "resolved")
    d.clock.advance(2)
    resolved = reports(d.feed(Tick()).actions, "resolved")
    assert [(r.issue, r.detection) for r in resolved] == [("crash_loop", "all_workers_stable")]
    assert not d.state.in_crash_loop


def test_manual_restart_clears_the_loop_and_retries_now() -> None:
    """A manual restart forgets the loop and backoff and starts a waiting slot immediately."""
    d = driver()
    (pid,) = d.all_ready()
    crash_until_loop(d, pid)
    d.feed(WorkerExited(0, d.state.slot(0).pid, 1))
    assert d.state.slot(0).state is WorkerState.BACKOFF
    decision = d.feed(ManualRestart(reason="operator"))
    assert [(r.issue, r.outcome) for r in reports(decision.actions)] == [("crash_loop", "resolved")]
    assert StartWorker(0, reason="operator") in decision.actions
    assert not d.state.in_crash_loop
    assert d.state.restart_times == ()


def test_manual_restart_replaces_ready_workers_without_a_gap() -> None:
    """Ready workers get a successor first; the old one is stopped only when it is ready."""
    d = driver(workers=2)
    pids = d.all_ready()
    decision = d.feed(ManualRestart())
    assert [a for a in decision.actions if isinstance(a, StartWorker)] == [
        StartWorker(0, "manual restart", surge=True),
        StartWorker(1, "manual restart", surge=True),
    ]
    successor = d.spawn(0)
    assert d.state.slot(0).pid == pids[0]  # still serving
    decision = d.feed(WorkerReady(0, successor))
    assert StopWorker(0, pids[0], "replaced (manual restart)") in decision.actions
    assert d.state.slot(0).pid == successor


def over(d: Driver, pid: int, rss: float = 600.0, cpu: float = 10.0) -> tuple[object, ...]:
    return d.feed(ResourceSample(0, pid, rss_mb=rss, cpu_percent=cpu)).actions


def test_memory_over_limit_briefly_is_tolerated() -> None:
    """A spike shorter than sustained_s, then a normal sample, changes nothing."""
    d = driver()
    (pid,) = d.all_ready()
    assert over(d, pid) == ()
    d.clock.advance(20)
    assert over(d, pid) == ()
    d.clock.advance(5)
    assert over(d, pid, rss=100) == ()
    d.clock.advance(20)
    assert over(d, pid) == ()  # the clock started again
    assert d.state.slot(0).over_limit_since == d.clock.now


@pytest.mark.parametrize(
    ("rss", "cpu", "detection"), [(600, 10, "rss_over_limit"), (100, 95, "cpu_over_limit")]
)
def test_sustained_overuse_starts_a_successor(rss: float, cpu: float, detection: str) -> None:
    """Over a limit for sustained_s reports resource_limit and asks for a surge successor."""
    d = driver()
    (pid,) = d.all_ready()
    over(d, pid, rss, cpu)
    d.clock.advance(30)
    actions = over(d, pid, rss, cpu)
    assert [(r.issue, r.detection) for r in reports(actions)] == [("resource_limit", detection)]
    assert StartWorker(0, "resource_limit", surge=True) in actions
    assert over(d, pid, rss, cpu) == ()  # one replacement at a time


def test_successor_takes_over_and_old_worker_is_drained() -> None:
    """When the successor is ready the old pid is stopped, and its exit is not a crash."""
    d = driver()
    (pid,) = d.all_ready()
    over(d, pid)
    d.clock.advance(30)
    over(d, pid)
    successor = d.spawn(0)
    assert d.state.slot(0).successor_pid == successor
    d.clock.advance(0.2)
    decision = d.feed(WorkerReady(0, successor))
    assert StopWorker(0, pid, "replaced (resource_limit)") in decision.actions
    resolved = reports(decision.actions, "resolved")
    assert resolved[0].issue == "resource_limit"
    assert resolved[0].details["time_to_recover_s"] == pytest.approx(0.2)
    assert d.feed(WorkerExited(0, pid, 0)).actions == ()
    assert d.state.slot(0).pid == successor
    assert d.state.slot(0).state is WorkerState.READY


def test_successor_that_dies_leaves_the_old_worker_serving() -> None:
    """A failed replacement is reported and the over-limit worker keeps its slot."""
    d = driver()
    (pid,) = d.all_ready()
    over(d, pid)
    d.clock.advance(30)
    over(d, pid)
    successor = d.spawn(0)
    decision = d.feed(WorkerExited(0, successor, 3))
    assert [(r.issue, r.detection, r.outcome) for r in reports(decision.actions)] == [
        ("resource_limit", "successor_exited", "failed")
    ]
    assert d.state.slot(0).pid == pid
    assert not d.state.slot(0).replacing


def test_old_worker_dying_during_replacement_hands_the_slot_over() -> None:
    """If the old worker crashes while its successor starts, the successor becomes the worker and
    no extra process is started."""
    d = driver()
    (pid,) = d.all_ready()
    over(d, pid)
    d.clock.advance(30)
    over(d, pid)
    successor = d.spawn(0)
    decision = d.feed(WorkerExited(0, pid, -9))
    assert not [a for a in decision.actions if isinstance(a, StartWorker)]
    assert d.state.slot(0).pid == successor
    assert d.state.slot(0).state is WorkerState.STARTING
    d.feed(WorkerReady(0, successor))
    assert d.state.slot(0).state is WorkerState.READY


def test_shutdown_stops_the_successor_too() -> None:
    """Both processes of a slot being replaced are stopped on shutdown."""
    d = driver()
    (pid,) = d.all_ready()
    d.feed(ManualRestart())
    successor = d.spawn(0)
    decision = d.feed(ShutdownRequested())
    assert {a.pid for a in decision.actions if isinstance(a, StopWorker)} == {pid, successor}
    d.feed(WorkerExited(0, pid, 0))
    assert not d.state.all_stopped
    d.feed(WorkerExited(0, successor, 0))
    assert d.state.all_stopped


def test_stable_service_confirms_an_unconfirmed_model_once() -> None:
    """A new model served by every worker for stable_after_s is confirmed as last_good, once."""
    d = driver(workers=2, serving="v3", last_good="v2")
    d.all_ready()
    d.clock.advance(9)
    assert not [a for a in d.feed(Tick()).actions if isinstance(a, ConfirmModel)]
    d.clock.advance(2)
    assert ConfirmModel("v3") in d.feed(Tick()).actions
    assert not [a for a in d.feed(Tick()).actions if isinstance(a, ConfirmModel)]
    d.feed(ModelChanged(serving="v3", last_good="v3"))
    assert d.state.last_good == "v3"
    assert not [a for a in d.feed(Tick()).actions if isinstance(a, ConfirmModel)]


def test_crash_is_resolved_with_its_recovery_time() -> None:
    """A crashed slot's incident is reported resolved, with the seconds from crash to ready."""
    d = driver()
    (pid,) = d.all_ready()
    d.feed(WorkerExited(0, pid, -9))
    new = d.spawn(0)
    d.clock.advance(0.15)
    resolved = reports(d.feed(WorkerReady(0, new)).actions, "resolved")
    assert [(r.issue, r.details["time_to_recover_s"]) for r in resolved] == [
        ("service_crash", 0.15)
    ]


def test_repeated_failures_keep_the_first_incident_time() -> None:
    """Several crashes before recovery are one outage, timed from the first."""
    d = driver()
    (pid,) = d.all_ready()
    d.feed(WorkerExited(0, pid, 1))
    pid = d.spawn(0)
    d.clock.advance(1)
    d.feed(WorkerExited(0, pid, 1))
    d.clock.advance(1)
    d.feed(Tick())
    pid = d.spawn(0)
    resolved = reports(d.feed(WorkerReady(0, pid)).actions, "resolved")
    assert resolved[0].details["time_to_recover_s"] == 2.0


def test_adopted_worker_is_ready_at_once() -> None:
    """A worker taken over from a previous daemon counts as ready without a start."""
    d = driver(workers=2)
    d.feed(WorkerAdopted(1, 4242))
    decision = d.feed(StartRequested())
    assert [a.worker for a in decision.actions if isinstance(a, StartWorker)] == [0]
    assert d.state.slot(1) == replace(d.state.slot(1), state=WorkerState.READY, pid=4242)
