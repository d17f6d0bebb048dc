"""The model-healing loop end to end on a real daemon and real workers: drifted data detected,
retrained, gated and swapped in place on every worker under load; a performance drop after that
deployment rolled back; poisoned labels refused by the gate; dirty incoming data repaired with the
exact fixes and a quarantine. The monitor runs every second here (60 s by default)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.daemon.drills import drifted_frame
from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.model.features import load_dataset
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.audit import read_records
from tests.daemons import Poller
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEALING = {
    "monitor": {"interval_s": 1.0},
    "drift": {"consecutive": 2, "min_rows": 300, "window_rows": 2000},
    "retrain": {"cooldown_s": 0.0, "timeout_s": 120.0},
    "performance": {"min_rows": 100, "window_rows": 200, "min_r2": 0.3},
    "restart": {"stable_after_s": 600.0},  # keep last_good at v1 while the test runs
}


def cli(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selfheal_daemon", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )


def records(daemon: Any) -> list[dict[str, Any]]:
    return list(read_records(daemon.state_dir / "audit"))


def find(daemon: Any, **match: Any) -> list[dict[str, Any]]:
    return [r for r in records(daemon) if all(r.get(k) == v for k, v in match.items())]


@pytest.fixture
def base() -> pd.DataFrame:
    return load_dataset(None).dropna()


@pytest.fixture
def healing(start_daemon: Any, tmp_path: Path) -> Any:
    daemon = start_daemon(**HEALING)
    daemon.config = tmp_path / "config.toml"
    daemon.wait_serving()
    wait_until((daemon.state_dir / "run" / "control.sock").exists, 10)
    return daemon


def send_rows(daemon: Any, frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """POST the rows to /predict in batches; the request id of each batch with its rows."""
    sent = []
    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        for start in range(0, len(frame), 200):
            part = frame.iloc[start : start + 200]
            body = {"instances": part[list(FEATURES)].to_dict(orient="records")}
            response = client.post("/predict", json=body)
            assert response.status_code == 200, response.text
            sent.append((response.json()["request_id"], part))
    return sent


def test_drift_is_retrained_swapped_in_place_then_a_performance_drop_rolls_back(
    healing: Any, base: pd.DataFrame
) -> None:
    daemon = healing
    registry = ModelRegistry(daemon.state_dir / "registry")
    assert registry.alias("current") == "v1"
    incoming = daemon.state_dir / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    drifted = drifted_frame(base, 2000, seed=7)
    with Poller(daemon.url) as poller:
        drifted.to_csv(incoming / "drifted.csv", index=False)
        send_rows(daemon, drifted.iloc[:1000])
        resolved = wait_until(
            lambda: find(daemon, issue="data_drift", outcome="resolved"),
            150,
            interval=0.2,
            what="the drift incident to be resolved",
        )
    # detected over consecutive checks, retrained in a child process, gated, deployed
    incident = resolved[0]["incident_id"]
    steps = [r["detection"] for r in records(daemon) if r["incident_id"] == incident]
    assert steps == ["dataset_drift", "candidate_passed_gate", "all_workers_on_version"]
    detected = next(r for r in records(daemon) if r["incident_id"] == incident)
    assert detected["details"]["dataset_drift"] is True
    assert "Latitude" in detected["details"]["reason"]
    assert detected["details"]["streak"] == 2
    new = resolved[0]["details"]["version"]
    assert new == "v2"
    assert registry.alias("current") == "v2"
    assert daemon.worker_versions() == ["v2", "v2"]
    assert {w["version"] for w in daemon.workers()} == {"v2"}
    meta = registry.info("v2").meta
    assert meta["parent"] == "v1"
    assert meta["gate"]["promote"] is True
    # the swap happened inside the running workers: no request failed or was refused meanwhile
    assert poller.result.failed == 0, poller.result.errors[:5]
    assert poller.result.refused == 0
    assert poller.result.ok > 20
    # the batch was taken in through the quality check, and kept for the next retrain
    assert not (incoming / "drifted.csv").exists()
    labelled = list((daemon.state_dir / "data" / "labelled").glob("*drifted.csv"))
    assert len(labelled) == 1
    assert len(pd.read_csv(labelled[0])) == 2000

    # Live labels that contradict v2: R2 over the feedback window drops; v2 was deployed moments
    # ago, so the answer is a rollback to v1 (not a retrain).
    rng = np.random.default_rng(0)
    fresh = base.sample(400, random_state=11)
    for request_id, rows in send_rows(daemon, fresh):
        labels = rng.uniform(0.2, 5.0, len(rows)).tolist()
        answer = httpx.post(
            f"{daemon.url}/feedback", json={"request_id": request_id, "labels": labels}, timeout=5
        )
        assert answer.status_code == 202, answer.text
    rolled = wait_until(
        lambda: find(daemon, issue="performance_drop", outcome="resolved"),
        60,
        interval=0.2,
        what="the performance drop to be rolled back",
    )
    first = find(daemon, issue="performance_drop", detection="metric_below_threshold")[0]
    assert first["action"] == "rollback"
    assert first["details"]["r2"] < 0.3
    assert rolled[0]["details"]["version"] == "v1"
    assert registry.alias("current") == "v1"
    assert daemon.worker_versions() == ["v1", "v1"]
    assert not find(daemon, issue="performance_drop", action="retrain")  # never both


def test_poisoned_labels_are_refused_by_the_gate(healing: Any, base: pd.DataFrame) -> None:
    daemon = healing
    incoming = daemon.state_dir / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    poisoned = base.sample(8000, random_state=3)
    poisoned[TARGET] = 5.2 - poisoned[TARGET]  # the dearest districts labelled the cheapest
    poisoned.to_csv(incoming / "poisoned.csv", index=False)
    labelled = daemon.state_dir / "data" / "labelled"
    wait_until(lambda: list(labelled.glob("*poisoned.csv")), 30, what="the batch taken in")
    started = cli(daemon.config, "retrain")
    assert started.returncode == 0, started.stderr
    rejected = wait_until(
        lambda: find(daemon, issue="manual_action", detection="candidate_rejected"),
        150,
        interval=0.3,
        what="the gate's verdict",
    )
    verdict = rejected[0]["details"]["verdict"]
    assert rejected[0]["outcome"] == "escalated"
    assert rejected[0]["manual"] is True
    assert verdict["promote"] is False
    assert any("below the gate's minimum" in reason for reason in verdict["reasons"])
    assert verdict["champion"]["r2"] is not None
    registry = ModelRegistry(daemon.state_dir / "registry")
    assert registry.alias("current") == "v1"
    assert registry.versions() == ["v1"]  # a rejected candidate is never registered
    assert daemon.worker_versions() == ["v1", "v1"]


def test_dirty_incoming_data_gets_the_exact_fixes_and_a_quarantine(
    start_daemon: Any, tmp_path: Path, base: pd.DataFrame
) -> None:
    daemon = start_daemon(monitor={"interval_s": 3600.0})  # only `selfheal check` runs the pass
    daemon.config = tmp_path / "config.toml"
    daemon.wait_serving()
    wait_until((daemon.state_dir / "run" / "control.sock").exists, 10)
    dirty = base.head(300).copy().reset_index(drop=True)
    dirty.loc[0:9, "AveBedrms"] = np.nan  # 10 missing values: filled with the median
    dirty.loc[10, TARGET] = -3.0  # an impossible label: quarantined
    dirty = pd.concat([dirty, dirty.iloc[[20, 21]]], ignore_index=True)  # 2 exact duplicates
    incoming = daemon.state_dir / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    dirty.to_csv(incoming / "dirty.csv", index=False)
    finished = time.time() - 5  # copied in a while ago (a file changed within 1 s is left alone)
    os.utime(incoming / "dirty.csv", (finished, finished))
    checked = cli(daemon.config, "check")
    assert checked.returncode == 0, checked.stderr
    assert "Filled AveBedrms with median" in checked.stdout
    assert "in 10 rows" in checked.stdout
    record = find(daemon, issue="data_quality")[-1]
    assert record["outcome"] == "resolved"
    assert record["details"]["rows_in"] == 302
    assert record["details"]["rows_kept"] == 299
    assert record["details"]["rows_quarantined"] == 3
    fixes = record["details"]["fixes"]
    assert any(f.startswith("Filled AveBedrms with median") and "10 rows" in f for f in fixes)
    assert any("2 exact duplicate rows" in f for f in fixes)
    quarantine = pd.read_csv(record["details"]["quarantine"])
    assert sorted(quarantine["row"]) == [10, 300, 301]
    assert all(isinstance(reason, str) and reason for reason in quarantine["reason"])
    assert not (incoming / "dirty.csv").exists()
    status = json.loads(cli(daemon.config, "status", "--json").stdout)
    assert status["quality"]["last_check"]["rows_quarantined"] == 3
