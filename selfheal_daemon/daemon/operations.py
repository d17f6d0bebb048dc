"""What a person asks of the daemon through the control endpoint, carried out on the loop.

``ControlActions`` is what both backends do alike (dispatch, retrain, pause, a rollback's target,
a drill's steps); ``Operations`` carries out control requests on local workers on the loop
thread (pause, resume, restart, rollback, drills) and follows each until it is done: a manual
restart resolves once every worker was replaced, a rollback once every worker serves the target
version; a follow-up that does not finish in time is recorded as failed.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from loguru import logger

from selfheal_daemon.clock import Clock
from selfheal_daemon.config import Config
from selfheal_daemon.control.server import ActionRefused
from selfheal_daemon.daemon import drills
from selfheal_daemon.errors import SelfhealError
from selfheal_daemon.lifecycle.events import (
    DeployRequested,
    ModelEvent,
    ModelState,
    RetrainRequested,
)
from selfheal_daemon.model.registry import ModelRegistry, validate_version
from selfheal_daemon.record.audit import Scope, format_ts
from selfheal_daemon.record.recorder import Recorder
from selfheal_daemon.supervision.events import (
    Event,
    ManualRestart,
    ModelChanged,
    PauseHealing,
    ResumeHealing,
    RollbackModel,
)
from selfheal_daemon.supervision.pool import WorkerPool
from selfheal_daemon.supervision.state import SupervisorState
from selfheal_daemon.supervision.states import WorkerState

FOLLOW_UP_S = 300.0  # a manual restart or rollback not done by then is recorded as failed


@dataclass(frozen=True)
class ControlRequest:
    """An action asked for through the control endpoint; the loop answers through ``reply``."""

    action: str
    params: dict[str, Any]
    reply: Future[dict[str, Any]] = field(default_factory=Future, compare=False)


@dataclass
class FollowUp:
    """An incident that resolves when ``done(state)`` holds; failed after ``deadline``."""

    issue: str
    scope: Scope
    detection: str
    action: str
    done: Callable[[SupervisorState], bool]
    deadline: float
    manual: bool


class _Deadline(Protocol):
    deadline: float


Due = TypeVar("Due", bound=_Deadline)


def settled(
    items: list[Due], done: Callable[[Due], bool], now: float
) -> list[tuple[Due, str, dict[str, Any]]]:
    """The follow-ups that ended (taken out of ``items``): resolved when ``done``, failed once
    past their deadline; each with its outcome and details."""
    ended: list[tuple[Due, str, dict[str, Any]]] = []
    for item in list(items):
        if done(item):
            ended.append((item, "resolved", {}))
        elif now > item.deadline:
            ended.append((item, "failed", {"reason": f"not done within {FOLLOW_UP_S:.0f} s"}))
        else:
            continue
        items.remove(item)
    return ended


class ControlActions:
    """What both backends do alike with a control request, on the loop thread: dispatch it and
    answer it, retrain, pause and resume, check a rollback target, run a drill's plan. A backend
    says how to restart, roll back, pause and plan a drill."""

    cfg: Config
    clock: Clock
    registry: ModelRegistry
    recorder: Recorder
    model: Callable[[ModelEvent], list[dict[str, Any]]]
    model_state: Callable[[], ModelState]

    def serve(self, request: ControlRequest) -> None:
        try:
            result = self._dispatch(request.action, request.params)
        except ActionRefused as exc:
            request.reply.set_exception(exc)
        except (SelfhealError, OSError, ValueError) as exc:
            logger.error("control action {} failed: {}", request.action, exc)
            request.reply.set_exception(ActionRefused(f"{request.action} failed: {exc}", 500))
        else:
            request.reply.set_result(result)

    def _dispatch(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        match action:
            case "pause":
                return self._pause(paused=True)
            case "resume":
                return self._pause(paused=False)
            case "restart":
                return self._restart()
            case "rollback":
                return self._rollback(params.get("to"))
            case "drill":
                return self._drill(str(params.get("kind", "")))
            case "retrain":
                return self._retrain()
        raise ActionRefused(f"unknown action {action!r}", 404)

    # ----- what a backend says ---------------------------------------------------------------
    def paused(self) -> bool:
        raise NotImplementedError

    def set_paused(self, paused: bool) -> None:
        raise NotImplementedError

    def _restart(self) -> dict[str, Any]:
        raise NotImplementedError

    def _rollback(self, to: object) -> dict[str, Any]:
        raise NotImplementedError

    def _plan(self, kind: str) -> drills.Plan:
        raise NotImplementedError

    # ----- alike on both ---------------------------------------------------------------------
    def _retrain(self) -> dict[str, Any]:
        model = self.model_state()
        if model.job_issue:
            raise ActionRefused("a retrain is already running; see selfheal status", 409)
        if model.deploying:
            raise ActionRefused(f"a deployment of {model.deploying} is in progress", 409)
        done = self.model(RetrainRequested(reason="manual retrain (control endpoint)"))
        return {"accepted": True, "started": done}

    def _manual(
        self, scope: str, action: str, details: dict[str, Any], outcome: str | None = None
    ) -> dict[str, Any]:
        return self.recorder.record(
            "manual_action",
            scope,
            detection="operator_request",
            action=action,
            details=details,
            outcome=outcome,
            manual=True,
        )

    def _pause(self, *, paused: bool) -> dict[str, Any]:
        if self.paused() == paused:
            raise ActionRefused(f"healing is already {'paused' if paused else 'running'}")
        word = "pause" if paused else "resume"
        record = self._manual(word, word, {}, outcome="resolved")
        self.set_paused(paused)
        logger.warning("healing {} by a person", "paused" if paused else "resumed")
        return {"incident_id": record["incident_id"], "paused": paused}

    def rollback_target(self, to: object, serving: str | None, last_good: str | None) -> str:
        """The version a rollback goes to (``last_good`` when ``to`` is absent), checked: a
        valid name, intact on disk, and not the one being served."""
        if to is None:
            target = last_good
            if not target:
                raise ActionRefused("there is no last_good version to roll back to")
        else:  # only an absent ``to`` means last_good: "" or 0 is a mistake to name, not a default
            target = to if isinstance(to, str) else repr(to)
        try:
            validate_version(target)
        except SelfhealError as exc:
            raise ActionRefused(str(exc), 422) from None
        check = self.registry.verify_version(target)
        if not check.ok:
            raise ActionRefused(f"cannot roll back to {target}: {check.problem}", 409)
        if target == serving:
            raise ActionRefused(f"{target} is already being served")
        return target

    def _drill(self, kind: str) -> dict[str, Any]:
        if kind not in drills.KINDS:
            raise ActionRefused(f"unknown drill {kind!r}; one of {', '.join(drills.KINDS)}", 422)
        if self.paused():
            raise ActionRefused("healing is paused: a drill would not be healed; resume first")
        try:
            plan = self._plan(kind)
            self.recorder.book.expect_drill(plan.issue, plan.scope)
            injected_at = format_ts(self.clock.utcnow())
            details = plan.inject()
        except drills.DrillRefused as exc:
            raise ActionRefused(str(exc)) from None
        drills.log_injected(kind, details)
        return {
            "accepted": True,
            "kind": kind,
            "issue": plan.issue,
            "worker": plan.scope if isinstance(plan.scope, int) else None,
            "scope": plan.scope,
            "injected_at": injected_at,
            "details": details,
        }

    def model_drill(self, kind: str, serving: str | None) -> drills.Plan:
        """A bad-model or corrupt-artifact drill: a broken version beside ``serving``, deployed."""
        if not serving:
            raise drills.DrillRefused("no version is being served")

        def deploy() -> dict[str, Any]:
            version = drills.register_bad_version(
                self.registry, serving, corrupt=kind == "corrupt-artifact"
            )
            self.model(DeployRequested(version, "drill", f"drill: {kind}"))
            return {"deployed": version, "serving": serving}

        return drills.Plan(kind, "deployment_failure", None, deploy)

    def drift_drill(self) -> drills.Plan:
        if self.model_state().busy:
            raise drills.DrillRefused("a retrain or deployment is running; try again later")

        def inject() -> dict[str, Any]:
            return drills.inject_drift(self.cfg, registry=self.registry)

        return drills.Plan("drift", "data_drift", None, inject)


class Operations(ControlActions):
    """Control requests and their follow-ups on local workers, run on the loop thread only."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Clock,
        pool: WorkerPool,
        registry: ModelRegistry,
        recorder: Recorder,
        handle: Callable[[Event], None],
        state: Callable[[], SupervisorState],
        model: Callable[[ModelEvent], list[dict[str, Any]]] = lambda _e: [],
        model_state: Callable[[], ModelState] | None = None,
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.pool = pool
        self.registry = registry
        self.recorder = recorder
        self.handle = handle
        self.state = state
        self.model = model
        self.model_state = model_state or (lambda: ModelState(serving=self.state().serving))
        self.follow_ups: list[FollowUp] = []

    # ----- follow-ups ------------------------------------------------------------------------
    def follow(
        self,
        issue: str,
        scope: Scope,
        done: Callable[[SupervisorState], bool],
        *,
        detection: str,
        action: str,
        manual: bool = False,
    ) -> None:
        deadline = self.clock.monotonic() + FOLLOW_UP_S
        self.follow_ups.append(FollowUp(issue, scope, detection, action, done, deadline, manual))

    def check_follow_ups(self, state: SupervisorState) -> None:
        ended = settled(self.follow_ups, lambda item: item.done(state), self.clock.monotonic())
        for item, outcome, details in ended:
            self.recorder.record(
                item.issue,
                item.scope,
                detection=item.detection,
                action=item.action,
                details=details,
                outcome=outcome,
                manual=item.manual,
            )

    def all_on(self, version: str) -> Callable[[SupervisorState], bool]:
        """Every slot ready, no successor pending, and every worker serving ``version``."""

        def done(state: SupervisorState) -> bool:
            for slot in state.workers:
                if slot.state is not WorkerState.READY or slot.successor_pid or slot.pid is None:
                    return False
                handle = self.pool.handle(slot.pid)
                if handle is None or handle.version != version:
                    return False
            return True

        return done

    def after_rollback(self, action: RollbackModel) -> None:
        """A rollback that heals an incident resolves it once every worker serves the target."""
        if action.issue and action.issue != "manual_action":
            self.follow(
                action.issue,
                None,
                self.all_on(action.to),
                detection="all_workers_on_version",
                action="rollback",
            )

    # ----- control requests ------------------------------------------------------------------
    def paused(self) -> bool:
        return self.state().paused

    def set_paused(self, paused: bool) -> None:
        self.handle(PauseHealing() if paused else ResumeHealing())

    def _restart(self) -> dict[str, Any]:
        before = {s.pid for s in self.state().workers if s.pid is not None}
        record = self._manual("restart", "restart", {"pids": sorted(before)})

        def replaced(state: SupervisorState) -> bool:
            return all(
                s.state is WorkerState.READY and s.pid not in before and not s.successor_pid
                for s in state.workers
            )

        self.follow(
            "manual_action",
            "restart",
            replaced,
            detection="all_workers_replaced",
            action="restart",
            manual=True,
        )
        self.handle(ManualRestart(reason="manual restart (control endpoint)"))
        return {"accepted": True, "incident_id": record["incident_id"]}

    def _rollback(self, to: object) -> dict[str, Any]:
        state = self.state()
        target = self.rollback_target(to, state.serving, state.last_good)
        record = self._manual("rollback", "rollback", {"from": state.serving, "to": target})
        self.follow(
            "manual_action",
            "rollback",
            self.all_on(target),
            detection="all_workers_on_version",
            action="rollback",
            manual=True,
        )
        self.registry.set_alias("current", target)
        self.pool.set_version(target)
        self.handle(ModelChanged(serving=target, last_good=self.registry.alias("last_good")))
        return {"accepted": True, "incident_id": record["incident_id"], "to": target}

    # ----- drills ----------------------------------------------------------------------------
    def _ready(self, state: SupervisorState) -> list[tuple[int, int]]:
        return [
            (s.worker, s.pid)
            for s in state.workers
            if s.state is WorkerState.READY and s.pid is not None and not s.replacing
        ]

    def _plan(self, kind: str) -> drills.Plan:
        state = self.state()
        if kind in ("bad-model", "corrupt-artifact"):
            settled = state.all_ready and not any(s.replacing or s.stale for s in state.workers)
            if not state.last_good or not settled or self.model_state().busy:
                raise drills.DrillRefused(
                    "a model drill needs a last_good model, every worker ready on the serving one"
                    " and no retrain or deployment running; try again in a few seconds"
                )
            return self.model_drill(kind, state.serving)
        if kind == "drift":
            return self.drift_drill()
        worker, pid = drills.pick_worker(self._ready(state))
        handle = self.pool.handle(pid)
        if handle is None:
            raise drills.DrillRefused(f"worker {worker} (pid {pid}) is gone")
        if kind == "crash":
            return drills.signal_plan(kind, worker, handle, signal.SIGKILL, "service_crash")
        if kind == "hang":
            return drills.signal_plan(kind, worker, handle, signal.SIGSTOP, "service_hang")
        limit = self.cfg.resources.max_rss_mb
        if not limit:
            raise drills.DrillRefused("the leak drill needs resources.max_rss_mb (0 is no limit)")

        def leak() -> dict[str, Any]:
            drills.leak_until_over(handle, limit)
            return {
                "worker": worker,
                "pid": pid,
                "limit_mb": limit,
                "sustained_s": self.cfg.resources.sustained_s,
            }

        return drills.Plan(kind, "resource_limit", worker, leak)
