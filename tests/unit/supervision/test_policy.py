"""The supervision policy, driven event by event with a fake clock: no processes involved."""

from __future__ import annotations

from dataclasses import replace

import pytest

from selfheal_daemon.record.recorder import Report
from selfheal_daemon.supervision.events import (
    ProbeResult,
    ShutdownRequested,
    StartRequested,
    StartWorker,
    StopWorker,
    Tick,
    WorkerExited,
    WorkerReady,
    WorkerSpawned,
    WorkerStartTimedOut,
)
from selfheal_daemon.supervision.policy import decide
from selfheal_daemon.supervision.state import Decision, backoff_delay
from selfheal_daemon.supervision.states import WorkerState
from tests.unit.supervision.driver import CFG, Driver


def kinds(decision: Decision) -> list[str]:
    """Action type names, leaving out incident-resolved reports (tested on their own)."""
    return [
        type(a).__name__
        for a in decision.actions
        if not (isinstance(a, Report) and a.outcome == "resolved")
    ]


def test_start_requests_one_worker_per_slot() -> None:
    """A daemon start asks for a process in every slot and marks them starting."""
    d = Driver(workers=3)
    decision = d.feed(StartRequested())
    assert [a.worker for a in decision.actions if isinstance(a, StartWorker)] == [0, 1, 2]
    assert all(s.state is WorkerState.STARTING for s in d.state.workers)


def test_ready_after_spawn_marks_slot_ready() -> None:
    """A worker that answers /ready becomes READY and the daemon is all ready."""
    d = Driver()
    d.all_ready()
    assert d.state.all_ready


def test_first_crash_restarts_at_once_and_reports() -> None:
    """The first exit of a ready worker is reported as service_crash and restarted immediately."""
    d = Driver()
    pids = d.all_ready()
    decision = d.feed(WorkerExited(0, pids[0], -9))
    assert kinds(decision) == ["Report", "StartWorker"]
    report = decision.actions[0]
    assert isinstance(report, Report)
    assert (report.issue, report.detection) == ("service_crash", "worker_exit")
    assert report.details["returncode"] == -9
    assert d.state.slot(0).restarts == 1
    assert d.state.slot(1).state is WorkerState.READY


@pytest.mark.parametrize(
    ("level", "expected"),
    [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (50, 4.0)],
)
def test_backoff_doubles_up_to_the_cap(level: int, expected: float) -> None:
    """Restart delay is 0 for the first failure, then initial * 2^(n-1), never above the cap."""
    assert backoff_delay(level, CFG.restart) == expected


def test_repeated_crashes_back_off_and_tick_restarts_when_due() -> None:
    """A second crash waits in BACKOFF; a tick before the delay does nothing, one after restarts."""
    d = Driver(workers=1)
    (pid,) = d.all_ready()
    d.feed(WorkerExited(0, pid, 1))
    pid2 = d.spawn(0)
    decision = d.feed(WorkerExited(0, pid2, 1))  # crashed while starting
    assert kinds(decision) == ["Report"]
    assert d.state.slot(0).state is WorkerState.BACKOFF
    d.clock.advance(0.4)
    assert d.feed(Tick()).actions == ()
    d.clock.advance(0.2)
    assert kinds(d.feed(Tick())) == ["StartWorker"]
    assert d.state.slot(0).state is WorkerState.STARTING


def test_backoff_resets_after_stable_period() -> None:
    """Ready for stable_after_s, a worker forgets its failures: the next crash restarts at once."""
    d = Driver(workers=1)
    (pid,) = d.all_ready()
    d.feed(WorkerExited(0, pid, 1))
    pid = d.spawn(0)
    d.feed(WorkerReady(0, pid))
    assert d.state.slot(0).backoff_level == 1
    d.clock.advance(31)
    d.feed(Tick())
    assert d.state.slot(0).backoff_level == 0
    assert kinds(d.feed(WorkerExited(0, pid, 1))) == ["Report", "StartWorker"]


def test_crash_within_stable_period_backs_off() -> None:
    """A crash soon after a restart does not get an immediate restart."""
    d = Driver(workers=1)
    (pid,) = d.all_ready()
    d.feed(WorkerExited(0, pid, 1))
    pid = d.spawn(0)
    d.feed(WorkerReady(0, pid))
    d.clock.advance(5)
    d.feed(Tick())
    assert kinds(d.feed(WorkerExited(0, pid, 1))) == ["Report"]
    assert d.state.slot(0).retry_at == pytest.approx(d.clock.now + 0.5)


@pytest.mark.parametrize("failures_before_ok", [0, 1, 2])
def test_probe_failures_below_threshold_do_not_stop(failures_before_ok: int) -> None:
    """Fewer than failure_threshold failures in a row, then a pass, resets the count."""
    d = Driver(workers=1)
    (pid,) = d.all_ready()
    for _ in range(failures_before_ok):
        assert d.feed(ProbeResult(0, pid, ok=False, detail="timeout")).actions == ()
    d.feed(ProbeResult(0, pid, ok=True))
    assert d.state.slot(0).probe_failures == 0
    assert d.state.slot(0).state is WorkerState.READY


