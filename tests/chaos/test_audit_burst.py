"""10,000 audit records in a burst across many rotations, and writers killed with -9 mid-burst.

The real ``AuditLog`` runs in a process of its own (a rotation every 64 KiB, each rotated file
gzip-compressed) and acknowledges every record on stdout once ``write`` returned. One burst runs to
its end; in the other trials the writer is killed at a seeded random moment, and the next writer
starts on the same directory (as a restarted daemon would). At the end every line of every file
parses as a whole record, no record is duplicated, and every acknowledged record is there: at most
the one record in flight at the kill may be there without its acknowledgement. In the figures,
"sent" counts acknowledged records, "failed" lost ones, and a recovery is the time from a kill
until the next writer has tidied the trail and can write.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfheal_daemon.record.audit import audit_files
from tests.chaos.conftest import Scenario
from tests.chaos.invariants import audit_records

ROOT = Path(__file__).resolve().parents[2]
BURST = 10_000
KILLED_TRIALS = 4

WRITER = """
import os, sys
from pathlib import Path
from selfheal_daemon.record.audit import AuditLog
from selfheal_daemon.clock import SystemClock
from selfheal_daemon.logs import configure_logging

configure_logging("WARNING")
directory, first, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
log = AuditLog(
    directory, clock=SystemClock(), rotate_bytes=64 * 1024, retain_files=100_000, compress=True
)
os.write(1, b"ready\\n")
for seq in range(first, first + count):
    log.write({
        "incident_id": f"burst-{seq}", "issue": "drill", "detection": "burst", "action": "none",
        "details": {"seq": seq, "pad": "\u00e9" * (seq % 37)}, "outcome": "resolved",
        "manual": False,
    })
    os.write(1, b"%d\\n" % seq)  # acknowledged: write() returned
log.close()
"""


def burst(
    script: Path, directory: Path, first: int, kill_after: int | None, count: int = BURST
) -> tuple[int, float | None, float]:
    """Run one writer from ``first``; SIGKILL it once ``kill_after`` records are acknowledged.
    Returns (records acknowledged, when it was killed or None, when it was ready to write)."""
    acked = 0
    killed_at = None
    ready_at = time.monotonic()
    with subprocess.Popen(
        [sys.executable, str(script), str(directory), str(first), str(count)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == b"ready":  # it tidied what a killed writer left
                ready_at = time.monotonic()
                continue
            acked = int(line) - first + 1
            if kill_after is not None and acked >= kill_after and killed_at is None:
                proc.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()  # acknowledgements already in the pipe still count
        proc.wait(timeout=60)
    assert killed_at is not None or proc.returncode == 0, proc.returncode
    return acked, killed_at, ready_at


@pytest.mark.timeout(60)
def test_a_burst_across_rotation_and_writers_killed_mid_burst_lose_and_tear_nothing(
    tmp_path: Path, scenario: Scenario
) -> None:
    """Every acknowledged record is there once, every line is a whole record."""
    rng = random.Random(7)
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    directory = tmp_path / "audit"
    plan: list[int | None] = [None, *(rng.randint(500, BURST - 500) for _ in range(KILLED_TRIALS))]
    rng.shuffle(plan)
    expected: set[int] = set()
    in_flight: set[int] = set()  # written when the writer died, perhaps not acknowledged
    killed_at: float | None = None
    for trial, kill_after in enumerate([*plan, 0]):  # a last writer starts after the last burst
        first = trial * BURST
        count = BURST if trial < len(plan) else 0
        acked, killed_now, ready_at = burst(script, directory, first, kill_after, count)
        if killed_at is not None:  # the trail a killed writer left is whole again, and writable
            _, problems = audit_records(directory)
            scenario.check(problems, f"after the kill before trial {trial}")
            if not problems:
                scenario.recovered(ready_at - killed_at)
        expected.update(range(first, first + acked))
        killed_at = killed_now
        if killed_now is not None:
            scenario.faults += 1
            in_flight.add(first + acked)
        scenario.requests_sent += acked  # here: records acknowledged (and failed: records lost)
    records, problems = audit_records(directory)
    seqs = [int(r["details"]["seq"]) for r in records]
    scenario.notes.update(
        records=len(seqs),
        acknowledged=len(expected),
        files=len(audit_files(directory)),
        kills_after=[k for k in plan if k is not None],
    )
    assert not problems, problems[:5]
    assert len(seqs) == len(set(seqs)), "a record was written twice"
    missing = expected - set(seqs)
    scenario.requests_failed = len(missing)
    assert not missing, f"{len(missing)} acknowledged records lost: {sorted(missing)[:10]}"
    assert set(seqs) - expected <= in_flight  # only a record in flight at a kill, if any
    assert len(audit_files(directory)) > 20  # it really went across many rotations
    full = plan.index(None) * BURST  # the burst that ran to its end: all 10,000 are there
    assert set(range(full, full + BURST)) <= set(seqs)
