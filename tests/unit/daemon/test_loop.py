"""The daemon loop's own duties, with fakes for every effect: applying actions, surviving a failed
one, talking to systemd."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

from selfheal_daemon.config import parse_config
from selfheal_daemon.daemon.loop import TICK_S, Daemon
from selfheal_daemon.record.audit import AuditLog
from selfheal_daemon.record.metrics import DaemonMetrics
from selfheal_daemon.record.recorder import Recorder
from selfheal_daemon.supervision.events import (
    ConfirmModel,
    ModelChanged,
    ProbeResult,
    RollbackModel,
    StartRequested,
    Tick,
    WorkerExited,
    WorkerReady,
    WorkerSpawned,
)
from selfheal_daemon.supervision.probe import HealthProbe
from tests.fakes import FakeClock, FakeNotifier, FakePool, FakeRegistry


def build(
    tmp: Path,
    pool: FakePool | None = None,
    registry: FakeRegistry | None = None,
    workers: int = 1,
) -> tuple[Daemon, queue.SimpleQueue[Any], FakeNotifier]:
    cfg = parse_config({"service": {"workers": workers}, "state_dir": str(tmp)})
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    notifier = FakeNotifier()
    clock = FakeClock()
    daemon = Daemon(
        cfg,
        clock=clock,
        recorder=Recorder(AuditLog(cfg.audit_dir, clock=clock), clock, DaemonMetrics()),
        pool=pool or FakePool(),  # type: ignore[arg-type]
        probe=HealthProbe(0.1),
        registry=registry or FakeRegistry(),  # type: ignore[arg-type]
        notifier=notifier,  # type: ignore[arg-type]
        events=events,
    )
    return daemon, events, notifier


def drain(events: queue.SimpleQueue[Any]) -> list[Any]:
    out = []
    while not events.empty():
        out.append(events.get_nowait())
    return out


def test_start_that_cannot_spawn_is_reported_as_a_crash(tmp_path: Path) -> None:
    """A start that cannot create its process comes back as WorkerExited: the policy backs off."""
    daemon, events, _ = build(tmp_path, FakePool(fail_start=OSError("fork: out of memory")))
    daemon._handle(StartRequested())
    (exited,) = drain(events)
    assert isinstance(exited, WorkerExited)
    assert exited.pid is None
    assert "out of memory" in exited.detail


def test_an_unexpected_error_in_an_action_does_not_stop_the_loop(tmp_path: Path) -> None:
    """A bug in one action is logged and the loop carries on with the next event."""
    daemon, events, _ = build(tmp_path, FakePool(fail_start=RuntimeError("surprise")))
    daemon._handle(StartRequested())  # must not raise
    assert drain(events) == []
    assert daemon.state.slot(0).state.value == "starting"


def test_rollback_points_current_back_and_restarts_the_template(tmp_path: Path) -> None:
    """RollbackModel sets the alias, switches the pool's version, and reports the change."""
    pool, registry = FakePool(version="v3"), FakeRegistry(current="v3", last_good="v2")
    daemon, events, _ = build(tmp_path, pool, registry)
    daemon.executor.apply(RollbackModel(to="v2", reason="crash loop"))
    assert registry.aliases["current"] == "v2"
    assert pool.versions == ["v2"]
    assert drain(events) == [ModelChanged(serving="v2", last_good="v2")]


def test_confirmation_moves_last_good(tmp_path: Path) -> None:
    """ConfirmModel makes the served version last_good and reports it."""
    registry = FakeRegistry(current="v3", last_good="v2")
    daemon, events, _ = build(tmp_path, registry=registry)
    daemon.executor.apply(ConfirmModel("v3"))
    assert registry.aliases["last_good"] == "v3"
    assert drain(events) == [ModelChanged(serving="v3", last_good="v3")]


def test_systemd_hears_ready_once_all_workers_serve_then_status_changes(tmp_path: Path) -> None:
    """READY goes out once, when the last worker is ready; STATUS follows every change of count."""
    daemon, _, notifier = build(tmp_path, workers=2)
    daemon._handle(StartRequested())
    for worker, pid in ((0, 10), (1, 11)):
        daemon._handle(WorkerSpawned(worker, pid))
    daemon._handle(WorkerReady(0, 10))
    assert not [m for m in notifier.sent if m.startswith("READY")]
    daemon._handle(WorkerReady(1, 11))
    assert [m for m in notifier.sent if m.startswith("READY")] == [
        "READY=1 2/2 workers ready, model v1"
    ]
    daemon._handle(WorkerExited(1, 11, -9))
    assert notifier.sent[-1] == "STATUS=1/2 workers ready, model v1"
    daemon._handle(WorkerSpawned(1, 12))
    daemon._handle(WorkerReady(1, 12))
    assert notifier.sent[-1] == "STATUS=2/2 workers ready, model v1"
    assert len([m for m in notifier.sent if m.startswith("READY")]) == 1


def test_recorder_remembers_the_last_checks_from_the_trail_and_new_records(tmp_path: Path) -> None:
    """The last drift and quality results and the drift scores come from the trail once at start
    and then from each record written, so /status never re-reads the files."""
    from selfheal_daemon.record.audit import read_records
    from selfheal_daemon.record.metrics import DaemonMetrics
    from selfheal_daemon.record.recorder import Recorder

    clock = FakeClock()
    first = Recorder(AuditLog(tmp_path, clock=clock), clock, DaemonMetrics())
    first.record("data_drift", None, detection="psi", action="none", details={"score": 0.1})
    first.audit.close()
    second = Recorder(AuditLog(tmp_path, clock=clock), clock, DaemonMetrics())
    second.seed(read_records(tmp_path))
    assert second.latest["data_drift"]["score"] == 0.1
    second.record("data_quality", None, detection="missing", action="fix", details={"rows": 3})
    second.record("data_drift", None, detection="psi", action="none", details={"score": 0.4})
    assert second.latest["data_quality"]["rows"] == 3
    assert [p["score"] for p in second.drift_series] == [0.1, 0.4]
    second.audit.close()


def test_ticks_come_on_time_however_busy_the_queue(tmp_path: Path) -> None:
    """Timers (backoff, stability) are checked every TICK_S even while events keep arriving."""
    daemon, events, _ = build(tmp_path)
    clock = daemon.clock
    assert isinstance(clock, FakeClock)
    assert isinstance(daemon.next_item(), Tick)  # the first one at once
    for _ in range(3):
        events.put(ProbeResult(0, 1, ok=True, detail="", latency_s=0.001))
    assert isinstance(daemon.next_item(), ProbeResult)
    clock.advance(TICK_S)
    assert isinstance(daemon.next_item(), Tick)  # due: before the events still queued
    assert isinstance(daemon.next_item(), ProbeResult)
    assert isinstance(daemon.next_item(), ProbeResult)
