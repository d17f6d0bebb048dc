"""The audit trail: one JSON object per line in ``audit/audit.jsonl``, rotated by size.

Writing goes through loguru (a file sink of its own with size rotation, retention and compression)
and is synchronous: when ``AuditLog.write`` returns, the line is in the kernel, so a ``kill -9`` of
the daemon a moment later loses nothing. A record is one ``write`` of one whole line; a line torn
anyway (the disk filled in the middle of it) is cut off before the next write, and the record is
kept in memory and written again, so the file holds whole records only. Once the disk takes them
again, a ``lifecycle`` record ``audit_write_failed`` (action ``retried``) says since when writes
failed, the first error, how many records were held and whether any had to be dropped.

Rotated files are renamed ``audit.<created>.jsonl`` and then compressed to ``.jsonl.gz`` through a
temp file and a rename, so a kill during compression leaves either the plain file or both (the
reader prefers the complete ``.gz`` and the next start removes the plain twin).

Records (SPEC "Audit record")::

    {"ts": "2026-11-27T10:00:00.123Z", "incident_id": "…", "issue": "service_crash",
     "detection": "worker_exit", "action": "restart", "details": {...},
     "outcome": null, "manual": false}

``outcome`` is null while an incident is being handled, then ``resolved`` (with
``time_to_resolution_s``), ``failed``, ``skipped`` (the reason in details) or ``escalated``.
``drill: true`` marks an incident injected by ``selfheal drill``.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import json
import math
import os
import secrets
import shutil
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from loguru import logger

from selfheal_daemon.clock import Clock
from selfheal_daemon.config import Config
from selfheal_daemon.system.files import fsync_dir

AUDIT_FILE = "audit.jsonl"
OUTCOMES = frozenset({"resolved", "failed", "skipped", "escalated"})
Scope = int | str | None  # a worker slot, the whole service, or a manual action's name
PENDING_LIMIT = 100_000  # records kept in memory while the disk refuses them


def format_ts(moment: datetime) -> str:
    """``2026-11-27T10:00:00.123Z``: UTC, milliseconds, the form every record uses."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_ts(text: str) -> datetime:
    """The inverse of ``format_ts`` (any ISO-8601 form with an offset or ``Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_incident_id(moment: datetime) -> str:
    """Sortable and unique: ``20261127T100000-3fa2c1``."""
    return f"{moment.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"


def jsonable(value: Any) -> Any:
    """Make ``value`` strict JSON: non-finite floats become null, numpy scalars plain numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return jsonable(tolist())
    return str(value)


def _gzip_atomically(path_in: str) -> None:
    """loguru's compression hook: ``X.jsonl`` → ``X.jsonl.gz`` via a temp file and a rename."""
    final = path_in + ".gz"
    tmp = final + ".tmp"
    with open(path_in, "rb") as src, open(tmp, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as dst:
            shutil.copyfileobj(src, dst)
        raw.flush()
        os.fsync(raw.fileno())
    written = os.stat(path_in)
    os.utime(tmp, ns=(written.st_atime_ns, written.st_mtime_ns))  # the order of the trail
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)
    os.remove(path_in)


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:  # removed by retention while we list
        return 0


def audit_files(directory: Path) -> list[Path]:
    """Every readable file of the trail, oldest first; the live ``audit.jsonl`` last."""
    rotated: dict[str, Path] = {}
    for path in directory.glob("audit.*.jsonl*"):
        if path.name.endswith(".tmp"):
            continue
        stem = path.name.removesuffix(".gz")
        if stem not in rotated or path.name.endswith(".gz"):
            rotated[stem] = path  # a complete .gz wins over its plain twin
    # By last write, not by name: loguru names rotated files in local time (and a clock change or
    # a same-microsecond collision would misorder names); each keeps its last write's mtime.
    files = sorted(rotated.values(), key=lambda p: (_mtime_ns(p), p.name))
    live = directory / AUDIT_FILE
    if live.exists():
        files.append(live)
    return files


