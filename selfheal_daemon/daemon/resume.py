"""What a starting daemon does about the incidents a previous run left without an outcome.

A daemon killed (or stopped) in the middle of an incident leaves its records without an outcome.
At start the live audit file and the most recent rotated one are read (not the whole history);
``unfinished(records)`` lists every incident whose last record has no outcome, and the pure
``plan(...)`` decides what becomes of each:

- **continue**: the model side's durable state says a retrain, a retry or a deployment for that
  issue was in flight. The incident keeps its id and the model policy continues it
  (``lifecycle.retry.resumed``: the retrain is started again, the deployment run again).
- **watch**: a supervision incident (a crashed, hung or over-limit worker, a crash loop, a failed
  deployment), or a deployment that had finished but whose success was not yet recorded. A
  ``daemon_restarted`` record says what the new daemon found; the incident is resolved once every
  worker is ready (on ``current``), or failed if that does not happen in time.
- **close**: nothing of it runs any more and nothing shows it was done: one final
  ``daemon_restarted`` record, ``escalated`` (``failed`` for a manual restart or rollback that had
  not taken effect), so a person looks at it.

Every such record says the daemon was restarted, the previous daemon's pid and how it ended
(``stopped``, or ``killed or crashed`` when no ``daemon_stop`` record followed its start), and what
the new daemon found. ``carry_out`` is the thin adapter that writes the records and sets up the
follow-ups; the daemon calls it once, before its scheduler starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from selfheal_daemon.daemon.operations import Operations
from selfheal_daemon.lifecycle.events import ModelEvent, ModelState, Resumed
from selfheal_daemon.record.audit import OUTCOMES, Scope
from selfheal_daemon.record.recorder import Recorder
from selfheal_daemon.supervision.state import SupervisorState

RECENT_FILES = 2  # the live audit file and the most recent rotated one
SUPERVISION = frozenset(
    {"service_crash", "service_hang", "resource_limit", "crash_loop", "deployment_failure"}
)
MANUAL_SCOPES = frozenset({"restart", "rollback", "pause", "resume"})


@dataclass(frozen=True)
class Unfinished:
    """An incident whose last record has no outcome."""

    incident_id: str
    issue: str
    scope: Scope
    since: str  # the ts of its first record (as far as the files read go back)
    first: dict[str, Any]
    last: dict[str, Any]
    manual: bool = False
    drill: bool = False


@dataclass(frozen=True)
class Previous:
    """The daemon that ran before this one, as its lifecycle records tell."""

    pid: int | None = None
    stopped: bool = False  # a daemon_stop record followed its daemon_start

    def details(self) -> dict[str, Any]:
        return {
            "daemon_restarted": True,
            "previous_pid": self.pid,
            "previous_daemon": "stopped" if self.stopped else "killed or crashed",
        }


@dataclass(frozen=True)
class Found:
    """What the new daemon found: in flight (durable model state) and serving."""

    retrain_issue: str = ""  # the incident a running retrain or an awaited retry served
    deploy_issue: str = ""  # the incident a running deployment served ...
    deploying: str = ""  # ... and its version
    current: str | None = None
    workers: int = 0
    adopted: int = 0  # of them, taken over still serving

    @classmethod
    def of(cls, state: ModelState, current: str | None, workers: int, adopted: int) -> Found:
        return cls(
            retrain_issue=state.job_issue or state.retry_issue,
            deploy_issue=state.deploy_issue if state.deploying else "",
            deploying=state.deploying,
            current=current,
            workers=workers,
            adopted=adopted,
        )

    def workers_text(self) -> str:
        text = f"{self.adopted} of {self.workers} worker(s) still serving {self.current} taken over"
        if self.adopted < self.workers:
            text += f"; the others start on {self.current}"
        return text


@dataclass(frozen=True)
class Step:
    """What becomes of one unfinished incident."""

    incident: Unfinished
    kind: Literal["continue", "watch", "close"]
    details: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""  # close: the final outcome
    version: str | None = None  # watch: resolved when every worker serves it (None: is ready)


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...] = ()
    open_issues: frozenset[str] = frozenset()  # continued: for ``Resumed``
    details: dict[str, Any] = field(default_factory=dict)


# ----- reading the trail (pure: records in) ---------------------------------------------------


def _scope(issue: str, first: dict[str, Any]) -> Scope:
    """The IncidentBook key an incident's records were written under."""
    details = first.get("details")
    worker = details.get("worker") if isinstance(details, dict) else None
    if isinstance(worker, int) and not isinstance(worker, bool):
        return worker
    if issue == "manual_action" and first.get("action") in MANUAL_SCOPES:
        return str(first["action"])
    return None


