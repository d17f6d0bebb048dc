"""The benchmarks' own venv, bench/.venv, and re-running a benchmark inside a venv.

bench/.venv holds the project (``pip install -e .``) plus bench/requirements.txt (supervisor: the
baseline, never a dependency of the project); recovery, swap, serving, footprint and growth run in
it, bench/drift.py in a venv of its own with the same re-run. The venv is created on first use and
re-installed when pyproject.toml or the requirements change. Standard library only: this runs on
the bare interpreter, before the re-run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

from bench.harness import ROOT, progress

BENCH_VENV = ROOT / "bench" / ".venv"
BENCH_BIN = BENCH_VENV / "bin"
REQUIREMENTS = ROOT / "bench" / "requirements.txt"


def ensure_venv(
    venv: Path, requirements: Path, *, project: bool = True, pins: tuple[str, ...] = ()
) -> Path:
    """Create ``venv`` (the project, unless ``project`` is false, plus ``requirements`` and
    ``pins``, requirement strings such as ``scikit-learn==1.9.1``) unless current; return its
    python. A peer's venv (bench/peers.py) holds the peer only, pinned to the libraries the
    project's model artifact was pickled with."""
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    inputs = (ROOT / "pyproject.toml", requirements) if project else (requirements,)
    if (
        python.exists()
        and stamp.exists()
        and all(stamp.stat().st_mtime >= p.stat().st_mtime for p in inputs)
        and stamp.read_text() == "\n".join(pins)
    ):
        progress(f"re-using the benchmark venv {venv.relative_to(ROOT)}")
        return python
    if not python.exists():
        progress(f"creating the benchmark venv {venv.relative_to(ROOT)} ...")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    what = f"the project (editable) and {requirements.name}" if project else requirements.name
    progress(f"installing {what} into it ...")
    started = time.monotonic()
    editable = ["-e", str(ROOT)] if project else []
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *editable, "-r", str(requirements), *pins],
        check=True,
    )
    stamp.write_text("\n".join(pins))
    progress(f"  installed in {time.monotonic() - started:.0f} s")
    return python


def in_venv(venv: Path) -> bool:
    """Whether this interpreter is ``venv``'s."""
    return Path(sys.prefix).resolve() == venv.resolve()


def ensure_bench_venv() -> Path:
    """bench/.venv, created or brought up to date."""
    return ensure_venv(BENCH_VENV, REQUIREMENTS)


def in_bench_venv() -> bool:
    return in_venv(BENCH_VENV)


def rerun(python: Path) -> NoReturn:
    """Re-run the running benchmark in ``python``: ``python -m bench.<name>``, same arguments, same
    working directory (the repository root, where ``-m`` finds the package ``bench``)."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    if spec is None:
        raise SystemExit(
            "run the benchmarks as modules from the repository root: python3 -m bench.<name>"
        )
    # The same module and arguments, in the venv's interpreter (no shell involved).
    os.execv(python, [str(python), "-m", spec.name, *sys.argv[1:]])  # noqa: S606


def enter_bench_venv() -> None:
    """Re-run the running benchmark (same arguments) in bench/.venv unless already there; then make
    SIGTERM unwind like Ctrl-C, so that every process the benchmark started is stopped."""
    python = ensure_bench_venv()
    if not in_bench_venv():
        progress("re-running this script in the benchmark venv")
        sys.stdout.flush()
        rerun(python)
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
