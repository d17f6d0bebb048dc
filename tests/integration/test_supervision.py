"""Process supervision against real faults: a model that crashes every worker, a daemon killed
with -9, a killed template, and the systemd notify protocol. (Kill -9 of workers under load and a
leaking worker: tests/chaos/test_worker_faults.py, with every invariant checked after each.)"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from sklearn.linear_model import LinearRegression

from selfheal_daemon.config import parse_config
from selfheal_daemon.model.bootstrap import ensure_model
from selfheal_daemon.model.registry import ModelRegistry
from tests.daemons import Poller
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


def _pids(daemon: Any) -> dict[int, int]:
    """slot -> pid of the live workers, from the daemon's own record."""
    return {int(w["worker"]): int(w["pid"]) for w in daemon.workers()}


def _two_workers(daemon: Any) -> dict[int, int]:
    def both() -> dict[int, int] | None:
        pids = _pids(daemon)
        return pids if len(pids) == 2 else None

    return wait_until(both, 20, what="2 workers")


def _registry_with_bad_model(
    state_dir: Path, *, current_is_bad: bool, last_good_is_bad: bool
) -> None:
    """v1 trained normally; v2 a model whose every prediction is NaN (it fails the smoke test)."""
    cfg = parse_config(
        {"state_dir": str(state_dir), "training": {"max_iter": 30, "learning_rate": 0.3}},
        state_dir.parent / "config.toml",
    )
    registry = ModelRegistry(cfg.registry_dir)
    ensure_model(cfg, registry, lambda _m: None)
    bad = LinearRegression()
    bad.coef_ = np.full(8, np.nan)
    bad.intercept_ = 0.0
    bad.n_features_in_ = 8
    v2 = registry.register(
        bad,
        metrics={"r2": 0.9},
        reference=registry.load_reference("v1"),
        data_fingerprint="bad",
        data_rows=1,
        parent="v1",
        origin="test: NaN model",
    )
    if current_is_bad:
        registry.set_alias("current", v2)
    if last_good_is_bad:
        registry.set_alias("last_good", v2)


@pytest.mark.slow
def test_crash_loop_after_a_bad_deployment_rolls_back(start_daemon: Any, tmp_path: Path) -> None:
    """A current model that kills every worker at start drives a crash loop; the daemon escalates
    once, rolls back to last_good and serves it."""
    _registry_with_bad_model(tmp_path / "state", current_is_bad=True, last_good_is_bad=False)
    daemon = start_daemon(
        restart={"budget": 2, "backoff_initial_s": 0.1, "crash_loop_retry_s": 1.0}
    )
    daemon.wait_serving(timeout=120)
    out = daemon.output()
    assert out.count("crash_loop escalated") == 1
    assert "rolling back to model v1" in out
    assert daemon.predict().json()["model_version"] == "v1"
    assert ModelRegistry(daemon.state_dir / "registry").alias("current") == "v1"
    assert daemon.stop() == 0
    assert daemon.survivors() == []


@pytest.mark.slow
def test_crash_loop_without_a_model_change_keeps_retrying_and_resets_manually(
    start_daemon: Any, tmp_path: Path
) -> None:
    """With nothing to roll back to, the loop is escalated once, retried at the slow cadence
    (never given up), and a manual restart (SIGHUP) resolves it."""
    _registry_with_bad_model(tmp_path / "state", current_is_bad=True, last_good_is_bad=True)
    daemon = start_daemon(
        restart={"budget": 2, "backoff_initial_s": 0.1, "crash_loop_retry_s": 0.5, "jitter": 0.0}
    )
    wait_until(lambda: "crash_loop escalated" in daemon.output(), 60, what="the escalation")
    escalated_at = daemon.output().index("crash_loop escalated")
    wait_until(
        lambda: daemon.output()[escalated_at:].count("worker template (pid") >= 2,
        60,
        what="two more template attempts after the escalation",
    )
    assert daemon.proc.poll() is None  # still trying, not given up
    assert daemon.output().count("crash_loop escalated") == 1
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "crash_loop resolved (manual_restart)" in daemon.output(), 20)
    assert daemon.stop() == 0
    assert daemon.survivors() == []


