"""The supervisor's run loop: one thread decides, everything else only posts events.

Signal handlers, the scheduler's probe job and the readiness watchers never change state; they put
an event on a queue (``SimpleQueue.put`` is safe in a signal handler). The loop drains the queue,
asks the pure ``policy.decide`` what to do, and hands each action to the ``Executor``, whose
follow-up events (``WorkerSpawned``, a failed spawn) are decided at once, before anything else.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from loguru import logger

from selfheal_daemon.adapters.probe import HealthProbe
from selfheal_daemon.adapters.process import ProcessControl, WorkerProcess
from selfheal_daemon.clock import Clock
from selfheal_daemon.config import Config
from selfheal_daemon.errors import ServiceStartError
from selfheal_daemon.policy import (
    Action,
    Event,
    PolicyConfig,
    ProbeResult,
    Report,
    ShutdownRequested,
    StartRequested,
    StartWorker,
    StopWorker,
    SupervisorState,
    Tick,
    WorkerExited,
    WorkerReady,
    WorkerSpawned,
    decide,
)
from selfheal_daemon.states import WorkerState

TICK_S = 0.25  # how often timers in the policy are checked when nothing else happens
READY_POLL_S = 0.05  # how often a starting worker's /ready is polled


@dataclass(frozen=True)
class _ChildExited:
    """SIGCHLD arrived: some child changed state; reap to find out which."""


class Executor:
    """Applies actions to the world; returns the events they caused."""

    def __init__(
        self,
        processes: ProcessControl,
        probe: HealthProbe,
        post: Callable[[Event], None],
        version: str,
        cfg: Config,
    ) -> None:
        self.processes = processes
        self.probe = probe
        self.post = post
        self.version = version
        self.cfg = cfg
        self.workers: dict[int, WorkerProcess] = {}  # slot -> its current process

    def apply(self, action: Action) -> list[Event]:
        match action:
            case StartWorker():
                return self._start(action)
            case StopWorker():
                logger.info(
                    "stopping worker {} (pid {}): {}", action.worker, action.pid, action.reason
                )
                self.processes.stop(action.pid, self.cfg.service.stop_grace_s)
                return []
            case Report():
                logger.warning(
                    "{} detected ({}) on worker {}: {}",
                    action.issue,
                    action.detection,
                    action.worker,
                    action.details,
                )
                return []
        raise TypeError(f"unknown action {action!r}")  # pragma: no cover

    def _start(self, action: StartWorker) -> list[Event]:
        try:
            proc = self.processes.spawn(action.worker, self.version)
        except (OSError, ServiceStartError) as exc:
            logger.error("cannot start worker {}: {}", action.worker, exc)
            return [WorkerExited(action.worker, None, None, detail=str(exc))]
        self.workers[action.worker] = proc
        logger.info(
            "started worker {} (pid {}, model {}): {}",
            action.worker,
            proc.pid,
            proc.version,
            action.reason,
        )
        threading.Thread(
            target=self._watch_ready, args=(proc,), name=f"ready-{action.worker}", daemon=True
        ).start()
        return [WorkerSpawned(action.worker, proc.pid)]

    def _watch_ready(self, proc: WorkerProcess) -> None:
        """Poll a starting worker's /ready until it passes, the process dies, or time runs out."""
        waited = 0.0
        limit = self.cfg.service.start_timeout_s + 1.0
        while waited < limit and proc.popen.poll() is None:
            if self.probe.check(proc.uds, "/ready").ok:
                self.post(WorkerReady(proc.worker, proc.pid))
                return
            time.sleep(READY_POLL_S)
            waited += READY_POLL_S


