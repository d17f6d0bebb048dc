"""podman for the container tests: one storage per session, names that say they are ours."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
CONTAINER = ROOT / "deploy" / "container"
BASE_IMAGE = "localhost/selfheal-base:bookworm"
APP_IMAGE = "localhost/selfheal:test"


@dataclass
class Podman:
    """podman through deploy/container/podman.sh, on this session's own storage."""

    root: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "SELFHEAL_PODMAN_ROOT": str(self.root)}

    def _call(
        self, argv: list[str], *, ok: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env(),
            stdin=subprocess.DEVNULL,
        )
        if ok and result.returncode != 0:
            raise AssertionError(
                f"{Path(argv[0]).name} {' '.join(argv[1:])} exited {result.returncode}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def run(
        self, *args: str | Path, ok: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``podman ARGS``; with ``ok`` fail the test, showing its output, unless it exits 0."""
        return self._call([str(CONTAINER / "podman.sh"), *map(str, args)], ok=ok, timeout=timeout)

    def script(self, path: Path, *args: str | Path, timeout: float = 600) -> str:
        """Run one of deploy/container's scripts against this storage; its output (fails the
        test unless it exits 0)."""
        result = self._call([str(path), *map(str, args)], ok=True, timeout=timeout)
        return result.stdout + result.stderr

    def exec(self, name: str, *argv: str, ok: bool = True, timeout: float = 60) -> str:
        """Run ``argv`` inside container ``name``; its standard output."""
        return self.run("exec", name, *argv, ok=ok, timeout=timeout).stdout

    def inspect(self, name: str) -> dict[str, Any]:
        (found,) = json.loads(self.run("inspect", name).stdout)
        return dict(found)

    def remove(self, name: str) -> None:
        self.run("rm", "--force", "--time", "0", name, ok=False)


def unmount_below(root: Path) -> None:
    """Unmount whatever podman left mounted under ``root`` (deepest first)."""
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(str(root))
    ]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["/usr/bin/umount", "-l", mount], check=False, capture_output=True)


def unique(kind: str) -> str:
    """A name for a container or volume of this session: ``selfheal-test-<kind>-<random>``."""
    return f"selfheal-test-{kind}-{secrets.token_hex(3)}"


def wait_ready(url: str, timeout_s: float, what: str) -> None:
    """Until ``url``/ready answers 200 (from the host, through the published port)."""

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/ready", timeout=2.0).status_code == 200
        return False

    wait_until(ready, timeout_s, what=what)


@dataclass
class Published:
    """A container whose port 8000 is published on a free port of the host's loopback."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