def test_threshold_probe_failures_stop_and_replace_hung_worker() -> None:
    """failure_threshold failures in a row: service_hang; stop the pid, start a new one at once."""
    d = Driver(workers=1)
    (pid,) = d.all_ready()
    d.feed(ProbeResult(0, pid, ok=False))
    d.feed(ProbeResult(0, pid, ok=False))
    decision = d.feed(ProbeResult(0, pid, ok=False, detail="timed out"))
    assert kinds(decision) == ["Report", "StopWorker", "StartWorker"]
    report, stop, _start = decision.actions
    assert isinstance(report, Report)
    assert report.issue == "service_hang"
    assert isinstance(stop, StopWorker)
    assert stop.pid == pid
    assert d.state.slot(0).state is WorkerState.STARTING  # the replacement does not wait
    assert d.feed(WorkerExited(0, pid, -9)).actions == ()  # the hung one's end is no new crash
    assert d.state.slot(0).restarts == 1


def test_probe_result_for_an_old_pid_is_ignored() -> None:
    """A late probe result about a process that was already replaced changes nothing."""
    d = Driver(workers=1)
    (pid,) = d.all_ready()
    d.feed(WorkerExited(0, pid, -9))
    new_pid = d.spawn(0)
    d.feed(WorkerReady(0, new_pid))
    before = d.state
    for _ in range(5):
        d.feed(ProbeResult(0, pid, ok=False))
    assert d.state == before


def test_exit_of_an_old_pid_is_ignored() -> None:
    """An exit report for a pid that no longer occupies the slot is not a new crash."""
    d = Driver(workers=1)
    (pid,) = d.all_ready()
    d.feed(WorkerExited(0, pid, -9))
    new_pid = d.spawn(0)
    assert d.feed(WorkerExited(0, pid, -9)).actions == ()
    assert d.state.slot(0).pid == new_pid


def test_start_timeout_stops_and_replaces_worker() -> None:
    """A worker not ready within start_timeout_s is reported as hung, stopped and replaced."""
    d = Driver(workers=1)
    d.feed(StartRequested())
    pid = d.spawn(0)
    d.clock.advance(9.9)
    assert d.feed(Tick()).actions == ()
    d.clock.advance(0.2)
    decision = d.feed(Tick())
    assert kinds(decision) == ["Report", "StopWorker", "StartWorker"]
    assert decision.actions[0].detection == "start_timeout"  # type: ignore[union-attr]
    assert d.feed(WorkerExited(0, pid, -15)).actions == ()


def test_explicit_start_timeout_event_matches_tick_path() -> None:
    """The WorkerStartTimedOut event has the same effect as the timer noticing it."""
    d = Driver(workers=1)
    d.feed(StartRequested())
    pid = d.spawn(0)
    assert kinds(d.feed(WorkerStartTimedOut(0, pid))) == ["Report", "StopWorker", "StartWorker"]


def test_spawn_failure_is_a_crash_with_backoff() -> None:
    """A process that cannot even be created counts as a crash and is retried."""
    d = Driver(workers=1)
    d.feed(StartRequested())
    decision = d.feed(WorkerExited(0, None, None, detail="fork failed"))
    assert kinds(decision) == ["Report", "StartWorker"]
    assert (
        d.feed(WorkerExited(0, None, None, detail="fork failed"))
        .actions[0]
        .details[  # type: ignore[union-attr]
            "restart_in_s"
        ]
        == 0.5
    )


def test_shutdown_stops_every_live_worker_and_restarts_none() -> None:
    """Shutdown stops each live pid once; their exits and due backoffs start nothing."""
    d = Driver(workers=2)
    pids = d.all_ready()
    decision = d.feed(ShutdownRequested())
    assert sorted(a.pid for a in decision.actions if isinstance(a, StopWorker)) == sorted(pids)
    assert d.feed(ShutdownRequested()).actions == ()  # a second signal does not re-send
    for worker, pid in enumerate(pids):
        assert d.feed(WorkerExited(worker, pid, 0)).actions == ()
    assert d.state.all_stopped


def test_shutdown_during_backoff_cancels_the_restart() -> None:
    """A slot waiting in backoff is simply stopped by a shutdown."""
    d = Driver(workers=1)
    (pid,) = d.all_ready()
    d.feed(WorkerExited(0, pid, 1))
    pid2 = d.spawn(0)
    d.feed(WorkerExited(0, pid2, 1))
    d.feed(ShutdownRequested())
    d.clock.advance(100)
    assert d.feed(Tick()).actions == ()
    assert d.state.all_stopped


def test_worker_spawned_during_shutdown_is_stopped() -> None:
    """A process whose spawn raced the shutdown is stopped as soon as it is known."""
    d = Driver(workers=1)
    d.feed(StartRequested())
    d.feed(ShutdownRequested())
    decision = d.feed(WorkerSpawned(0, 555))
    assert decision.actions == (StopWorker(0, 555, reason="shutdown"),)


def test_crash_while_stopping_for_hang_is_not_double_reported() -> None:
    """A hung worker that exits after its replacement was asked for starts nothing more."""
    d = Driver(workers=1)
    (pid,) = d.all_ready()
    for _ in range(3):
        d.feed(ProbeResult(0, pid, ok=False))
    new = d.spawn(0)
    assert d.feed(WorkerExited(0, pid, -9)).actions == ()
    assert d.state.slot(0).pid == new


def test_state_is_never_mutated_in_place() -> None:
    """decide returns a new state and leaves the one it was given untouched."""
    d = Driver(workers=1)
    (pid,) = d.all_ready()
    frozen = d.state
    snapshot = replace(frozen)
    decide(WorkerExited(0, pid, 1), frozen, d.clock.now, CFG)
    assert frozen == snapshot
