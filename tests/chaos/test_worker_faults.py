"""Worker faults under steady load, with every invariant checked after every fault.

One daemon (two workers) takes, in turn: 50 ``kill -9`` of a worker, hangs (``SIGSTOP``), slow
responses (a worker stopped 1.5 s and continued 0.1 s in turn: it answers, later than the liveness
probe waits), and memory
growth past ``resources.max_rss_mb``. Two more daemons take a crash loop caused by a model version
that dies under traffic, and artifacts corrupted on disk after registration.

A recovery is timed from the fault to the moment the daemon's audit trail resolves the incident.
The restart budget is raised for the kill cycles: 50 kills a second apart are a crash loop by the
default budget, and that escalation is the crash-loop scenario's subject, not this one's. Each
victim has served for longer than ``restart.stable_after_s`` when it is killed, so every kill meets
a healthy slot (a slot that crashes again before it is stable is restarted with growing backoff).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from selfheal_daemon.model.registry import MODEL_FILE, ModelRegistry
from tests.chaos.conftest import Scenario
from tests.chaos.invariants import audit_records, wait_invariants
from tests.chaos.poison import ExitAfter
from tests.daemons import Poller, RunningDaemon
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

WORKERS = 2
KILL_CYCLES = int(os.environ.get("CHAOS_KILLS", "50"))
STABLE_S = 0.5
# The load repeats one row, which the drift monitor would rightly call drift; with this many rows
# needed it never judges, so no retrain interferes with the faults under test.
NO_DRIFT = {"min_rows": 10_000_000, "window_rows": 10_000_000}


def _stable_victim(daemon: RunningDaemon, slot: int, ready_at: dict[int, float]) -> int:
    """The pid in ``slot`` once it has served longer than ``restart.stable_after_s`` (timed from
    when this test saw it ready: psutil's create_time can be a second off, /proc's boot time being
    whole seconds)."""
    time.sleep(max(0.0, ready_at.get(slot, 0.0) + STABLE_S + 0.2 - time.monotonic()))
    return _all_workers(daemon)[slot]


def _pids(daemon: RunningDaemon) -> dict[int, int]:
    return {int(w["worker"]): int(w["pid"]) for w in daemon.workers()}


def _all_workers(daemon: RunningDaemon) -> dict[int, int]:
    return wait_until(
        lambda: p if len(p := _pids(daemon)) == WORKERS else None, 30, what="every worker"
    )


def _resolved(daemon: RunningDaemon, issue: str) -> int:
    """Resolved records of ``issue`` in the live audit file (a substring scan: this is polled
    every 20 ms, and the invariants parse every line of the trail anyway)."""
    try:
        text = (daemon.state_dir / "audit" / "audit.jsonl").read_text()
    except FileNotFoundError:
        return 0
    wanted = (f'"issue": "{issue}"', '"outcome": "resolved"')
    return sum(1 for line in text.splitlines() if all(w in line for w in wanted))


def _fault(
    daemon: RunningDaemon,
    scenario: Scenario,
    issue: str,
    inject: Any,
    *,
    timeout: float = 30.0,
) -> None:
    """Inject one fault, time it to its incident's resolution, then check every invariant."""
    before = _resolved(daemon, issue)
    started = time.monotonic()
    inject()
    scenario.faults += 1
    try:
        wait_until(
            lambda: _resolved(daemon, issue) > before,
            timeout,
            interval=0.02,
            what=f"{issue} to be resolved",
        )
    except AssertionError as exc:
        scenario.check([str(exc)], f"fault {scenario.faults}")
    else:
        scenario.recovered(time.monotonic() - started)
    found = wait_invariants(daemon, workers=WORKERS, timeout=20)
    scenario.check(found, f"after {issue} fault {scenario.faults}")


