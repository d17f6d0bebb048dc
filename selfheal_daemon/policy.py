"""The pure decision core of process supervision: an event and the state in; state and actions out.

``decide(event, state, now, cfg)`` never touches the world: no processes, sockets, files or clocks.
``now`` is monotonic seconds. The executor applies the returned actions and feeds what happened back
in as new events (``WorkerSpawned``, ``WorkerExited``, ...). Healing rules implemented here:

- ``service_crash``: a worker that exits on its own is restarted at once the first time, then with
  exponential backoff (``backoff_initial_s`` doubling up to ``backoff_max_s``); the backoff level
  resets once a worker has been ready for ``stable_after_s``.
- ``service_hang``: ``failure_threshold`` failed liveness probes in a row stop the worker (TERM,
  then KILL after the grace period; the executor owns that timing) and start a new one.
- start timeout: a worker that is not ready within ``start_timeout_s`` is treated as hung.
- shutdown: every live worker is stopped and nothing is restarted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from selfheal_daemon.config import ProbeConfig, RestartConfig
from selfheal_daemon.states import ALIVE_STATES, WorkerState

# ----- events (observations) ------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    """Time passed; lets timers (backoff expiry, stability reset) fire."""


@dataclass(frozen=True)
class StartRequested:
    """Bring every slot up (daemon start)."""


@dataclass(frozen=True)
class ShutdownRequested:
    """Stop every worker and restart none."""

    reason: str = "shutdown"


@dataclass(frozen=True)
class WorkerSpawned:
    """The executor started a process in ``worker``'s slot."""

    worker: int
    pid: int


@dataclass(frozen=True)
class WorkerExited:
    """The process in a slot exited (``pid`` None: it could not even be spawned)."""

    worker: int
    pid: int | None
    returncode: int | None
    detail: str = ""


@dataclass(frozen=True)
class WorkerReady:
    """A worker answered its readiness probe: model loaded and smoke-tested."""

    worker: int
    pid: int


@dataclass(frozen=True)
class WorkerStartTimedOut:
    """A worker did not become ready within ``start_timeout_s``."""

    worker: int
    pid: int


@dataclass(frozen=True)
class ProbeResult:
    """One liveness probe of one worker."""

    worker: int
    pid: int
    ok: bool
    detail: str = ""


Event = (
    Tick
    | StartRequested
    | ShutdownRequested
    | WorkerSpawned
    | WorkerExited
    | WorkerReady
    | WorkerStartTimedOut
    | ProbeResult
)

# ----- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartWorker:
    """Spawn a fresh process in ``worker``'s slot."""

    worker: int
    reason: str


@dataclass(frozen=True)
class StopWorker:
    """Stop the process ``pid`` in ``worker``'s slot: TERM, then KILL after the grace period."""

    worker: int
    pid: int
    reason: str


@dataclass(frozen=True)
class Report:
    """A detection or outcome worth recording (the audit trail's input)."""

    issue: str
    detection: str
    worker: int
    details: dict[str, Any]


Action = StartWorker | StopWorker | Report

# ----- state ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSlot:
    """Everything the policy remembers about one slot; times are monotonic seconds."""

    worker: int
    state: WorkerState = WorkerState.STOPPED
    pid: int | None = None
    restarts: int = 0
    backoff_level: int = 0
    probe_failures: int = 0
    started_at: float | None = None
    ready_at: float | None = None
    retry_at: float | None = None
    restart_after_stop: bool = False


@dataclass(frozen=True)
class SupervisorState:
    """The policy's whole memory; replaced, never mutated."""

    workers: tuple[WorkerSlot, ...]
    shutting_down: bool = False

    @classmethod
    def initial(cls, n_workers: int) -> SupervisorState:
        return cls(workers=tuple(WorkerSlot(worker=i) for i in range(n_workers)))

    def slot(self, worker: int) -> WorkerSlot:
        return self.workers[worker]

    def with_slot(self, slot: WorkerSlot) -> SupervisorState:
        workers = list(self.workers)
        workers[slot.worker] = slot
        return replace(self, workers=tuple(workers))

    @property
    def all_stopped(self) -> bool:
        return all(s.state in (WorkerState.STOPPED, WorkerState.BACKOFF) for s in self.workers)

    @property
    def all_ready(self) -> bool:
        return all(s.state is WorkerState.READY for s in self.workers)


