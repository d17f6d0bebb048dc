"""Suite-wide setup. Runs before any test module imports scikit-learn."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.container.engine import Podman

CONTAINER_NEEDS = ("podman", "runc", "mmdebstrap")  # besides root; make test installs them

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


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """A podman with a storage of its own for the session (tests/container and the CI pipeline's
    image job share it); everything in it is removed at the end. Skips without root and tools."""
    from tests.container.engine import Podman, unmount_below

    missing = [tool for tool in CONTAINER_NEEDS if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        pytest.skip(
            "container tests need root and "
            + ", ".join(missing or ["(root)"])
            + ": apt-get install podman runc mmdebstrap (make test does)"
        )
    root = tmp_path_factory.mktemp("podman")
    engine = Podman(root)
    yield engine
    engine.run("rm", "--all", "--force", "--time", "0", ok=False, timeout=300)
    engine.run("volume", "rm", "--all", "--force", ok=False)
    engine.run("rmi", "--all", "--force", ok=False, timeout=300)
    unmount_below(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def base_image(podman: Podman) -> str:
    """The Debian 12 root filesystem from Debian's mirror, imported once per session
    (deploy/container/rootfs.sh): the app image's base and the machine systemd boots in."""
    from tests.container.engine import BASE_IMAGE, CONTAINER

    podman.script(CONTAINER / "rootfs.sh", "--tag", BASE_IMAGE)
    return BASE_IMAGE
