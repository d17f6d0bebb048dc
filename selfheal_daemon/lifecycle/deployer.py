"""Deploy a model version in place on every worker, or roll every worker back.

One deployment at a time, on a thread of its own so the daemon's loop keeps supervising:

1. every ready worker is asked to swap (``POST /admin/model``): it loads the version through the
   registry (checksum verified before unpickling), smoke-predicts, and swaps one reference; the
   old model answers until then. A worker that exits meanwhile is skipped (its replacement is
   started on the template's version and checked in step 3).
2. on the first refusal every worker that already swapped is swapped back to ``rollback_to``,
   ``current`` is not moved, and ``DeployFinished(ok=False, rolled_back=...)`` is posted.
3. on success ``current`` is moved (atomic write), the template restarts on the new version (new
   workers fork from it), and every ready worker is checked until all serve the version, swapping
   any that started on the old template meanwhile; then ``ModelChanged(in_place=True)`` and
   ``DeployFinished(ok=True)`` are posted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from loguru import logger

from selfheal_daemon.errors import SelfhealError
from selfheal_daemon.lifecycle.events import Deploy, DeployFinished
from selfheal_daemon.lifecycle.worker_admin import swap_model
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.supervision.events import ModelChanged
from selfheal_daemon.supervision.pool import WorkerHandle, WorkerPool

SWAP_TIMEOUT_S = 60.0  # loading a model and checking its fast path takes a few hundred ms


class ModelDeployer(Protocol):
    """Carries out a ``Deploy`` on its own thread and posts ``DeployFinished`` (and
    ``ModelChanged`` once ``current`` moved): ``Deployer`` here, ``RayDeployer`` on Ray."""

    def deploy(self, action: Deploy) -> None: ...


class ThreadedDeployer:
    """One deployment at a time, on a thread of its own, always answered with a
    ``DeployFinished`` (an unexpected error too); subclasses say how in ``_deploy``."""

    post: Callable[[Any], None]

    def __init__(self) -> None:
        self._busy = threading.Lock()

    def deploy(self, action: Deploy) -> None:
        threading.Thread(target=self._run, args=(action,), name="deploy", daemon=True).start()

    def _run(self, action: Deploy) -> None:
        with self._busy:
            started = time.monotonic()
            try:
                finished = self._deploy(action, started)
            except Exception as exc:  # a thread must always answer, or the policy waits forever
                logger.opt(exception=True).error("deployment of {} failed", action.version)
                finished = DeployFinished(
                    action.version, ok=False, details={"detection": "error", "error": str(exc)}
                )
            self.post(finished)

    def _deploy(self, action: Deploy, started: float) -> DeployFinished:
        raise NotImplementedError


class Deployer(ThreadedDeployer):
    def __init__(
        self,
        pool: WorkerPool,
        registry: ModelRegistry,
        post: Callable[[Any], None],
        ready_pids: Callable[[], list[int]],
        *,
        settle_timeout_s: float,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.post = post
        self.ready_pids = ready_pids
        self.settle_timeout_s = settle_timeout_s
        super().__init__()

    def _ready_handles(self) -> list[WorkerHandle]:
        handles = [self.pool.handle(pid) for pid in self.ready_pids()]
        return [h for h in handles if h is not None]

    def _swap(self, handle: WorkerHandle, version: str) -> str:
        """Swap one worker; "" when it serves ``version`` (or is gone), else why not."""
        reply = swap_model(handle.uds, version, SWAP_TIMEOUT_S)
        if reply.ok:
            self.pool.mark_version(handle.pid, version)
            return ""
        if self.pool.handle(handle.pid) is None:
            return ""  # exited meanwhile: its replacement is checked later
        return reply.detail

    def _deploy(self, action: Deploy, started: float) -> DeployFinished:
        version = action.version
        logger.info("deploying {} in place on every worker: {}", version, action.reason)
        swapped: list[WorkerHandle] = []
        for handle in self._ready_handles():
            problem = self._swap(handle, version)
            if problem:
                return self._roll_back(action, handle, problem, swapped, started)
            swapped.append(handle)
        self.registry.set_alias("current", version)
        self.pool.set_version(version)
        self.post(
            ModelChanged(serving=version, last_good=self.registry.alias("last_good"), in_place=True)
        )
        pending = self._settle(version)
        seconds = round(time.monotonic() - started, 3)
        if pending:
            logger.error("workers {} still not on {} after {} s", pending, version, seconds)
            return DeployFinished(
                version,
                ok=False,
                details={
                    "detection": "not_all_workers_on_version",
                    "workers_not_on_version": pending,
                    "seconds": seconds,
                },
            )
        logger.success("every worker serves {} ({:.3f} s)", version, seconds)
        return DeployFinished(version, ok=True, details={"seconds": seconds})

    def _settle(self, version: str) -> list[int]:
        """Swap stragglers until every ready worker serves ``version``; the pids still not on it."""
        deadline = time.monotonic() + self.settle_timeout_s
        while True:
            stale = [h for h in self._ready_handles() if h.version != version]
            for handle in stale:
                if self._swap(handle, version):
                    logger.warning("worker {} refused {} (retrying)", handle.pid, version)
            stale = [h for h in self._ready_handles() if h.version != version]
            if not stale or time.monotonic() > deadline:
                return [h.pid for h in stale]
            time.sleep(0.1)

    def _roll_back(
        self,
        action: Deploy,
        failed: WorkerHandle,
        problem: str,
        swapped: list[WorkerHandle],
        started: float,
    ) -> DeployFinished:
        logger.error(
            "worker {} (pid {}) refused {}: {}; rolling back to {}",
            failed.worker,
            failed.pid,
            action.version,
            problem,
            action.rollback_to,
        )
        back = [h.pid for h in swapped if self._swap(h, action.rollback_to)]
        details: dict[str, Any] = {
            "detection": detection_of(problem),
            "worker": failed.worker,
            "pid": failed.pid,
            "error": problem,
            "rollback_to": action.rollback_to,
            "workers_swapped_back": len(swapped) - len(back),
            "seconds": round(time.monotonic() - started, 3),
        }
        if back:
            details["workers_not_rolled_back"] = back
        try:
            still = self.registry.alias("current")
        except SelfhealError:
            still = None
        details["current"] = still
        return DeployFinished(action.version, ok=False, rolled_back=not back, details=details)


def detection_of(problem: str) -> str:
    text = problem.lower()
    if "schemabreakerror" in text or "would break clients" in text:
        return "schema_incompatible"
    if "checksum" in text or "sha256" in text:
        return "checksum_mismatch"
    if "smoke" in text or "probe row" in text or "non-finite" in text or "not a finite" in text:
        return "smoke_test_failed"
    if "http" in text:
        return "load_failed"
    return "worker_unreachable"
