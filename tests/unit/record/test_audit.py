"""The audit trail: timestamps, strict JSON, rotation, recovery after a kill, and IncidentBook."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from selfheal_daemon.record.audit import (
    AUDIT_FILE,
    AuditLog,
    ReadStats,
    audit_files,
    format_ts,
    jsonable,
    parse_ts,
    read_records,
    repair_tail,
)
from tests.fakes import FakeClock

ROOT = Path(__file__).resolve().parents[3]
ROTATED = re.compile(r"audit\.\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d{6}\.jsonl(\.gz)?")

MakeLog = Callable[..., AuditLog]


def _reject_constant(name: str) -> Any:
    raise AssertionError(f"non-strict JSON constant {name} in the trail")


def strict_loads(line: str | bytes) -> dict[str, Any]:
    """Parse one line as strict JSON (no NaN/Infinity) and require an object."""
    record = json.loads(line, parse_constant=_reject_constant)
    assert isinstance(record, dict)
    return record


def seqs(directory: Path, stats: ReadStats | None = None) -> list[int]:
    return [int(r["seq"]) for r in read_records(directory, stats) if "seq" in r]


@pytest.fixture
def audit_dir(tmp_path: Path) -> Path:
    return tmp_path / "audit"


@pytest.fixture
def make_log(audit_dir: Path) -> Iterator[MakeLog]:
    """Build AuditLogs on ``audit_dir``; every one is closed (its loguru sink removed) after."""
    logs: list[AuditLog] = []

    def make(clock: FakeClock | None = None, **options: Any) -> AuditLog:
        log = AuditLog(audit_dir, clock=clock or FakeClock(), **options)
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()


# --- timestamps and JSON ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_format_ts_round_trips_through_parse_ts_to_the_millisecond(moment: datetime) -> None:
    """format_ts writes UTC with milliseconds and a Z, and parse_ts reads it back aware."""
    text = format_ts(moment)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", text)
    back = parse_ts(text)
    assert back.utcoffset() == timedelta(0)
    assert back == moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    assert format_ts(back) == text


def test_parse_ts_accepts_an_explicit_offset() -> None:
    """parse_ts takes any ISO-8601 form with an offset, not only the Z form."""
    assert parse_ts("2026-11-27T11:00:00.500+01:00") == datetime(
        2026, 11, 27, 10, 0, 0, 500000, tzinfo=UTC
    )


def test_jsonable_turns_non_finite_floats_into_null_at_any_depth() -> None:
    """NaN and ±inf become None wherever they sit, numpy ones included."""
    value = {
        "nan": math.nan,
        "inf": math.inf,
        "list": [1.5, -math.inf, {"deep": np.float64("nan")}],
        "np32": np.float32("inf"),
    }
    assert jsonable(value) == {
        "nan": None,
        "inf": None,
        "list": [1.5, None, {"deep": None}],
        "np32": None,
    }


def test_jsonable_makes_numpy_scalars_plain_python_numbers() -> None:
    """numpy ints, floats and bools come out as int, float and bool."""
    out = jsonable({"i": np.int64(7), "f": np.float32(0.5), "b": np.bool_(True), "u": np.uint8(3)})
    assert out == {"i": 7, "f": 0.5, "b": True, "u": 3}
    assert [type(out[k]) for k in ("i", "f", "b", "u")] == [int, float, bool, int]


def test_jsonable_turns_tuples_sets_paths_and_keys_into_json_types() -> None:
    """Tuples become lists, Paths strings, mapping keys strings; the result dumps as strict JSON."""
    out = jsonable({1: (1, 2), "path": Path("/var/lib/selfheal/x.json"), "s": frozenset({3})})
    assert out == {"1": [1, 2], "path": "/var/lib/selfheal/x.json", "s": [3]}
    json.dumps(out, allow_nan=False)


# --- writing and reading ------------------------------------------------------------------------


def test_write_stamps_ts_and_appends_one_json_line_per_record(
    make_log: MakeLog, audit_dir: Path
) -> None:
    """Each write appends one whole line stamped with the clock's UTC time, read back in order."""
    clock = FakeClock()
    log = make_log(clock)
    written = []
    for seq in range(3):
        written.append(log.write({"seq": seq, "issue": "service_crash"}))
        clock.advance(1.5)
    explicit = log.write({"seq": 3, "ts": "2020-01-01T00:00:00.000Z"})
    log.close()

    assert [w["ts"] for w in written] == [
        "2026-11-27T10:16:40.000Z",
        "2026-11-27T10:16:41.500Z",
        "2026-11-27T10:16:43.000Z",
    ]
    assert explicit["ts"] == "2020-01-01T00:00:00.000Z"
    raw = (audit_dir / AUDIT_FILE).read_text(encoding="utf-8")
    assert raw.endswith("\n")
    lines = raw.splitlines()
    assert [strict_loads(line) for line in lines] == [*written, explicit]
    stats = ReadStats()
    assert list(read_records(audit_dir, stats)) == [*written, explicit]
    assert stats == ReadStats(files=1, records=4, unreadable=0)