def test_worker_kill_hang_slow_and_leak_under_load(start_daemon: Any, scenario: Scenario) -> None:
    daemon = start_daemon(
        service={"workers": WORKERS},
        restart={
            "budget": 1000,
            "window_s": 10.0,
            "backoff_initial_s": 0.05,
            "jitter": 0.0,
            "stable_after_s": STABLE_S,
        },
        probe={"interval_s": 0.5, "timeout_s": 0.4, "failure_threshold": 2},
        resources={"interval_s": 0.3, "max_rss_mb": 450.0, "sustained_s": 0.6},
        drift=NO_DRIFT,
    )
    daemon.wait_serving()
    _all_workers(daemon)
    by_kind: dict[str, dict[str, Any]] = {}
    ready_at: dict[int, float] = {}  # slot -> when its worker was last seen ready

    def count(kind: str, poller: Poller, faults_before: int, recoveries_before: int) -> None:
        by_kind[kind] = {
            "faults": scenario.faults - faults_before,
            "recoveries": scenario.recoveries - recoveries_before,
            "recovery_s": scenario.recovery_s[recoveries_before:],
            "requests_sent": poller.result.sent,
            "requests_failed": poller.result.failed + poller.result.refused,
            "requests_refused": poller.result.refused,
        }
        scenario.load(poller.result)

    # 50 kill -9 of a worker, alternating slots.
    with Poller(daemon.url) as poller:
        for cycle in range(KILL_CYCLES):
            victim = _stable_victim(daemon, cycle % WORKERS, ready_at)
            _fault(daemon, scenario, "service_crash", lambda v=victim: os.kill(v, signal.SIGKILL))
            ready_at[cycle % WORKERS] = time.monotonic()
    count("kill -9", poller, 0, 0)

    # Hangs: SIGSTOP; the liveness probe times out, the worker is killed and replaced.
    faults, recoveries = scenario.faults, scenario.recoveries
    with Poller(daemon.url) as poller:
        for cycle in range(3):
            victim = _stable_victim(daemon, cycle % WORKERS, ready_at)
            _fault(daemon, scenario, "service_hang", lambda v=victim: os.kill(v, signal.SIGSTOP))
            ready_at[cycle % WORKERS] = time.monotonic()
    count("hang (SIGSTOP)", poller, faults, recoveries)

    # Slow responses: stopped 1.5 s of every 1.6 s, so requests and probes are answered too late.
    faults, recoveries = scenario.faults, scenario.recoveries
    with Poller(daemon.url) as poller:
        for cycle in range(2):
            victim = _stable_victim(daemon, cycle % WORKERS, ready_at)
            stutter = _Stutter(victim)
            try:
                _fault(daemon, scenario, "service_hang", stutter.start)
                ready_at[cycle % WORKERS] = time.monotonic()
            finally:
                stutter.stop()
    count("slow responses", poller, faults, recoveries)

    # Memory growth: the service keeps 64 MiB more per SIGUSR2, until RSS passes the limit.
    faults, recoveries = scenario.faults, scenario.recoveries
    with Poller(daemon.url) as poller:
        for cycle in range(2):
            victim = _stable_victim(daemon, cycle % WORKERS, ready_at)
            _fault(daemon, scenario, "resource_limit", lambda v=victim: _leak(v, 450.0))
            ready_at[cycle % WORKERS] = time.monotonic()
    count("memory growth", poller, faults, recoveries)

    scenario.notes["by_kind"] = by_kind
    assert daemon.stop() == 0
    assert daemon.survivors() == []
    assert scenario.violations == []
    assert scenario.recoveries == scenario.faults == KILL_CYCLES + 7
    kills = by_kind["kill -9"]
    assert kills["requests_refused"] == 0  # the port never closes: the listener is shared
    assert kills["requests_failed"] <= KILL_CYCLES  # at most the one in flight on the victim
    assert by_kind["memory growth"]["requests_failed"] == 0  # the successor is ready first


