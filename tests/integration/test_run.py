"""The real daemon: train, serve, heal a crash and a hang, and leave no process behind."""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest

from selfheal_daemon.model.registry import ModelRegistry
from tests.daemons import ROW
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def _worker_pids(daemon: Any) -> set[int]:
    return {int(w["pid"]) for w in daemon.workers()}


def test_run_trains_serves_heals_a_crash_and_stops_cleanly(start_daemon: Any) -> None:
    """selfheal run on an empty state dir trains v1, serves it, replaces a kill -9'd worker, and
    SIGTERM stops every process it started."""
    daemon = start_daemon()
    daemon.wait_serving()

    single = daemon.predict()
    assert single.status_code == 200, single.text
    body = single.json()
    assert body["model_version"] == "v1"
    assert len(body["predictions"]) == 1
    batch = daemon.predict({"instances": [ROW, {**ROW, "MedInc": 2.0}]})
    assert batch.status_code == 200
    assert batch.json()["predictions"][0] == pytest.approx(body["predictions"][0])
    assert httpx.post(f"{daemon.url}/predict", json={"MedInc": 1.0}).status_code == 422

    pids = wait_until(lambda: _worker_pids(daemon) if len(_worker_pids(daemon)) == 2 else None, 10)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    replaced = wait_until(
        lambda: (p := _worker_pids(daemon)) and victim not in p and len(p) == 2 and p,
        30,
        what="a replacement worker",
    )
    wait_until(
        lambda: daemon.output().count("ready in") >= 3, 30, what="the replacement to be ready"
    )
    assert "service_crash detected (worker_exit)" in daemon.output()
    for _ in range(20):  # both workers answer again
        assert daemon.predict().status_code == 200

    assert daemon.stop(signal.SIGTERM) == 0
    assert daemon.survivors() == [], daemon.output()
    assert all(p not in daemon.survivors() for p in replaced)
    assert "all workers stopped" in daemon.output()


def test_second_start_reuses_the_registered_model(start_daemon: Any, tmp_path: Any) -> None:
    """A restart of the daemon serves the registered model without training again."""
    first = start_daemon()
    first.wait_serving()
    assert first.stop(signal.SIGINT) == 0  # Ctrl-C stops it like SIGTERM
    assert first.survivors() == []

    second = start_daemon()
    second.wait_serving()
    assert "training:" not in second.output()
    assert second.predict().json()["model_version"] == "v1"
    assert ModelRegistry(second.state_dir / "registry").versions() == ["v1"]
    assert second.stop() == 0
    assert second.survivors() == []


@pytest.mark.slow
def test_hung_worker_is_killed_and_replaced(start_daemon: Any) -> None:
    """A SIGSTOPped worker fails its liveness probes, is killed (TERM cannot reach it, so KILL),
    and a new worker takes its slot while the other keeps serving."""
    daemon = start_daemon(service={"workers": 2, "stop_grace_s": 1.0, "drain_s": 0.5})
    daemon.wait_serving()
    pids = wait_until(lambda: _worker_pids(daemon) if len(_worker_pids(daemon)) == 2 else None, 10)
    victim = min(pids)
    os.kill(victim, signal.SIGSTOP)
    try:
        wait_until(lambda: victim not in _worker_pids(daemon), 30, what="the hung worker to go")
        wait_until(lambda: len(_worker_pids(daemon)) == 2, 30, what="its replacement")
    finally:
        if victim in daemon.survivors():  # never leave a stopped process behind a failed assert
            os.kill(victim, signal.SIGKILL)
    out = daemon.output()
    assert "service_hang detected (liveness_probe_failed)" in out
    assert "ignored TERM; sent KILL" in out
    healthy = max(pids)  # its probes never waited on the hung one's: it was never replaced
    assert healthy in _worker_pids(daemon)
    assert daemon.stop() == 0
    assert daemon.survivors() == []


def test_invalid_config_exits_with_the_key_and_starts_nothing(start_daemon: Any) -> None:
    """A bad value stops `selfheal run` before anything starts, naming the key."""
    daemon = start_daemon(service={"workers": 0})
    assert daemon.proc.wait(timeout=30) == 3
    assert "service.workers" in daemon.output()
    assert not (daemon.state_dir / "registry").exists()
