"""``selfheal run`` with ``backend.kind = "ray"``: supervise a Ray Serve application.

Ray runs and restarts the replicas; this loop makes sure they serve the registry's ``current``
version (deploying it, or reattaching to replicas that already serve it, without restarting
one), watches the cluster every ``backend.health_check_period_s``, writes every replica failure
and lost node to the audit trail with its time to recover (``supervision.ray_policy``), and rolls
the model back to ``last_good`` when replicas crash-loop after a model change.

Stopping the daemon leaves the application serving (it is Ray's, and detached); a restarted
daemon reattaches to it. The model's own healing is the local backend's (``lifecycle.healer``):
the monitoring pass reads every replica's capture from the hub, and drift, retraining, the gate
and performance drops work unchanged; a promotion goes to every replica through
``lifecycle.ray_deployer``. The control endpoint runs as on local workers once the replicas
serve (``daemon.ray_control``: status with the replicas and the nodes, the actions, the drills),
and escalations reach the notifier.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from dataclasses import dataclass, replace
from types import FrameType
from typing import Any

from loguru import logger

from selfheal_daemon.clock import Clock, SystemClock
from selfheal_daemon.config import Config
from selfheal_daemon.control.server import ControlServer
from selfheal_daemon.daemon.operations import ControlRequest
from selfheal_daemon.daemon.ray_control import RayControl, RayOperations, RollbackDone
from selfheal_daemon.daemon.runner import start_control
from selfheal_daemon.errors import SelfhealError
from selfheal_daemon.lifecycle.events import ModelState, ServingChanged
from selfheal_daemon.lifecycle.healer import MODEL_EVENTS, Healing, Observations
from selfheal_daemon.lifecycle.ray_deployer import RayDeployer
from selfheal_daemon.lifecycle.worker_admin import AdminReply
from selfheal_daemon.model.bootstrap import ensure_model
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.alerts import Alerts
from selfheal_daemon.record.audit import AuditLog, read_records
from selfheal_daemon.record.metrics import DaemonMetrics
from selfheal_daemon.record.recorder import Recorder, Report
from selfheal_daemon.supervision.events import ModelChanged
from selfheal_daemon.supervision.executor import log_report
from selfheal_daemon.supervision.ray_cluster import RayCluster
from selfheal_daemon.supervision.ray_policy import (
    ClusterView,
    Incident,
    RayPolicyConfig,
    RayState,
    RollBack,
    SwapResult,
    model_changed,
    observe,
)
from selfheal_daemon.system.process import claim_daemon_pidfile, release_daemon_pidfile
from selfheal_daemon.system.systemd import SystemdNotifier

DEPLOY_TIMEOUT_S = 300.0  # the first deploy starts every replica: imports, then a model load
CAPTURE_LIMIT_ROWS = 100_000  # most rows one monitoring pass reads from the hub
DIGEST_EVERY_S = 600.0  # how often the notifier is asked whether a digest is due


@dataclass(frozen=True)
class _HubSource:
    """The monitor's one capture source on Ray: the hub, which gathers every replica's."""

    pid: int = 0
    worker: int = 0


HUB = _HubSource()


def service_settings(cfg: Config) -> dict[str, object]:
    """The ``ServiceSettings`` of every replica, from the ``[service]`` and ``[monitor]`` keys."""
    svc = cfg.service
    return {
        "max_batch_rows": svc.max_batch_rows,
        "max_body_bytes": svc.max_body_bytes,
        "batch_window_ms": svc.batch_window_ms,
        "batch_max_rows": svc.batch_max_rows,
        "drain_s": svc.drain_s,
        "capture_rows": cfg.monitor.capture_rows,
        "feedback_rows": cfg.monitor.feedback_rows,
        "observe": svc.observe,
    }


def run_ray_daemon(cfg: Config) -> None:
    """Foreground run on a Ray cluster until SIGTERM or SIGINT."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.run_dir.mkdir(mode=0o700, exist_ok=True)
    claim_daemon_pidfile(cfg.run_dir)
    notifier = SystemdNotifier.from_environ()
    clock = SystemClock()
    audit = AuditLog.of(cfg, clock)
    try:
        registry = ModelRegistry(cfg.registry_dir)
        ensure_model(cfg, registry, progress=lambda msg: logger.info("training: {}", msg))
        cluster = RayCluster(
            cfg.backend,
            host=cfg.service.host,
            port=cfg.service.port,
            settings=service_settings(cfg),
            capture_rows=cfg.monitor.capture_rows * cfg.backend.replicas,
            feedback_rows=cfg.monitor.feedback_rows * cfg.backend.replicas,
        )
        recorder = Recorder(audit, clock, DaemonMetrics())
        alerts = Alerts(
            cfg.notify, recorder=recorder, clock=clock, state_file=cfg.state_dir / "notify.json"
        )
        recorder.on_escalated = alerts.escalated
        try:
            RayLoop(
                cfg,
                cluster=cluster,
                registry=registry,
                recorder=recorder,
                clock=clock,
                notifier=notifier,
                alerts=alerts,
            ).run()
        finally:
            alerts.close(timeout_s=2.0)
    finally:
        audit.close()
        notifier.close()
        release_daemon_pidfile(cfg.run_dir)


