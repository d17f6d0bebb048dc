"""The control endpoint on the Ray backend: what ``RayLoop`` publishes, and what a person asks.

``RayControl`` answers the reads as ``bridge.DaemonControl`` does, with the replicas and the
nodes in place of the workers; ``/status`` shows the cluster as the loop last saw it (every
``backend.health_check_period_s``), so a read never waits on Ray. ``RayOperations`` carries out
the actions on the loop's thread:

- ``restart``: every replica replaced, one after the other (a new restart generation, which Serve
  rolls out and drains); resolved once no replica from before is left and every replica serves
  the model again. The replicas leaving are no incident.
- ``rollback``: the target published and swapped in place on every replica, on a thread of its
  own; resolved when every replica serves it, failed (every replica back) when one refuses.
- ``pause`` / ``resume``: a crash loop is recorded but not rolled back, and the model's healing
  (retraining, deployments) waits. Ray goes on replacing replicas that die: that is Ray's.
- ``retrain`` and ``check``: as on local workers.
- ``drill``: ``crash`` kills one replica's actor (``ray.kill``, wherever it runs), ``bad-model``,
  ``corrupt-artifact`` and ``drift`` as on local workers. ``hang`` and ``leak`` need a signal to
  a process on this machine, and a replica may run on any node: refused, with why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from loguru import logger

from selfheal_daemon.control.server import ActionRefused
from selfheal_daemon.daemon import drills
from selfheal_daemon.daemon.bridge import ControlReads
from selfheal_daemon.daemon.operations import FOLLOW_UP_S, ControlActions, settled
from selfheal_daemon.lifecycle.events import HealingPaused
from selfheal_daemon.supervision.ray_policy import SERVICE_CRASH, ClusterView, RayState, SwapResult

if TYPE_CHECKING:  # it imports Ray; this module does not, so its logic is tested without it
    from selfheal_daemon.daemon.ray_runner import RayLoop

NOT_ON_RAY = (
    "the {kind} drill signals a process on this machine, and a Ray replica may run on any node;"
    " on the Ray backend use the crash, bad-model, corrupt-artifact or drift drill"
)


class RayControl(ControlReads):
    """Implements ``control.ControlApi`` over a running ``RayLoop``."""

    def __init__(self, loop: RayLoop) -> None:
        super().__init__(loop)
        self.loop = loop

    def status(self) -> dict[str, Any]:
        loop = self.loop
        state, view = loop.state, loop.view
        common = self.common_status(
            serving=state.serving,
            last_good=state.last_good,
            paused=state.paused,
            started_at=loop.started_at,
            uptime_s=loop.uptime_s(),
        )
        replicas = replica_rows(view, state)
        backend = self.cfg.backend
        return {
            "daemon": common.pop("daemon"),
            "service": {
                "host": self.cfg.service.host,
                "port": self.cfg.service.port,
                "backend": "ray",
                "address": loop.cluster.address,
                "application": backend.application,
                "application_status": view.status if view is not None else "UNKNOWN",
                "message": view.message if view is not None else "",
                "seen_s_ago": (
                    round(max(0.0, loop.clock.monotonic() - view.at), 3)
                    if view is not None
                    else None
                ),
                "replica_states": dict(view.replica_states) if view is not None else {},
                "workers_ready": sum(r["state"] == "ready" for r in replicas),
                "workers_total": backend.replicas,
                "in_crash_loop": state.crash_loop,
            },
            "workers": [],
            "replicas": replicas,
            "nodes": node_rows(view),
            **common,
            "cooldowns": {
                "crash_loop": state.crash_loop,
                "restart_times_in_window": len(state.failures),
                "restart_budget": self.cfg.restart.budget,
            },
        }


def replica_rows(view: ClusterView | None, state: RayState) -> list[dict[str, Any]]:
    """Each live replica: where it runs, the version it reports, and ``ready`` when that is the
    one being served (``updating`` while it is another; ``refused`` with the last refusal)."""
    if view is None:
        return []
    rows = []
    for r in view.replicas:
        on_serving = r.version is not None and r.version == state.serving
        rows.append(
            {
                "replica": r.replica,
                "pid": r.pid,
                "node": r.node,
                "state": "ready" if on_serving else "updating",
                "model_version": r.version,
                "refused": (r.refused or {}).get("reason"),
                "retiring": r.replica in state.retiring,
            }
        )
    return rows


def node_rows(view: ClusterView | None) -> list[dict[str, Any]]:
    """Each node Ray knows, alive or not, with the replicas it runs."""
    if view is None:
        return []
    on: dict[str | None, int] = {}
    for r in view.replicas:
        on[r.node] = on.get(r.node, 0) + 1
    return [
        {
            "node": n.node,
            "address": n.address,
            "alive": n.alive,
            "cpus": n.cpus,
            "replicas": on.get(n.node, 0),
        }
        for n in sorted(view.nodes, key=lambda n: (not n.alive, n.node))
    ]


@dataclass(frozen=True)
class RollbackDone:
    """A manual rollback's swap ended (posted by its thread to the loop)."""

    target: str
    result: SwapResult | None
    error: str = ""