@dataclass
class ReadStats:
    """What a read of the trail saw besides the records."""

    files: int = 0
    records: int = 0
    unreadable: int = 0


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_records(
    directory: Path, stats: ReadStats | None = None, *, newest_files: int | None = None
) -> Iterator[dict[str, Any]]:
    """Every record of the trail, oldest first, rotated and compressed files included (only the
    ``newest_files`` most recent files, the live one included, when given).

    A line that is not a JSON object is counted in ``stats.unreadable`` and skipped.
    """
    stats = stats if stats is not None else ReadStats()
    files = audit_files(directory)
    for path in files[-newest_files:] if newest_files else files:
        stats.files += 1
        try:
            with _open_text(path) as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        stats.unreadable += 1
                        continue
                    if not isinstance(record, dict):
                        stats.unreadable += 1
                        continue
                    stats.records += 1
                    yield record
        except (OSError, EOFError):  # a rotated file removed by retention while we read
            continue


def repair_tail(path: Path) -> int:
    """Cut off a torn last line (no newline at the end); return the bytes removed."""
    try:
        with path.open("rb+") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return 0
            # Look back block by block: a torn line longer than one block must not take the
            # whole records before it with it.
            keep, end = 0, size
            while end > 0:
                start = max(0, end - (1 << 20))
                fh.seek(start)
                cut = fh.read(end - start).rfind(b"\n")
                if cut >= 0:
                    keep = start + cut + 1
                    break
                end = start
            fh.truncate(keep)
            return size - keep
    except FileNotFoundError:
        return 0


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(jsonable(record), ensure_ascii=False, separators=(", ", ": "))


@dataclass
class WriteOutage:
    """Writes the disk refused, from the first refusal until every held record is written."""

    since: str  # the ``ts`` of the first record refused
    started: float  # the same moment, monotonic
    error: str  # the first error
    errors: int = 0  # refused writes
    held: int = 0  # the most records held in memory at once
    dropped: int = 0  # held records dropped past ``PENDING_LIMIT`` (the oldest first)


def bookkeeping_record(
    issue: str, detection: str, details: Mapping[str, Any], action: str = "none"
) -> dict[str, Any]:
    """A record that is not an incident (no incident id, no outcome): a daemon start or stop, a
    probe summary, a clean batch, an audit outage."""
    return {
        "incident_id": None,
        "issue": issue,
        "detection": detection,
        "action": action,
        "details": dict(details),
        "outcome": None,
        "manual": False,
    }


def outage_record(outage: WriteOutage, now: float) -> dict[str, Any]:
    """The record that says audit writes failed and were retried (``now``: monotonic)."""
    details = {
        "since": outage.since,
        "error": outage.error,
        "refused_writes": outage.errors,
        "records_held": outage.held,
        "records_dropped": outage.dropped,
        "seconds": round(now - outage.started, 3),
    }
    return bookkeeping_record("lifecycle", "audit_write_failed", details, action="retried")


