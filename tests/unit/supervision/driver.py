"""The supervision policy driven like the daemon loop drives it: a config and a ``Driver``."""

from __future__ import annotations

from selfheal_daemon.config import ProbeConfig, RestartConfig
from selfheal_daemon.supervision.events import (
    Event,
    StartRequested,
    StartWorker,
    WorkerReady,
    WorkerSpawned,
)
from selfheal_daemon.supervision.policy import decide
from selfheal_daemon.supervision.state import Decision, PolicyConfig, SupervisorState
from tests.fakes import FakeClock

CFG = PolicyConfig(
    restart=RestartConfig(
        backoff_initial_s=0.5, backoff_max_s=4.0, stable_after_s=30.0, budget=100, jitter=0.2
    ),
    probe=ProbeConfig(interval_s=1.0, timeout_s=0.5, failure_threshold=3),
    start_timeout_s=10.0,
    uniform=lambda: 0.0,  # no jitter unless a test asks for it
)


class Driver:
    """Feeds events through ``decide`` and keeps the state, like the daemon loop does."""

    def __init__(self, workers: int = 2, cfg: PolicyConfig = CFG) -> None:
        self.cfg = cfg
        self.clock = FakeClock()
        self.state = SupervisorState.initial(workers)
        self.next_pid = 100

    def feed(self, event: Event) -> Decision:
        decision = decide(event, self.state, self.clock.monotonic(), self.cfg)
        self.state = decision.state
        return decision

    def spawn(self, worker: int) -> int:
        self.next_pid += 1
        self.feed(WorkerSpawned(worker, self.next_pid))
        return self.next_pid

    def all_ready(self) -> list[int]:
        starts = self.feed(StartRequested()).actions
        pids = []
        for action in starts:
            assert isinstance(action, StartWorker)
            pid = self.spawn(action.worker)
            self.feed(WorkerReady(action.worker, pid))
            pids.append(pid)
        return pids
