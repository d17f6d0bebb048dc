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
