"""The retrain job: ``python -m selfheal_daemon.retrain JOB_DIR``, a child process of the daemon.

The daemon writes ``JOB_DIR/job.json`` (the validated config, the champion version, the reason and
the limits) and ``window.npy`` (the monitor's current rows: the new version's drift reference),
starts this module, and reads its stdout line by line as progress. The job limits its own address
space (``RLIMIT_AS``, ``retrain.max_memory_mb``), lowers its CPU priority so the service keeps
answering, and dies with the daemon (``PR_SET_PDEATHSIG``); the daemon kills it after
``retrain.timeout_s``. The answer is ``JOB_DIR/result.json``, written atomically:
``pipeline.RetrainOutcome.to_json()``, or ``{"error": "..."}``. Exit codes: 0 with a result
(promoted or rejected), 4 bad data, 7 training failed, 1 anything else.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from selfheal_daemon.adapters.files import atomic_write_json
from selfheal_daemon.config import parse_config
from selfheal_daemon.errors import DataError, SelfhealError, TrainingError
from selfheal_daemon.pipeline import retrain
from selfheal_daemon.registry import ModelRegistry

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
WINDOW_FILE = "window.npy"  # the monitor's current window: the new version's drift reference
_PR_SET_PDEATHSIG = 1


def _limit_self(max_memory_mb: int) -> None:
    limit = max_memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with contextlib.suppress(OSError):
        os.nice(10)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the daemon died before the line above: do not train for nobody
        sys.exit(1)


def _progress(message: str) -> None:
    print(f"progress: {message}", flush=True)


def run(job_dir: Path) -> int:
    job: dict[str, Any] = json.loads((job_dir / JOB_FILE).read_text())
    cfg = parse_config(job["config"])
    _limit_self(int(job.get("max_memory_mb", cfg.retrain.max_memory_mb)))
    result_path = job_dir / RESULT_FILE
    window = None
    if (job_dir / WINDOW_FILE).is_file():
        window = np.load(job_dir / WINDOW_FILE, allow_pickle=False)
    try:
        outcome = retrain(
            cfg,
            ModelRegistry(cfg.registry_dir),
            str(job["champion"]),
            str(job.get("reason", "retrain")),
            progress=_progress,
            window=window,
        )
    except MemoryError:
        limit = job.get("max_memory_mb", cfg.retrain.max_memory_mb)
        atomic_write_json(result_path, {"error": f"ran out of memory (limit {limit} MiB)"})
        return 7
    except (DataError, TrainingError) as exc:
        atomic_write_json(result_path, {"error": f"{type(exc).__name__}: {exc}"})
        return 4 if isinstance(exc, DataError) else 7
    except (SelfhealError, OSError, ValueError) as exc:
        traceback.print_exc()
        atomic_write_json(result_path, {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    atomic_write_json(result_path, outcome.to_json())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m selfheal_daemon.retrain JOB_DIR", file=sys.stderr)
        return 2
    return run(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