class _Stutter:
    """Stops and continues one process in a 1.5 s / 0.1 s cycle until stopped (or it is gone)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            while not self._done.is_set():
                os.kill(self.pid, signal.SIGSTOP)
                self._done.wait(1.5)
                os.kill(self.pid, signal.SIGCONT)
                self._done.wait(0.1)

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)


def _leak(pid: int, limit_mb: float) -> None:
    process = psutil.Process(pid)
    with contextlib.suppress(psutil.NoSuchProcess):
        while (before := process.memory_info().rss / 2**20) < limit_mb:
            os.kill(pid, signal.SIGUSR2)  # one at a time: pending signals coalesce
            wait_until(
                lambda b=before: process.memory_info().rss / 2**20 > b + 60,
                10,
                what="the leak to grow",
            )


def _selfheal(daemon: RunningDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "selfheal_daemon",
            *args,
            "--config",
            str(daemon.log.parent / "config.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_model_version_that_crashes_under_traffic_is_rolled_back(
    start_daemon: Any, scenario: Scenario
) -> None:
    """A version that passes its smoke test and dies after a few predictions, pinned by a person:
    the workers crash in a loop under load, the daemon rolls back to last_good and serves on."""
    daemon = start_daemon(
        service={"workers": WORKERS},
        restart={
            "budget": 3,
            "window_s": 30.0,
            "backoff_initial_s": 0.1,
            "crash_loop_retry_s": 2.0,
        },
        drift=NO_DRIFT,
    )
    daemon.wait_serving()
    _all_workers(daemon)
    registry = ModelRegistry(daemon.state_dir / "registry")
    good = registry.alias("current")
    assert good is not None
    poison = registry.register(
        ExitAfter(registry.load(good).model, calls=15),
        metrics={"r2": 0.8},
        reference=registry.load_reference(good),
        data_fingerprint="poison",
        data_rows=1,
        parent=good,
        origin="chaos: dies after 15 predictions",
    )
    with Poller(daemon.url) as poller:
        started = time.monotonic()
        pinned = _selfheal(daemon, "rollback", "--to", poison)
        assert pinned.returncode == 0, pinned.stdout + pinned.stderr
        scenario.faults += 1
        wait_until(
            lambda: (
                _resolved(daemon, "crash_loop") > 0 or "rolling back to model" in daemon.output()
            ),
            90,
            what="the crash loop to be rolled back",
        )
        wait_until(
            lambda: (
                registry.alias("current") == good
                and {w["version"] for w in daemon.workers()} == {good}
                and len(daemon.workers()) == WORKERS
            ),
            60,
            what=f"every worker back on {good}",
        )
        scenario.recovered(time.monotonic() - started)
        scenario.check(wait_invariants(daemon, workers=WORKERS, timeout=60), "after the crash loop")
    scenario.load(poller.result)
    records, _ = audit_records(daemon.state_dir / "audit")
    loops = [r for r in records if r["issue"] == "crash_loop"]
    scenario.notes["crash_loop_records"] = [
        (r["detection"], r["action"], r["outcome"]) for r in loops
    ]
    assert loops, "no crash_loop incident in the audit trail"
    assert daemon.predict().json()["model_version"] == good
    assert daemon.stop() == 0
    assert daemon.survivors() == []
    assert scenario.violations == []


def _damage(path: Path) -> None:
    """Flip bytes in the middle of a file, in place (the size stays the same)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    path.write_bytes(bytes(data))


def test_artifacts_corrupted_after_registration(start_daemon: Any, scenario: Scenario) -> None:
    """A version damaged on disk before its deployment is refused; the serving version damaged
    on disk is found by the daemon's own re-check and replaced by a valid one, under load."""
    daemon = start_daemon(  # the re-check runs every monitoring interval
        service={"workers": WORKERS}, monitor={"interval_s": 1.0}, drift=NO_DRIFT
    )
    daemon.wait_serving()
    _all_workers(daemon)
    registry = ModelRegistry(daemon.state_dir / "registry")
    with Poller(daemon.url) as poller:
        # 1. A registered candidate damaged before it is deployed (the drill does exactly that).
        started = time.monotonic()
        drill = _selfheal(daemon, "drill", "corrupt-artifact")
        scenario.faults += 1
        assert drill.returncode == 0, drill.stdout + drill.stderr
        scenario.recovered(time.monotonic() - started)
        scenario.check(wait_invariants(daemon, workers=WORKERS, timeout=30), "corrupt candidate")

        # 2. The serving version damaged on disk while it serves. It must have a valid version to
        # fall back to: a copy of v1 is registered (parent v1), pinned, and confirmed last_good.
        first = registry.alias("current")
        assert first is not None
        serving = registry.register(
            registry.load(first).model,
            metrics=registry.info(first).metrics,
            reference=registry.load_reference(first),
            data_fingerprint="copy",
            data_rows=1,
            parent=first,
            origin="chaos: a copy of the first version",
        )
        pinned = _selfheal(daemon, "rollback", "--to", serving)
        assert pinned.returncode == 0, pinned.stdout + pinned.stderr
        wait_until(lambda: registry.alias("last_good") == serving, 60, what=f"{serving} confirmed")
        started = time.monotonic()
        _damage(registry.root / serving / MODEL_FILE)
        scenario.faults += 1
        wait_until(
            lambda: registry.alias("current") != serving,
            60,
            what="the damaged serving version to be replaced",
        )
        scenario.recovered(time.monotonic() - started)
        scenario.check(wait_invariants(daemon, workers=WORKERS, timeout=60), "corrupt current")
    scenario.load(poller.result)
    records, _ = audit_records(daemon.state_dir / "audit")
    scenario.notes["records"] = [
        (r["issue"], r["detection"], r["action"], r["outcome"])
        for r in records
        if r["issue"] == "deployment_failure"
    ]
    scenario.notes["replaced_by"] = registry.alias("current")
    assert registry.alias("current") == first
    assert json.loads(daemon.predict().text)["model_version"] == registry.alias("current")
    assert daemon.stop() == 0
    assert daemon.survivors() == []
    assert scenario.violations == []
