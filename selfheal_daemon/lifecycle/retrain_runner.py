"""Run the retrain job as a child process, one at a time, and post its result as an event.

The job (``selfheal_daemon.model.retrain``) gets its own directory under ``<state_dir>/jobs/`` with
``job.json``; its stdout lines are logged as progress (``retrain: fitting on 17,000 rows ...``)
and kept for the result; after ``retrain.timeout_s`` it is killed (by its pid, which we hold as
its parent). Whatever happens, exactly one ``RetrainFinished`` is posted per started job.

The answer is ``result.json``, or the job's ``result: {...}`` line on stdout when it could not
write the file. An error the job marked ``transient`` (the environment: a full disk, an I/O
error), and a job that died without any answer (killed, crashed), are posted as transient: the
policy tries such a retrain again. A timeout is not: the same job would run out of time again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from selfheal_daemon.config import Config
from selfheal_daemon.lifecycle.events import RetrainFinished
from selfheal_daemon.model.retrain import (
    JOB_FILE,
    PARENT_ENV,
    RESULT_FILE,
    RESULT_LINE,
    WINDOW_FILE,
)

KEEP_JOBS = 20  # job directories kept for inspection; older ones are removed


class RetrainRunner:
    """Starts the job on a thread of its own; ``running`` while a child is alive."""

    def __init__(self, cfg: Config, post: Callable[[RetrainFinished], None]) -> None:
        self.cfg = cfg
        self.post = post
        self.jobs_dir = cfg.state_dir / "jobs"
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._timed_out: set[int] = set()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._proc is not None

    def start(self, champion: str, reason: str, window: np.ndarray | None = None) -> None:
        """Start a job now (the policy allows one at a time); the result comes as an event."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        job_dir = self.jobs_dir / stamp
        job_dir.mkdir(parents=True)
        job = {
            "config": self.cfg.model_dump(mode="json"),
            "champion": champion,
            "reason": reason,
            "max_memory_mb": self.cfg.retrain.max_memory_mb,
        }
        (job_dir / JOB_FILE).write_text(json.dumps(job))
        if window is not None and len(window):
            np.save(job_dir / WINDOW_FILE, np.ascontiguousarray(window, dtype="float64"))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
        proc = subprocess.Popen(
            [sys.executable, "-m", "selfheal_daemon.model.retrain", str(job_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            close_fds=True,
        )
        with self._lock:
            self._proc = proc
        logger.info("retrain job started (pid {}): {}", proc.pid, reason)
        threading.Thread(
            target=self._follow, args=(proc, job_dir), name="retrain", daemon=True
        ).start()

    def _follow(self, proc: subprocess.Popen[str], job_dir: Path) -> None:
        started = time.monotonic()
        lines: list[str] = []
        timer = threading.Timer(self.cfg.retrain.timeout_s, self._kill, args=(proc,))
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None  # noqa: S101 - Popen(stdout=PIPE)
            for line in proc.stdout:
                text = line.rstrip()
                lines = [*lines[-40:], text]
                if text.startswith("progress: "):
                    logger.info("retrain: {}", text.removeprefix("progress: "))
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.stdout is not None:
                proc.stdout.close()
            with self._lock:
                self._proc = None
        seconds = round(time.monotonic() - started, 3)
        self.post(self._finished(job_dir, code, seconds, lines, proc.pid))
        self._tidy()

    def _finished(
        self, job_dir: Path, code: int, seconds: float, lines: list[str], proc_pid: int
    ) -> RetrainFinished:
        details: dict[str, Any] = {"job": job_dir.name, "seconds": seconds, "exit_code": code}
        result = _read_result(job_dir, lines)
        transient = False
        if proc_pid in self._timed_out:
            self._timed_out.discard(proc_pid)
            error = f"timed out after {self.cfg.retrain.timeout_s:.0f} s and was killed"
        elif "error" in result:
            error = str(result["error"])
            transient = result.get("transient") is True
            if result.get("errno"):
                details["errno"] = str(result["errno"])
        elif code != 0 or not result:
            tail = " | ".join(line for line in lines[-5:] if line)
            error = f"the retrain job exited with code {code} without a result: {tail}"
            transient = True  # killed or crashed: nothing says the next attempt would
        else:
            error = ""
        if error:
            return RetrainFinished(promote=False, error=error, details=details, transient=transient)
        return RetrainFinished(
            promote=bool(result.get("promote")),
            candidate=result.get("candidate"),
            verdict=dict(result.get("verdict") or {}),
            test_failure=result.get("test_failure"),
            repaired=result.get("repaired"),
            details={**details, **dict(result.get("details") or {})},
        )

    def _kill(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            logger.error("retrain job (pid {}) ran out of time; killing it", proc.pid)
            self._timed_out.add(proc.pid)
            proc.kill()

    def _tidy(self) -> None:
        with contextlib.suppress(OSError):
            jobs = sorted(p for p in self.jobs_dir.iterdir() if p.is_dir())
            for old in jobs[:-KEEP_JOBS]:
                shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        """Stop a job still running (the daemon is stopping); its result is not awaited."""
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()


def _read_result(job_dir: Path, lines: list[str]) -> dict[str, Any]:
    """The job's answer: ``result.json``, else its last ``result: {...}`` line; {} if none."""
    with contextlib.suppress(OSError, ValueError):
        found = json.loads((job_dir / RESULT_FILE).read_text())
        if isinstance(found, dict):
            return found
    for line in reversed(lines):
        if line.startswith(RESULT_LINE):
            with contextlib.suppress(ValueError):
                found = json.loads(line.removeprefix(RESULT_LINE))
                if isinstance(found, dict):
                    return found
    return {}
