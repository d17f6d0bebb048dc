"""The registry re-check: the pure decision, and what ``inspect`` reads off a real registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.dummy import DummyRegressor

from selfheal_daemon.lifecycle.events import DeployRequested
from selfheal_daemon.lifecycle.integrity import IntegrityChecked, SetLastGood, decide, inspect
from selfheal_daemon.model.registry import MODEL_FILE, ModelRegistry
from selfheal_daemon.record.recorder import Report

NONE: frozenset[tuple[str, str]] = frozenset()


def seen(
    current_problem: str = "",
    last_good_problem: str = "",
    *,
    current: str = "v3",
    last_good: str = "v3",
    fallback: str | None = None,
) -> IntegrityChecked:
    return IntegrityChecked(current, current_problem, last_good, last_good_problem, fallback)


def test_valid_aliases_call_for_nothing() -> None:
    assert decide(seen(), NONE, busy=False).actions == ()


def test_a_damaged_current_is_replaced_by_the_fallback_in_place() -> None:
    decision = decide(seen("model.joblib sha256 differs", fallback="v2"), NONE, busy=False)
    report, deploy = decision.actions
    assert isinstance(report, Report)
    assert (report.issue, report.detection, report.action) == (
        "deployment_failure",
        "artifact_checksum_mismatch",
        "rollback",
    )
    assert report.outcome == ""  # resolved when every worker serves the fallback
    assert report.details["version"] == "v3"
    assert deploy == DeployRequested("v2", "deployment_failure", deploy.reason)
    assert "sha256 differs" in deploy.reason
    assert decision.reported == {("current", "v3")}


def test_the_same_damage_is_reported_once() -> None:
    first = decide(seen("bad", fallback="v2"), NONE, busy=False)
    assert decide(seen("bad", fallback="v2"), first.reported, busy=False).actions == ()


def test_nothing_to_fall_back_to_is_escalated_once() -> None:
    decision = decide(seen("bad"), NONE, busy=False)
    (report,) = decision.actions
    assert isinstance(report, Report)
    assert report.outcome == "escalated"
    assert "no valid version" in report.details["why"]
    assert decide(seen("bad"), decision.reported, busy=False).actions == ()


def test_a_deployment_in_flight_is_left_alone_and_looked_at_again_later() -> None:
    busy = decide(seen("bad", fallback="v2"), NONE, busy=True)
    assert busy.actions == ()
    assert busy.reported == NONE
    assert len(decide(seen("bad", fallback="v2"), busy.reported, busy=False).actions) == 2


def test_a_damaged_last_good_moves_to_the_valid_current() -> None:
    decision = decide(seen("", "reference.npz is missing", last_good="v2"), NONE, busy=False)
    report, move = decision.actions
    assert isinstance(report, Report)
    assert report.outcome == "resolved"
    assert report.action == "last_good_moved"
    assert move == SetLastGood("v3")


def _version(registry: ModelRegistry, parent: str | None, origin: str = "test") -> str:
    model = DummyRegressor().fit(np.zeros((4, 8)), np.arange(4.0))
    return registry.register(
        model,
        metrics={"r2": 0.8},
        reference=np.zeros((4, 8)),
        data_fingerprint="x",
        data_rows=4,
        parent=parent,
        origin=origin,
    )


def _damage(registry: ModelRegistry, version: str) -> None:
    path: Path = registry.root / version / MODEL_FILE
    path.write_bytes(path.read_bytes()[:-8] + b"garbage!")


@pytest.fixture
def lineage(registry: ModelRegistry) -> ModelRegistry:
    """v1 <- v2 <- v3 (a drill's version) <- v4, with current = last_good = v4."""
    v1 = _version(registry, None)
    v2 = _version(registry, v1)
    v3 = _version(registry, v2, origin="drill: bad-model (predicts NaN)")
    v4 = _version(registry, v3)
    registry.set_alias("current", v4)
    registry.set_alias("last_good", v4)
    return registry


def test_inspect_sees_valid_aliases(lineage: ModelRegistry) -> None:
    assert inspect(lineage) == IntegrityChecked("v4", "", "v4", "", None)


def test_inspect_falls_back_to_the_nearest_valid_ancestor_that_is_no_drill(
    lineage: ModelRegistry,
) -> None:
    _damage(lineage, "v4")
    found = inspect(lineage)
    assert found.current_problem.startswith("model.joblib sha256")
    assert found.fallback == "v2"  # v3 is a drill's version
    _damage(lineage, "v2")
    assert inspect(lineage).fallback == "v1"
    _damage(lineage, "v1")
    assert inspect(lineage).fallback is None


def test_inspect_prefers_a_valid_last_good(lineage: ModelRegistry) -> None:
    lineage.set_alias("last_good", "v1")
    _damage(lineage, "v4")
    assert inspect(lineage).fallback == "v1"
