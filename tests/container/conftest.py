"""Real containers: the image built from deploy/container, and systemd booted as PID 1.

These tests need root, podman and mmdebstrap (``make test`` installs them with apt-get). Each
session gets a podman storage of its own under a temp dir (``SELFHEAL_PODMAN_ROOT``), so the
containers, volumes and images it makes are the only ones it sees and removes; every container is
named ``selfheal-test-...``. The storage (``podman``), the Debian root filesystem built once from
Debian's mirror (``base_image``, deploy/container/rootfs.sh) and the wheelhouse are session
fixtures in tests/conftest.py: the CI pipeline's image job (tests/integration/test_ci_pipeline.py)
builds on the same ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.container.engine import APP_IMAGE, CONTAINER, Podman

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.container)
            item.add_marker(pytest.mark.slow)
            # the first test of a module may build the root filesystem, wheelhouse and image
            item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session")
def app_image(podman: Podman, base_image: str, wheelhouse: Path) -> str:
    """The selfheal image (deploy/container/build.sh) on the local base, built with no network."""
    podman.script(
        CONTAINER / "build.sh", "--base", base_image, "--tag", APP_IMAGE, "--wheel-dir", wheelhouse
    )
    return APP_IMAGE
