"""The control endpoint on the Ray backend without a cluster: ``/status`` from the loop's last view,
and each action carried out by ``RayOperations`` on a stand-in loop (a real registry and audit
trail on disk, a fake cluster that records what it was asked)."""

from __future__ import annotations

import queue
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from selfheal_daemon.config import parse_config
from selfheal_daemon.control.server import ActionRefused
from selfheal_daemon.daemon.operations import FOLLOW_UP_S, ControlRequest
from selfheal_daemon.daemon.ray_control import RayControl, RayOperations, RollbackDone
from selfheal_daemon.lifecycle.events import DeployRequested, HealingPaused, ModelState
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.audit import AuditLog, read_records
from selfheal_daemon.record.metrics import DaemonMetrics
from selfheal_daemon.record.recorder import Recorder
from selfheal_daemon.supervision.ray_policy import (
    ClusterView,
    NodeView,
    RayState,
    ReplicaView,
    SwapResult,
)
from tests.fakes import FakeClock

HEAD, SECOND = "n-head", "n-second"


class FakeCluster:
    address = "127.0.0.1:6379"

    def __init__(self) -> None:
        self.restarts: list[tuple[str, str]] = []
        self.killed: list[str] = []
        self.promoted: list[tuple[str, str | None]] = []

    def restart_replicas(self, version: str, sha256: str) -> str:
        self.restarts.append((version, sha256))
        return "attempt"

    def kill_replica(self, replica: str) -> None:
        self.killed.append(replica)

    def promote(self, _registry: Any, version: str, rollback_to: str | None, _t: float) -> Any:
        self.promoted.append((version, rollback_to))
        return SwapResult(True, version, 0.5, ("a", "b"), {}, ())


class FakeHealing:
    def __init__(self, serving: str) -> None:
        self.state = self.snapshot = ModelState(serving=serving, last_good="v1")
        self.events: list[Any] = []

    def handle(self, event: Any) -> list[dict[str, Any]]:
        self.events.append(event)
        return []


class FakeLoop:
    """What RayControl and RayOperations read of a RayLoop."""

    def __init__(self, tmp: Path) -> None:
        self.cfg = parse_config({"state_dir": str(tmp), "backend": {"kind": "ray"}})
        self.clock = FakeClock()
        self.registry = ModelRegistry(self.cfg.registry_dir)
        for _ in range(2):
            self.registry.register(
                {"stand-in": "model"},
                metrics={"r2": 0.8},
                reference=np.zeros((2, 2)),
                data_fingerprint="f",
                data_rows=10,
                parent=None,
                origin="test",
            )
        self.registry.set_alias("current", "v2")
        self.registry.set_alias("last_good", "v1")
        audit = AuditLog(self.cfg.audit_dir, clock=self.clock)
        self.recorder = Recorder(audit, self.clock, DaemonMetrics())
        self.cluster = FakeCluster()
        self.healing = FakeHealing("v2")
        self.events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.state = RayState("v2", "v1", replicas=frozenset({"a", "b"}))
        self.view: ClusterView | None = view(("a", "v2", HEAD), ("b", "v2", SECOND))
        self.started_at = self.clock.utcnow()
        self.changed: list[tuple[str, str | None]] = []

    def uptime_s(self) -> float:
        return 12.5

    def model_changed(self, serving: str, last_good: str | None) -> None:
        self.changed.append((serving, last_good))
        self.state = RayState(serving, last_good, replicas=self.state.replicas)


def view(*replicas: tuple[str, str, str], dead: tuple[str, ...] = ()) -> ClusterView:
    return ClusterView(
        at=1000.0,
        status="RUNNING",
        message="",
        target=2,
        replica_states={"RUNNING": len(replicas)},
        replicas=tuple(
            ReplicaView(rid, version, "sha", 100 + i, node)
            for i, (rid, version, node) in enumerate(replicas)
        ),
        nodes=(
            NodeView(HEAD, "127.0.0.1", True, 1.0),
            NodeView(SECOND, "127.0.0.2", SECOND not in dead, 1.0),
        ),
    )


@pytest.fixture
def loop(tmp_path: Path) -> FakeLoop:
    return FakeLoop(tmp_path)


