"""The retrain job as a real child process: a result for every start, whatever happens to it."""

from __future__ import annotations

import errno
import json
import os
import queue
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from selfheal_daemon.config import Config, parse_config
from selfheal_daemon.defaults import FEATURES
from selfheal_daemon.errors import DataError, RegistryError
from selfheal_daemon.lifecycle.events import RetrainFinished
from selfheal_daemon.lifecycle.retrain_runner import RetrainRunner, _read_result
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.retrain import JOB_FILE, PARENT_ENV, RESULT_FILE, error_result
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


def chained(outer: Exception, inner: BaseException) -> Exception:
    """``outer`` raised while handling ``inner`` (its ``__cause__``)."""
    outer.__cause__ = inner
    return outer


def test_an_error_of_the_environment_is_marked_transient_with_its_errno() -> None:
    """ENOSPC, EFBIG or EIO anywhere in the exception's chain: worth another attempt."""
    full = OSError(errno.ENOSPC, "No space left on device")
    assert error_result(full) == {
        "error": "OSError: [Errno 28] No space left on device",
        "transient": True,
        "errno": "ENOSPC",
    }
    wrapped = chained(RegistryError("cannot publish v3"), OSError(errno.EFBIG, "File too large"))
    assert error_result(wrapped)["errno"] == "EFBIG"
    for lasting in (FileNotFoundError(errno.ENOENT, "gone"), DataError("no rows"), ValueError()):
        assert "transient" not in error_result(lasting)


def test_an_answer_the_disk_refused_is_read_from_stdout(tmp_path: Path) -> None:
    """Without result.json, the job's last ``result:`` line is its answer."""
    lines = ["progress: x", 'result: {"error": "OSError: full", "transient": true}', "bye"]
    assert _read_result(tmp_path, lines) == {"error": "OSError: full", "transient": True}
    assert _read_result(tmp_path, ["result: not json"]) == {}
    (tmp_path / RESULT_FILE).write_text('{"promote": false}')
    assert _read_result(tmp_path, lines) == {"promote": False}


def test_what_the_job_says_is_transient_and_a_job_that_died_is_transient(tmp_path: Path) -> None:
    """A transient answer, or none at all (killed, crashed), may pass next time; a timeout not."""
    runner, _posted = runner_for(config(tmp_path))
    job = tmp_path / "job"
    job.mkdir()
    died = runner._finished(job, -9, 1.0, ["progress: fitting"], 123)
    assert (died.transient, died.details["exit_code"]) == (True, -9)
    assert "without a result" in died.error
    (job / RESULT_FILE).write_text(
        json.dumps({"error": "OSError: x", "transient": True, "errno": "EIO"})
    )
    said = runner._finished(job, 1, 1.0, [], 124)
    assert (said.transient, said.details["errno"]) == (True, "EIO")
    runner._timed_out.add(125)
    late = runner._finished(job, -9, 1.0, [], 125)
    assert not late.transient
    assert "timed out" in late.error


def test_a_job_whose_daemon_is_gone_does_not_train(tmp_path: Path) -> None:
    """Its daemon died before the job could ask to die with it: it exits at once."""
    (tmp_path / JOB_FILE).write_text("{}")
    done = subprocess.run(
        [sys.executable, "-m", "selfheal_daemon.model.retrain", str(tmp_path)],
        env={**os.environ, PARENT_ENV: "1"},  # not our parent: as if adopted after the daemon died
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "not training for nobody" in done.stdout
    assert not (tmp_path / RESULT_FILE).exists()
