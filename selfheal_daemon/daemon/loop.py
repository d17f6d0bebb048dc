"""The supervisor's run loop: one thread decides, everything else only posts events.

Signal handlers, scheduler jobs, the exit watcher and the readiness watchers never change state;
they put an item on a queue (``SimpleQueue.put`` is safe inside a signal handler). The loop drains
the queue, asks the pure ``policy.decide`` what to do, and hands each action to the ``Executor``.

Signals: SIGTERM and SIGINT stop the daemon and every worker; SIGHUP is a manual restart (forgets
crash-loop state and backoff, replaces every worker without dropping a connection).

Every report of the policy becomes an audit record (``record.recorder.Recorder``); control requests
from the endpoint's thread arrive on the same queue and are carried out here (``Operations``).

systemd: READY once every worker is ready, STATUS on every change of the worker count, WATCHDOG
from the loop itself (the scheduler only posts a heartbeat; a stuck loop sends none), STOPPING.
"""

from __future__ import annotations

import os
import queue
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from types import FrameType

import psutil
from apscheduler.schedulers.background import BackgroundScheduler
from loguru import logger

from selfheal_daemon.clock import Clock
from selfheal_daemon.config import Config
from selfheal_daemon.daemon import resume
from selfheal_daemon.daemon.operations import ControlRequest, Operations
from selfheal_daemon.errors import SelfhealError
from selfheal_daemon.lifecycle import integrity
from selfheal_daemon.lifecycle.events import HealingPaused, ModelEvent, ModelState, ServingChanged
from selfheal_daemon.lifecycle.healer import MODEL_EVENTS, Healing, Observations
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.alerts import Alerts
from selfheal_daemon.record.audit import read_records
from selfheal_daemon.record.recorder import Recorder, Report
from selfheal_daemon.supervision.events import (
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
    Tick,
    WorkerAdopted,
    WorkerSpawned,
)
from selfheal_daemon.supervision.executor import Executor
from selfheal_daemon.supervision.policy import decide
from selfheal_daemon.supervision.pool import WorkerHandle, WorkerPool
from selfheal_daemon.supervision.probe import HealthProbe
from selfheal_daemon.supervision.state import PolicyConfig, SupervisorState
from selfheal_daemon.supervision.states import WorkerState
from selfheal_daemon.system.systemd import SystemdNotifier

TICK_S = 0.25  # how often timers in the policy (backoff, stability, start timeouts) are checked


@dataclass(frozen=True)
class _Heartbeat:
    """Scheduler says: tell systemd's watchdog we are alive (sent from the loop itself)."""


Item = Event | _Heartbeat | ControlRequest | Observations | ModelEvent | integrity.IntegrityChecked


