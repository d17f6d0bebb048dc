"""The model side of the daemon: the monitoring pass, the model policy, and its effects.

``Healing`` holds the model policy's state (``lifecycle.events.ModelState``, its durable part in
``model_state.json``), feeds it events on the daemon's loop thread, and carries out what it asks
for: a retrain job (``lifecycle.retrain_runner``), an in-place deployment
(``lifecycle.deployer``), an audit record. The monitoring pass (``monitor.Monitor``) runs on a
scheduler thread or for ``selfheal check`` and only returns events, which come to the loop as one
``Observations`` item.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from selfheal_daemon.clock import Clock
from selfheal_daemon.config import Config
from selfheal_daemon.lifecycle.deployer import Deployer, ModelDeployer
from selfheal_daemon.lifecycle.events import (
    Deploy,
    DeployFinished,
    DeployRequested,
    DriftChecked,
    HealingPaused,
    ModelAction,
    ModelEvent,
    ModelPolicyConfig,
    ModelState,
    ModelTick,
    Note,
    PerformanceChecked,
    Resumed,
    RetrainFinished,
    RetrainRequested,
    ServingChanged,
    StartRetrain,
)
from selfheal_daemon.lifecycle.monitor import (
    CAPTURE_TIMEOUT_S,
    CaptureSource,
    Monitor,
    QualityChecked,
)
from selfheal_daemon.lifecycle.policy import decide_model
from selfheal_daemon.lifecycle.retrain_runner import RetrainRunner
from selfheal_daemon.lifecycle.worker_admin import AdminReply, fetch_capture
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.recorder import Recorder, Report
from selfheal_daemon.supervision.pool import WorkerPool
from selfheal_daemon.system.files import atomic_write_json

MODEL_STATE_FILE = "model_state.json"


@dataclass(frozen=True)
class Observations:
    """What one monitoring pass saw; ``reply`` (for ``selfheal check``) gets what was decided."""

    events: list[Any]
    reply: Future[list[dict[str, Any]]] | None = field(default=None, compare=False)


MODEL_EVENTS = (
    DriftChecked,
    PerformanceChecked,
    RetrainRequested,
    RetrainFinished,
    DeployFinished,
    ServingChanged,
    HealingPaused,
    DeployRequested,
    ModelTick,
    Resumed,
)


class Healing:
    """Model healing on the daemon's loop thread; ``snapshot`` may be read from any thread."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Clock,
        registry: ModelRegistry,
        pool: WorkerPool | None,
        post: Callable[[Any], None],
        apply: Callable[[Report], None],
        recorder: Recorder,
        ready_handles: Callable[[], Sequence[CaptureSource]],
        serving: Callable[[], str],
        initial: ModelState,
        deployer: ModelDeployer | None = None,
        fetch: Callable[[Any, int], AdminReply] | None = None,
    ) -> None:
        """``pool``: the local workers, deployed to by ``Deployer`` and read by their admin
        socket; with ``pool`` None (the Ray backend) ``deployer`` and ``fetch`` say how."""
        self.cfg = cfg
        self.clock = clock
        self.post = post
        self.apply = apply  # logs a Report and writes its audit record (the daemon's executor)
        self.recorder = recorder
        self.policy_cfg = ModelPolicyConfig(cfg.drift, cfg.retrain, cfg.performance)
        self.state = self.snapshot = self._restore(initial)
        self.runner = RetrainRunner(cfg, post)
        if deployer is None:
            if pool is None:
                raise ValueError("Healing needs a pool or a deployer")
            deployer = Deployer(
                pool,
                registry,
                post,
                lambda: [h.pid for h in ready_handles()],
                settle_timeout_s=cfg.service.start_timeout_s + 5.0,
            )
        self.deployer = deployer
        self.monitor = Monitor(
            cfg,
            registry,
            fetch=fetch or (lambda h, after: fetch_capture(h.uds, after, CAPTURE_TIMEOUT_S)),
            ready_handles=ready_handles,
            serving=serving,
            now=clock.utcnow,
        )

    # ----- the monitoring pass (scheduler thread, or a control thread for `selfheal check`) -----
    def scheduled_pass(self) -> None:
        self.post(ModelTick())  # time reaches the policy (a retry whose time has come starts)
        self.monitor_pass()

    def monitor_pass(self, reply: Future[list[dict[str, Any]]] | None = None) -> dict[str, Any]:
        """One monitoring pass; its events go to the loop, which answers ``reply``."""
        try:
            observed = self.monitor.run_once()
        except Exception as exc:  # a failed pass is logged; the next one tries again
            logger.opt(exception=True).error("monitoring pass failed")
            if reply is not None:
                reply.set_exception(exc)
            return {}
        self.post(Observations(observed.events, reply))
        return observed.collected

    # ----- on the loop thread -------------------------------------------------------------------
    def observe(self, item: Observations) -> None:
        decided: list[dict[str, Any]] = []
        for event in item.events:
            if isinstance(event, QualityChecked):
                decided.append(self._quality(event))
            elif isinstance(event, MODEL_EVENTS):
                decided.extend(self.handle(event))
        if item.reply is not None:
            item.reply.set_result(decided)

    def _quality(self, event: QualityChecked) -> dict[str, Any]:
        """One incoming file: its fixes and quarantine, resolved in the same record."""
        details = event.details
        if not event.had_problems:
            self.recorder.bookkeeping("data_quality", "clean_batch", details)
            return {"issue": "data_quality", "detection": "clean_batch", "details": details}
        detections = details.get("detections") or ["schema"]
        if details.get("rejected"):
            action = "quarantined"
        elif details.get("rows_quarantined"):
            action = "auto_fix_applied_and_quarantined"
        else:
            action = "auto_fix_applied"
        report = Report(
            "data_quality", str(detections[0]), None, details, outcome="resolved", action=action
        )
        self.apply(report)
        return _describe(report)

    def handle(self, event: ModelEvent) -> list[dict[str, Any]]:
        """Feed the model-healing policy one event and carry out what it asks for."""
        now = self.clock.utcnow().timestamp()
        before = self.state.durable()
        decision = decide_model(event, self.state, now, self.policy_cfg)
        self.state = self.snapshot = decision.state
        if decision.state.durable() != before:
            self._save()
        done: list[dict[str, Any]] = []
        for action in decision.actions:
            try:
                done.append(self._apply_model(action))
            except Exception:  # the tick boundary: one failed action must not end supervision
                logger.opt(exception=True).error("action {} failed; carrying on", action)
        return done

    def _apply_model(self, action: ModelAction) -> dict[str, Any]:
        match action:
            case Report():
                self.apply(action)
                if action.outcome == "escalated":  # the model policy's escalations are final
                    self.recorder.book.close(action.issue, action.worker)
                return _describe(action)
            case Note():
                if action.audit:
                    self.recorder.bookkeeping(action.issue, action.detection, action.details)
                return {"issue": action.issue, "detection": action.detection, **_brief(action)}
            case StartRetrain():
                try:
                    window = self.monitor.current_window()
                    self.runner.start(self.state.serving, action.reason, window)
                except OSError as exc:  # e.g. a full disk: worth another attempt
                    error = f"cannot start: {exc}"
                    self.post(RetrainFinished(promote=False, error=error, transient=True))
                return {"action": "retrain", "issue": action.issue, "reason": action.reason}
            case Deploy():
                self.deployer.deploy(action)
                return {"action": "deploy", "version": action.version, "issue": action.issue}
        raise TypeError(f"unknown model action {action!r}")  # pragma: no cover

    def _restore(self, state: ModelState) -> ModelState:
        path = self.cfg.state_dir / MODEL_STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as exc:
            logger.error("ignoring unreadable {}: {}", path, exc)
            return state
        return state.restore(data) if isinstance(data, dict) else state

    def _save(self) -> None:
        with contextlib.suppress(OSError):  # a full disk must not stop healing
            atomic_write_json(self.cfg.state_dir / MODEL_STATE_FILE, self.state.durable())

    def close(self) -> None:
        """Stop a retrain job still running (the daemon is stopping)."""
        self.runner.close()


def _describe(report: Report) -> dict[str, Any]:
    return {
        "issue": report.issue,
        "detection": report.detection,
        "action": report.action,
        "outcome": report.outcome or None,
        **_brief(report),
    }


def _brief(action: Report | Note) -> dict[str, Any]:
    """The few details a person running ``selfheal check`` wants to read in one line."""
    keep = ("score", "reason", "r2", "rows", "fixes", "streak", "needed", "version", "file")
    brief = {k: action.details[k] for k in keep if k in action.details}
    metric = action.details.get("metric")
    if isinstance(metric, str) and metric in action.details:
        brief["metric"], brief[metric] = metric, action.details[metric]
    return brief