class RayLoop:
    """Deploy or reattach, then watch the cluster until told to stop."""

    def __init__(
        self,
        cfg: Config,
        *,
        cluster: RayCluster,
        registry: ModelRegistry,
        recorder: Recorder,
        clock: Clock,
        notifier: SystemdNotifier,
        alerts: Alerts | None = None,
    ) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.registry = registry
        self.recorder = recorder
        self.clock = clock
        self.notifier = notifier
        self.alerts = alerts
        self.policy_cfg = RayPolicyConfig(budget=cfg.restart.budget, window_s=cfg.restart.window_s)
        self.stop = threading.Event()
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.state = RayState(None, None)  # replaced whole, never changed: the endpoint reads it
        self.view: ClusterView | None = None  # the cluster as last seen (for /status)
        self.started_at = clock.utcnow()
        self._started_mono = clock.monotonic()
        self.control: ControlServer | None = None

    def uptime_s(self) -> float:
        return self.clock.monotonic() - self._started_mono

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        logger.info("{} received: leaving the application to Ray", signal.Signals(signum).name)
        self.stop.set()

    def run(self) -> None:
        self.recorder.seed(read_records(self.recorder.audit.directory))
        self.cluster.connect()
        # after ray.init, which installs a SIGTERM handler of its own that exits at once
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        serving = self.registry.alias("current")
        last_good = self.registry.alias("last_good")
        if serving is None:
            raise SelfhealError("the registry names no current version")
        self.recorder.bookkeeping(
            "lifecycle",
            "daemon_start",
            {"pid": os.getpid(), "backend": "ray", "address": self.cluster.address},
        )
        serving, seen = self._serve(serving, last_good)
        state = model_changed(RayState(serving, last_good), serving, last_good, self._now())
        self.state = observe(seen, state, self.policy_cfg).state  # the replicas found or started
        self.view = seen
        self.healing = Healing(
            self.cfg,
            clock=self.clock,
            registry=self.registry,
            pool=None,
            post=self.events.put,
            apply=self._report,
            recorder=self.recorder,
            ready_handles=lambda: [HUB],
            serving=lambda: self.state.serving or "",
            initial=ModelState(serving=serving, last_good=last_good),
            deployer=RayDeployer(self.cluster, self.registry, self.events.put),
            fetch=self._fetch,
        )
        self.operations = RayOperations(self)
        self.control = start_control(self.cfg, RayControl(self))
        monitor = threading.Thread(target=self._monitor, name="monitor", daemon=True)
        monitor.start()
        status = f"{self.cfg.backend.replicas} Ray replicas, model {serving}"
        self.notifier.ready(status)
        logger.success(
            "serving model {} on http://{}:{} with {} Ray replica(s)",
            serving,
            self.cfg.service.host,
            self.cfg.service.port,
            self.cfg.backend.replicas,
        )
        try:
            self._loop()
        finally:
            self.stop.set()
            if self.control is not None:
                self.control.stop()
            self.healing.close()
            self.recorder.bookkeeping("lifecycle", "daemon_stop", {"pid": os.getpid()})
            self.cluster.disconnect()
            self.notifier.stopping()

    def _loop(self) -> None:
        """Model events as they come; the cluster's state every ``health_check_period_s``."""
        period = self.cfg.backend.health_check_period_s
        next_watch = self._now() + period
        digest_at = self._now() + DIGEST_EVERY_S
        while not self.stop.is_set():
            try:
                item = self.events.get(timeout=max(0.0, next_watch - self._now()))
            except queue.Empty:
                item = None
            if isinstance(item, Observations):
                self.healing.observe(item)
            elif isinstance(item, ModelChanged):
                self.model_changed(item.serving, item.last_good)
            elif isinstance(item, MODEL_EVENTS):
                self.healing.handle(item)
            elif isinstance(item, ControlRequest):
                self.operations.serve(item)
            elif isinstance(item, RollbackDone):
                self.operations.rollback_done(item)
            if self._now() >= next_watch:
                self.state = self._watch(self.state)
                self.operations.check_follow_ups(self.view, self.state)
                self._confirm()
                self.notifier.watchdog()
                self.recorder.audit.flush_pending()
                next_watch = self._now() + period
            if self.alerts is not None and self.alerts.enabled and self._now() >= digest_at:
                self.alerts.digest_if_due()
                digest_at = self._now() + DIGEST_EVERY_S

    def _monitor(self) -> None:
        """The monitoring pass every ``monitor.interval_s`` (drift, performance, incoming data),
        on a thread of its own: it only posts what it saw."""
        while not self.stop.wait(self.cfg.monitor.interval_s):
            self.healing.scheduled_pass()

    def _fetch(self, _source: object, after: int) -> AdminReply:
        """What every replica captured after ``after``, gathered by the hub."""
        try:
            body = self.cluster.capture(after, CAPTURE_LIMIT_ROWS)
        except Exception as exc:  # the hub unreachable for a moment: the next pass reads it
            return AdminReply(False, None, f"{type(exc).__name__}: {exc}")
        return AdminReply(True, 200, "", body)

    def _report(self, report: Report) -> None:
        log_report(report)
        self.recorder.report(report)

    def model_changed(self, serving: str, last_good: str | None) -> None:
        """A new version serves on every replica: crash-loop counting starts over for it."""
        self.state = model_changed(self.state, serving, last_good, self._now())
        self.healing.handle(ServingChanged(serving, last_good))

    def _confirm(self) -> None:
        """A version that served ``restart.stable_after_s`` with every replica up and no crash
        loop becomes ``last_good``, the rollback target."""
        state = self.state
        stable = self.cfg.restart.stable_after_s
        if (
            state.serving is None
            or state.serving == state.last_good
            or state.changed_at is None
            or self._now() - state.changed_at < stable
            or state.crash_loop
            or state.outages
        ):
            return
        try:
            self.registry.set_alias("last_good", state.serving)
        except (SelfhealError, OSError) as exc:
            logger.error("cannot move last_good to {}: {}", state.serving, exc)
            return
        logger.info("{} served {:g} s on every replica: now last_good", state.serving, stable)
        self.state = replace(state, last_good=state.serving)
        self.healing.handle(ServingChanged(state.serving, state.serving))

    def _now(self) -> float:
        return self.clock.monotonic()

    def _serve(self, version: str, last_good: str | None) -> tuple[str, ClusterView]:
        """Make every replica serve ``version``: reattach when they already do, else deploy it
        (falling back to ``last_good`` if a replica refuses). The version served, and the
        replicas found serving it (a replica lost from then on is an incident)."""
        sha256 = str(self.registry.info(version).meta["sha256"])
        view = self.cluster.view()
        if view.settled(version) and all(r.sha256 == sha256 for r in view.replicas):
            replicas = [{"replica": r.replica, "pid": r.pid, "node": r.node} for r in view.replicas]
            self.recorder.bookkeeping(
                "lifecycle", "reattached", {"version": version, "replicas": replicas}
            )
            logger.info("reattached to {} replicas serving {}", len(replicas), version)
            return version, view
        fallback = last_good if last_good != version else None
        result = self.cluster.promote(self.registry, version, fallback, DEPLOY_TIMEOUT_S)
        if result.ok:
            self.recorder.bookkeeping(
                "lifecycle", "deployed", {"version": version, "seconds": result.seconds}
            )
            return version, self.cluster.view()
        self._deployment_failed(result, fallback)
        if fallback is None:
            raise SelfhealError(f"no replica serves {version}: {result.refused or result.pending}")
        self.registry.set_alias("current", fallback)
        return fallback, self.cluster.view()

    def _deployment_failed(self, result: SwapResult, fallback: str | None) -> None:
        self.recorder.record(
            "deployment_failure",
            None,
            detection="replica_refused" if result.refused else "not_all_replicas_on_version",
            action="rollback" if fallback else "none",
            details={
                "version": result.version,
                "refused": result.refused,
                "pending": list(result.pending),
                "rolled_back_to": fallback,
            },
            outcome="resolved" if fallback else "failed",
        )

    def _watch(self, state: RayState) -> RayState:
        try:
            view = self.cluster.view()
        except Exception as exc:  # the GCS restarting, say: the next period tries again
            logger.warning("cannot read the Ray cluster's state: {}", exc)
            return state
        self.view = view
        decision = observe(view, state, self.policy_cfg)
        state = decision.state
        for action in decision.actions:
            if isinstance(action, Incident):
                logger.warning("{} {}: {}", action.issue, action.scope, action.detection)
                self.recorder.record(
                    action.issue,
                    action.scope,
                    detection=action.detection,
                    action=action.action,
                    details=action.details,
                    outcome=action.outcome,
                )
            elif isinstance(action, RollBack):
                state = self._roll_back(state, action)
        return state

    def _roll_back(self, state: RayState, action: RollBack) -> RayState:
        logger.error(
            "crash loop: rolling every replica back to {} ({})", action.version, action.reason
        )
        result = self.cluster.promote(self.registry, action.version, None, DEPLOY_TIMEOUT_S)
        outcome = "resolved" if result.ok else "failed"
        self.recorder.record(
            "crash_loop",
            "replicas",
            detection="replica_failures_over_budget",
            action="rollback",
            details={"to": action.version, "seconds": result.seconds, "refused": result.refused},
            outcome=outcome,
        )
        if not result.ok:
            return state
        self.registry.set_alias("current", action.version)
        self.healing.handle(ServingChanged(action.version, state.last_good))
        return model_changed(state, action.version, state.last_good, self._now())
