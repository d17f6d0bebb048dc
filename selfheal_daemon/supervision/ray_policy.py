"""What the daemon makes of a Ray cluster's state: incidents, their recovery, a crash loop.

Ray replaces a replica that dies and reschedules the replicas of a node that is lost; the daemon
does not restart anything itself. What it owes the operator is the record: each replica failure
and each lost node is an incident (``service_crash``, detection ``replica_exited`` or
``node_lost``) that resolves, with its time to recover, once every replica Serve wants runs and
reports the serving version again. And one decision Ray cannot take: replicas that keep failing
soon after a model change (``restart.budget`` failures within ``restart.window_s``) are a
``crash_loop`` caused by the model, so the daemon rolls back to ``last_good``; without a recent
change it escalates, once; while healing is paused it is recorded as ``skipped``. Replicas in
``retiring`` (replaced on purpose, by ``selfheal restart``) leave without an incident.

A pure function of frozen views, state and ``now``; ``ray_cluster.RayCluster.view`` reads the
views, the daemon's loop carries out the actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

SERVICE_CRASH = "service_crash"
CRASH_LOOP = "crash_loop"


@dataclass(frozen=True)
class ReplicaView:
    """One live replica as the hub knows it (its last report)."""

    replica: str
    version: str | None
    sha256: str | None
    pid: int | None
    node: str | None
    refused: dict[str, str] | None = None


@dataclass(frozen=True)
class NodeView:
    node: str
    address: str
    alive: bool
    cpus: float


@dataclass(frozen=True)
class ClusterView:
    """The cluster at ``at`` (monotonic): the application's status, how many replicas Serve
    wants and runs per state, each live replica's report, and the nodes."""

    at: float
    status: str
    message: str
    target: int
    replica_states: dict[str, int]
    replicas: tuple[ReplicaView, ...]
    nodes: tuple[NodeView, ...]

    @property
    def running(self) -> int:
        return self.replica_states.get("RUNNING", 0)

    def settled(self, version: str | None) -> bool:
        """Every replica Serve wants runs and reports ``version``."""
        return (
            self.running >= self.target
            and len(self.replicas) >= self.target
            and all(r.version == version for r in self.replicas)
        )


@dataclass(frozen=True)
class SwapResult:
    """How a swap ended: ``ok`` once every replica reports ``version``; else who refused."""

    ok: bool
    version: str
    seconds: float
    on_version: tuple[str, ...]
    refused: dict[str, str]  # replica -> reason
    pending: tuple[str, ...]  # replicas still on another version at the deadline


@dataclass(frozen=True)
class RayPolicyConfig:
    budget: int = 5  # replica failures within window_s after a model change: a crash loop
    window_s: float = 60.0


@dataclass(frozen=True)
class Outage:
    """An open incident: what was lost, when it was seen gone, and what it was."""

    scope: str  # "replica:<id>" or "node:<id>"
    detection: str
    seen_at: float
    details: dict[str, Any]


@dataclass(frozen=True)
class Incident:
    """An audit record to write: one step of incident ``(issue, scope)``."""

    issue: str
    scope: str
    detection: str
    action: str
    details: dict[str, Any]
    outcome: str | None = None


@dataclass(frozen=True)
class RollBack:
    """Serve ``version`` on every replica again (a crash loop after a model change)."""

    version: str
    reason: str


@dataclass(frozen=True)
class RayState:
    serving: str | None
    last_good: str | None
    replicas: frozenset[str] | None = None  # live replica ids at the last view (None: no view)
    nodes: frozenset[str] = frozenset()  # nodes alive at the last view
    replica_nodes: dict[str, str | None] = field(default_factory=dict)
    outages: tuple[Outage, ...] = ()
    failures: tuple[float, ...] = ()  # when replicas failed, since the last model change
    changed_at: float | None = None  # when the serving version last changed
    crash_loop: bool = False
    paused: bool = False  # healing paused: a crash loop is recorded, not rolled back
    retiring: frozenset[str] = frozenset()  # replicas leaving on purpose (a restart)