def unfinished(records: Iterable[dict[str, Any]]) -> list[Unfinished]:
    """Incidents whose last record has no outcome, oldest first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        incident = record.get("incident_id")
        if isinstance(incident, str) and incident and isinstance(record.get("issue"), str):
            groups.setdefault(incident, []).append(record)
    found = []
    for incident, group in groups.items():
        first, last = group[0], group[-1]
        if last.get("outcome") in OUTCOMES:
            continue
        issue = str(first["issue"])
        found.append(
            Unfinished(
                incident,
                issue,
                _scope(issue, first),
                str(first.get("ts", "")),
                first,
                last,
                manual=first.get("manual") is True,
                drill=any(r.get("drill") is True for r in group),
            )
        )
    return found


def previous_run(records: Iterable[dict[str, Any]]) -> Previous:
    """The last daemon that started, by its lifecycle records, and whether it stopped cleanly."""
    previous = Previous()
    for record in records:
        if record.get("issue") != "lifecycle":
            continue
        details = record.get("details")
        pid = details.get("pid") if isinstance(details, dict) else None
        if record.get("detection") == "daemon_start":
            previous = Previous(pid if isinstance(pid, int) else None, stopped=False)
        elif record.get("detection") == "daemon_stop" and pid == previous.pid:
            previous = Previous(previous.pid, stopped=True)
    return previous


# ----- the decision (pure) --------------------------------------------------------------------


def plan(incidents: list[Unfinished], found: Found, previous: Previous) -> Plan:
    """Continue, watch or close every unfinished incident (see the module docstring)."""
    base = previous.details()
    continued: set[str] = set()
    steps: list[Step] = []
    for incident in reversed(incidents):  # the newest open incident of an issue is continued
        wanted = {found.retrain_issue, found.deploy_issue} - {""}
        if incident.scope is None and incident.issue in wanted - continued:
            continued.add(incident.issue)
            steps.append(Step(incident, "continue"))
        else:
            steps.append(_settle(incident, found, base))
    return Plan(tuple(reversed(steps)), frozenset(continued), base)


def _settle(incident: Unfinished, found: Found, base: dict[str, Any]) -> Step:
    """A step for an incident nothing continues: watch it to its end, or close it."""
    last = incident.last
    step = f"its last step was {last.get('detection')} ({last.get('action')})"
    if incident.issue in SUPERVISION or isinstance(incident.scope, int):
        details = {**base, "found": f"{step}; {found.workers_text()}"}
        return Step(incident, "watch", details)  # resolved once every worker is ready
    if incident.issue == "manual_action" and incident.scope == "rollback":
        target = (incident.first.get("details") or {}).get("to")
        if target and target == found.current:
            details = {**base, "found": f"current is {target}; {found.workers_text()}"}
            return Step(incident, "watch", details, version=target)
        reason = f"the rollback to {target} had not taken effect: current is {found.current}"
        details = {**base, "found": f"{step}; {reason}", "reason": "ask again if still wanted"}
        return Step(incident, "close", details, outcome="failed")
    if incident.issue == "manual_action" and incident.scope == "restart":
        details = {
            **base,
            "found": f"{step}; {found.workers_text()}",
            "reason": "not every worker was replaced; ask again if they still need a restart",
        }
        return Step(incident, "close", details, outcome="failed")
    said = last.get("details")
    candidate = (
        said.get("candidate") if isinstance(said, dict) and last.get("action") == "deploy" else None
    )
    if candidate and candidate == found.current:
        text = f"{step}; the deployment of {candidate} had finished: current is {candidate}"
        return Step(incident, "watch", {**base, "found": text}, version=candidate)
    details = {
        **base,
        "found": f"{step}; nothing of it was running any more (current is {found.current})",
        "reason": "the daemon was restarted in the middle of this incident; its end is unknown",
    }
    return Step(incident, "close", details, outcome="escalated")


# ----- the adapter ----------------------------------------------------------------------------


def carry_out(
    decided: Plan,
    *,
    recorder: Recorder,
    operations: Operations,
    model: Callable[[ModelEvent], Any],
) -> None:
    """Write each step's record under the incident's own id, follow the watched ones, and hand
    what is continued to the model policy (``Resumed``)."""
    for step in decided.steps:
        incident = step.incident
        key = (incident.issue, incident.scope)
        recorder.book.resume(*key, incident.incident_id, incident.since, drill=incident.drill)
        if step.kind == "continue":
            continue
        recorder.record(
            *key,
            detection="daemon_restarted",
            action="takeover" if step.kind == "watch" else "none",
            details=step.details,
            outcome=step.outcome or None,
            manual=incident.manual,
        )
        if step.kind == "close":
            recorder.book.close(*key)  # ended: a new incident of that key gets a new id
            continue
        done = operations.all_on(step.version) if step.version else _all_ready
        operations.follow(
            *key,
            done,
            detection="all_workers_ready",
            action="takeover",
            manual=incident.manual,
        )
    model(Resumed(decided.open_issues, decided.details))


def _all_ready(state: SupervisorState) -> bool:
    return state.all_ready