class Daemon:
    """Owns the event queue, the policy state, the scheduler and the signal handlers."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Clock,
        pool: WorkerPool,
        probe: HealthProbe,
        registry: ModelRegistry,
        notifier: SystemdNotifier,
        events: queue.SimpleQueue[Item],
        recorder: Recorder,
        adopted: list[WorkerHandle] | None = None,
        alerts: Alerts | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.pool = pool
        self.probe = probe
        self.registry = registry
        self.notifier = notifier
        self.events = events
        self.recorder = recorder
        self.metrics = recorder.metrics
        self.alerts = alerts
        self.executor = Executor(
            pool, probe, registry, self.events.put, cfg, recorder=self.recorder
        )
        self.policy_cfg = PolicyConfig(
            restart=cfg.restart,
            probe=cfg.probe,
            start_timeout_s=cfg.service.start_timeout_s,
            resources=cfg.resources,
        )
        self.state = SupervisorState.initial(
            cfg.service.workers, serving=pool.version, last_good=registry.alias("last_good")
        )
        self._adopted = adopted or []
        self._published = self.state
        self.healing = Healing(
            cfg,
            clock=clock,
            registry=registry,
            pool=pool,
            post=self.events.put,
            apply=self.executor.apply,
            recorder=self.recorder,
            ready_handles=self.ready_handles,
            serving=lambda: self.snapshot.serving,
            initial=ModelState(serving=self.state.serving, last_good=self.state.last_good),
        )
        self.operations = Operations(
            cfg,
            clock=clock,
            pool=pool,
            registry=registry,
            recorder=self.recorder,
            handle=self._handle,
            state=lambda: self.state,
            model=self.healing.handle,
            model_state=lambda: self.healing.state,
        )
        self.started_at = clock.utcnow()
        self._started_mono = clock.monotonic()
        self._window_start = clock.monotonic()
        self._probes = [0, 0]  # sent, answered, since the last availability record
        self._probe_pool = ThreadPoolExecutor(
            max_workers=cfg.service.workers * 2, thread_name_prefix="probe"
        )
        self._processes: dict[int, psutil.Process] = {}
        self._announced_ready = False
        self._status = ""
        self._shutdown_started: float | None = None
        self._gave_up = False
        self._integrity_reported: frozenset[tuple[str, str]] = frozenset()
        self._next_tick = 0.0  # monotonic time of the next Tick (``next_item``)
        self.scheduler = BackgroundScheduler(timezone=UTC)
        jobs: list[tuple[Callable[[], None], float, str]] = [
            (self.probe_workers, cfg.probe.interval_s, "probe"),
            (self.sample_resources, cfg.resources.interval_s, "resources"),
            (self.healing.scheduled_pass, cfg.monitor.interval_s, "monitor"),
            (self.check_integrity, cfg.monitor.interval_s, "integrity"),
        ]
        if alerts is not None and alerts.enabled:
            jobs.append((alerts.digest_if_due, 600.0, "digest"))
        watchdog = notifier.watchdog_interval_s()
        if watchdog is not None:
            jobs.append((lambda: self.events.put(_Heartbeat()), watchdog, "watchdog"))
        for func, seconds, name in jobs:
            self.scheduler.add_job(
                func, "interval", seconds=seconds, id=name, max_instances=1, coalesce=True
            )

    # ----- scheduler jobs (run on the scheduler's threads; they only post events) -------------
    def _ready_workers(self) -> list[tuple[int, int]]:
        return [
            (s.worker, s.pid)
            for s in self.snapshot.workers
            if s.state is WorkerState.READY and s.pid is not None
        ]

    def probe_workers(self) -> None:
        """Probe every ready worker at once; a hung one delays only its own result."""
        targets = [(w, pid, self.pool.handle(pid)) for w, pid in self._ready_workers()]
        futures = [
            (w, pid, self._probe_pool.submit(self.probe.check, h.uds))
            for w, pid, h in targets
            if h is not None
        ]
        for worker, pid, future in futures:
            outcome = future.result()
            self.events.put(ProbeResult(worker, pid, outcome.ok, outcome.detail, outcome.latency_s))

    def check_integrity(self) -> None:
        """Re-hash the versions ``current`` and ``last_good`` name (``integrity``)."""
        try:
            self.events.put(integrity.inspect(self.registry))
        except (SelfhealError, OSError) as exc:  # the next interval tries again
            logger.error("cannot re-check the registry: {}", exc)

    def ready_handles(self) -> list[WorkerHandle]:
        handles = [self.pool.handle(pid) for _w, pid in self._ready_workers()]
        return [h for h in handles if h is not None]

    def sample_resources(self) -> None:
        """Read each ready worker's RSS and CPU share since the last sample (psutil)."""
        live = set()
        for worker, pid in self._ready_workers():
            live.add(pid)
            try:
                proc = self._processes.get(pid)
                if proc is None:
                    proc = self._processes[pid] = psutil.Process(pid)
                    proc.cpu_percent(None)  # the first reading only sets the baseline
                    continue
                rss_mb = proc.memory_info().rss / 2**20
                cpu = proc.cpu_percent(None)
            except psutil.Error:
                continue
            self.events.put(ResourceSample(worker, pid, rss_mb, cpu))
        for pid in set(self._processes) - live:
            del self._processes[pid]

    # ----- signals ---------------------------------------------------------------------------
    def _on_stop_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.events.put(ShutdownRequested(reason=f"{signal.Signals(signum).name} received"))

    def _on_hangup(self, _signum: int, _frame: FrameType | None) -> None:
        self.events.put(ManualRestart(reason="SIGHUP received"))

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)

    # ----- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Start (or adopt) the workers and supervise them until a stop signal."""
        self.install_signal_handlers()
        for handle in self._adopted:
            self._handle(WorkerAdopted(handle.worker, handle.pid))
            logger.info(
                "adopted worker {} (pid {}, model {})", handle.worker, handle.pid, handle.version
            )
        self.recorder.seed(read_records(self.recorder.audit.directory))
        left = self._left_open()  # read before this run writes anything
        self.recorder.bookkeeping(
            "lifecycle", "daemon_start", {"pid": os.getpid(), "adopted": len(self._adopted)}
        )
        self.pool.warm_up()
        self._handle(StartRequested())
        resume.carry_out(
            left, recorder=self.recorder, operations=self.operations, model=self.healing.handle
        )
        self.scheduler.start()
        try:
            while not self._finished():
                item = self.next_item()
                if isinstance(item, _Heartbeat):
                    self.notifier.watchdog()
                elif isinstance(item, ControlRequest):
                    self.operations.serve(item)
                elif isinstance(item, Observations):
                    self.healing.observe(item)
                elif isinstance(item, MODEL_EVENTS):
                    self.healing.handle(item)
                elif isinstance(item, integrity.IntegrityChecked):
                    self._integrity(item)
                else:
                    self._handle(item)
                self._after_item()
                self._enforce_shutdown_deadline()
        finally:
            self._availability(final=True)
            self.recorder.bookkeeping(
                "lifecycle",
                "daemon_stop",
                {"pid": os.getpid(), "uptime_s": round(self.uptime_s(), 3)},
            )
            self.scheduler.shutdown(wait=False)
            self.healing.close()
            self._probe_pool.shutdown(wait=False, cancel_futures=True)
            self.pool.close()
            self.probe.close()
            logger.info("all workers stopped")

    def next_item(self) -> Item:
        """The next event, or a ``Tick`` once ``TICK_S`` has passed since the last one, however
        busy the queue: probe results and resource samples arrive several times a second and
        would otherwise starve the policy's timers (a 0.05 s backoff was served after 0.5 s)."""
        wait = self._next_tick - self.clock.monotonic()
        if wait > 0:
            try:
                return self.events.get(timeout=wait)
            except queue.Empty:
                pass
        self._next_tick = self.clock.monotonic() + TICK_S
        return Tick()

    def _integrity(self, seen: integrity.IntegrityChecked) -> None:
        model = self.healing.state
        decision = integrity.decide(
            seen, self._integrity_reported, busy=bool(model.deploying or model.job_issue)
        )
        self._integrity_reported = decision.reported
        for action in decision.actions:
            match action:
                case Report():
                    self.executor.apply(action)
                case integrity.SetLastGood():
                    try:
                        self.registry.set_alias("last_good", action.version)
                    except (SelfhealError, OSError) as exc:
                        logger.error("cannot move last_good to {}: {}", action.version, exc)
                        continue
                    self._handle(ModelChanged(serving=self.state.serving, last_good=action.version))
                case _:
                    self.healing.handle(action)

    def _left_open(self) -> resume.Plan:
        """What becomes of the incidents a previous run left without an outcome (``resume``)."""
        directory = self.recorder.audit.directory
        records = list(read_records(directory, newest_files=resume.RECENT_FILES))
        found = resume.Found.of(
            self.healing.state, self.pool.version, self.cfg.service.workers, len(self._adopted)
        )
        return resume.plan(resume.unfinished(records), found, resume.previous_run(records))

    @property
    def snapshot(self) -> SupervisorState:
        """The supervisor's state as of the last decision: immutable, safe to read from any
        thread (``state`` is the loop's own and may be mid-decision)."""
        return self._published

    def uptime_s(self) -> float:
        return self.clock.monotonic() - self._started_mono

    def _after_item(self) -> None:
        self.operations.check_follow_ups(self.state)
        state = self.state
        self.metrics.on_supervision(
            ready=sum(s.state is WorkerState.READY for s in state.workers),
            slots=len(state.workers),
            paused=state.paused,
            crash_loop=state.in_crash_loop,
            serving=state.serving,
        )
        self._availability()
        self.recorder.audit.flush_pending()

    def _availability(self, *, final: bool = False) -> None:
        """Every ``audit.availability_interval_s``, record the share of probes answered."""
        now = self.clock.monotonic()
        elapsed = now - self._window_start
        if not final and elapsed < self.cfg.audit.availability_interval_s:
            return
        sent, answered = self._probes
        if sent:
            details = {"probes": sent, "answered": answered, "window_s": round(elapsed, 3)}
            self.recorder.bookkeeping("availability", "probe_window", details)
        self._probes = [0, 0]
        self._window_start = now

    def _handle(self, event: Event) -> None:
        before = self.state
        if isinstance(event, ProbeResult):
            self._probes[0] += 1
            self._probes[1] += event.ok
            self.metrics.on_probe(event.worker, event.ok, event.latency_s)
        decision = decide(event, self.state, self.clock.monotonic(), self.policy_cfg)
        self.state = self._published = decision.state
        if isinstance(event, WorkerSpawned):
            self.executor.watch_ready(event.worker, event.pid)
        for action in decision.actions:
            try:
                self.executor.apply(action)
                if isinstance(action, RollbackModel):
                    self.operations.after_rollback(action)
            except Exception:  # the tick boundary: one failed action must not end supervision
                logger.opt(exception=True).error("action {} failed; carrying on", action)
        if isinstance(event, PauseHealing | ResumeHealing):
            self.healing.handle(HealingPaused(paused=isinstance(event, PauseHealing)))
        if (before.serving, before.last_good) != (decision.state.serving, decision.state.last_good):
            self.healing.handle(ServingChanged(decision.state.serving, decision.state.last_good))
        if isinstance(event, ShutdownRequested) and self._shutdown_started is None:
            self._shutdown_started = self.clock.monotonic()
            self.notifier.stopping()
            logger.info("shutting down: {}", event.reason)
        self._announce(before, decision.state)

    def _finished(self) -> bool:
        if self._gave_up:
            return True
        return self.state.shutting_down and self.state.all_stopped and not self.pool.alive()

    def _enforce_shutdown_deadline(self) -> None:
        """Never hang on exit: give up waiting once the grace period is long past."""
        if self._shutdown_started is None:
            return
        if self.clock.monotonic() - self._shutdown_started > self.cfg.service.stop_grace_s + 5.0:
            logger.error("workers outlived the stop grace period; killing them")
            self._gave_up = True  # run() returns; pool.close() sends KILL to what is left

    def _announce(self, before: SupervisorState, after: SupervisorState) -> None:
        now = self.clock.monotonic()
        for old, new in zip(before.workers, after.workers, strict=True):
            changed = old.pid != new.pid or old.state is not new.state
            if changed and new.state is WorkerState.READY and new.started_at is not None:
                logger.info(
                    "worker {} (pid {}) ready in {:.3f} s",
                    new.worker,
                    new.pid,
                    now - new.started_at,
                )
        ready = sum(s.state is WorkerState.READY for s in after.workers)
        status = f"{ready}/{len(after.workers)} workers ready, model {after.serving}"
        if after.in_crash_loop:
            status += ", crash loop"
        if status != self._status:
            self._status = status
            self.notifier.status(status)
        if after.all_ready and not self._announced_ready:
            self._announced_ready = True
            svc = self.cfg.service
            logger.success(
                "serving model {} on http://{}:{} with {} worker(s)",
                after.serving,
                svc.host,
                svc.port,
                svc.workers,
            )
            self.notifier.ready(status)