def act(ops: RayOperations, action: str, **params: Any) -> dict[str, Any]:
    request = ControlRequest(action, params)
    ops.serve(request)
    return request.reply.result(timeout=0)


def refused(ops: RayOperations, action: str, **params: Any) -> ActionRefused:
    request = ControlRequest(action, params)
    ops.serve(request)
    with pytest.raises(ActionRefused) as info:
        request.reply.result(timeout=0)
    return info.value


def manual(loop: FakeLoop) -> list[tuple[str, str | None]]:
    return [
        (str(r["action"]), r["outcome"])
        for r in read_records(loop.cfg.audit_dir)
        if r["issue"] == "manual_action"
    ]


def test_status_shows_each_replica_where_it_runs_and_each_node(loop: FakeLoop) -> None:
    loop.view = view(("a", "v2", HEAD), ("b", "v1", HEAD), dead=(SECOND,))
    loop.clock.advance(0.5)  # the view is 0.5 s old
    status = RayControl(loop).status()  # type: ignore[arg-type]
    svc = status["service"]
    assert (svc["backend"], svc["address"], svc["application"]) == (
        "ray",
        "127.0.0.1:6379",
        "selfheal",
    )
    assert (svc["workers_ready"], svc["workers_total"], svc["seen_s_ago"]) == (1, 2, 0.5)
    assert [(r["replica"], r["state"], r["model_version"]) for r in status["replicas"]] == [
        ("a", "ready", "v2"),
        ("b", "updating", "v1"),
    ]
    assert [(n["node"], n["alive"], n["replicas"]) for n in status["nodes"]] == [
        (HEAD, True, 2),
        (SECOND, False, 0),
    ]
    assert status["workers"] == []
    assert status["daemon"]["backend"] == "ray"
    assert status["model"]["serving"] == "v2"
    assert status["model"]["last_good"]["version"] == "v1"


def test_status_before_the_first_view_lists_nothing(loop: FakeLoop) -> None:
    loop.view = None
    status = RayControl(loop).status()  # type: ignore[arg-type]
    assert status["replicas"] == status["nodes"] == []
    assert status["service"]["application_status"] == "UNKNOWN"


def test_restart_replaces_every_replica_and_resolves_once_none_from_before_is_left(
    loop: FakeLoop,
) -> None:
    ops = RayOperations(loop)  # type: ignore[arg-type]
    assert act(ops, "restart")["accepted"]
    sha = loop.registry.info("v2").meta["sha256"]
    assert loop.cluster.restarts == [("v2", sha)]
    assert loop.state.retiring == {"a", "b"}  # their going is no incident
    assert "under way" in str(refused(ops, "restart"))
    ops.check_follow_ups(view(("a", "v2", HEAD), ("c", "v2", SECOND)), loop.state)
    assert manual(loop) == [("restart", None)]
    ops.check_follow_ups(view(("c", "v2", SECOND), ("d", "v2", HEAD)), loop.state)
    assert manual(loop) == [("restart", None), ("restart", "resolved")]
    assert ops.busy == ""


def test_a_restart_the_controller_does_not_take_is_refused_and_recorded_failed(
    loop: FakeLoop,
) -> None:
    def unreachable(_version: str, _sha256: str) -> str:
        raise ConnectionError("GCS unreachable")

    loop.cluster.restart_replicas = unreachable  # type: ignore[method-assign]
    ops = RayOperations(loop)  # type: ignore[arg-type]
    answer = refused(ops, "restart")
    assert answer.status == 503
    assert "GCS unreachable" in str(answer)
    assert loop.state.retiring == frozenset()  # a replica lost now is an incident again
    assert manual(loop) == [("restart", None), ("restart", "failed")]
    assert ops.busy == ""


def test_a_restart_not_done_in_time_is_recorded_as_failed(loop: FakeLoop) -> None:
    ops = RayOperations(loop)  # type: ignore[arg-type]
    act(ops, "restart")
    loop.clock.advance(FOLLOW_UP_S + 1)
    ops.check_follow_ups(loop.view, loop.state)
    assert manual(loop) == [("restart", None), ("restart", "failed")]