class AuditLog:
    """The writer. Thread-safe; ``write`` returns once the line is handed to the kernel."""

    @classmethod
    def of(cls, cfg: Config, clock: Clock) -> AuditLog:
        """The trail under ``cfg.audit_dir``, rotated and kept as ``[audit]`` says."""
        return cls(
            cfg.audit_dir,
            clock=clock,
            rotate_bytes=int(cfg.audit.rotate_mb * 2**20),
            retain_files=cfg.audit.retain_files,
            compress=cfg.audit.compress,
        )

    def __init__(
        self,
        directory: Path,
        *,
        clock: Clock,
        rotate_bytes: int = 10 * 2**20,
        retain_files: int = 20,
        compress: bool = True,
    ) -> None:
        self.directory = directory
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: collections.deque[str] = collections.deque(maxlen=PENDING_LIMIT)
        self._rotate_bytes = rotate_bytes
        self._retain = retain_files
        self._compress = compress
        self._sink_key = secrets.token_hex(8)
        self._handler: int | None = None
        self._outage: WriteOutage | None = None
        self.write_errors = 0
        directory.mkdir(parents=True, exist_ok=True)
        self._tidy()
        self._open()

    def _tidy(self) -> None:
        """Finish what a killed writer left: temp files, plain twins of a whole .gz, a torn line."""
        for tmp in self.directory.glob("audit.*.tmp"):
            tmp.unlink(missing_ok=True)
        for gz in self.directory.glob("audit.*.jsonl.gz"):
            gz.with_name(gz.name.removesuffix(".gz")).unlink(missing_ok=True)
        removed = repair_tail(self.directory / AUDIT_FILE)
        if removed:
            logger.warning("audit: cut a torn last line of {} bytes", removed)

    def _open(self) -> None:
        key = self._sink_key
        self._handler = logger.add(
            self.directory / AUDIT_FILE,
            format="{message}",
            level=0,
            filter=lambda r: r["extra"].get("audit_sink") == key,
            rotation=self._rotate_bytes,
            retention=self._retain,
            compression=_gzip_atomically if self._compress else None,
            encoding="utf-8",
            catch=False,
            enqueue=False,
        )

    def _close_handler(self) -> None:
        if self._handler is None:
            return
        handler, self._handler = self._handler, None
        # A flush of a broken file fails again; the file object is dropped either way.
        with contextlib.suppress(OSError, ValueError):
            logger.remove(handler)

    def write(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Stamp ``ts`` (if absent) and append the record; return it as written.

        If the disk refuses the line, the record stays queued in memory and is written first at
        the next call (``flush_pending`` retries too); nothing is torn, nothing is lost.
        """
        full = {"ts": format_ts(self.clock.utcnow()), **record}
        line = _line(full)
        with self._lock:
            if len(self._pending) == PENDING_LIMIT and self._outage is not None:
                self._outage.dropped += 1  # the deque drops the oldest held record
            self._pending.append(line)
            self._drain()
        return full

    @property
    def pending(self) -> int:
        """Records the disk refused so far, still waiting in memory."""
        return len(self._pending)

    def flush_pending(self) -> int:
        """Retry records the disk refused earlier; return how many are still waiting."""
        with self._lock:
            self._drain()
            return len(self._pending)

    def _drain(self) -> None:
        bound = logger.bind(audit_sink=self._sink_key).opt(raw=True)
        while True:
            while self._pending:
                if self._handler is None:
                    repair_tail(self.directory / AUDIT_FILE)
                    self._open()
                try:
                    bound.log("INFO", self._pending[0] + "\n")
                except OSError as exc:
                    self.write_errors += 1
                    self._refused(exc)
                    self._close_handler()
                    logger.error(
                        "audit: cannot write ({}); {} record(s) kept in memory",
                        exc,
                        len(self._pending),
                    )
                    return
                self._pending.popleft()
            if self._outage is None:
                return
            outage, self._outage = self._outage, None
            record = outage_record(outage, self.clock.monotonic())
            logger.warning(
                "audit: writing again; {} record(s) held since {} are written",
                outage.held,
                outage.since,
            )
            self._pending.append(_line({"ts": format_ts(self.clock.utcnow()), **record}))

    def _refused(self, exc: OSError) -> None:
        if self._outage is None:
            first = json.loads(self._pending[0])  # the first record refused: since its time
            self._outage = WriteOutage(
                since=str(first.get("ts") or format_ts(self.clock.utcnow())),
                started=self.clock.monotonic(),
                error=f"{type(exc).__name__}: {exc}",
            )
        self._outage.errors += 1
        self._outage.held = max(self._outage.held, len(self._pending))

    def close(self) -> None:
        with self._lock:
            self._drain()
            self._close_handler()
