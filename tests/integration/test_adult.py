"""The Adult census income example end to end on a real daemon: a binary classifier on 6 numeric
and 8 categorical columns, trained from ``examples/adult``, served with classes and probabilities,
and healed: a drift of real Adult rows (one group of the census: young women) is detected,
retrained, gated (per slice too) and swapped in place on every worker, with no failed request."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.record.audit import read_records
from tests.daemons import Poller
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "adult"
ROW = {
    "age": 39,
    "workclass": "State-gov",
    "fnlwgt": 77516,
    "education": "Bachelors",
    "education-num": 13,
    "marital-status": "Never-married",
    "occupation": "Adm-clerical",
    "relationship": "Not-in-family",
    "race": "White",
    "sex": "Male",
    "capital-gain": 2174,
    "capital-loss": 0,
    "hours-per-week": 40,
    "native-country": "United-States",
}


def example_sections() -> dict[str, dict[str, Any]]:
    """The example's own config, with the data's absolute path and a quick monitor."""
    config = tomllib.loads((EXAMPLE / "config.toml").read_text())
    return {
        "model": config["model"],
        "gate": {**config.get("gate", {}), "golden_min_share": 0.7},
        "training": {"data": str(EXAMPLE / "adult.csv.gz")},
        "monitor": {"interval_s": 1.0},
        "drift": {"consecutive": 2, "min_rows": 300, "window_rows": 2000},
        "retrain": {"cooldown_s": 0.0, "timeout_s": 180.0},
        "restart": {"stable_after_s": 600.0},
    }


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    return pd.read_csv(EXAMPLE / "adult.csv.gz", dtype=str, keep_default_na=False)


def records(daemon: Any) -> list[dict[str, Any]]:
    return list(read_records(daemon.state_dir / "audit"))


def instances(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them: numbers as numbers, "?" as null."""
    out = []
    for row in frame.drop(columns=["income"]).to_dict(orient="records"):
        item: dict[str, Any] = {}
        for key, value in row.items():
            if value == "?":
                item[key] = None
            elif key in ROW and isinstance(ROW[key], int):
                item[key] = int(value)
            else:
                item[key] = value
        out.append(item)
    return out


def test_the_adult_model_is_served_and_healed_after_a_drift_of_real_rows(
    start_daemon: Any, adult: pd.DataFrame
) -> None:
    """Served with classes and probabilities; young women's rows drift it; v2 gated and swapped."""
    daemon = start_daemon(**example_sections())
    daemon.wait_serving(timeout=180)
    wait_until((daemon.state_dir / "run" / "control.sock").exists, 10)
    registry = ModelRegistry(daemon.state_dir / "registry")
    meta = registry.info("v1").meta
    assert meta["schema"]["task"] == "binary"
    assert meta["metrics"]["roc_auc"] > 0.85
    kinds = [f["kind"] for f in meta["schema"]["features"]]
    assert kinds.count("categorical") == 8
    assert kinds.count("numeric") == 6

    with httpx.Client(base_url=daemon.url, timeout=10) as client:
        answer = client.post("/predict", json=ROW).json()
        assert answer["classes"] == ["<=50K", ">50K"]
        assert answer["predictions"][0] in answer["classes"]
        assert abs(sum(answer["probabilities"][0]) - 1.0) < 1e-6
        unseen = client.post("/predict", json={**ROW, "native-country": "Atlantis"})
        assert unseen.status_code == 200, unseen.text
        wrong = client.post("/predict", json={**ROW, "age": "old"})
        assert wrong.status_code == 422
        assert "age" in wrong.text
        described = client.get("/model").json()
        assert [f["name"] for f in described["schema"]["features"]] == list(ROW)

    group = adult[(adult["sex"] == "Female") & (adult["age"].astype(int) < 30)]
    batch = group.sample(n=2000, replace=len(group) < 2000, random_state=1)
    incoming = daemon.state_dir / "data" / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    with Poller(daemon.url, row=ROW) as poller:
        batch.to_csv(incoming / "young-women.csv", index=False)
        rows = instances(batch.iloc[:1000])
        with httpx.Client(base_url=daemon.url, timeout=10) as client:
            for start in range(0, len(rows), 200):
                sent = client.post("/predict", json={"instances": rows[start : start + 200]})
                assert sent.status_code == 200, sent.text
        resolved = wait_until(
            lambda: [
                r
                for r in records(daemon)
                if r["issue"] == "data_drift" and r["outcome"] == "resolved"
            ],
            240,
            interval=0.5,
            what="the drift incident to be resolved",
        )
    incident = resolved[0]["incident_id"]
    steps = [r["detection"] for r in records(daemon) if r["incident_id"] == incident]
    assert steps == ["dataset_drift", "candidate_passed_gate", "all_workers_on_version"]
    detected = next(r for r in records(daemon) if r["incident_id"] == incident)
    features = detected["details"]["features"]
    drifted = {name for name, scores in features.items() if scores["drifted"]}
    assert drifted & {"sex", "relationship", "marital-status", "age"}, detected["details"]
    assert registry.alias("current") == "v2"
    assert daemon.worker_versions() == ["v2", "v2"]
    gate = registry.info("v2").meta["gate"]
    assert gate["promote"] is True
    assert gate["metric"] == "roc_auc"
    assert poller.result.failed == 0, poller.result.errors[:5]
    assert poller.result.refused == 0
    assert poller.result.ok > 20


def drill(daemon: Any, config: Path, kind: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "selfheal_daemon",
            "drill",
            kind,
            "--timeout",
            "150",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=200,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )


def test_the_drills_fault_the_adult_model_in_its_own_terms(
    start_daemon: Any, tmp_path: Path
) -> None:
    """bad-model builds a NaN classifier (rolled back); drift shifts Adult's own columns."""
    daemon = start_daemon(**example_sections())
    daemon.wait_serving(timeout=180)
    wait_until((daemon.state_dir / "run" / "control.sock").exists, 10)
    config = tmp_path / "config.toml"
    bad = drill(daemon, config, "bad-model")
    assert bad.returncode == 0, bad.stdout + bad.stderr
    assert "deployment_failure" in bad.stdout
    registry = ModelRegistry(daemon.state_dir / "registry")
    assert registry.alias("current") == "v1"
    assert daemon.worker_versions() == ["v1", "v1"]

    shifted = drill(daemon, config, "drift")
    assert shifted.returncode == 0, shifted.stdout + shifted.stderr
    assert "resolved" in shifted.stdout
    injected = next(r for r in records(daemon) if r["issue"] == "data_drift")
    assert injected["details"]["features"]["marital-status"]["kind"] == "categorical"
    assert registry.alias("current") != "v1"