@dataclass
class RayFollowUp:
    """A manual action that resolves when ``done(view, state)`` holds; failed after ``deadline``."""

    scope: str
    detection: str
    action: str
    done: Callable[[ClusterView, RayState], bool]
    deadline: float


class RayOperations(ControlActions):
    """Control requests on the Ray backend and their follow-ups, run on the loop thread only."""

    def __init__(self, loop: RayLoop) -> None:
        self.loop = loop
        self.cfg = loop.cfg
        self.clock = loop.clock
        self.registry = loop.registry
        self.recorder = loop.recorder
        self.cluster = loop.cluster
        self.model = loop.healing.handle
        self.model_state = lambda: loop.healing.state
        self.follow_ups: list[RayFollowUp] = []
        self.busy = ""  # the restart or rollback under way ("" when none)

    # ----- what the backend says -------------------------------------------------------------
    def paused(self) -> bool:
        return self.loop.state.paused

    def set_paused(self, paused: bool) -> None:
        self.loop.state = replace(self.loop.state, paused=paused)
        self.loop.healing.handle(HealingPaused(paused=paused))

    def _idle(self, what: str) -> None:
        if self.busy:
            raise ActionRefused(f"a {self.busy} is under way; see selfheal status")
        deploying = self.model_state().deploying
        if deploying:
            raise ActionRefused(f"a deployment of {deploying} is in progress; {what} after it")

    def _restart(self) -> dict[str, Any]:
        self._idle("restart")
        state, view = self.loop.state, self.loop.view
        if state.serving is None or view is None:
            raise ActionRefused("the daemon has not seen the cluster yet; try again", 503)
        before = frozenset(r.replica for r in view.replicas)
        sha256 = str(self.registry.info(state.serving).meta["sha256"])
        record = self._manual("restart", "restart", {"replicas": sorted(before)})
        self.loop.state = replace(state, retiring=state.retiring | before)
        try:
            self.cluster.restart_replicas(state.serving, sha256)
        except Exception as exc:  # the controller unreachable: nothing was asked of the replicas
            self.loop.state = replace(self.loop.state, retiring=state.retiring)
            self._manual("restart", "restart", {"reason": str(exc)}, outcome="failed")
            raise ActionRefused(f"restart failed: {exc}", 503) from None
        logger.warning("restarting every Ray replica ({}) by a person", ", ".join(sorted(before)))

        def replaced(view: ClusterView, state: RayState) -> bool:
            live = {r.replica for r in view.replicas}
            return view.settled(state.serving) and not live & before

        self._follow("restart", "all_replicas_replaced", "restart", replaced)
        self.busy = "restart"
        return {"accepted": True, "incident_id": record["incident_id"]}

    def _rollback(self, to: object) -> dict[str, Any]:
        self._idle("roll back")
        state = self.loop.state
        target = self.rollback_target(to, state.serving, state.last_good)
        record = self._manual("rollback", "rollback", {"from": state.serving, "to": target})
        self.busy = "rollback"
        previous = state.serving
        threading.Thread(
            target=self._swap, args=(target, previous), name="rollback", daemon=True
        ).start()
        return {"accepted": True, "incident_id": record["incident_id"], "to": target}

    def _swap(self, target: str, previous: str | None) -> None:
        """On a thread: every replica to ``target`` (back to ``previous`` on a refusal)."""
        try:
            result = self.cluster.promote(self.registry, target, previous, FOLLOW_UP_S)
        except Exception as exc:  # the loop must hear of the end, or the rollback stays open
            logger.opt(exception=True).error("rollback to {} failed", target)
            self.loop.events.put(RollbackDone(target, None, str(exc)))
            return
        self.loop.events.put(RollbackDone(target, result))

    def rollback_done(self, done: RollbackDone) -> None:
        """The loop's end of a manual rollback: move ``current`` and close the incident."""
        self.busy = ""
        result = done.result
        if result is not None and result.ok:
            self.registry.set_alias("current", done.target)
            self.loop.model_changed(done.target, self.registry.alias("last_good"))
            details: dict[str, Any] = {"to": done.target, "seconds": result.seconds}
            self._manual("rollback", "rollback", details, outcome="resolved")
            logger.success("every Ray replica serves {} again", done.target)
            return
        reason = done.error or (
            "; ".join(f"{r}: {why}" for r, why in sorted(result.refused.items()))
            if result is not None and result.refused
            else f"replicas still not on {done.target}"
        )
        failed = {"to": done.target, "reason": reason}
        self._manual("rollback", "rollback", failed, outcome="failed")

    # ----- follow-ups ------------------------------------------------------------------------
    def _follow(
        self,
        scope: str,
        detection: str,
        action: str,
        done: Callable[[ClusterView, RayState], bool],
    ) -> None:
        deadline = self.clock.monotonic() + FOLLOW_UP_S
        self.follow_ups.append(RayFollowUp(scope, detection, action, done, deadline))

    def check_follow_ups(self, view: ClusterView | None, state: RayState) -> None:
        ended = settled(
            self.follow_ups,
            lambda item: view is not None and item.done(view, state),
            self.clock.monotonic(),
        )
        for item, outcome, details in ended:
            if self.busy == item.scope:
                self.busy = ""
            self.recorder.record(
                "manual_action",
                item.scope,
                detection=item.detection,
                action=item.action,
                details=details,
                outcome=outcome,
                manual=True,
            )

    # ----- drills ----------------------------------------------------------------------------
    def _plan(self, kind: str) -> drills.Plan:
        state, view = self.loop.state, self.loop.view
        if kind in ("hang", "leak"):
            raise drills.DrillRefused(NOT_ON_RAY.format(kind=kind))
        if kind == "drift":
            return self.drift_drill()
        settled = view is not None and view.settled(state.serving) and not self.busy
        if kind in ("bad-model", "corrupt-artifact"):
            if not state.last_good or not settled or self.model_state().busy:
                raise drills.DrillRefused(
                    "a model drill needs a last_good model, every replica on the serving one and"
                    " no retrain or deployment running; try again in a few seconds"
                )
            return self.model_drill(kind, state.serving)
        ready = [
            r for r in (view.replicas if view is not None else ()) if r.version == state.serving
        ]
        if not ready or not settled:
            raise drills.DrillRefused("not every replica is up; wait until the service is up")
        target = min(ready, key=lambda r: r.replica)  # the same one each time, as on workers

        def kill() -> dict[str, Any]:
            try:
                self.cluster.kill_replica(target.replica)
            except Exception as exc:  # gone meanwhile, or the GCS unreachable
                raise drills.DrillRefused(f"cannot kill replica {target.replica}: {exc}") from None
            return {"replica": target.replica, "pid": target.pid, "node": target.node}

        return drills.Plan(kind, SERVICE_CRASH, f"replica:{target.replica}", kill)
