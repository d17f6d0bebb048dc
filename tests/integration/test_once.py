"""``selfheal once`` (the pipeline for CI, no daemon) and ``selfheal fix-data`` as a user runs
them: the real command in a subprocess on a fresh state directory, judged by exit code, files and
the audit trail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from selfheal_daemon.daemon.drills import drifted_frame
from selfheal_daemon.defaults import TARGET
from selfheal_daemon.model.features import load_dataset
from selfheal_daemon.model.registry import MODEL_FILE, ModelRegistry
from selfheal_daemon.record.audit import read_records

pytestmark = pytest.mark.integration


def selfheal(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selfheal_daemon", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        'state_dir = "state"\n'
        "[training]\nmax_iter = 30\nlearning_rate = 0.3\nreference_rows = 500\n"
        "[drift]\nmin_rows = 300\n"
    )
    return path


def test_once_promotes_then_keeps_the_champion_then_rolls_back_a_damaged_model(
    config: Path,
) -> None:
    state = config.parent / "state"
    base = load_dataset(None).dropna()
    incoming = state / "data" / "incoming"
    incoming.mkdir(parents=True)
    drifted_frame(base, 2000, seed=5).to_csv(incoming / "drifted.csv", index=False)

    first = selfheal(config, "once", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["outcome"] == "promoted"
    assert (result["champion"], result["candidate"]) == ("v1", "v2")
    assert result["drift"]["dataset_drift"] is True
    assert result["intake"][0]["rows_kept"] == 2000
    registry = ModelRegistry(state / "registry")
    assert registry.alias("current") == "v2"
    assert registry.alias("last_good") == "v1"  # confirmed only by serving it

    poisoned = base.sample(8000, random_state=3)
    poisoned[TARGET] = 5.2 - poisoned[TARGET]
    poisoned.to_csv(incoming / "poisoned.csv", index=False)
    second = selfheal(config, "once")
    assert second.returncode == 11, second.stdout + second.stderr  # tests failed after repair
    assert "outcome: rejected (exit 11)" in second.stdout
    assert "below the gate's minimum" in second.stdout
    quarantined = list((state / "data" / "quarantine").glob("suspect-labels-*.csv"))
    assert len(quarantined) == 1
    assert "from the champion's prediction" in pd.read_csv(quarantined[0])["reason"][0]
    assert registry.alias("current") == "v2"

    damaged = state / "registry" / "v2" / MODEL_FILE
    blob = bytearray(damaged.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    third = selfheal(config, "once", "--json")
    assert third.returncode == 12, third.stdout + third.stderr
    assert json.loads(third.stdout)["rolled_back_from"] == "v2"
    assert registry.alias("current") == "v1"

    trail = list(read_records(state / "audit"))
    kinds = [(r["issue"], r["detection"], r["outcome"]) for r in trail]
    assert ("deployment_failure", "checksum_mismatch", "resolved") in kinds
    assert ("manual_action", "once", "resolved") in kinds  # the promotion
    assert all(r["manual"] for r in trail if r["issue"] == "manual_action")


def test_once_refuses_to_run_beside_a_daemon(config: Path) -> None:
    run = config.parent / "state" / "run"
    run.mkdir(parents=True)
    me = psutil.Process()
    (run / "daemon.pid").write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))
    refused = selfheal(config, "once")
    assert refused.returncode != 0
    assert "daemon" in refused.stderr


def test_fix_data_repairs_a_file_and_says_what_it_did(config: Path, tmp_path: Path) -> None:
    frame = load_dataset(None).head(200).copy()
    frame.loc[0:6, "AveOccup"] = np.nan
    frame.loc[7, "HouseAge"] = -40.0  # impossible: the row is quarantined
    frame = pd.concat([frame, frame.iloc[[50]]], ignore_index=True)
    source = tmp_path / "in.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "out.csv"
    done = selfheal(config, "fix-data", str(source), str(out))
    assert done.returncode == 0, done.stderr
    assert "Checked 201 rows: kept 199, quarantined 2." in done.stdout
    assert "Filled AveOccup with median" in done.stdout
    assert len(pd.read_csv(out)) == 199
    quarantine = pd.read_csv(tmp_path / "out.quarantine.csv")
    assert sorted(quarantine["row"]) == [7, 200]
    missing = selfheal(config, "fix-data", str(tmp_path / "nope.csv"), str(out))
    assert missing.returncode == 4
    assert "nope.csv" in missing.stderr
