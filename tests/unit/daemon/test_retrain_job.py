"""The retrain job as a real child process: a result for every start, whatever happens to it."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from selfheal_daemon.adapters.retrain_job import RetrainRunner
from selfheal_daemon.config import Config, parse_config
from selfheal_daemon.features import FEATURES
from selfheal_daemon.model_policy import RetrainFinished
from selfheal_daemon.registry import ModelRegistry
from tests.helpers import wait_until


def runner_for(cfg: Config) -> tuple[RetrainRunner, queue.SimpleQueue[Any]]:
    posted: queue.SimpleQueue[Any] = queue.SimpleQueue()
    return RetrainRunner(cfg, posted.put), posted


def config(tmp_path: Path, **retrain: Any) -> Config:
    return parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "training": {"max_iter": 15, "reference_rows": 200},
            "gate": {"min_r2": 0.5},
            "retrain": {"timeout_s": 120.0, **retrain},
        }
    )


def test_a_job_past_its_time_limit_is_killed_and_reported(tmp_path: Path) -> None:
    runner, posted = runner_for(config(tmp_path, timeout_s=0.3))
    runner.start("v1", "test")
    finished: RetrainFinished = posted.get(timeout=60)
    assert not finished.promote
    assert "timed out after" in finished.error
    assert not runner.running
    wait_until(lambda: not [c for c in psutil.Process().children() if c.status() != "zombie"], 10)


def test_a_job_that_fails_reports_why(tmp_path: Path) -> None:
    runner, posted = runner_for(config(tmp_path))
    runner.start("v7", "test")  # there is no v7
    finished: RetrainFinished = posted.get(timeout=90)
    assert not finished.promote
    assert "v7" in finished.error
    assert finished.details["exit_code"] != 0


def test_a_job_trains_gates_and_registers_a_candidate(
    tmp_path: Path, registered: tuple[ModelRegistry, str], small_frame: pd.DataFrame
) -> None:
    registry, version = registered
    cfg = parse_config(
        {
            "state_dir": str(registry.root.parent),
            "training": {"max_iter": 30, "reference_rows": 200, "learning_rate": 0.3},
            "gate": {"min_r2": 0.5},
            "drift": {"min_rows": 100},
        }
    )
    runner, posted = runner_for(cfg)
    window = small_frame[list(FEATURES)].to_numpy()[:300]
    runner.start(version, "test", window)
    finished: RetrainFinished = posted.get(timeout=120)
    assert finished.error == "", finished.error
    assert finished.promote, finished.verdict
    assert finished.candidate == "v2"
    assert finished.verdict["candidate"]["r2"] >= 0.5
    assert finished.details["reason"] == "test"
    # the new version's drift reference is the window it was trained for
    reference = registry.load_reference("v2")
    assert reference.shape == (200, len(FEATURES))
    assert np.isin(reference[:, 0], window[:, 0]).all()
    assert registry.alias("current") is None  # the job never moves an alias


def test_a_job_over_its_memory_limit_fails_with_the_reason(
    registered: tuple[ModelRegistry, str],
) -> None:
    """The job limits its own address space: past it, training fails; the daemon is unharmed."""
    registry, version = registered
    cfg = parse_config(
        {
            "state_dir": str(registry.root.parent),
            "retrain": {"max_memory_mb": 256, "timeout_s": 120.0},  # less than it already maps
        }
    )
    runner, posted = runner_for(cfg)
    runner.start(version, "test")
    finished: RetrainFinished = posted.get(timeout=90)
    assert not finished.promote
    assert finished.error == "ran out of memory (limit 256 MiB)"
