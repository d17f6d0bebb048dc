"""``kill -9`` of the daemon at random moments of a retrain and of its promotion, under load.

One state directory and port serve every trial. A trial kills the daemon while a retrain (or its
deployment) is in flight, starts a new daemon on the same config, and checks the invariants. The
new daemon adopts the workers the dead one left (they kept answering meanwhile), and continues
the incident under its id: a retrain whose job died with the daemon is started again as the next
attempt (``retrain.max_attempts``, then escalated), an interrupted deployment is run again. So the
trials form chains: the next kill may land in the continued retrain; a chain ends when nothing is
in flight any more, and then every incident must have its outcome ("settled").

Kill moments: seeded. Most trials wait a random time within the retrain (its length is measured
once, first); the promotion trials wait for the gate's verdict in the trail, then a random time
within the deployment (measured too).
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.audit import parse_ts, read_records
from tests.chaos.conftest import Scenario
from tests.chaos.invariants import audit_records, unsettled_incidents, violations
from tests.daemons import Poller, RunningDaemon
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.integration

TRIALS = 20
PROMOTION_TRIALS = 5  # of them, killed during the deployment of a candidate that passed the gate
WORKERS = 2
SECTIONS: dict[str, dict[str, Any]] = {
    "service": {"workers": WORKERS},
    "monitor": {"interval_s": 3600.0},  # no drift check: only the trials' retrains run
    "retrain": {"cooldown_s": 0.0, "daily_budget": 1000, "max_attempts": 3, "timeout_s": 120.0},
    "restart": {"stable_after_s": 3.0},
}


def answers(daemon: RunningDaemon) -> bool:
    with contextlib.suppress(httpx.HTTPError, OSError):
        return bool(daemon.control("GET", "/status"))
    return False


def flight(daemon: RunningDaemon) -> str:
    """What the daemon runs (a continued one, after a restart): retraining, deploying or ""."""
    model = daemon.control("GET", "/status")["model_healing"]
    if model.get("retraining"):
        return "retraining"
    return "deploying" if model.get("deploying") else ""


def in_flight(daemon: RunningDaemon) -> bool:
    return bool(flight(daemon))


def records(daemon: RunningDaemon) -> list[dict[str, Any]]:
    return list(read_records(daemon.state_dir / "audit"))


def version_violations(daemon: RunningDaemon) -> list[str]:
    current = ModelRegistry(daemon.state_dir / "registry").alias("current")
    try:
        versions = daemon.worker_versions()
    except (httpx.HTTPError, OSError, KeyError) as exc:
        return [f"workers: cannot ask every worker its version: {exc}"]
    if set(versions) != {current}:
        return [f"workers: serve {versions}, current is {current}"]
    return []


def stray_jobs(daemon: RunningDaemon, within_s: float = 3.0) -> list[str]:
    """Retrain jobs of a dead daemon still running after ``within_s`` (they die with it)."""

    def stray() -> list[str]:
        found = []
        for pid in daemon.survivors():
            with contextlib.suppress(psutil.Error):
                if "selfheal_daemon.model.retrain" in " ".join(psutil.Process(pid).cmdline()):
                    found.append(f"retrain job {pid} outlived its daemon")
        return found

    deadline = time.monotonic() + within_s
    while (found := stray()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def wait_record(daemon: RunningDaemon, after: int, timeout: float, **match: Any) -> float:
    """Wait for a record matching ``match`` among those after the first ``after``."""

    def seen() -> bool:
        return any(all(r.get(k) == v for k, v in match.items()) for r in records(daemon)[after:])

    wait_until(seen, timeout, interval=0.02, what=f"a record {match}")
    return time.monotonic()


def stamp_s(record: dict[str, Any]) -> float:
    return parse_ts(str(record["ts"])).timestamp()


def measure(daemon: RunningDaemon) -> tuple[float, float]:
    """One whole retrain and deployment: (seconds to the gate's verdict, seconds to deploy)."""
    before = len(records(daemon))
    asked = time.monotonic()
    daemon.control("POST", "/actions/retrain")
    wait_record(daemon, before, 120, issue="manual_action", outcome="resolved")
    took = time.monotonic() - asked
    mine = records(daemon)[before:]
    gate = next(r for r in mine if r["detection"] == "candidate_passed_gate")
    done = next(r for r in mine if r["detection"] == "all_workers_on_version")
    deploy_s = stamp_s(done) - stamp_s(gate)
    return took - deploy_s, deploy_s


def open_incidents(daemon: RunningDaemon) -> set[str]:
    records, _ = audit_records(daemon.state_dir / "audit")
    return set(unsettled_incidents(records))


def wait_taken_up(daemon: RunningDaemon, left: set[str]) -> None:
    """Wait until the new daemon said what it does about each incident the dead one left open
    (its ``daemon_restarted`` record): only then does its status show what it continues."""

    def said() -> bool:
        return left <= {
            str(r["incident_id"]) for r in records(daemon) if r["detection"] == "daemon_restarted"
        }

    wait_until(said, 30, interval=0.05, what=f"the new daemon to take up {sorted(left)}")


def settle(daemon: RunningDaemon, killed: float) -> list[str]:
    """Wait for the invariants after a restart; those of a settled daemon once nothing is in
    flight (the chain ended). The problems still there after 60 s, or none."""
    deadline = killed + 60.0
    while problems := violations(daemon, workers=WORKERS, settled=False):
        if time.monotonic() > deadline:
            return problems
        time.sleep(0.1)
    if in_flight(daemon):
        return []
    while problems := [
        *violations(daemon, workers=WORKERS, settled=True),
        *version_violations(daemon),
    ]:
        if time.monotonic() > deadline:
            return problems
        time.sleep(0.1)
    return []


def phase_of(daemon: RunningDaemon, marker: int) -> str:
    """What the new daemon did about the interrupted incident: its ``daemon_restarted`` action
    (``retry``: the retrain again, ``deploy``: the deployment again), ``exhausted`` (no attempt
    left: escalated), or ``none`` (the kill came before the incident began or after its end)."""
    said = [r for r in records(daemon)[marker:] if r["detection"] == "daemon_restarted"]
    if not said:
        return "none"
    return "exhausted" if said[0]["outcome"] else str(said[0]["action"])


def one_retrain_per_incident(daemon: RunningDaemon) -> list[str]:
    """Each retrain asked for is an incident of its own (an ended one is never reopened)."""
    asked: dict[str, int] = {}
    for record in records(daemon):
        if record["detection"] == "operator_request" and record["action"] == "retrain":
            asked[record["incident_id"]] = asked.get(record["incident_id"], 0) + 1
    return [f"audit: incident {i} holds {n} retrain requests" for i, n in asked.items() if n > 1]


def wait_for_the_moment(
    daemon: RunningDaemon, kind: str, delay_s: float, marker: int, scenario: Scenario
) -> None:
    """Bring the moment of the kill: ``delay_s`` into the retrain (a fresh one is asked for when
    nothing is in flight), or, for ``promotion``, into the deployment that follows the gate."""
    running = flight(daemon)
    if not running:
        daemon.control("POST", "/actions/retrain")  # a fresh chain
        scenario.notes["chains"] += 1
    began = time.monotonic()
    if kind == "promotion" and running != "deploying":  # a continued deployment is one already
        wait_record(daemon, marker, 120, detection="candidate_passed_gate")
        began = time.monotonic()
    time.sleep(max(0.0, delay_s - (time.monotonic() - began)))


@pytest.mark.timeout(600)
def test_kill_9_of_the_daemon_during_retrain_and_promotion(
    start_daemon: Any, tmp_path: Path, scenario: Scenario
) -> None:
    """Every kill leaves the service answering; each new daemon adopts the workers, continues or
    closes every open incident, and settles with all invariants holding."""
    rng = random.Random(7)
    port = free_port()

    def start() -> RunningDaemon:
        daemon: RunningDaemon = start_daemon(config_dir=tmp_path, port=port, **SECTIONS)
        daemon.wait_serving(120)
        wait_until(lambda: answers(daemon), 30, interval=0.05, what="the control endpoint")
        return daemon

    daemon = start()
    retrain_s, deploy_s = measure(daemon)
    scenario.notes.update(retrain_s=round(retrain_s, 2), deploy_s=round(deploy_s, 3), chains=0)
    kinds = ["promotion"] * PROMOTION_TRIALS + ["retrain"] * (TRIALS - PROMOTION_TRIALS)
    rng.shuffle(kinds)
    phases: dict[str, int] = {}
    with Poller(daemon.url, interval_s=0.02) as poller:
        for trial, kind in enumerate(kinds):
            marker = len(records(daemon))
            delay = rng.uniform(0.0, deploy_s if kind == "promotion" else retrain_s)
            wait_for_the_moment(daemon, kind, delay, marker, scenario)
            daemon.remember()
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.proc.wait(timeout=10)
            killed = time.monotonic()
            scenario.faults += 1
            stray = stray_jobs(daemon)
            left = open_incidents(daemon)
            daemon = start()
            scenario.notes.setdefault("restart_s", []).append(round(time.monotonic() - killed, 2))
            wait_taken_up(daemon, left)
            phase = phase_of(daemon, marker)
            phases[phase] = phases.get(phase, 0) + 1
            problems = [*stray, *settle(daemon, killed)]
            scenario.check(problems, f"trial {trial} ({kind}, {phase})")
            if not problems:
                scenario.recovered(time.monotonic() - killed)
        # the last chain runs to its end
        wait_until(lambda: not in_flight(daemon), 120, interval=0.2, what="the last chain's end")
        scenario.check([*violations(daemon, workers=WORKERS), *version_violations(daemon)], "end")
        scenario.check(one_retrain_per_incident(daemon), "end")
    scenario.load(poller.result)
    scenario.notes["phases"] = phases
    scenario.notes["failed_requests"] = poller.result.errors[:5]
    assert scenario.faults == TRIALS
    assert not scenario.violations, scenario.violations
    assert scenario.recoveries == TRIALS
    assert poller.result.ok > 100
    # workers outlive the daemon: a request fails only by bad luck around a worker replaced on
    # purpose (a deployment interrupted half-way stops the worker on the wrong version)
    assert poller.result.failed + poller.result.refused <= TRIALS, poller.result.errors[:10]