def test_a_record_with_non_finite_floats_is_written_as_strict_json(
    make_log: MakeLog, audit_dir: Path
) -> None:
    """NaN and inf in a record's details are written as null, so the line stays valid JSON."""
    log = make_log()
    log.write({"details": {"psi": math.nan, "r2": -math.inf, "v": np.float64("inf"), "ok": 0.25}})
    log.close()
    (line,) = (audit_dir / AUDIT_FILE).read_text(encoding="utf-8").splitlines()
    assert strict_loads(line)["details"] == {"psi": None, "r2": None, "v": None, "ok": 0.25}


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_rotation_by_size_keeps_every_record_readable_oldest_first(
    make_log: MakeLog, audit_dir: Path, compress: bool
) -> None:
    """Past rotate_bytes the file becomes audit.<ts>.jsonl(.gz); the reader reads all in order."""
    log = make_log(rotate_bytes=4096, retain_files=1000, compress=compress)
    for seq in range(400):
        log.write({"seq": seq, "details": {"pad": "x" * 40}})
    log.close()

    files = audit_files(audit_dir)
    rotated, live = files[:-1], files[-1]
    assert live.name == AUDIT_FILE
    assert len(rotated) >= 5
    assert all(ROTATED.fullmatch(p.name) for p in rotated), [p.name for p in rotated]
    assert all(p.name.endswith(".gz") is compress for p in rotated)
    assert sorted(p.name for p in audit_dir.iterdir()) == sorted(p.name for p in files)
    for path in rotated:
        data = gzip.decompress(path.read_bytes()) if compress else path.read_bytes()
        assert 0 < len(data) <= 4096
        assert data.endswith(b"\n")
    stats = ReadStats()
    assert seqs(audit_dir, stats) == list(range(400))
    assert stats.files == len(files)
    assert stats.unreadable == 0


def test_retention_keeps_at_most_retain_files_rotated_files(
    make_log: MakeLog, audit_dir: Path
) -> None:
    """Rotation deletes the oldest rotated files beyond retain_files; the newest records survive."""
    log = make_log(rotate_bytes=4096, retain_files=3, compress=True)
    for seq in range(500):
        log.write({"seq": seq, "details": {"pad": "x" * 40}})
    log.close()

    rotated = audit_files(audit_dir)[:-1]
    assert len(rotated) == 3
    kept = seqs(audit_dir)
    assert kept[-1] == 499
    assert kept == list(range(kept[0], 500))  # a contiguous tail: whole old files went, no holes


def test_read_records_counts_unparsable_lines_and_skips_them(audit_dir: Path) -> None:
    """Lines that are not JSON objects are counted in ReadStats.unreadable and not yielded."""
    audit_dir.mkdir()
    (audit_dir / AUDIT_FILE).write_text(
        '{"seq": 0}\nnot json\n[1, 2]\n{"seq": 1}\n"a string"\n{"seq": 2, "torn',
        encoding="utf-8",
    )
    stats = ReadStats()
    assert seqs(audit_dir, stats) == [0, 1]
    assert stats == ReadStats(files=1, records=2, unreadable=4)


def test_reading_an_empty_or_missing_directory_yields_nothing(tmp_path: Path) -> None:
    """No trail yet is not an error: no files, no records."""
    stats = ReadStats()
    assert list(read_records(tmp_path / "nowhere", stats)) == []
    assert stats == ReadStats()


# --- recovery: _tidy and repair_tail ------------------------------------------------------------


def _lines(*seq_numbers: int) -> bytes:
    return b"".join(json.dumps({"seq": s}).encode() + b"\n" for s in seq_numbers)


def test_start_tidies_what_a_killed_writer_left(make_log: MakeLog, audit_dir: Path) -> None:
    """A new AuditLog removes temp files and plain twins of a whole .gz and cuts a torn line."""
    audit_dir.mkdir()
    first = "audit.2026-11-27_10-00-00_000001.jsonl"
    second = "audit.2026-11-27_10-00-05_000002.jsonl"
    (audit_dir / f"{first}.gz").write_bytes(gzip.compress(_lines(0, 1)))
    (audit_dir / first).write_bytes(_lines(0, 1))  # killed before the plain file was removed
    (audit_dir / second).write_bytes(_lines(2, 3))  # killed before compression started
    (audit_dir / f"{second}.gz.tmp").write_bytes(b"\x1f\x8b half a gzip")  # killed during it
    (audit_dir / AUDIT_FILE).write_bytes(_lines(4) + b'{"seq": 5, "ts": "2026-')

    stats = ReadStats()
    assert seqs(audit_dir, stats) == [0, 1, 2, 3, 4]  # the .gz wins over its twin: no duplicates
    assert stats.unreadable == 1

    log = make_log()
    assert sorted(p.name for p in audit_dir.iterdir()) == sorted(
        [f"{first}.gz", second, AUDIT_FILE]
    )
    assert (audit_dir / AUDIT_FILE).read_bytes() == _lines(4)
    log.write({"seq": 5})
    log.close()
    stats = ReadStats()
    assert seqs(audit_dir, stats) == [0, 1, 2, 3, 4, 5]
    assert stats.unreadable == 0