class Daemon:
    """Owns the event queue, the policy state, the scheduler and the signal handlers."""

    def __init__(
        self,
        cfg: Config,
        clock: Clock,
        processes: ProcessControl,
        probe: HealthProbe,
        version: str,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.processes = processes
        self.probe = probe
        self.events: queue.SimpleQueue[Event | _ChildExited] = queue.SimpleQueue()
        self.executor = Executor(processes, probe, self.events.put, version, cfg)
        self.policy_cfg = PolicyConfig(
            restart=cfg.restart, probe=cfg.probe, start_timeout_s=cfg.service.start_timeout_s
        )
        self.state = SupervisorState.initial(cfg.service.workers)
        self._snapshot: SupervisorState = self.state
        self._probe_pool = ThreadPoolExecutor(
            max_workers=cfg.service.workers, thread_name_prefix="probe"
        )
        self._announced_ready = False
        self._shutdown_started: float | None = None
        self.scheduler = BackgroundScheduler(timezone=UTC)
        self.scheduler.add_job(
            self.probe_workers,
            "interval",
            seconds=cfg.probe.interval_s,
            id="probe",
            max_instances=1,
            coalesce=True,
        )

    # ----- scheduler jobs (run on the scheduler's threads; they only post events) -------------
    def probe_workers(self) -> None:
        """Probe every ready worker at once; a hung one delays only its own result."""
        ready = [
            (s.worker, s.pid)
            for s in self._snapshot.workers
            if s.state is WorkerState.READY and s.pid is not None
        ]
        uds = self.processes.spec.uds_path
        futures = [(w, pid, self._probe_pool.submit(self.probe.check, uds(w))) for w, pid in ready]
        for worker, pid, future in futures:
            outcome = future.result()
            self.events.put(ProbeResult(worker, pid, outcome.ok, outcome.detail))

    # ----- signals ---------------------------------------------------------------------------
    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.events.put(ShutdownRequested(reason=f"{signal.Signals(signum).name} received"))

    def _on_child(self, _signum: int, _frame: FrameType | None) -> None:
        self.events.put(_ChildExited())

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGCHLD, self._on_child)

    # ----- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Start the workers and supervise them until a stop signal; returns when all are gone."""
        self.install_signal_handlers()
        self._handle(StartRequested())
        self.scheduler.start()
        try:
            while not self._finished():
                try:
                    item = self.events.get(timeout=TICK_S)
                except queue.Empty:
                    item = Tick()
                self._reap()  # cheap, and a safety net should a SIGCHLD be coalesced
                if not isinstance(item, _ChildExited):
                    self._handle(item)
                self._enforce_shutdown_deadline()
        finally:
            self.scheduler.shutdown(wait=False)
            self._probe_pool.shutdown(wait=False, cancel_futures=True)
            self.processes.kill_all()
            self.probe.close()
            logger.info("all workers stopped")

    def _handle(self, event: Event) -> None:
        pending: list[Event] = [event]
        while pending:
            current = pending.pop(0)
            decision = decide(current, self.state, self.clock.monotonic(), self.policy_cfg)
            self._log_transitions(self.state, decision.state)
            self.state = decision.state
            self._snapshot = decision.state
            for action in decision.actions:
                pending.extend(self.executor.apply(action))
            if isinstance(current, ShutdownRequested) and self._shutdown_started is None:
                self._shutdown_started = self.clock.monotonic()
                logger.info("shutting down: {}", current.reason)

    def _reap(self) -> None:
        for proc, code in self.processes.reap():
            self._handle(WorkerExited(proc.worker, proc.pid, code))

    def _finished(self) -> bool:
        return self.state.shutting_down and self.state.all_stopped and not self.processes.alive()

    def _enforce_shutdown_deadline(self) -> None:
        """Never hang on exit: KILL whatever outlives the grace period by two seconds."""
        if self._shutdown_started is None:
            return
        if self.clock.monotonic() - self._shutdown_started > self.cfg.service.stop_grace_s + 2.0:
            logger.error("workers outlived the stop grace period; killing them")
            self.processes.kill_all()
            self._reap()

    def _log_transitions(self, before: SupervisorState, after: SupervisorState) -> None:
        for old, new in zip(before.workers, after.workers, strict=True):
            if old.state is not new.state and new.state is WorkerState.READY and new.started_at:
                took = self.clock.monotonic() - new.started_at
                logger.info("worker {} (pid {}) ready in {:.2f} s", new.worker, new.pid, took)
        if after.all_ready and not self._announced_ready:
            self._announced_ready = True
            svc = self.cfg.service
            logger.success(
                "serving model {} on http://{}:{} with {} worker(s)",
                self.executor.version,
                svc.host,
                svc.port,
                svc.workers,
            )
