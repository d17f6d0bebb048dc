"""A real full disk under load: the model registry and the audit trail each on a small tmpfs.

With both disks full, a worker is killed (its crash and recovery must still be recorded) and a
retrain is asked for (its model cannot be saved). The old model keeps serving; the failure is
audited with its errno and retried by the daemon itself; nothing half-written becomes ``current``.
Once the registry has room again the retry succeeds and every worker serves the new version; once
the audit disk has room again every held record is written whole, in order, with one record that
says audit writes failed and were retried.

We run as root here and in CI, so ``mount -t tmpfs`` works. Where it is not permitted the test
falls back to ``RLIMIT_FSIZE`` on the running daemon (inherited by the retrain job it starts: a
model file over the limit fails with EFBIG), which covers the model half only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from selfheal_daemon.model.registry import ModelRegistry
from tests.chaos.conftest import Scenario
from tests.chaos.invariants import audit_records, registry_violations, wait_invariants
from tests.daemons import Poller, RunningDaemon
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

WORKERS = 2
SECTIONS: dict[str, dict[str, Any]] = {
    "service": {"workers": WORKERS},
    "monitor": {"interval_s": 1.0},  # each pass is a tick: a retry whose time has come starts
    "drift": {"min_rows": 10_000_000, "window_rows": 10_000_000},  # no drift verdict here
    "retrain": {"cooldown_s": 0.0, "retry_s": 2.0, "max_attempts": 4, "timeout_s": 120.0},
}
MODEL_LIMIT = 64 * 1024  # RLIMIT_FSIZE fallback: model.joblib is about 124 KiB


MOUNT = shutil.which("mount") or "/bin/mount"
UMOUNT = shutil.which("umount") or "/bin/umount"


def mount_tmpfs(target: Path, size: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [MOUNT, "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.fixture
def small_disks(tmp_path: Path) -> Iterator[list[Path]]:
    """``state/registry`` (16 MiB) and ``state/audit`` (1 MiB) on their own tmpfs; [] if mount is
    not permitted. Unmounted (lazily) whatever happens."""
    mounted: list[Path] = []
    try:
        for name, size in (("registry", "16m"), ("audit", "1m")):
            target = tmp_path / "state" / name
            if not mount_tmpfs(target, size):
                break
            mounted.append(target)
        yield mounted if len(mounted) == 2 else []
    finally:
        for target in reversed(mounted):
            subprocess.run([UMOUNT, "-l", str(target)], capture_output=True, check=False)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system refuses more (ENOSPC): the disk is full."""
    filler = directory / ".filler"
    block = b"\0" * 65536
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):
            while True:
                out.write(block)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 512)
    probe = directory / ".probe"
    with pytest.raises(OSError, match="No space left") as refused:
        probe.write_bytes(b"\0" * 8192)
    probe.unlink(missing_ok=True)
    assert refused.value.errno == errno.ENOSPC
    return filler


def held(daemon: RunningDaemon) -> int:
    """Audit records the daemon holds in memory because the disk refused them."""
    return int(daemon.control("GET", "/status")["audit"]["pending_writes"])


def until_the_audit_is_refused(daemon: RunningDaemon) -> int:
    """Audit records (a pause and a resume each) until the daemon holds one: the trail's last
    page had room for a few more lines even when the disk was full. Returns how many it took."""
    for attempt in range(1, 200):
        daemon.control("POST", "/actions/pause" if attempt % 2 else "/actions/resume")
        if held(daemon):
            if attempt % 2:
                daemon.control("POST", "/actions/resume")
            return attempt
    raise AssertionError("the full audit disk took 200 more records")


def job_errors(state_dir: Path) -> list[dict[str, Any]]:
    """The answers of retrain jobs that failed, oldest first."""
    found = []
    for result in sorted((state_dir / "jobs").glob("*/result.json")):
        with contextlib.suppress(OSError, ValueError):
            answer = json.loads(result.read_text())
            if "error" in answer:
                found.append(answer)
    return found


