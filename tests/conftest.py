"""Suite-wide setup. Runs before any test module imports scikit-learn."""

from __future__ import annotations

import os

# Two cores, and daemons, workers and trainings run side by side in the tests: OpenMP threads that
# spin-wait for a busy core can slow a 1 s fit to a minute. One thread each keeps the suite steady.
os.environ.setdefault("OMP_NUM_THREADS", "1")
