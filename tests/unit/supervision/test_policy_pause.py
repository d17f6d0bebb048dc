"""The policy's newer rules: pause/resume, deployment_failure with its rollback, and the stale flag
that holds ConfirmModel back until every worker runs the new model. Pure: decide() and a fake clock.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from selfheal_daemon.config import ProbeConfig, ResourcesConfig, RestartConfig
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
    StartWorker,
    StopWorker,
    Tick,
    WorkerExited,
    WorkerReady,
)
from selfheal_daemon.supervision.state import Decision, PolicyConfig, SupervisorState
from selfheal_daemon.supervision.states import WorkerState
from tests.unit.supervision.driver import Driver

CFG = PolicyConfig(
    restart=RestartConfig(
        backoff_initial_s=0.5,
        backoff_max_s=4.0,
        stable_after_s=5.0,  # shorter than start_timeout_s: a slow successor can outlast it
        budget=100,
        window_s=60.0,
        crash_loop_retry_s=20.0,
        jitter=0.5,
    ),
    probe=ProbeConfig(interval_s=1.0, timeout_s=0.5, failure_threshold=3),
    start_timeout_s=10.0,
    resources=ResourcesConfig(max_rss_mb=500.0, max_cpu_percent=90.0, sustained_s=30.0),
    uniform=lambda: 0.0,
)
SKIPPED = {"outcome": "skipped", "action": "none"}


class Recorder(Driver):
    """A Driver that keeps every action the policy asked for, for the checks at teardown."""

    def __init__(self, workers: int, cfg: PolicyConfig) -> None:
        super().__init__(workers=workers, cfg=cfg)
        self.seen: list[Action] = []

    def feed(self, event: Event) -> Decision:
        decision = super().feed(event)
        self.seen.extend(decision.actions)
        return decision


_made: list[Recorder] = []


@pytest.fixture(autouse=True)
def _every_report_names_its_action() -> Iterator[None]:
    """Every Report the policy emitted in a test says what was done about it (non-empty action)."""
    _made.clear()
    yield
    unnamed = [a for d in _made for a in d.seen if isinstance(a, Report) and not a.action]
    _made.clear()
    assert unnamed == []


def driver(workers: int = 1, serving: str = "v2", last_good: str | None = "v2") -> Recorder:
    d = Recorder(workers, CFG)
    d.state = SupervisorState.initial(workers, serving=serving, last_good=last_good)
    _made.append(d)
    return d


def reports(actions: tuple[Action, ...], issue: str | None = None) -> list[Report]:
    return [a for a in actions if isinstance(a, Report) and issue in (None, a.issue)]


def of_type(actions: tuple[Action, ...] | list[Action], kind: type[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


def fail_probes(d: Driver, worker: int, pid: int, times: int) -> list[Action]:
    seen: list[Action] = []
    for _ in range(times):
        seen.extend(d.feed(ProbeResult(worker, pid, ok=False, detail="timed out")).actions)
    return seen


def sample(d: Driver, worker: int, pid: int, rss: float = 600.0, cpu: float = 10.0) -> Decision:
    return d.feed(ResourceSample(worker, pid, rss_mb=rss, cpu_percent=cpu))


# ----- pause ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("spawned", "detection"), [(True, "worker_exit"), (False, "spawn_failed")])
def test_crash_while_paused_is_reported_skipped_and_not_restarted(
    spawned: bool, detection: str
) -> None:
    """A worker that exits (or cannot be spawned) while paused is reported skipped, not started."""
    d = driver(workers=2)
    pids = d.all_ready()
    d.feed(PauseHealing())
    if spawned:
        decision = d.feed(WorkerExited(0, pids[0], -9))
    else:
        d.feed(WorkerExited(0, pids[0], -9))  # nothing happens: paused
        d.feed(ResumeHealing())  # restart asked for, the spawn then fails while paused again
        d.feed(PauseHealing())
        decision = d.feed(WorkerExited(0, None, None, detail="fork failed"))
    (report,) = decision.actions
    assert isinstance(report, Report)
    assert (report.issue, report.detection, report.worker) == ("service_crash", detection, 0)
    assert {"outcome": report.outcome, "action": report.action} == SKIPPED
    assert report.details["reason"] == "healing paused"
    assert d.state.slot(0).state is WorkerState.BACKOFF
    assert d.state.slot(0).retry_at is None
    assert d.state.slot(1).state is WorkerState.READY


def test_hang_while_paused_is_reported_once_and_not_killed() -> None:
    """failure_threshold failed probes while paused: one skipped service_hang report, no kill."""
    d = driver()
    (pid,) = d.all_ready()
    d.feed(PauseHealing())
    seen = fail_probes(d, 0, pid, CFG.probe.failure_threshold)
    (report,) = seen
    assert isinstance(report, Report)
    assert (report.issue, report.detection) == ("service_hang", "liveness_probe_failed")
    assert {"outcome": report.outcome, "action": report.action} == SKIPPED
    assert report.details["reason"] == "healing paused"
    assert fail_probes(d, 0, pid, 5) == []  # further failures add no report
    assert (d.state.slot(0).state, d.state.slot(0).pid) == (WorkerState.READY, pid)


def test_hang_skipped_while_paused_resolves_when_the_worker_answers_again() -> None:
    """A worker that hung while paused and then answers its probe closes its incident (resolved),
    so a later crash is not counted from the old hang."""
    d = driver()
    (pid,) = d.all_ready()
    d.feed(PauseHealing())
    fail_probes(d, 0, pid, CFG.probe.failure_threshold)
    (report,) = d.feed(ProbeResult(0, pid, ok=True)).actions
    assert isinstance(report, Report)
    assert (report.issue, report.outcome) == ("service_hang", "resolved")
    assert d.state.slot(0).incident == ""


@pytest.mark.parametrize(
    ("rss", "cpu", "detection"), [(600, 10, "rss_over_limit"), (100, 95, "cpu_over_limit")]
)
def test_sustained_overuse_while_paused_is_reported_once_without_surge(
    rss: float, cpu: float, detection: str
) -> None:
    """Over a limit for sustained_s while paused: one skipped resource_limit report, no surge."""
    d = driver()
    (pid,) = d.all_ready()
    d.feed(PauseHealing())
    assert sample(d, 0, pid, rss, cpu).actions == ()
    d.clock.advance(CFG.resources.sustained_s)
    (report,) = sample(d, 0, pid, rss, cpu).actions
    assert isinstance(report, Report)
    assert (report.issue, report.detection) == ("resource_limit", detection)
    assert {"outcome": report.outcome, "action": report.action} == SKIPPED
    assert report.details["reason"] == "healing paused"
    for _ in range(3):
        d.clock.advance(5)
        assert sample(d, 0, pid, rss, cpu).actions == ()
    assert not d.state.slot(0).replacing


def test_tick_starts_nothing_while_paused() -> None:
    """A slot whose backoff ends while paused stays down; the first tick after resume starts it."""
    d = driver()
    (pid,) = d.all_ready()
    d.feed(WorkerExited(0, pid, 1))
    d.feed(WorkerExited(0, d.spawn(0), 1))  # second crash: waits in backoff
    retry_at = d.state.slot(0).retry_at
    assert retry_at is not None
    d.feed(PauseHealing())
    d.clock.now = retry_at + 60
    assert d.feed(Tick()).actions == ()
    assert d.state.slot(0).state is WorkerState.BACKOFF
    d.feed(ResumeHealing())
    assert of_type(d.feed(Tick()).actions, StartWorker) == [StartWorker(0, "backoff elapsed")]


def test_resume_starts_the_slot_left_down_and_replaces_the_hung_worker() -> None:
    """Resume starts the slot that crashed while paused and kills and replaces the one that hung."""
    d = driver(workers=2)
    pids = d.all_ready()
    d.feed(PauseHealing())
    d.feed(WorkerExited(0, pids[0], -9))
    fail_probes(d, 1, pids[1], CFG.probe.failure_threshold + 2)
    decision = d.feed(ResumeHealing())
    assert not d.state.paused
    assert of_type(decision.actions, StartWorker) == [
        StartWorker(0, "healing resumed"),
        StartWorker(1, "replacing a hung worker"),
    ]
    assert of_type(decision.actions, StopWorker) == [
        StopWorker(1, pids[1], "liveness probe failed")
    ]
    (hang,) = reports(decision.actions)
    assert (hang.issue, hang.worker, hang.outcome, hang.action) == (
        "service_hang",
        1,
        "",
        "kill_and_restart",
    )
    assert d.feed(ResumeHealing()).actions == ()  # a second resume has nothing left to do


# ----- deployment_failure ---------------------------------------------------------------------


def deploy(workers: int = 2, last_good: str | None = "v2") -> tuple[Recorder, list[int]]:
    """Every worker ready on v2, then v3 deployed: a surge successor asked for in every slot."""
    d = driver(workers=workers, serving="v2", last_good=last_good)
    pids = d.all_ready()
    decision = d.feed(ModelChanged(serving="v3", last_good=last_good))
    assert of_type(decision.actions, StartWorker) == [
        StartWorker(w, "serve v3", surge=True) for w in range(workers)
    ]
    return d, pids


def fail_successor(d: Driver, worker: int, how: str) -> Decision:
    """The successor of ``worker`` cannot be spawned, or is spawned and exits before ready."""
    if how == "successor_spawn_failed":
        return d.feed(WorkerExited(worker, None, None, detail="fork failed"))
    return d.feed(WorkerExited(worker, d.spawn(worker), 1))


FAILURES = ["successor_spawn_failed", "successor_exited"]


@pytest.mark.parametrize("how", FAILURES)
def test_successor_failing_on_a_new_model_rolls_back_once(how: str) -> None:
    """A successor that fails on an unconfirmed model: deployment_failure and one rollback."""
    d, pids = deploy()
    decision = fail_successor(d, 0, how)
    report, rollback = decision.actions
    assert isinstance(report, Report)
    assert (report.issue, report.detection, report.action) == (
        "deployment_failure",
        how,
        "rollback",
    )
    assert (report.details["version"], report.details["rollback_to"]) == ("v3", "v2")
    assert report.details["worker"] == 0
    assert rollback == RollbackModel(
        to="v2", reason="a worker could not start on v3", issue="deployment_failure"
    )
    assert d.state.rolled_back
    assert d.state.slot(0).pid == pids[0]  # the old worker keeps serving
    assert not d.state.slot(0).replacing


@pytest.mark.parametrize("how", FAILURES)
def test_second_slot_failing_in_the_same_deployment_does_not_roll_back_twice(how: str) -> None:
    """Another slot failing on the same deployment is reported, without a second rollback."""
    d, _ = deploy()
    fail_successor(d, 0, "successor_spawn_failed")
    decision = fail_successor(d, 1, how)
    assert [r.issue for r in reports(decision.actions)] == ["deployment_failure"]
    assert of_type(decision.actions, RollbackModel) == []
    assert len(of_type(d.seen, RollbackModel)) == 1


@pytest.mark.parametrize("how", FAILURES)
def test_failing_resource_successor_on_an_unconfirmed_model_is_no_deployment_failure(
    how: str,
) -> None:
    """A successor started for resource_limit that fails is a failed resource_limit: no rollback."""
    d = driver(serving="v3", last_good="v2")
    (pid,) = d.all_ready()
    sample(d, 0, pid)
    d.clock.advance(CFG.resources.sustained_s)
    assert StartWorker(0, "resource_limit", surge=True) in sample(d, 0, pid).actions
    decision = fail_successor(d, 0, how)
    assert [(r.issue, r.detection, r.outcome, r.action) for r in reports(decision.actions)] == [
        ("resource_limit", how, "failed", "keep_serving")
    ]
    assert of_type(d.seen, RollbackModel) == []


@pytest.mark.parametrize("how", FAILURES)
def test_failing_successor_without_last_good_is_no_deployment_failure(how: str) -> None:
    """With no last_good to go back to, a failing successor is a failed service_crash."""
    d, pids = deploy(last_good=None)
    decision = fail_successor(d, 0, how)
    assert [(r.issue, r.outcome, r.action) for r in reports(decision.actions)] == [
        ("service_crash", "failed", "keep_serving")
    ]
    assert of_type(d.seen, RollbackModel) == []
    assert d.state.slot(0).pid == pids[0]


# ----- stale workers hold the confirmation back -----------------------------------------------


def confirms(decision: Decision) -> list[Action]:
    return of_type(decision.actions, ConfirmModel)


def test_model_is_confirmed_only_once_every_worker_runs_it() -> None:
    """After a change, no ConfirmModel while a slot still runs the old model, even if all are
    stable; once every slot was replaced and stable, exactly one."""
    d, pids = deploy()
    first = d.spawn(0)
    assert StopWorker(0, pids[0], "replaced (serve v3)") in d.feed(WorkerReady(0, first)).actions
    second = d.spawn(1)  # slot 1's successor starts slowly; its old worker still serves v2
    d.clock.advance(CFG.restart.stable_after_s + 1)
    assert confirms(d.feed(Tick())) == []
    assert all(s.state is WorkerState.READY for s in d.state.workers)
    assert [s.stale for s in d.state.workers] == [False, True]
    d.feed(WorkerReady(1, second))
    assert not d.state.slot(1).stale
    d.clock.advance(CFG.restart.stable_after_s - 1)
    assert confirms(d.feed(Tick())) == []  # slot 1 not stable yet
    d.clock.advance(1)
    assert confirms(d.feed(Tick())) == [ConfirmModel("v3")]
    assert confirms(d.feed(Tick())) == []


def test_slot_left_stale_by_a_failed_successor_blocks_confirmation_until_replaced() -> None:
    """A slot whose successor could not start keeps the old model and blocks the confirmation
    until a later replacement (here a manual restart) puts it on the new model."""
    d, _ = deploy(last_good=None)
    d.feed(WorkerReady(0, d.spawn(0)))
    fail_successor(d, 1, "successor_spawn_failed")
    d.clock.advance(CFG.restart.stable_after_s * 4)
    assert confirms(d.feed(Tick())) == []
    assert d.state.slot(1).stale
    d.feed(ManualRestart())
    for worker in (0, 1):
        d.feed(WorkerReady(worker, d.spawn(worker)))
    d.clock.advance(CFG.restart.stable_after_s)
    assert confirms(d.feed(Tick())) == [ConfirmModel("v3")]


def test_successor_forked_before_a_change_is_restarted_on_the_new_model() -> None:
    """A surge successor already running the old model when the model changes is stopped and
    asked again, so the slot stays stale and ConfirmModel waits until it really runs the new one."""
    d = driver(workers=2)
    pids = d.all_ready()
    sample(d, 0, pids[0])
    d.clock.advance(CFG.resources.sustained_s)
    sample(d, 0, pids[0])
    on_v2 = d.spawn(0)  # forked from the v2 template
    decision = d.feed(ModelChanged(serving="v3", last_good="v2"))
    assert StopWorker(0, on_v2, "started on v2, now serve v3") in decision.actions
    assert of_type(decision.actions, StartWorker) == [
        StartWorker(0, "serve v3", surge=True),
        StartWorker(1, "serve v3", surge=True),
    ]
    assert d.feed(WorkerReady(0, on_v2)).actions == ()  # too late: no longer the successor
    assert d.feed(WorkerExited(0, on_v2, -15)).actions == ()  # its end is no failure
    d.feed(WorkerReady(1, d.spawn(1)))
    d.clock.advance(CFG.restart.stable_after_s)
    assert confirms(d.feed(Tick())) == []
    assert [s.stale for s in d.state.workers] == [True, False]
    on_v3 = d.spawn(0)
    resolved = d.feed(WorkerReady(0, on_v3)).actions
    assert [(r.issue, r.outcome) for r in reports(resolved)] == [("resource_limit", "resolved")]
    d.clock.advance(CFG.restart.stable_after_s)
    assert confirms(d.feed(Tick())) == [ConfirmModel("v3")]


def test_rollback_stops_a_successor_running_the_failed_model() -> None:
    """After a deployment_failure rollback, a successor already forked on the failed model is
    stopped rather than promoted, and a successor on the rolled-back-to model is asked for."""
    d, pids = deploy()
    on_v3 = d.spawn(1)
    fail_successor(d, 0, "successor_spawn_failed")
    decision = d.feed(ModelChanged(serving="v2", last_good="v2"))
    assert StopWorker(1, on_v3, "started on v3, now serve v2") in decision.actions
    assert StartWorker(1, "serve v2", surge=True) in decision.actions
    assert d.feed(WorkerReady(1, on_v3)).actions == ()
    assert d.state.slot(1).pid == pids[1]


def test_worker_starting_on_the_old_model_is_restarted_at_a_change() -> None:
    """A worker forked before a change but not ready yet is stopped and started on the new model."""
    d = driver(workers=2)
    pids = d.all_ready()
    d.feed(WorkerExited(0, pids[0], -9))
    starting = d.spawn(0)
    decision = d.feed(ModelChanged(serving="v3", last_good="v2"))
    assert decision.actions[:2] == (
        StopWorker(0, starting, "started on v2, now serve v3"),
        StartWorker(0, "serve v3"),
    )
    assert (d.state.slot(0).state, d.state.slot(0).pid) == (WorkerState.STARTING, None)
    assert d.feed(WorkerReady(0, starting)).actions == ()
    assert d.feed(WorkerExited(0, starting, -15)).actions == ()
    fresh = d.spawn(0)
    d.feed(WorkerReady(0, fresh))
    assert (d.state.slot(0).pid, d.state.slot(0).stale) == (fresh, False)


# ----- in-place swaps -------------------------------------------------------------------------


def test_an_in_place_swap_replaces_no_ready_worker_and_confirms_after_stable() -> None:
    """Workers swapped in place keep running; the new model is confirmed only after every worker
    has served it for stable_after_s, counted from the swap."""
    d = Recorder(workers=2, cfg=CFG)
    d.feed(ModelChanged(serving="v2", last_good="v2"))
    pids = d.all_ready()
    d.clock.advance(CFG.restart.stable_after_s + 10)
    d.feed(Tick())
    decision = d.feed(ModelChanged(serving="v3", last_good="v2", in_place=True))
    assert decision.actions == ()
    assert [s.pid for s in d.state.workers] == pids
    assert d.state.serving == "v3"
    d.clock.advance(CFG.restart.stable_after_s - 1)
    assert confirms(d.feed(Tick())) == []
    d.clock.advance(1)
    assert confirms(d.feed(Tick())) == [ConfirmModel("v3")]


def test_an_in_place_swap_restarts_a_worker_still_starting_on_the_old_template() -> None:
    d = Recorder(workers=2, cfg=CFG)
    d.feed(ModelChanged(serving="v2", last_good="v2"))
    pids = d.all_ready()
    d.feed(WorkerExited(1, pids[1], -9))  # restarted at once, from the old template
    starting = d.spawn(1)
    decision = d.feed(ModelChanged(serving="v3", last_good="v2", in_place=True))
    assert StopWorker(1, starting, "started on v2, now serve v3") in decision.actions
    assert StartWorker(1, "serve v3") in decision.actions
    assert not of_type(decision.actions, StopWorker)[1:]  # the ready worker 0 is left alone