@dataclass(frozen=True)
class Decision:
    state: RayState
    actions: tuple[Incident | RollBack, ...]


def model_changed(state: RayState, serving: str, last_good: str | None, now: float) -> RayState:
    """A new serving version: failures from now on count against it."""
    return replace(
        state, serving=serving, last_good=last_good, changed_at=now, failures=(), crash_loop=False
    )


def observe(view: ClusterView, state: RayState, cfg: RayPolicyConfig) -> Decision:
    """The incidents ``view`` opens or resolves, and a rollback on a crash loop."""
    now = view.at
    live = {r.replica: r for r in view.replicas}
    alive_nodes = frozenset(n.node for n in view.nodes if n.alive)
    actions: list[Incident | RollBack] = []
    outages = list(state.outages)
    failures = [t for t in state.failures if now - t <= cfg.window_s]
    if state.replicas is not None:
        for node in sorted(state.nodes - alive_nodes):
            on_it = sorted(r for r, n in state.replica_nodes.items() if n == node)
            lost: dict[str, Any] = {"node": node, "replicas": on_it}
            outages.append(Outage(f"node:{node}", "node_lost", now, lost))
            actions.append(
                Incident(SERVICE_CRASH, f"node:{node}", "node_lost", "ray_reschedules", lost)
            )
        for replica in sorted(state.replicas - set(live) - state.retiring):
            exited: dict[str, Any] = {
                "replica": replica,
                "node": state.replica_nodes.get(replica),
                "version": state.serving,
            }
            outages.append(Outage(f"replica:{replica}", "replica_exited", now, exited))
            actions.append(
                Incident(
                    SERVICE_CRASH, f"replica:{replica}", "replica_exited", "ray_restarts", exited
                )
            )
            failures.append(now)
    if outages and view.settled(state.serving):
        replacements = sorted(set(live) - (state.replicas or frozenset()))
        for outage in outages:
            details = {
                **outage.details,
                "recovered_s": round(now - outage.seen_at, 3),
                "replicas_now": sorted(live),
                "new_replicas": replacements,
            }
            actions.append(
                Incident(
                    SERVICE_CRASH,
                    outage.scope,
                    outage.detection,
                    "replaced_by_ray" if outage.detection == "replica_exited" else "rescheduled",
                    details,
                    outcome="resolved",
                )
            )
        outages = []
    crash_loop = state.crash_loop
    if not crash_loop and len(failures) >= cfg.budget:
        crash_loop = True
        actions.extend(_crash_loop(state, failures, now, cfg))
    new_state = replace(
        state,
        replicas=frozenset(live),
        nodes=alive_nodes,
        replica_nodes={r: v.node for r, v in live.items()},
        outages=tuple(outages),
        failures=tuple(failures),
        crash_loop=crash_loop,
        retiring=state.retiring & frozenset(live),
    )
    return Decision(new_state, tuple(actions))


def _crash_loop(
    state: RayState, failures: list[float], now: float, cfg: RayPolicyConfig
) -> list[Incident | RollBack]:
    details: dict[str, Any] = {
        "failures": len(failures),
        "window_s": cfg.window_s,
        "serving": state.serving,
    }
    recent = state.changed_at is not None and now - state.changed_at <= cfg.window_s
    target = state.last_good
    if state.paused:
        details["reason"] = "healing paused"
        skipped = Incident(
            CRASH_LOOP,
            "replicas",
            "replica_failures_over_budget",
            "none",
            details,
            outcome="skipped",
        )
        return [skipped]
    if recent and target is not None and target != state.serving:
        details["rollback_to"] = target
        reason = f"{len(failures)} replica failures within {cfg.window_s:g} s of serving "
        reason += f"{state.serving}"
        return [
            Incident(CRASH_LOOP, "replicas", "replica_failures_over_budget", "rollback", details),
            RollBack(target, reason),
        ]
    details["reason"] = (
        "no recent model change to roll back" if not recent else "no other version to roll back to"
    )
    return [
        Incident(
            CRASH_LOOP,
            "replicas",
            "replica_failures_over_budget",
            "escalate",
            details,
            outcome="escalated",
        )
    ]
