"""The retrain job: ``python -m selfheal_daemon.model.retrain JOB_DIR``, a child of the daemon.

The daemon writes ``JOB_DIR/job.json`` (the validated config, the champion version, the reason and
the limits) and ``window.npy`` (the monitor's current rows: the new version's drift reference),
starts this module, and reads its stdout line by line as progress. The job dies with the daemon
(``PR_SET_PDEATHSIG``, set first thing, before the seconds spent importing pandas and
scikit-learn; ``SELFHEAL_PARENT_PID`` names the daemon, so a job whose daemon died even earlier
exits at once whoever adopted it), limits its own address space (``RLIMIT_AS``,
``retrain.max_memory_mb``) and lowers its CPU priority so the service keeps answering; the
daemon kills it after ``retrain.timeout_s``. The answer is ``JOB_DIR/result.json``, written
atomically: ``pipeline.RetrainOutcome.to_json()``, or ``{"error": "..."}``; an error of the
environment (an ``OSError`` such as ENOSPC, EFBIG or EIO anywhere in the exception's chain) adds
``"transient": true`` and ``"errno": "ENOSPC"``, so the daemon tries again later. If the answer
cannot be written (the disk is full), it goes to stdout as one line ``result: {...}`` instead.
Exit codes: 0 with a result (promoted or rejected), 4 bad data, 7 training failed, 1 anything else.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import resource
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

# Only the standard library up here: the job must die with the daemon before it spends seconds
# importing the model stack (``main`` imports the rest once that is settled).

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
WINDOW_FILE = "window.npy"  # the monitor's current window: the new version's drift reference
RESULT_LINE = "result: "  # the answer on stdout when the result file cannot be written
PARENT_ENV = "SELFHEAL_PARENT_PID"  # the daemon that started the job
_PR_SET_PDEATHSIG = 1
# Errors of the environment, not of the data or the code: the same job may well pass later.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EIO,
        errno.EROFS,
        errno.ENOMEM,
        errno.EAGAIN,
        errno.EMFILE,
        errno.ENFILE,
        errno.EBUSY,
        errno.ETIMEDOUT,
    }
)


def environment_error(exc: BaseException) -> OSError | None:
    """The OSError of the environment (see ``TRANSIENT_ERRNOS``) in ``exc``'s chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in TRANSIENT_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


def error_result(exc: BaseException) -> dict[str, Any]:
    """``{"error": ...}`` for the daemon, with ``transient`` and ``errno`` for the environment."""
    result: dict[str, Any] = {"error": f"{type(exc).__name__}: {exc}"}
    cause = environment_error(exc)
    if cause is not None and cause.errno is not None:
        result["transient"] = True
        result["errno"] = errno.errorcode.get(cause.errno, str(cause.errno))
    return result


def answer(result_path: Path, result: dict[str, Any]) -> None:
    """Write the result atomically; if the disk refuses it, print it on stdout for the daemon."""
    from selfheal_daemon.system.files import atomic_write_json

    try:
        atomic_write_json(result_path, result)
    except OSError as exc:
        print(f"cannot write {result_path.name} ({exc}); the result follows", flush=True)
        print(RESULT_LINE + json.dumps(result), flush=True)


def die_with_parent() -> bool:
    """Be killed when the daemon dies; False if it is gone already (do not train for nobody).

    Without ``SELFHEAL_PARENT_PID`` (started by hand), the parent is whoever started us.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    expected = os.environ.get(PARENT_ENV, "")
    parent = os.getppid()
    # Checked after the prctl: a daemon that dies from now on kills us; one that died before
    # left us with another parent (init, or a subreaper above it).
    return parent != 1 and (not expected.isdigit() or int(expected) == parent)


def _limit_self(max_memory_mb: int) -> None:
    limit = max_memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with contextlib.suppress(OSError):
        os.nice(10)


def _progress(message: str) -> None:
    print(f"progress: {message}", flush=True)


def run(job_dir: Path) -> int:
    import numpy as np

    from selfheal_daemon.config import parse_config
    from selfheal_daemon.errors import DataError, SelfhealError, TrainingError
    from selfheal_daemon.model.pipeline import retrain
    from selfheal_daemon.model.registry import ModelRegistry

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
        answer(result_path, {"error": f"ran out of memory (limit {limit} MiB)"})
        return 7
    except (DataError, TrainingError) as exc:
        answer(result_path, error_result(exc))
        return 4 if isinstance(exc, DataError) else 7
    except (SelfhealError, OSError, ValueError) as exc:
        traceback.print_exc()
        answer(result_path, error_result(exc))
        return 1
    answer(result_path, outcome.to_json())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m selfheal_daemon.model.retrain JOB_DIR", file=sys.stderr)
        return 2
    if not die_with_parent():
        print("the daemon that started this job is gone; not training for nobody", flush=True)
        return 1
    return run(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
