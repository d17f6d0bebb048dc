"""What the supervision policy hears (events) and what it asks for (actions): frozen values only.

Events come from signal handlers, scheduler jobs, the exit watcher and the readiness watchers; the
daemon loop feeds them to ``policy.decide`` one at a time. Actions go to the executor, which applies
them and reports what happened as further events.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfheal_daemon.record.recorder import Report

# ----- events (observations) ------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    """Time passed; lets timers (backoff expiry, stability, start timeouts) fire."""


@dataclass(frozen=True)
class StartRequested:
    """Bring every slot up (daemon start)."""


@dataclass(frozen=True)
class ShutdownRequested:
    """Stop every worker and restart none."""

    reason: str = "shutdown"


@dataclass(frozen=True)
class ManualRestart:
    """A person asked for a restart: forget crash-loop state and backoff, replace every worker."""

    reason: str = "manual restart"


@dataclass(frozen=True)
class PauseHealing:
    """A person asked to stop automatic actions; detections are still recorded."""

    reason: str = "manual pause"


@dataclass(frozen=True)
class ResumeHealing:
    """Automatic actions again; what was skipped while paused is handled now."""

    reason: str = "manual resume"


@dataclass(frozen=True)
class WorkerSpawned:
    """A process now runs in ``worker``'s slot (a primary start or a surge successor)."""

    worker: int
    pid: int


@dataclass(frozen=True)
class WorkerAdopted:
    """A live, ready worker left by a previous daemon now occupies ``worker``'s slot."""

    worker: int
    pid: int


@dataclass(frozen=True)
class WorkerExited:
    """The process in a slot exited (``pid`` None: it could not even be spawned).

    ``returncode`` is negative for a signal, None when unknown (an adopted process, a failed spawn).
    """

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
    latency_s: float = 0.0


@dataclass(frozen=True)
class ResourceSample:
    """One reading of a worker's resident memory (MiB) and CPU (% of one core since the last)."""

    worker: int
    pid: int
    rss_mb: float
    cpu_percent: float


@dataclass(frozen=True)
class ModelChanged:
    """The version the workers are started with changed (a rollback, or a confirmation).

    ``in_place``: the running workers already serve it (swapped in-process by the deployer), so
    none is replaced; only processes still starting from the old template are.
    """

    serving: str
    last_good: str | None
    in_place: bool = False


Event = (
    Tick
    | StartRequested
    | ShutdownRequested
    | ManualRestart
    | PauseHealing
    | ResumeHealing
    | WorkerSpawned
    | WorkerAdopted
    | WorkerExited
    | WorkerReady
    | WorkerStartTimedOut
    | ProbeResult
    | ResourceSample
    | ModelChanged
)

# ----- actions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartWorker:
    """Start a fresh process in ``worker``'s slot (``surge``: beside the one that is there)."""

    worker: int
    reason: str
    surge: bool = False


@dataclass(frozen=True)
class StopWorker:
    """Stop the process ``pid``: TERM (it drains in-flight requests), then KILL after the grace."""

    worker: int
    pid: int
    reason: str


@dataclass(frozen=True)
class RollbackModel:
    """Serve ``to`` instead of the current model: point ``current`` at it and restart on it.

    ``issue`` is the incident the rollback heals (its resolution is recorded once every worker
    serves ``to``), or empty when another rule resolves it (a crash loop clears when stable).
    """

    to: str
    reason: str
    issue: str = ""


@dataclass(frozen=True)
class ConfirmModel:
    """``version`` has served stably: make it ``last_good``."""

    version: str


Action = StartWorker | StopWorker | RollbackModel | ConfirmModel | Report
