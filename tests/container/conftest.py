"""Real containers: the image built from deploy/container, and systemd booted as PID 1.

These tests need root, podman and mmdebstrap (``make test`` installs them with apt-get). Each
session gets a podman storage of its own under a temp dir (``SELFHEAL_PODMAN_ROOT``), so the
containers, volumes and images it makes are the only ones it sees and removes; every container is
named ``selfheal-test-...``. The Debian root filesystem is built once from Debian's mirror
(deploy/container/rootfs.sh), the wheelhouse once (tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.engine import APP_IMAGE, BASE_IMAGE, CONTAINER, Podman, unmount_below

HERE = Path(__file__).parent
NEEDS = ("podman", "runc", "mmdebstrap")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.container)
            item.add_marker(pytest.mark.slow)
            # the first test of a module may build the root filesystem, wheelhouse and image
            item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    """A podman with a storage of its own; everything in it is removed at the end."""
    missing = [tool for tool in NEEDS if shutil.which(tool) is None]
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
    """The Debian 12 root filesystem from Debian's mirror, imported (deploy/container/rootfs.sh)."""
    podman.script(CONTAINER / "rootfs.sh", "--tag", BASE_IMAGE)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def app_image(podman: Podman, base_image: str, wheelhouse: Path) -> str:
    """The selfheal image (deploy/container/build.sh) on the local base, built with no network."""
    podman.script(
        CONTAINER / "build.sh", "--base", base_image, "--tag", APP_IMAGE, "--wheel-dir", wheelhouse
    )
    return APP_IMAGE