@dataclass(frozen=True)
class PolicyConfig:
    """The knobs the policy reads, gathered from config tables."""

    restart: RestartConfig
    probe: ProbeConfig
    start_timeout_s: float


@dataclass(frozen=True)
class Decision:
    state: SupervisorState
    actions: tuple[Action, ...] = ()


def backoff_delay(level: int, cfg: RestartConfig) -> float:
    """Seconds to wait before restart number ``level`` of a failing streak (level 0: at once)."""
    if level <= 0:
        return 0.0
    return float(min(cfg.backoff_initial_s * (2 ** (level - 1)), cfg.backoff_max_s))


# ----- the decision function ------------------------------------------------------------------


def decide(  # noqa: PLR0911 - one return per event kind reads best as a dispatch table
    event: Event, state: SupervisorState, now: float, cfg: PolicyConfig
) -> Decision:
    """Return the next state and the actions that ``event`` calls for at monotonic time ``now``."""
    match event:
        case StartRequested():
            return _start_all(state)
        case ShutdownRequested():
            return _shutdown(state, event.reason)
        case Tick():
            return _tick(state, now, cfg)
        case WorkerSpawned():
            slot = state.slot(event.worker)
            if state.shutting_down:  # spawned as the shutdown began: stop it straight away
                stopping = replace(slot, state=WorkerState.STOPPING, pid=event.pid)
                return Decision(
                    state.with_slot(stopping),
                    (StopWorker(event.worker, event.pid, reason="shutdown"),),
                )
            spawned = replace(
                slot, state=WorkerState.STARTING, pid=event.pid, started_at=now, ready_at=None
            )
            return Decision(state.with_slot(spawned))
        case WorkerReady():
            return _ready(state, event, now)
        case WorkerExited():
            return _exited(state, event, now, cfg)
        case WorkerStartTimedOut():
            return _start_timed_out(state, event)
        case ProbeResult():
            return _probed(state, event, cfg)
    raise TypeError(f"unknown event {event!r}")  # pragma: no cover - exhaustive match above


def _start_all(state: SupervisorState) -> Decision:
    actions: list[Action] = []
    new = replace(state, shutting_down=False)
    for slot in state.workers:
        if slot.state is WorkerState.STOPPED:
            actions.append(StartWorker(slot.worker, reason="daemon start"))
            new = new.with_slot(_pending_start(slot))
    return Decision(new, tuple(actions))


def _pending_start(slot: WorkerSlot) -> WorkerSlot:
    """A slot whose StartWorker was just decided: STARTING, waiting for its WorkerSpawned."""
    return replace(
        slot, state=WorkerState.STARTING, pid=None, started_at=None, ready_at=None, retry_at=None
    )


def _shutdown(state: SupervisorState, reason: str) -> Decision:
    actions: list[Action] = []
    new = replace(state, shutting_down=True)
    for slot in state.workers:
        if slot.state in ALIVE_STATES and slot.pid is not None:
            if slot.state is not WorkerState.STOPPING:
                actions.append(StopWorker(slot.worker, slot.pid, reason=reason))
            new = new.with_slot(replace(slot, state=WorkerState.STOPPING, restart_after_stop=False))
        else:
            new = new.with_slot(replace(slot, state=WorkerState.STOPPED, retry_at=None))
    return Decision(new, tuple(actions))


def _tick(state: SupervisorState, now: float, cfg: PolicyConfig) -> Decision:
    actions: list[Action] = []
    new = state
    for slot in state.workers:
        if slot.state is WorkerState.BACKOFF and slot.retry_at is not None and now >= slot.retry_at:
            if state.shutting_down:
                new = new.with_slot(replace(slot, state=WorkerState.STOPPED, retry_at=None))
                continue
            actions.append(StartWorker(slot.worker, reason="backoff elapsed"))
            new = new.with_slot(_pending_start(slot))
        elif (
            slot.state is WorkerState.READY
            and slot.backoff_level > 0
            and slot.ready_at is not None
            and now - slot.ready_at >= cfg.restart.stable_after_s
        ):
            new = new.with_slot(replace(slot, backoff_level=0))
        elif (
            slot.state is WorkerState.STARTING
            and slot.pid is not None
            and slot.started_at is not None
            and now - slot.started_at >= cfg.start_timeout_s
        ):
            decision = _start_timed_out(new, WorkerStartTimedOut(slot.worker, slot.pid))
            new = decision.state
            actions.extend(decision.actions)
    return Decision(new, tuple(actions))