@pytest.mark.parametrize(
    ("content", "removed", "kept"),
    [
        (b"", 0, b""),
        (b'{"seq": 0}\n', 0, b'{"seq": 0}\n'),
        (b'{"seq": 0}\n{"se', 4, b'{"seq": 0}\n'),
        (b'{"seq": 0', 9, b""),
        (b'{"seq": 0}\n' + b"x" * (3 << 20), 3 << 20, b'{"seq": 0}\n'),
    ],
    ids=["empty", "whole", "torn", "only-torn", "torn-longer-than-a-read-block"],
)
def test_repair_tail_cuts_only_the_torn_last_line(
    tmp_path: Path, content: bytes, removed: int, kept: bytes
) -> None:
    """repair_tail truncates after the last newline and returns how many bytes it cut."""
    path = tmp_path / AUDIT_FILE
    path.write_bytes(content)
    assert repair_tail(path) == removed
    assert path.read_bytes() == kept


def test_repair_tail_of_a_missing_file_is_a_no_op(tmp_path: Path) -> None:
    """No live file yet (killed between rename and reopen) is nothing to repair."""
    assert repair_tail(tmp_path / AUDIT_FILE) == 0


# --- volume and failure -------------------------------------------------------------------------


def test_a_burst_across_many_rotations_loses_and_duplicates_nothing(
    make_log: MakeLog, audit_dir: Path
) -> None:
    """10,000 records from four threads over many gzip rotations come back exactly once."""
    log = make_log(rotate_bytes=64 * 1024, retain_files=10_000, compress=True)
    threads = 4
    per_thread = 10_000 // threads

    def burst(first: int) -> None:
        for seq in range(first, first + per_thread):
            log.write({"seq": seq, "issue": "drill", "details": {"pad": "é" * (seq % 31)}})

    workers = [threading.Thread(target=burst, args=(i * per_thread,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers)
    log.close()

    assert len(audit_files(audit_dir)) > 10
    stats = ReadStats()
    got = seqs(audit_dir, stats)
    assert len(got) == 10_000
    assert set(got) == set(range(10_000))
    assert stats.unreadable == 0
    for i in range(threads):  # each thread's records in the order it wrote them
        mine = [s for s in got if s // per_thread == i]
        assert mine == sorted(mine)


# Runs in its own process: RLIMIT_FSIZE must not limit pytest, and a refused write leaves loguru's
# file object to the garbage collector, whose ResourceWarning would fail this suite.
EFBIG_SCRIPT = """
import json, resource, signal, sys
from pathlib import Path
from selfheal_daemon.record.audit import AUDIT_FILE, AuditLog
from selfheal_daemon.logs import configure_logging
from tests.fakes import FakeClock

configure_logging("WARNING")
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so write() fails with EFBIG instead of killing us
directory = Path(sys.argv[1])
limit = int(sys.argv[2])
log = AuditLog(directory, clock=FakeClock(), rotate_bytes=10**9, compress=False)
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
seq = 0
while log.write_errors == 0 and seq < 100_000:
    log.write({"seq": seq, "details": {"pad": "x" * 37}})
    seq += 1
on_disk = (directory / AUDIT_FILE).read_bytes()
waiting_while_full = log.flush_pending()
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
waiting_after = log.flush_pending()
log.close()
print(json.dumps({
    "written": seq, "errors": log.write_errors, "size_at_failure": len(on_disk),
    "torn_at_failure": not on_disk.endswith(b"\\n"),
    "waiting_while_full": waiting_while_full, "waiting_after": waiting_after,
}))
"""


def test_a_refused_write_is_kept_in_memory_and_written_once_the_disk_takes_it(
    tmp_path: Path,
) -> None:
    """A write torn by EFBIG stays pending; flush_pending writes it whole, once, when it can."""
    script = tmp_path / "efbig.py"
    script.write_text(EFBIG_SCRIPT, encoding="utf-8")
    audit_dir = tmp_path / "audit"
    limit = 5003  # not on a line boundary: the refused write is a torn one
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), str(audit_dir), str(limit)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] >= 1
    assert result["size_at_failure"] == limit
    assert result["torn_at_failure"]
    assert result["waiting_while_full"] == 1
    assert result["waiting_after"] == 0
    assert "cannot write" in done.stderr

    raw = (audit_dir / AUDIT_FILE).read_bytes()
    assert raw.endswith(b"\n")
    records = [strict_loads(line) for line in raw.splitlines()]
    *held, said = records
    assert [r["seq"] for r in held] == list(range(result["written"]))
    stats = ReadStats()
    assert seqs(audit_dir, stats) == list(range(result["written"]))
    assert stats.unreadable == 0
    # once written again, the trail says that writes failed and were retried
    assert (said["issue"], said["detection"], said["action"]) == (
        "lifecycle",
        "audit_write_failed",
        "retried",
    )
    assert said["incident_id"] is None
    assert "File too large" in said["details"]["error"]
    assert said["details"]["refused_writes"] == result["errors"]
    assert said["details"]["records_held"] == 1
    assert said["details"]["since"] == held[-1]["ts"]  # the first record refused
    assert said["details"]["records_dropped"] == 0