def test_rollback_swaps_on_a_thread_then_moves_current_and_resolves(loop: FakeLoop) -> None:
    ops = RayOperations(loop)  # type: ignore[arg-type]
    answer = act(ops, "rollback")
    assert answer["to"] == "v1"
    done = loop.events.get(timeout=5)
    assert isinstance(done, RollbackDone)
    assert loop.cluster.promoted == [("v1", "v2")]  # back to v2 should a replica refuse
    ops.rollback_done(done)
    assert loop.registry.alias("current") == "v1"
    assert loop.changed == [("v1", "v1")]
    assert manual(loop) == [("rollback", None), ("rollback", "resolved")]


def test_a_refused_rollback_is_failed_and_leaves_current(loop: FakeLoop) -> None:
    ops = RayOperations(loop)  # type: ignore[arg-type]
    act(ops, "rollback", to="v1")
    loop.events.get(timeout=5)
    refusal = SwapResult(False, "v1", 0.4, (), {"b": "sha256 mismatch"}, ())
    ops.rollback_done(RollbackDone("v1", refusal))
    assert loop.registry.alias("current") == "v2"
    records = [r for r in read_records(loop.cfg.audit_dir) if r["issue"] == "manual_action"]
    assert records[-1]["outcome"] == "failed"
    assert records[-1]["details"]["reason"] == "b: sha256 mismatch"


def test_rollback_targets_are_checked_as_on_local_workers(loop: FakeLoop) -> None:
    ops = RayOperations(loop)  # type: ignore[arg-type]
    assert "already being served" in str(refused(ops, "rollback", to="v2"))
    assert refused(ops, "rollback", to="v9").status == 409
    assert refused(ops, "rollback", to="../x").status == 422
    loop.healing.state = ModelState(serving="v2", deploying="v3")
    assert "deployment of v3" in str(refused(ops, "rollback", to="v1"))
    assert loop.cluster.promoted == []


def test_pause_reaches_the_policy_state_and_the_model_healing(loop: FakeLoop) -> None:
    ops = RayOperations(loop)  # type: ignore[arg-type]
    assert act(ops, "pause")["paused"] is True
    assert loop.state.paused
    assert loop.healing.events == [HealingPaused(paused=True)]
    assert "already paused" in str(refused(ops, "pause"))
    assert "resume first" in str(refused(ops, "drill", kind="crash"))
    act(ops, "resume")
    assert not loop.state.paused


def test_the_crash_drill_kills_the_lowest_replica_and_marks_its_incident(loop: FakeLoop) -> None:
    ops = RayOperations(loop)  # type: ignore[arg-type]
    answer = act(ops, "drill", kind="crash")
    assert loop.cluster.killed == ["a"]
    assert (answer["issue"], answer["scope"], answer["worker"]) == (
        "service_crash",
        "replica:a",
        None,
    )
    opened = loop.recorder.record(
        "service_crash", "replica:a", detection="replica_exited", action="ray_restarts"
    )
    assert opened["drill"] is True


def test_drills_that_signal_a_local_process_are_refused_with_why(loop: FakeLoop) -> None:
    ops = RayOperations(loop)  # type: ignore[arg-type]
    for kind in ("hang", "leak"):
        assert "may run on any node" in str(refused(ops, "drill", kind=kind))
    assert loop.cluster.killed == []


def test_a_model_drill_deploys_a_broken_version_through_the_model_healing(loop: FakeLoop) -> None:
    ops = RayOperations(loop)  # type: ignore[arg-type]
    answer = act(ops, "drill", kind="bad-model")
    (event,) = loop.healing.events
    assert isinstance(event, DeployRequested)
    assert (event.version, event.issue) == (answer["details"]["deployed"], "drill")
    loop.view = view(("a", "v2", HEAD))  # one replica short: not settled
    assert "every replica on the serving one" in str(refused(ops, "drill", kind="bad-model"))


def test_check_runs_the_monitoring_pass_and_waits_for_the_decisions(loop: FakeLoop) -> None:
    class Passing(FakeHealing):
        def monitor_pass(self, reply: Future[list[dict[str, Any]]]) -> dict[str, Any]:
            reply.set_result([{"issue": "data_drift"}])
            return {"requests": 3}

    loop.healing = Passing("v2")
    result = RayControl(loop).act("check", {})  # type: ignore[arg-type]
    assert result == {"collected": {"requests": 3}, "decided": [{"issue": "data_drift"}]}
