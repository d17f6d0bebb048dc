"""The registry's own re-check: ``current`` and ``last_good`` must stay checksum-valid on disk.

A version is checked when it is published, loaded and deployed; bytes damaged later (a bad disk, a
stray write, a restore gone wrong) would only show at the next worker template start, as a failed
load with nothing valid to roll back to. So every monitoring interval the daemon re-hashes the two
versions the aliases name (``inspect``, on a scheduler thread: a few milliseconds per version) and
``decide`` says what to do, as the issue ``deployment_failure`` (a version that no longer verifies):

- ``current`` damaged: deploy a valid version in its place, in place on every worker (the workers
  still serve the model they loaded before the damage, so nobody notices the switch): ``last_good``
  if it is valid and another version, else the nearest valid ancestor of ``current`` (drill versions
  never). With none, escalate: the workers keep serving from memory, but a restart cannot load it.
- ``last_good`` damaged (``current`` valid): ``last_good`` moves to ``current``, the version that
  serves right now, and the incident is resolved in the same record.

Each damaged (alias, version) is reported once; a deployment or retrain in flight is left alone
(the next pass looks again).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from selfheal_daemon.errors import SelfhealError
from selfheal_daemon.lifecycle.events import DeployRequested
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.recorder import Report

ISSUE = "deployment_failure"
DETECTION = "artifact_checksum_mismatch"
MAX_ANCESTORS = 50  # how far up the parent chain a fallback is looked for


@dataclass(frozen=True)
class IntegrityChecked:
    """What one re-check of the aliases found ('' problem: the version verified)."""

    current: str | None
    current_problem: str
    last_good: str | None
    last_good_problem: str
    fallback: str | None  # a valid version to serve instead of a damaged current


@dataclass(frozen=True)
class SetLastGood:
    """Point ``last_good`` at ``version`` (a valid one)."""

    version: str


IntegrityAction = Report | DeployRequested | SetLastGood


@dataclass(frozen=True)
class IntegrityDecision:
    reported: frozenset[tuple[str, str]]
    actions: tuple[IntegrityAction, ...] = field(default=())


def decide(
    seen: IntegrityChecked, reported: frozenset[tuple[str, str]], *, busy: bool
) -> IntegrityDecision:
    """Pure: what a re-check calls for, given what was already reported and whether the model
    side is busy (a deployment or retrain in flight)."""
    if busy:
        return IntegrityDecision(reported)
    if seen.current is not None and seen.current_problem:
        key = ("current", seen.current)
        actions = () if key in reported else _replace_current(seen, seen.current)
        return IntegrityDecision(reported | {key}, actions)
    if seen.last_good is not None and seen.last_good_problem and seen.current is not None:
        key = ("last_good", seen.last_good)
        actions = () if key in reported else _move_last_good(seen, seen.last_good, seen.current)
        return IntegrityDecision(reported | {key}, actions)
    return IntegrityDecision(reported)


def _replace_current(seen: IntegrityChecked, current: str) -> tuple[IntegrityAction, ...]:
    details = {
        "alias": "current",
        "version": current,
        "problem": seen.current_problem,
        "fallback": seen.fallback,
    }
    if seen.fallback is None:
        why = (
            "no valid version to fall back to: the workers serve the model they loaded, but a "
            "restarted worker cannot load it"
        )
        return (
            Report(
                ISSUE, DETECTION, None, {**details, "why": why}, outcome="escalated", action="none"
            ),
        )
    return (
        Report(ISSUE, DETECTION, None, details, action="rollback"),
        DeployRequested(
            seen.fallback, ISSUE, f"{current} fails its checksum: {seen.current_problem}"
        ),
    )


def _move_last_good(
    seen: IntegrityChecked, last_good: str, current: str
) -> tuple[IntegrityAction, ...]:
    details = {
        "alias": "last_good",
        "version": last_good,
        "problem": seen.last_good_problem,
        "last_good": current,
    }
    moved = Report(ISSUE, DETECTION, None, details, outcome="resolved", action="last_good_moved")
    return (moved, SetLastGood(current))


def inspect(registry: ModelRegistry) -> IntegrityChecked:
    """Re-hash the versions ``current`` and ``last_good`` name (no unpickling)."""
    current = registry.alias("current")
    last_good = registry.alias("last_good")
    problems: dict[str, str] = {}
    for version in {v for v in (current, last_good) if v is not None}:
        verdict = registry.verify_version(version)
        problems[version] = "" if verdict.ok else verdict.problem
    current_problem = problems.get(current or "", "")
    fallback = None
    if current is not None and current_problem:
        fallback = _fallback(registry, current, last_good, problems.get(last_good or "", ""))
    return IntegrityChecked(
        current,
        current_problem,
        last_good,
        problems.get(last_good or "", ""),
        fallback,
    )


def _fallback(
    registry: ModelRegistry, current: str, last_good: str | None, last_good_problem: str
) -> str | None:
    if last_good is not None and last_good != current and not last_good_problem:
        return last_good
    try:
        meta = registry.info(current).meta
        for _ in range(MAX_ANCESTORS):  # up the parent chain, each meta.json read once
            parent = meta.get("parent")
            if not isinstance(parent, str):
                return None
            meta = registry.info(parent).meta
            drill = str(meta.get("origin", "")).startswith("drill")
            if not drill and registry.verify_version(parent).ok:
                return parent
    except SelfhealError:  # an unreadable meta ends the walk like a missing parent
        return None
    return None
