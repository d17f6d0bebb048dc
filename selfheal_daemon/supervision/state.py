"""The supervision policy's memory and knobs: frozen values, replaced on every decision."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from selfheal_daemon.config import ProbeConfig, ResourcesConfig, RestartConfig
from selfheal_daemon.supervision.events import Action
from selfheal_daemon.supervision.states import WorkerState


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
    over_limit_since: float | None = None
    replacing: bool = False  # a surge successor was asked for
    successor_pid: int | None = None
    successor_started_at: float | None = None
    replace_reason: str = ""
    incident: str = ""  # the issue this slot is recovering from, until it is ready again
    incident_since: float | None = None
    stale: bool = False  # runs a model that is no longer the one to serve, until replaced


@dataclass(frozen=True)
class SupervisorState:
    """The policy's whole memory; replaced, never mutated."""

    workers: tuple[WorkerSlot, ...]
    serving: str = ""
    last_good: str | None = None
    shutting_down: bool = False
    restart_times: tuple[float, ...] = ()
    crash_loop_since: float | None = None
    rolled_back: bool = False
    confirming: bool = False
    paused: bool = False  # healing paused by a person: detect and record, act on nothing

    @classmethod
    def initial(
        cls, n_workers: int, serving: str = "", last_good: str | None = None
    ) -> SupervisorState:
        return cls(
            workers=tuple(WorkerSlot(worker=i) for i in range(n_workers)),
            serving=serving,
            last_good=last_good,
        )

    def slot(self, worker: int) -> WorkerSlot:
        return self.workers[worker]

    def with_slot(self, slot: WorkerSlot) -> SupervisorState:
        workers = list(self.workers)
        workers[slot.worker] = slot
        return replace(self, workers=tuple(workers))

    @property
    def all_stopped(self) -> bool:
        return all(
            s.state in (WorkerState.STOPPED, WorkerState.BACKOFF) and s.successor_pid is None
            for s in self.workers
        )

    @property
    def all_ready(self) -> bool:
        return all(s.state is WorkerState.READY for s in self.workers)

    @property
    def in_crash_loop(self) -> bool:
        return self.crash_loop_since is not None


@dataclass(frozen=True)
class PolicyConfig:
    """The knobs the policy reads, gathered from config tables, and its source of randomness."""

    restart: RestartConfig
    probe: ProbeConfig
    start_timeout_s: float
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    uniform: Callable[[], float] = random.random  # in [0, 1); tests pass a constant


@dataclass(frozen=True)
class Decision:
    state: SupervisorState
    actions: tuple[Action, ...] = ()


def backoff_delay(level: int, cfg: RestartConfig, sample: float = 0.0) -> float:
    """Seconds before restart number ``level`` of a failing streak (level 0: at once).

    ``initial * 2^(level-1)`` capped at ``backoff_max_s``, plus ``jitter * sample`` of that, so that
    workers failing together do not all come back in the same instant.
    """
    if level <= 0:
        return 0.0
    base = min(cfg.backoff_initial_s * (2 ** (level - 1)), cfg.backoff_max_s)
    return float(base * (1.0 + cfg.jitter * sample))
