"""The invariants every fault test checks after every fault (issue #7).

``violations(daemon, ...)`` returns a list of plain sentences, empty when all hold:

- the registry's ``current`` and ``last_good`` name complete versions whose every artifact matches
  the sha256 in its meta.json, and no half-built (staging) version is left once the daemon settled;
- every line of every audit file (rotated and compressed ones too) is a whole JSON record with the
  SPEC's keys, and every incident has reached an outcome (resolved, escalated, failed or skipped);
- the daemon's worker record (``run/workers.json``) names exactly ``workers`` live processes, one
  per slot; nothing else holds the service port but the daemon, its template and those workers (no
  orphan, no duplicate);
- no labelled row was lost: rows dropped into ``data/incoming/`` are all in ``data/labelled/`` or
  ``data/quarantine/`` once taken in;
- the service answers ``/predict`` with 200.

The checks read the state directory and ``/proc`` (through psutil) and never change anything.
"""

from __future__ import annotations

import gzip
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psutil

from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.audit import OUTCOMES, audit_files
from tests.daemons import ROW, RunningDaemon

RECORD_KEYS = frozenset(
    {"ts", "incident_id", "issue", "detection", "action", "details", "outcome", "manual"}
)


def registry_violations(state_dir: Path, *, settled: bool = True) -> list[str]:
    registry = ModelRegistry(state_dir / "registry")
    problems = []
    for alias in ("current", "last_good"):
        version = registry.alias(alias)
        if version is None:
            problems.append(f"registry: {alias} is not set")
            continue
        verdict = registry.verify_version(version)
        if not verdict.ok:
            problems.append(f"registry: {alias} -> {version} is not valid: {verdict.problem}")
    if settled and registry.root.is_dir():
        staging = [p.name for p in registry.root.iterdir() if p.name.startswith(".staging-")]
        if staging:
            problems.append(f"registry: half-built versions left: {staging}")
    return problems


def audit_lines(audit_dir: Path) -> list[str]:
    """Every raw line of the trail, oldest file first (compressed files included)."""
    lines: list[str] = []
    for path in audit_files(audit_dir):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = data.decode("utf-8")
        if text and not text.endswith("\n"):
            lines.append("<torn>" + text.rsplit("\n", 1)[-1])
            text = text.rsplit("\n", 1)[0] + "\n" if "\n" in text else ""
        lines.extend(text.splitlines())
    return lines


def audit_records(audit_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(the records, a sentence for every line that is not a whole record)."""
    records, problems = [], []
    for number, line in enumerate(audit_lines(audit_dir), 1):
        if line.startswith("<torn>"):
            problems.append(f"audit: torn last line {line[6:80]!r}")
            continue
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"audit: line {number} does not parse: {line[:80]!r}")
            continue
        if not isinstance(record, dict) or not record.keys() >= RECORD_KEYS:
            problems.append(f"audit: line {number} lacks keys: {line[:80]!r}")
            continue
        records.append(record)
    return records, problems


def unsettled_incidents(records: list[dict[str, Any]]) -> dict[str, str]:
    """Incidents (id -> issue) none of whose records carries an outcome yet."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["incident_id"]:  # bookkeeping (lifecycle, availability) is no incident
            by_id[str(record["incident_id"])].append(record)
    return {
        incident: group[0]["issue"]
        for incident, group in by_id.items()
        if not any(r.get("outcome") in OUTCOMES for r in group)
    }


def audit_violations(audit_dir: Path, *, settled: bool = True) -> list[str]:
    records, problems = audit_records(audit_dir)
    if settled:
        for incident, issue in sorted(unsettled_incidents(records).items()):
            problems.append(f"audit: incident {incident} ({issue}) has no outcome")
    return problems


def _port_holders(port: int) -> set[int]:
    """Pids holding a listening TCP socket on ``port`` (every process sharing it is listed)."""
    return {
        conn.pid
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN
        and conn.laddr
        and conn.laddr.port == port
        and conn.pid is not None
    }


def worker_violations(daemon: RunningDaemon, workers: int) -> list[str]:
    problems = []
    records = daemon.workers()
    slots = [int(r["worker"]) for r in records]
    pids = {int(r["pid"]) for r in records}
    if sorted(slots) != list(range(workers)):
        problems.append(f"workers: slots {sorted(slots)}, expected 0..{workers - 1} once each")
    for record in records:
        try:
            proc = psutil.Process(int(record["pid"]))
            alive = proc.create_time() == record["create_time"] and proc.status() not in (
                psutil.STATUS_ZOMBIE,
                psutil.STATUS_DEAD,
            )
        except psutil.Error:
            alive = False
        if not alive:
            problems.append(f"workers: recorded worker {record['pid']} is not alive")
    daemon_children = set()
    try:
        daemon_children = {p.pid for p in psutil.Process(daemon.proc.pid).children()}
    except psutil.Error:
        problems.append("workers: the daemon is not running")
    strangers = _port_holders(daemon.port) - pids - {daemon.proc.pid}
    templates = strangers & daemon_children
    if len(templates) > 1:
        problems.append(f"workers: {len(templates)} templates hold the port: {sorted(templates)}")
    orphans = strangers - templates
    if orphans:
        problems.append(f"workers: processes hold the port but are not workers: {sorted(orphans)}")
    return problems


def table_rows(directory: Path) -> int:
    """Data rows in every CSV of ``directory`` (quarantine's per-row files and whole files)."""
    if not directory.is_dir():
        return 0
    rows = 0
    for path in directory.iterdir():
        if path.name.endswith((".csv", ".csv.gz")):
            rows += len(pd.read_csv(path))
    return rows


def data_violations(state_dir: Path, dropped_rows: int) -> list[str]:
    data = state_dir / "data"
    incoming = data / "incoming"
    waiting = [p.name for p in incoming.iterdir()] if incoming.is_dir() else []
    kept = table_rows(data / "labelled") + table_rows(data / "quarantine")
    if not waiting and kept < dropped_rows:
        return [f"data: {dropped_rows} labelled rows dropped, only {kept} kept or quarantined"]
    return []


def service_violations(daemon: RunningDaemon, within_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + within_s
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.post(f"{daemon.url}/predict", json=ROW, timeout=2.0)
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code == 200:
                return []
            last = f"HTTP {response.status_code}: {response.text[:120]}"
        time.sleep(0.2)
    return [f"service: /predict did not answer 200 within {within_s:.0f} s ({last})"]


def violations(
    daemon: RunningDaemon,
    *,
    workers: int,
    dropped_rows: int = 0,
    settled: bool = True,
) -> list[str]:
    """Every invariant at once; ``settled`` once the daemon had time to finish its incidents."""
    return [
        *service_violations(daemon),
        *registry_violations(daemon.state_dir, settled=settled),
        *audit_violations(daemon.state_dir / "audit", settled=settled),
        *worker_violations(daemon, workers),
        *data_violations(daemon.state_dir, dropped_rows),
    ]


def wait_invariants(
    daemon: RunningDaemon, *, workers: int, dropped_rows: int = 0, timeout: float = 30.0
) -> list[str]:
    """Poll until every invariant holds (the daemon is healing); the last violations if not."""
    deadline = time.monotonic() + timeout
    while True:
        found = violations(daemon, workers=workers, dropped_rows=dropped_rows)
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.25)