def staging(state_dir: Path) -> list[str]:
    return [p.name for p in (state_dir / "registry").iterdir() if p.name.startswith(".staging-")]


def start(start_daemon: Any) -> RunningDaemon:
    daemon: RunningDaemon = start_daemon(**SECTIONS)
    daemon.wait_serving(120)
    wait_until((daemon.state_dir / "run" / "control.sock").exists, 30, what="the control socket")
    return daemon


def kill_a_worker(daemon: RunningDaemon, scenario: Scenario) -> int:
    """Kill -9 a worker and time its successor (supervision needs no disk)."""
    victim = int(daemon.workers()[0]["pid"])
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    scenario.faults += 1
    wait_until(
        lambda: (
            victim not in {int(w["pid"]) for w in daemon.workers()}
            and len(daemon.workers()) == WORKERS
        ),
        30,
        what="the killed worker's successor",
    )
    scenario.recovered(time.monotonic() - killed)
    return victim


@pytest.mark.timeout(300)
def test_a_full_disk_while_saving_a_model_and_writing_the_audit(
    start_daemon: Any, small_disks: list[Path], scenario: Scenario
) -> None:
    """The old model serves, the failure is audited and retried, nothing half-written becomes
    current; held audit records are written whole once there is room."""
    if not small_disks:
        fallback_model_half(start_daemon, scenario)
        return
    daemon = start(start_daemon)
    registry = ModelRegistry(daemon.state_dir / "registry")
    assert registry.alias("current") == "v1"
    with Poller(daemon.url, interval_s=0.02) as poller:
        audit_filler = fill(daemon.state_dir / "audit")
        scenario.notes["records_until_refused"] = until_the_audit_is_refused(daemon)
        model_filler = fill(daemon.state_dir / "registry")
        scenario.faults += 2
        victim = kill_a_worker(daemon, scenario)  # an event to record while the audit is full
        asked = daemon.control("POST", "/actions/retrain")
        assert asked["accepted"]
        failed = wait_until(
            lambda: job_errors(daemon.state_dir), 120, interval=0.1, what="the retrain to fail"
        )
        assert failed[0]["transient"] is True, failed
        assert failed[0]["errno"] == "ENOSPC", failed
        assert "No space left on device" in failed[0]["error"]
        # nothing half-written: the registry is as it was, its aliases still valid
        assert registry.versions() == ["v1"]
        assert registry.alias("current") == "v1"
        assert not staging(daemon.state_dir)
        assert set(daemon.worker_versions()) == {"v1"}
        wait_until(lambda: "(retrain_failed)" in daemon.output(), 30, what="the failure")
        trail = daemon.state_dir / "audit" / "audit.jsonl"
        assert "retrain_failed" not in trail.read_text()  # refused by the disk: held in memory
        assert held(daemon) >= 4  # the crash, its recovery, the request, the failure
        # room again on the registry: the daemon retries by itself (nobody asks again)
        model_filler.unlink()
        freed = time.monotonic()
        wait_until(lambda: registry.alias("current") == "v2", 120, interval=0.1, what="v2")
        wait_until(lambda: set(daemon.worker_versions()) == {"v2"}, 60, what="v2 on every worker")
        scenario.recovered(time.monotonic() - freed)
        # room again on the audit disk: every held record is written, and why they were held
        scenario.notes["records_held"] = held(daemon)
        audit_filler.unlink()
        audit_freed = time.monotonic()
        wait_until(lambda: "audit_write_failed" in trail.read_text(), 30, what="the held records")
        scenario.recovered(time.monotonic() - audit_freed)
        assert held(daemon) == 0
        found = wait_invariants(daemon, workers=WORKERS, timeout=60)
        scenario.check(found, "after the disks had room again")
    scenario.load(poller.result)
    records, torn = audit_records(daemon.state_dir / "audit")
    assert not torn, torn
    check_the_trail(records, victim, scenario)
    assert not found, found
    assert not staging(daemon.state_dir)
    assert not registry_violations(daemon.state_dir)
    # the old model answered throughout; only requests in flight on the killed worker may fail
    assert poller.result.ok > 50
    assert poller.result.failed + poller.result.refused <= 3, poller.result.errors[:5]


