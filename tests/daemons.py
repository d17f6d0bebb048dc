"""A real ``selfheal run`` on a free loopback port, for the integration and chaos suites.

``daemon_starter`` starts as many as a test needs and kills all they left, by pid; the
``start_daemon`` fixture (``tests/conftest.py``) hands it to a test. ``Poller`` is a steady client.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from service.model_store import PROBE_ROW
from tests.helpers import free_port, wait_until

ROW = PROBE_ROW  # the row the service smoke-tests every model with


@dataclass
class RunningDaemon:
    """A ``selfheal run`` process under test, with everything it started remembered by pid."""

    proc: subprocess.Popen[bytes]
    state_dir: Path
    port: int
    log: Path
    seen: dict[int, float] = field(default_factory=dict)  # pid -> create_time of every descendant

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self) -> list[dict[str, Any]]:
        """The daemon's own record of its live workers (run/workers.json)."""
        try:
            records = json.loads((self.state_dir / "run" / "workers.json").read_text())
        except (FileNotFoundError, ValueError):
            return []
        self.remember()
        return list(records)

    def remember(self) -> None:
        """Note every descendant so teardown can find leftovers even after the daemon is gone."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.seen[child.pid] = child.create_time()

    def worker_versions(self) -> list[str]:
        """What every live worker answers on its own socket: the version it serves right now."""
        versions = []
        for record in self.workers():
            transport = httpx.HTTPTransport(uds=record["uds"])
            with httpx.Client(transport=transport, base_url="http://w", timeout=5) as client:
                versions.append(client.get("/ready").json()["model_version"])
        return versions

    def control(self, method: str, path: str) -> Any:
        """Call the control endpoint over its unix socket with the token; the JSON answer."""
        run = self.state_dir / "run"
        token = (run / "control.token").read_text().strip()
        transport = httpx.HTTPTransport(uds=str(run / "control.sock"))
        with httpx.Client(transport=transport, base_url="http://selfheal", timeout=30) as client:
            response = client.request(method, path, headers={"Authorization": f"Bearer {token}"})
            response.raise_for_status()
            return response.json()

    def reap(self) -> None:
        """Kill the daemon if it still runs, then every descendant it left (by pid)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.stop(signal.SIGKILL if self.proc.poll() is None else signal.SIGTERM, timeout=10)
        for pid in self.survivors():
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()

    def predict(
        self, payload: dict[str, Any] | None = None, timeout: float = 5.0
    ) -> httpx.Response:
        return httpx.post(f"{self.url}/predict", json=payload or ROW, timeout=timeout)

    def wait_serving(self, timeout: float = 90.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited early ({self.proc.returncode}):\n{self.output()}"
                )
            self.remember()
            return "serving model" in self.output()

        wait_until(ready, timeout, interval=0.1, what="the daemon to serve")

    def survivors(self) -> list[int]:
        """Descendants seen during the test that still exist (same pid *and* create time)."""
        alive = []
        for pid, created in self.seen.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
        return alive

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.remember()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def write_config(directory: Path, port: int, **sections: dict[str, Any]) -> Path:
    """A config for tests: fast training, quick probes, short grace; overrides per section."""
    base: dict[str, dict[str, Any]] = {
        "service": {"port": port, "workers": 2, "stop_grace_s": 2.0, "start_timeout_s": 60.0},
        "probe": {"interval_s": 0.5, "timeout_s": 0.4, "failure_threshold": 2},
        "restart": {"backoff_initial_s": 0.2, "backoff_max_s": 2.0, "stable_after_s": 5.0},
        "training": {"max_iter": 30, "learning_rate": 0.3, "reference_rows": 500},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = ['state_dir = "state"']
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def daemon_starter(tmp_path: Path) -> Iterator[Any]:
    """Start ``selfheal run`` (as often as a test needs); kill all it left, by pid, afterwards."""
    started: list[RunningDaemon] = []

    def start(
        config_dir: Path | None = None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        **sections: dict[str, Any],
    ) -> RunningDaemon:
        directory = config_dir or tmp_path
        port = port or free_port()
        config = write_config(directory, port, **sections)
        log = directory / f"daemon-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "selfheal_daemon", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
            )
        daemon = RunningDaemon(proc, directory / "state", port, log)
        started.append(daemon)
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.reap()


@dataclass
class LoadResult:
    """What a client polling /predict saw."""

    sent: int = 0
    ok: int = 0
    refused: int = 0
    failed: int = 0
    longest_s: float = 0.0
    errors: list[str] = field(default_factory=list)


class Poller:
    """A client that POSTs /predict every ``interval_s`` until stopped, counting what it sees."""

    def __init__(
        self, url: str, interval_s: float = 0.01, row: dict[str, Any] | None = None
    ) -> None:
        self.url = url
        self.interval_s = interval_s
        self.row = row or ROW
        self.result = LoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        timeout = httpx.Timeout(5.0, connect=1.0)
        with httpx.Client(timeout=timeout) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                self.result.sent += 1
                try:
                    response = client.post(f"{self.url}/predict", json=self.row)
                except httpx.ConnectError as exc:
                    self.result.refused += 1
                    self.result.errors.append(f"refused: {exc}")
                except httpx.HTTPError as exc:
                    self.result.failed += 1
                    self.result.errors.append(f"{type(exc).__name__}: {exc}")
                else:
                    if response.status_code == 200:
                        self.result.ok += 1
                    else:
                        self.result.failed += 1
                        self.result.errors.append(f"HTTP {response.status_code}")
                took = time.monotonic() - started
                self.result.longest_s = max(self.result.longest_s, took)
                self._stop.wait(self.interval_s)
