"""Suite-wide setup. Runs before any test module imports scikit-learn."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Two cores, and daemons, workers and trainings run side by side in the tests: OpenMP threads that
# spin-wait for a busy core can slow a 1 s fit to a minute. One thread each keeps the suite steady.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Any]:
    """Start ``selfheal run`` (as often as a test needs); kill all it left, by pid, afterwards."""
    from tests.daemons import daemon_starter  # imports the service: after OMP_NUM_THREADS is set

    with daemon_starter(tmp_path) as start:
        yield start


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every wheel an offline install needs, built once per session by deploy/wheelhouse.sh
    (with dumb-init, the container image's init): the installer's and the image's tests share it."""
    import subprocess

    directory = tmp_path_factory.mktemp("wheelhouse")
    script = Path(__file__).resolve().parents[1] / "deploy" / "wheelhouse.sh"
    result = subprocess.run(
        [str(script), "--extra", "dumb-init", str(directory)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise AssertionError(f"wheelhouse.sh exited {result.returncode}:\n{result.stderr}")
    return directory