def check_the_trail(records: list[dict[str, Any]], victim: int, scenario: Scenario) -> None:
    """Every record of the retrain, the crash and the outage is there, once, in order."""
    asked = [
        r for r in records if r["detection"] == "operator_request" and r["action"] == "retrain"
    ]
    assert len(asked) == 1, asked
    manual = [r for r in records if r["incident_id"] == asked[0]["incident_id"]]
    steps = [(r["detection"], r["action"], r["outcome"]) for r in manual]
    scenario.notes["retrain_records"] = steps
    assert steps[0] == ("operator_request", "retrain", None)
    assert steps[1] == ("retrain_failed", "retry", None)
    assert steps[-2:] == [
        ("candidate_passed_gate", "deploy", None),
        ("all_workers_on_version", "deployed", "resolved"),
    ]
    failure = manual[1]["details"]
    assert failure["errno"] == "ENOSPC"
    assert failure["transient"] is True
    assert "No space left on device" in failure["error"]
    assert failure["attempt"] == 1
    assert ("retrain_retry", "retrain", None) in steps
    assert manual[-1]["details"]["version"] == "v2"
    crash = [r for r in records if r["issue"] == "service_crash"]
    assert crash, "the worker's crash was not recorded"
    assert crash[-1]["outcome"] == "resolved"
    assert (crash[0]["details"]["pid"], crash[0]["details"]["returncode"]) == (victim, -9)
    outage = [r for r in records if r["detection"] == "audit_write_failed"]
    assert len(outage) == 1, outage
    said = outage[0]["details"]
    scenario.notes["audit_outage"] = said
    assert "No space left on device" in said["error"]
    assert said["records_dropped"] == 0
    held_since = said["since"]
    written_late = [r for r in records if r["ts"] >= held_since and r is not outage[0]]
    assert said["records_held"] >= 3
    assert len(written_late) >= said["records_held"]
    stamps = [r["ts"] for r in records]
    assert stamps == sorted(stamps)  # held records keep their place and their time


def fallback_model_half(start_daemon: Any, scenario: Scenario) -> None:
    """No mount: a file-size limit on the daemon makes the model save fail with EFBIG."""
    daemon = start(start_daemon)
    registry = ModelRegistry(daemon.state_dir / "registry")
    process = psutil.Process(daemon.proc.pid)
    try:
        _soft, hard = process.rlimit(psutil.RLIMIT_FSIZE)
        process.rlimit(psutil.RLIMIT_FSIZE, (MODEL_LIMIT, hard))
    except (psutil.Error, OSError) as exc:
        pytest.skip(f"neither a tmpfs mount nor RLIMIT_FSIZE is permitted here: {exc}")
    scenario.notes["mode"] = "RLIMIT_FSIZE (no mount)"
    with Poller(daemon.url, interval_s=0.02) as poller:
        daemon.control("POST", "/actions/retrain")
        failed = wait_until(lambda: job_errors(daemon.state_dir), 120, interval=0.1)
        scenario.faults += 1
        assert failed[0]["errno"] == "EFBIG", failed
        assert registry.alias("current") == "v1"
        assert not staging(daemon.state_dir)
        process.rlimit(psutil.RLIMIT_FSIZE, (hard, hard))
        lifted = time.monotonic()
        wait_until(lambda: registry.alias("current") == "v2", 120, interval=0.1, what="v2")
        scenario.recovered(time.monotonic() - lifted)
        found = wait_invariants(daemon, workers=WORKERS, timeout=60)
        scenario.check(found, "after the limit was lifted")
    scenario.load(poller.result)
    assert not found, found
    assert poller.result.failed + poller.result.refused == 0, poller.result.errors[:5]
