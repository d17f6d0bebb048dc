"""kill -9 of a process writing the audit trail as fast as it can: the trail stays whole."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from selfheal_daemon.clock import SystemClock
from selfheal_daemon.record.audit import AUDIT_FILE, AuditLog, ReadStats, read_records
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# (seed, rotate_bytes, where the kill lands): in the middle of appending records, or while a
# rotated file is being compressed (its .gz.tmp exists).
TRIALS = [
    (0, 4096, "writing"),
    (1, 4096, "compressing"),
    (2, 4096, "writing"),
    (3, 65536, "writing"),
    (4, 4096, "compressing"),
]
RETAIN = 1_000_000  # retention must not drop anything: every seq must come back

WRITER = """
import sys
from pathlib import Path
from selfheal_daemon.record.audit import AuditLog
from selfheal_daemon.clock import SystemClock
from selfheal_daemon.logs import configure_logging

configure_logging("WARNING")
log = AuditLog(
    Path(sys.argv[1]), clock=SystemClock(), rotate_bytes=int(sys.argv[2]),
    retain_files=int(sys.argv[3]), compress=True,
)
seq = 0
while True:
    log.write({"seq": seq, "issue": "drill", "details": {"pad": "\\u00e9" * (seq % 53)}})
    seq += 1
"""


@dataclass
class Trail:
    """What is on disk, read file by file without the module's reader."""

    records: list[dict[str, Any]] = field(default_factory=list)  # the trail, in order
    torn_tail: bytes = b""  # an unterminated last line of the live file
    leftovers: list[str] = field(default_factory=list)  # temp files and plain twins of a .gz


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"non-strict JSON constant {name} in the trail")


def _parse_lines(name: str, data: bytes) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        try:
            record = json.loads(line, parse_constant=_reject_constant)
        except ValueError as exc:
            raise AssertionError(f"{name} line {number} does not parse: {line[:80]!r}") from exc
        assert isinstance(record, dict), f"{name} line {number} is not an object"
        records.append(record)
    return records


def read_trail(directory: Path) -> Trail:
    """Parse every line of every file (gz included); rotated files by name, the live one last."""
    trail = Trail()
    rotated: dict[str, list[dict[str, Any]]] = {}
    plain: dict[str, bytes] = {}
    gzipped: dict[str, bytes] = {}
    live: bytes | None = None
    for path in directory.iterdir():
        name = path.name
        if name.endswith(".tmp"):  # a compression cut short: never part of the trail
            trail.leftovers.append(name)
        elif name == AUDIT_FILE:
            live = path.read_bytes()
        elif name.endswith(".jsonl.gz"):
            gzipped[name.removesuffix(".gz")] = gzip.decompress(path.read_bytes())
        elif name.endswith(".jsonl"):
            plain[name] = path.read_bytes()
        else:
            raise AssertionError(f"unexpected file {name} in the audit directory")
    for stem, data in gzipped.items():
        assert data.endswith(b"\n"), f"{stem}.gz ends mid-line"
        rotated[stem] = _parse_lines(stem + ".gz", data)
    for stem, data in plain.items():
        assert data.endswith(b"\n"), f"rotated {stem} ends mid-line"
        records = _parse_lines(stem, data)
        if stem in gzipped:  # killed between the rename of the .gz and the removal of the plain
            assert data == gzipped[stem], f"{stem} differs from its .gz twin"
            trail.leftovers.append(stem)
        else:
            rotated[stem] = records
    for stem in sorted(rotated):
        trail.records.extend(rotated[stem])
    if live is not None:
        whole, _, trail.torn_tail = live.rpartition(b"\n")
        trail.records.extend(_parse_lines(AUDIT_FILE, whole + b"\n" if whole else b""))
    return trail


def _progress(directory: Path) -> tuple[int, int, bool]:
    """(compressed rotated files, bytes in the live file, a compression under way) right now."""
    with contextlib.suppress(FileNotFoundError):
        names = [p.name for p in directory.iterdir()]
        live = (directory / AUDIT_FILE).stat().st_size if AUDIT_FILE in names else 0
        compressing = any(name.endswith(".gz.tmp") for name in names)
        return sum(name.endswith(".jsonl.gz") for name in names), live, compressing
    return 0, 0, False  # the directory not made yet, or the live file renamed under us


@pytest.fixture
def writer(tmp_path: Path) -> tuple[Path, Path]:
    """The writer script and a file for its stderr."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER, encoding="utf-8")
    return script, tmp_path / "writer.stderr"


@pytest.mark.parametrize(("trial", "rotate_bytes", "moment"), TRIALS)
def test_sigkill_mid_burst_leaves_a_whole_gapless_trail_that_reopens(
    tmp_path: Path, writer: tuple[Path, Path], trial: int, rotate_bytes: int, moment: str
) -> None:
    """After kill -9 at a random moment all lines parse, seqs are 0..n-1, and a restart appends."""
    script, stderr_path = writer
    audit_dir = tmp_path / "audit"
    # The kill moment: after a few rotations, once the live file has passed a random offset
    # ("writing") or as soon as the next compression is seen under way ("compressing").
    rng = random.Random(trial)
    rotations, offset = rng.randint(1, 5), rng.randint(0, rotate_bytes - 200)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(audit_dir), str(rotate_bytes), str(RETAIN)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:

        def written_enough() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"writer exited ({proc.returncode}): {stderr_path.read_text(errors='replace')}"
                )
            done, live, compressing = _progress(audit_dir)
            if done < rotations:
                return False
            return compressing if moment == "compressing" else live >= offset

        wait_until(
            written_enough, timeout=30, interval=0.001, what=f"{moment} after {rotations} rotations"
        )
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    before = read_trail(audit_dir)
    n = len(before.records)
    assert n > 0
    assert [r["seq"] for r in before.records] == list(range(n)), "gap or duplicate after kill"
    assert list(read_records(audit_dir)) == before.records
    if before.torn_tail:  # only the record being written when the kill landed may be cut
        assert before.torn_tail.startswith(b"{")

    extra = 2 * rotate_bytes // 60 + 50  # enough for at least two more rotations
    reopened = AuditLog(
        audit_dir, clock=SystemClock(), rotate_bytes=rotate_bytes, retain_files=RETAIN
    )
    try:
        for seq in range(n, n + extra):
            reopened.write({"seq": seq, "issue": "drill", "details": {"after": "restart"}})
    finally:
        reopened.close()

    after = read_trail(audit_dir)
    assert after.leftovers == []
    assert after.torn_tail == b""
    assert [r["seq"] for r in after.records] == list(range(n + extra))
    stats = ReadStats()
    assert list(read_records(audit_dir, stats)) == after.records
    assert stats.unreadable == 0