def test_daemon_kill_9_and_restart_adopts_workers_without_a_gap(
    start_daemon: Any, tmp_path: Path
) -> None:
    """A daemon killed with -9 leaves its workers serving; the next daemon takes the socket back
    and adopts them: no refused connection, and never two sets of workers."""
    first = start_daemon()
    first.wait_serving()
    before = _two_workers(first)
    with Poller(first.url) as poller:
        first.proc.kill()
        first.proc.wait(timeout=10)
        second = start_daemon(port=first.port)
        second.wait_serving()
        for _ in range(20):
            assert second.predict().status_code == 200
    assert poller.result.refused == poller.result.failed == 0, poller.result.errors
    assert _pids(second) == before
    assert second.output().count("adopted worker") == 2
    registry = str(second.state_dir / "registry")
    ours = [
        p for p in psutil.process_iter(["cmdline"]) if registry in " ".join(p.info["cmdline"] or [])
    ]
    assert len(ours) == 3, [p.pid for p in ours]  # two workers and one template, no more
    assert second.stop() == 0
    for daemon in (first, second):
        assert daemon.survivors() == []
    # Adopted workers are not our children: init reaps them, so a zombie may linger; none may run.
    for pid in before.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_systemd_notify_ready_watchdog_and_stopping(start_daemon: Any, tmp_path: Path) -> None:
    """Under a stand-in for systemd: READY only once workers serve, WATCHDOG at the asked rate,
    none while the daemon is stopped, STOPPING on SIGTERM."""
    path = str(tmp_path / "notify.sock")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    sink.settimeout(0.2)
    received: list[tuple[float, str]] = []
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            try:
                received.append((time.monotonic(), sink.recv(4096).decode()))
            except TimeoutError:
                continue

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    try:
        daemon = start_daemon(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        wait_until(lambda: any("READY=1" in m for _, m in received), 90, what="READY=1")
        assert daemon.predict().status_code == 200  # READY means serving
        ready = next(m for _, m in received if "READY=1" in m)
        assert "STATUS=2/2 workers ready, model v1" in ready
        wait_until(lambda: sum(m == "WATCHDOG=1" for _, m in received) >= 3, 10)
        daemon.proc.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        time.sleep(1.5)  # a stuck daemon: measure that nothing arrives in this window
        daemon.proc.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()
        # 0.5 s for a ping sent just before the stop to be read; 1 s left, 5 pings would be due
        silent = [m for t, m in received if stopped_at + 0.5 < t < resumed_at and m == "WATCHDOG=1"]
        assert silent == []
        wait_until(lambda: any(t > resumed_at and m == "WATCHDOG=1" for t, m in received), 5)
        assert daemon.stop() == 0
        wait_until(lambda: any(m == "STOPPING=1" for _, m in received), 5)
        assert daemon.survivors() == []
    finally:
        done.set()
        collector.join(timeout=5)
        sink.close()


def test_a_killed_template_is_restarted_and_workers_keep_serving(start_daemon: Any) -> None:
    """kill -9 of the warm template leaves the workers serving; a new template is started at once,
    and the next worker crash is still healed by a fork from it."""
    daemon = start_daemon()
    daemon.wait_serving()
    workers = set(_two_workers(daemon).values())
    daemon.remember()
    registry = str(daemon.state_dir / "registry")

    def templates() -> list[int]:
        found = []
        for proc in psutil.Process(daemon.proc.pid).children():
            with contextlib.suppress(psutil.Error):
                if registry in " ".join(proc.cmdline()) and proc.pid not in workers:
                    found.append(proc.pid)
        return found

    (template,) = wait_until(templates, 10, what="the template")
    with Poller(daemon.url) as poller:
        os.kill(template, signal.SIGKILL)
        new = wait_until(lambda: [t for t in templates() if t != template], 30, what="a new one")
        wait_until(lambda: daemon.output().count("worker template ready") >= 2, 60)
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: daemon.output().count("service_crash resolved") >= 1, 30)
    assert new
    assert set(_pids(daemon).values()) - workers  # a fresh worker, forked by the new template
    assert poller.result.refused == 0, poller.result.errors
    assert poller.result.failed <= 1, (
        poller.result.errors
    )  # at most the request on the killed worker
    assert daemon.stop() == 0
    assert daemon.survivors() == []
