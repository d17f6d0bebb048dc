"""``selfheal once``: one pass of the whole pipeline, for CI, without a daemon.

In order: make sure a valid model is current (rolling back to ``last_good`` when ``current`` fails
its checksums; training the first one on an empty state directory), take in ``data/incoming/``
(repair, quarantine), check the incoming rows for drift against the current model's reference,
train a candidate on the base plus recent labelled data, put it through the gate (metrics against
the champion on the same holdout, model tests, one repair-and-retry after a failed test) and
promote it (``current``) or keep the champion. Every step is written to the audit trail, like the
daemon's. It refuses to run while a daemon runs on the same state directory (use ``selfheal check``
and ``selfheal retrain`` then).

Exit codes (``ONCE_EXIT``): 0 promoted, 10 the candidate was rejected by the gate's metrics (the
champion is kept), 11 the candidate failed the model tests even after the repair, 12 the current
model failed verification and ``last_good`` was restored (a candidate is still tried; a promotion
then wins: 0); the usual 3 config, 4 data, 5 registry, 7 training errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from selfheal_daemon.clock import SystemClock
from selfheal_daemon.config import Config
from selfheal_daemon.model.bootstrap import ensure_model
from selfheal_daemon.model.drift import DRIFT_FILE, ReferenceSummary, check
from selfheal_daemon.model.pipeline import base_frame, learn_profile, retrain, take_in, window_array
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.audit import AuditLog
from selfheal_daemon.record.metrics import DaemonMetrics
from selfheal_daemon.record.recorder import Recorder
from selfheal_daemon.system.process import claim_daemon_pidfile, release_daemon_pidfile

ONCE_EXIT = {"promoted": 0, "kept": 10, "rejected": 11, "rolled_back": 12}

Progress = Callable[[str], None]


@dataclass
class OnceResult:
    outcome: str = "kept"
    champion: str = ""
    candidate: str | None = None
    rolled_back_from: str | None = None
    intake: list[dict[str, Any]] = field(default_factory=list)
    drift: dict[str, Any] | None = None
    verdict: dict[str, Any] = field(default_factory=dict)
    test_failure: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        if self.outcome != "promoted" and self.rolled_back_from:
            return ONCE_EXIT["rolled_back"]
        return ONCE_EXIT[self.outcome]

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "exit_code": self.exit_code}


class _Trail:
    """Audit records for one ``once`` run (the daemon is not running: the file is ours)."""

    def __init__(self, cfg: Config) -> None:
        clock = SystemClock()
        self.log = AuditLog.of(cfg, clock)
        self.recorder = Recorder(self.log, clock, DaemonMetrics())

    def record(self, issue: str, **fields: Any) -> None:
        self.recorder.record(issue, "once", **fields)

    def note(self, issue: str, detection: str, details: dict[str, Any]) -> None:
        self.recorder.bookkeeping(issue, detection, details)

    def close(self) -> None:
        self.log.close()


def run_once(cfg: Config, progress: Progress) -> OnceResult:
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    cfg.run_dir.mkdir(mode=0o700, exist_ok=True)
    claim_daemon_pidfile(cfg.run_dir)
    trail = _Trail(cfg)
    try:
        return _pipeline(cfg, trail, progress)
    finally:
        trail.close()
        release_daemon_pidfile(cfg.run_dir)


def _pipeline(cfg: Config, trail: _Trail, progress: Progress) -> OnceResult:
    result = OnceResult()
    registry = ModelRegistry(cfg.registry_dir)
    before = registry.alias("current")
    broken = before is not None and not registry.verify_version(before).ok
    champion = ensure_model(cfg, registry, progress)
    result.champion = champion
    if broken and champion != before:
        result.rolled_back_from = before
        problem = registry.verify_version(str(before)).problem
        trail.record(
            "deployment_failure",
            detection="checksum_mismatch",
            action="rollback",
            details={"version": before, "rollback_to": champion, "problem": problem},
            outcome="resolved",
        )
        progress(f"current {before} failed verification; rolled back to {champion}")

    progress("taking in data/incoming/")
    base = base_frame(cfg)
    schema = registry.info(champion).schema
    intakes = take_in(cfg, learn_profile(base, schema), SystemClock().utcnow())
    for intake in intakes:
        result.intake.append(intake.details)
        if intake.had_problems:
            kinds = intake.details.get("detections") or ["schema"]
            trail.record(
                "data_quality",
                detection=str(kinds[0]),
                action="quarantined" if intake.rejected else "auto_fix_applied",
                details=intake.details,
                outcome="resolved",
            )
        for line in intake.details.get("fixes", []):
            progress(f"{intake.source}: {line}")

    window = window_array([i.kept for i in intakes], schema)
    path = registry.artifact(champion, DRIFT_FILE)
    if path is not None and len(window):
        verdict = check(ReferenceSummary.load(path), window, cfg.drift)
        result.drift = verdict.to_details()
        trail.note("data_drift", "once_check", result.drift)
        progress(f"drift of the incoming rows against {champion}: {verdict.reason}")

    trail.record(
        "manual_action",
        detection="once",
        action="retrain",
        details={"champion": champion, "reason": "selfheal once"},
        manual=True,
    )
    outcome = retrain(cfg, registry, champion, "selfheal once", progress=progress)
    result.verdict = outcome.verdict
    result.test_failure = outcome.test_failure
    if outcome.test_failure is not None:
        trail.record(
            "test_failure",
            detection="model_tests_failed",
            action="repair_and_retrain",
            details={**outcome.test_failure, "repaired": outcome.repaired or {}},
        )
        trail.record(
            "test_failure",
            detection="retry_passed" if outcome.promote else "retry_failed",
            action="repaired_data_retrained" if outcome.promote else "rejected",
            details={"verdict": outcome.verdict},
            outcome="resolved" if outcome.promote else "escalated",
        )
    if outcome.promote and outcome.candidate:
        registry.set_alias("current", outcome.candidate)
        result.candidate = outcome.candidate
        result.outcome = "promoted"
        trail.record(
            "manual_action",
            detection="once",
            action="promote",
            details={"candidate": outcome.candidate, "from": champion, "verdict": outcome.verdict},
            outcome="resolved",
            manual=True,
        )
        progress(f"promoted {outcome.candidate} (current); {champion} is kept as last_good")
    else:
        result.outcome = "rejected" if outcome.test_failure is not None else "kept"
        trail.record(
            "manual_action",
            detection="once",
            action="kept_champion",
            details={"champion": champion, "verdict": outcome.verdict},
            outcome="failed",
            manual=True,
        )
        progress(f"kept {champion}: " + "; ".join(outcome.verdict.get("reasons", [])))
    return result


__all__ = ["ONCE_EXIT", "OnceResult", "run_once"]
