"""Carry out the supervision policy's actions: start and stop workers, move the model aliases,
write its reports. What an action causes (a worker spawned, ready, exited) comes back later as an
event; nothing here decides anything (``policy.decide`` does).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from loguru import logger

from selfheal_daemon import contracts
from selfheal_daemon.config import Config
from selfheal_daemon.errors import SelfhealError
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.recorder import Recorder, Report
from selfheal_daemon.supervision.events import (
    Action,
    ConfirmModel,
    Event,
    ModelChanged,
    RollbackModel,
    StartWorker,
    StopWorker,
    WorkerExited,
    WorkerReady,
)
from selfheal_daemon.supervision.pool import WorkerPool
from selfheal_daemon.supervision.probe import HealthProbe

READY_POLL_S = 0.01  # how often a starting worker's /ready is polled


class Executor:
    """Applies actions to the world; what they cause comes back later as events."""

    def __init__(
        self,
        pool: WorkerPool,
        probe: HealthProbe,
        registry: ModelRegistry,
        post: Callable[[Event], None],
        cfg: Config,
        *,
        recorder: Recorder,
    ) -> None:
        self.pool = pool
        self.probe = probe
        self.registry = registry
        self.post = post
        self.cfg = cfg
        self.recorder = recorder

    def apply(self, action: Action) -> None:
        match action:
            case StartWorker():
                logger.info("starting a worker in slot {}: {}", action.worker, action.reason)
                if action.reason != "daemon start":
                    self.recorder.metrics.on_restart()
                try:
                    self.pool.start(action.worker)
                except (SelfhealError, OSError) as exc:  # a failed start is a crash to the policy
                    logger.error("cannot start worker {}: {}", action.worker, exc)
                    self.post(WorkerExited(action.worker, None, None, detail=str(exc)))
            case StopWorker():
                logger.info(
                    "stopping worker {} (pid {}): {}", action.worker, action.pid, action.reason
                )
                self.pool.stop(action.pid, self.cfg.service.stop_grace_s)
            case RollbackModel():
                self._rollback(action)
            case ConfirmModel():
                self.registry.set_alias("last_good", action.version)
                logger.success("model {} served stably: it is now last_good", action.version)
                self.post(ModelChanged(serving=action.version, last_good=action.version))
            case Report():
                log_report(action)
                self.recorder.report(action)

    def _rollback(self, action: RollbackModel) -> None:
        logger.error("rolling back to model {}: {}", action.to, action.reason)
        try:
            self.registry.set_alias("current", action.to)
        except SelfhealError as exc:
            logger.error("rollback to {} failed: {}", action.to, exc)
            return
        self.pool.set_version(action.to)
        self.post(ModelChanged(serving=action.to, last_good=self.registry.alias("last_good")))

    def watch_ready(self, worker: int, pid: int) -> None:
        """Poll a starting worker's /ready on a thread until it passes or the process is gone."""
        threading.Thread(
            target=self._watch_ready, args=(worker, pid), name=f"ready-{worker}", daemon=True
        ).start()

    def _watch_ready(self, worker: int, pid: int) -> None:
        deadline = time.monotonic() + self.cfg.service.start_timeout_s + 1.0
        while time.monotonic() < deadline:
            handle = self.pool.handle(pid)
            if handle is None:
                return  # it exited; the exit watcher reports that
            if self.probe.check(handle.uds, contracts.READY_PATH).ok:
                self.post(WorkerReady(worker, pid))
                return
            time.sleep(READY_POLL_S)


def log_report(report: Report) -> None:
    """A report in the daemon's log, at the level its outcome calls for."""
    where = f" on worker {report.worker}" if report.worker is not None else ""
    outcome = report.outcome or "detected"
    text = f"{report.issue} {outcome} ({report.detection}){where}: {report.details}"
    if report.outcome == "escalated":
        logger.error("{}", text)
    elif report.outcome == "resolved":
        logger.success("{}", text)
    else:
        logger.warning("{}", text)