def _ready(state: SupervisorState, event: WorkerReady, now: float) -> Decision:
    slot = state.slot(event.worker)
    if slot.pid != event.pid or slot.state is not WorkerState.STARTING:
        return Decision(state)  # stale news about a process that is gone or being stopped
    return Decision(
        state.with_slot(replace(slot, state=WorkerState.READY, ready_at=now, probe_failures=0))
    )


def _exited(state: SupervisorState, event: WorkerExited, now: float, cfg: PolicyConfig) -> Decision:
    slot = state.slot(event.worker)
    if event.pid != slot.pid:
        return Decision(state)  # an older process of this slot; its successor is already running
    if slot.state is WorkerState.STOPPING:
        if slot.restart_after_stop and not state.shutting_down:
            restarted = replace(
                _pending_start(slot), restarts=slot.restarts + 1, restart_after_stop=False
            )
            return Decision(
                state.with_slot(restarted),
                (StartWorker(slot.worker, reason="replacing a stopped worker"),),
            )
        return Decision(state.with_slot(replace(slot, state=WorkerState.STOPPED, pid=None)))
    if state.shutting_down:
        return Decision(state.with_slot(replace(slot, state=WorkerState.STOPPED, pid=None)))
    delay = backoff_delay(slot.backoff_level, cfg.restart)
    report = Report(
        issue="service_crash",
        detection="worker_exit",
        worker=slot.worker,
        details={
            "pid": event.pid,
            "returncode": event.returncode,
            "state_before": slot.state.value,
            "restart_in_s": delay,
            **({"detail": event.detail} if event.detail else {}),
        },
    )
    crashed = replace(
        slot,
        pid=None,
        restarts=slot.restarts + 1,
        backoff_level=slot.backoff_level + 1,
        probe_failures=0,
        ready_at=None,
    )
    if delay == 0:
        return Decision(
            state.with_slot(_pending_start(crashed)),
            (report, StartWorker(slot.worker, reason="restart after crash")),
        )
    waiting = replace(crashed, state=WorkerState.BACKOFF, retry_at=now + delay)
    return Decision(state.with_slot(waiting), (report,))


def _start_timed_out(state: SupervisorState, event: WorkerStartTimedOut) -> Decision:
    slot = state.slot(event.worker)
    if slot.pid != event.pid or slot.state is not WorkerState.STARTING:
        return Decision(state)
    report = Report(
        issue="service_hang",
        detection="start_timeout",
        worker=slot.worker,
        details={"pid": slot.pid},
    )
    stopping = replace(
        slot,
        state=WorkerState.STOPPING,
        restart_after_stop=True,
        backoff_level=slot.backoff_level + 1,
    )
    return Decision(
        state.with_slot(stopping),
        (report, StopWorker(slot.worker, event.pid, reason="not ready in time")),
    )


def _probed(state: SupervisorState, event: ProbeResult, cfg: PolicyConfig) -> Decision:
    slot = state.slot(event.worker)
    if slot.pid != event.pid or slot.state is not WorkerState.READY:
        return Decision(state)
    if event.ok:
        return Decision(state.with_slot(replace(slot, probe_failures=0)))
    failures = slot.probe_failures + 1
    if failures < cfg.probe.failure_threshold:
        return Decision(state.with_slot(replace(slot, probe_failures=failures)))
    report = Report(
        issue="service_hang",
        detection="liveness_probe_failed",
        worker=slot.worker,
        details={"pid": slot.pid, "consecutive_failures": failures, "last_error": event.detail},
    )
    stopping = replace(
        slot, state=WorkerState.STOPPING, probe_failures=failures, restart_after_stop=True
    )
    return Decision(
        state.with_slot(stopping),
        (report, StopWorker(slot.worker, event.pid, reason="liveness probe failed")),
    )
