"""The one funnel every audit record goes through, and the incidents it links them into.

``Report`` is what both decision cores ask to have recorded; ``IncidentBook`` gives the records of
one incident one id from detection to resolution; ``Recorder`` writes each record to the audit
trail, keeps the metrics and the latest results ``/status`` shows, and hands escalations to the
notifier. The daemon's loop, the notifier's failures (``alerts``) and ``selfheal once`` all write
through a ``Recorder``: nothing else calls ``AuditLog.write``.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from selfheal_daemon.clock import Clock
from selfheal_daemon.record.audit import (
    OUTCOMES,
    AuditLog,
    Scope,
    bookkeeping_record,
    format_ts,
    new_incident_id,
    parse_ts,
)
from selfheal_daemon.record.metrics import DaemonMetrics

DRIFT_POINTS = 2000  # drift scores kept for the dashboard's chart


@dataclass(frozen=True)
class Report:
    """A detection or an outcome worth recording (the audit trail's input).

    ``outcome`` is empty for a detection still being handled, else ``resolved``, ``failed``,
    ``skipped`` (the reason in details) or ``escalated``. ``action`` names what was done about it.
    """

    issue: str
    detection: str
    worker: int | None
    details: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""
    action: str = ""
    manual: bool = False


@dataclass
class _Open:
    incident_id: str
    issue: str
    opened: float  # monotonic
    since: str  # the same moment for a person
    drill: bool = False


@dataclass
class IncidentBook:
    """Links the records of one incident: the same id from detection to resolution.

    Incidents are keyed by ``(issue, scope)``: a worker slot, ``None`` for the whole service, or a
    name (a manual action: one of each kind at a time). A resolving record closes the incident and
    carries ``time_to_resolution_s``.
    """

    clock: Clock
    open: dict[tuple[str, Scope], _Open] = field(default_factory=dict)
    drills: set[tuple[str, Scope]] = field(default_factory=set)

    def resume(
        self, issue: str, scope: Scope, incident_id: str, since: str, *, drill: bool = False
    ) -> None:
        """Continue an incident a previous daemon opened: the next records of ``(issue, scope)``
        carry ``incident_id``, and its resolution time counts from ``since`` (its first record's
        ``ts``)."""
        try:
            age = max(0.0, (self.clock.utcnow() - parse_ts(since)).total_seconds())
        except ValueError:
            age = 0.0
        opened = self.clock.monotonic() - age
        self.open[(issue, scope)] = _Open(incident_id, issue, opened, since, drill)

    def close(self, issue: str, scope: Scope) -> None:
        """The incident ``(issue, scope)`` ended without a resolution (escalated, nothing more to
        do): the next record of that key opens a new incident."""
        self.open.pop((issue, scope), None)

    def expect_drill(self, issue: str, scope: Scope) -> None:
        """The next incident ``(issue, scope)`` to open is one a drill injects."""
        self.drills.add((issue, scope))

    def incident_for(self, issue: str, scope: Scope, *, drill: bool = False) -> _Open:
        key = (issue, scope)
        if key not in self.open:
            moment = self.clock.utcnow()
            drill = drill or key in self.drills
            self.drills.discard(key)
            self.open[key] = _Open(
                new_incident_id(moment), issue, self.clock.monotonic(), format_ts(moment), drill
            )
        return self.open[key]

    def record(
        self,
        issue: str,
        scope: Scope,
        *,
        detection: str,
        action: str,
        details: Mapping[str, Any] | None = None,
        outcome: str | None = None,
        manual: bool = False,
        drill: bool = False,
    ) -> dict[str, Any]:
        """The record of one step of incident ``(issue, scope)``; a resolved one closes it."""
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {sorted(OUTCOMES)}, got {outcome!r}")
        incident = self.incident_for(issue, scope, drill=drill)
        body: dict[str, Any] = {"worker": scope} if isinstance(scope, int) else {}
        body.update(details or {})
        record: dict[str, Any] = {
            "incident_id": incident.incident_id,
            "issue": issue,
            "detection": detection,
            "action": action,
            "details": body,
            "outcome": outcome,
            "manual": manual,
        }
        if outcome == "resolved":
            elapsed = self.clock.monotonic() - incident.opened
            record["time_to_resolution_s"] = round(elapsed, 3)
        if outcome in ("resolved", "failed"):  # skipped and escalated stay open until resolved
            del self.open[(issue, scope)]
        if incident.drill:
            record["drill"] = True
        return record

    def open_incidents(self) -> list[dict[str, Any]]:
        """What is still being handled (or escalated and not yet resolved), oldest first."""
        return [
            {
                "incident_id": o.incident_id,
                "issue": o.issue,
                "worker": scope if isinstance(scope, int) else None,
                "scope": scope if isinstance(scope, str) else None,
                "since": o.since,
            }
            for (_, scope), o in sorted(self.open.items(), key=lambda item: item[1].opened)
        ]


class Recorder:
    """Writes every detection, action and outcome to the audit trail, linked by incident.

    Thread-safe: the loop writes, and so does the notifier's thread when a channel gives up.
    ``on_escalated`` (the notifier) hears of every escalated record; set it once, before use.
    """

    def __init__(
        self,
        audit: AuditLog,
        clock: Clock,
        metrics: DaemonMetrics,
        on_escalated: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.audit = audit
        self.clock = clock
        self.book = IncidentBook(clock)
        self._lock = threading.RLock()
        self.metrics = metrics
        self.on_escalated = on_escalated
        self.open_incidents: list[dict[str, Any]] = []  # published copy for other threads
        # What /status and the dashboard's charts show, kept as records are written so that a
        # poll every 2 s never re-reads the trail: the last drift and quality results by issue,
        # and recent drift scores.
        self.latest: dict[str, dict[str, Any]] = {}
        self.drift_series: tuple[dict[str, Any], ...] = ()
        self.drift_scores: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=DRIFT_POINTS
        )

    def seed(self, records: Iterable[dict[str, Any]]) -> None:
        """Remember the last results from the trail a previous daemon wrote (once, at start)."""
        for record in records:
            self._remember(record)

    def _remember(self, record: dict[str, Any]) -> None:
        issue, details = record.get("issue"), record.get("details")
        if issue not in ("data_drift", "data_quality", "performance") or not isinstance(
            details, dict
        ):
            return
        self.latest[str(issue)] = {"ts": record.get("ts"), **details}
        score = details.get("score")
        if issue == "data_drift" and isinstance(score, int | float):
            self.drift_scores.append({"ts": record.get("ts"), "score": score})
            self.drift_series = tuple(self.drift_scores)  # a copy other threads can read

    def report(self, report: Report) -> dict[str, Any]:
        return self.record(
            report.issue,
            report.worker,
            detection=report.detection,
            action=report.action or "none",
            details=report.details,
            outcome=report.outcome or None,
            manual=report.manual,
        )

    def record(self, issue: str, scope: Scope, **fields: Any) -> dict[str, Any]:
        """One step of incident ``(issue, scope)`` (``IncidentBook.record``'s fields), written."""
        with self._lock:
            record = self.book.record(issue, scope, **fields)
            return self.write(record)

    def write(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write one whole record; what was written (with its ``ts``) is returned."""
        with self._lock:
            written = self.audit.write(record)
            self._remember(written)
            self.metrics.on_record(written)
            self.open_incidents = self.book.open_incidents()
        if written.get("outcome") == "escalated" and self.on_escalated is not None:
            self.on_escalated(written)
        return written

    def bookkeeping(
        self, issue: str, detection: str, details: Mapping[str, Any], action: str = "none"
    ) -> dict[str, Any]:
        """A record that is not an incident: a daemon start or stop, a probe summary."""
        return self.write(bookkeeping_record(issue, detection, details, action))
