"""What every benchmark shares: progress lines, the model to serve, ports, polling, HTTP clients,
the processes a benchmark starts (and stops, every one), and the client that keeps asking for
predictions.

Standard library only at import (httpx and psutil are imported where used): a benchmark imports
this on the bare interpreter, before it re-runs itself in its venv (bench/venvs.py). Every script
in bench/ is a module of the package ``bench``, run from the repository root as
``python3 -m bench.<name>``: that puts the root on ``sys.path``, so ``bench.*``, ``selfheal_daemon``
and ``service`` import the same way in every script and in every venv.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported at run time only inside a benchmark venv, after the re-exec
    import httpx

ROOT = Path(__file__).resolve().parents[1]

# service.model_store.PROBE_ROW, repeated (test_bench_row_is_the_probe_row checks it): the
# benchmarks run on the bare standard library until they have re-run themselves in their venv.
ROW = {
    "MedInc": 3.5348,
    "HouseAge": 29.0,
    "AveRooms": 5.229129,
    "AveBedrms": 1.048889,
    "Population": 1166.0,
    "AveOccup": 2.818116,
    "Latitude": 34.26,
    "Longitude": -118.49,
}
HOST = "127.0.0.1"
POLL_S = 0.002  # how often a recovering process is polled (as bench/cold_start.py does)
CLIENT_PERIOD_S = 0.010  # the client poller's request rate
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the daemon sets for its workers

T = TypeVar("T")
_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s] {message}", flush=True)


# ----- the model to serve ------------------------------------------------------------------------


def model_to_serve(state_dir: Path, workdir: Path, trained: Path | None) -> tuple[Any, str]:
    """(config, version): a copy of the ``trained`` registry if given, else a model trained now.

    bench/suite.py trains one registry and hands it to every part (``--registry``): the same
    default model each script would train (bundled data, default settings), trained once.
    """
    from selfheal_daemon.config import parse_config
    from selfheal_daemon.model.bootstrap import ensure_model
    from selfheal_daemon.model.registry import ModelRegistry

    cfg = parse_config({"state_dir": str(state_dir)}, workdir / "config.toml")
    if trained is not None:
        progress(f"serving a copy of the trained registry {trained} (no training)")
        shutil.copytree(trained, cfg.registry_dir)
    else:
        progress("training the model to serve (bundled data, default settings) ...")
    version = ensure_model(cfg, ModelRegistry(cfg.registry_dir), lambda m: progress(f"  {m}"))
    return cfg, version


# ----- small helpers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], T | None], deadline: float, alive: Callable[[], bool] = lambda: True
) -> T | None:
    """Poll ``predicate`` every POLL_S until it returns something truthy or ``deadline`` passes.

    Returns None on time-out or as soon as ``alive()`` turns false.
    """
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline or not alive():
            return None
        time.sleep(POLL_S)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Unused (plain HTTP) but httpx builds one per transport unless given one: that costs tens of
    # milliseconds of CPU, which would be taken from the very process being timed.
    return ssl.create_default_context()


def fresh_client(uds: Path | None = None) -> httpx.Client:
    """A client that opens a new connection per request: a restarted process is a new listener."""
    import httpx

    transport = httpx.HTTPTransport(uds=str(uds) if uds else None, verify=_tls_context())
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(1.0),
        limits=httpx.Limits(max_keepalive_connections=0),
    )


def request_timeout(deadline: float, longest: float) -> httpx.Timeout:
    """Connect within 1 s, read within ``longest`` s, and never past ``deadline``."""
    import httpx

    left = max(0.05, deadline - time.monotonic())
    return httpx.Timeout(min(longest, left), connect=min(1.0, left))


def health_pid(client: httpx.Client, url: str) -> int | None:
    """The pid that /health reports, or None when nothing answers 200."""
    import httpx

    try:
        response = client.get(url + "/health")
        if response.status_code == 200:
            return int(response.json()["pid"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return None


# ----- processes we start, and their stopping ----------------------------------------------------


@dataclass
class Started:
    """A process this script started, with every descendant it was seen to have (pid -> ctime)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    seen: dict[int, float] = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def remember(self) -> None:
        import psutil

        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.seen[child.pid] = child.create_time()


class Processes:
    """Starts processes in their own process group and stops every one of them at the end.

    ``settle_s``: once a stopped process has exited, how long its descendants get to exit on their
    own (uvicorn's multiprocessing resource tracker leaves when its pipe closes) before they count
    as leftovers and are killed.
    """

    def __init__(self, settle_s: float = 0.0) -> None:
        self.started: list[Started] = []
        self.settle_s = settle_s

    def start(
        self,
        name: str,
        argv: list[str],
        log: Path,
        cwd: Path = ROOT,
        env: dict[str, str] | None = None,
    ) -> Started:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=CHILD_ENV if env is None else env,
                process_group=0,  # a Ctrl-C reaches this script only, which stops them in order
            )
        started = Started(name, proc, log)
        self.started.append(started)
        return started

    def stop(self, started: Started, grace_s: float) -> None:
        """SIGTERM, wait ``grace_s``, then SIGKILL it and any descendant still alive, by pid."""
        import psutil

        started.remember()
        if started.proc.poll() is None:
            started.proc.send_signal(signal.SIGTERM)
        try:
            started.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            progress(f"{started.name} (pid {started.proc.pid}) ignored SIGTERM; sending SIGKILL")
            started.proc.kill()
            started.proc.wait(timeout=10)
        leftovers = []
        for pid, created in started.seen.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if abs(proc.create_time() - created) < 0.01 and proc.is_running():
                    leftovers.append(proc)
        if self.settle_s > 0:
            _gone, leftovers = psutil.wait_procs(leftovers, timeout=self.settle_s)
        for proc in leftovers:
            progress(f"killing pid {proc.pid}, left behind by {started.name}")
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=5)
        if started in self.started:
            self.started.remove(started)

    def stop_all(self) -> None:
        for started in list(reversed(self.started)):
            self.stop(started, grace_s=20.0)


def write_json(path: Path, data: Any, what: str = "raw data") -> None:
    """Write a benchmark's figures as indented JSON at ``path`` (its directory made), and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    progress(f"{what} written to {path}")


# ----- the client that keeps asking for predictions ----------------------------------------------


class ClientPoller(threading.Thread):
    """POSTs /predict every CLIENT_PERIOD_S and counts what a client of the service sees.

    ``url`` is the prediction route itself; ``body`` the JSON bytes to POST (the probe row when
    None)."""

    def __init__(self, url: str, body: bytes | None = None) -> None:
        super().__init__(name="client-poller", daemon=True)
        self.url = url
        self.body = body if body is not None else json.dumps(ROW).encode()
        self.sent = 0
        self.ok = 0
        self.refused = 0
        self.failed = 0
        self.longest_s = 0.0
        self.longest_ok_s = 0.0
        self.failures: list[tuple[float, str, float]] = []  # (s since start, what, took s)
        self._halt = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=httpx.Timeout(5.0, connect=1.0)) as client:
            while not self._halt.is_set():
                started = time.monotonic()
                what = "ok"
                try:
                    response = client.post(
                        self.url, content=self.body, headers={"Content-Type": "application/json"}
                    )
                    if response.status_code != 200:
                        what = f"HTTP {response.status_code}"
                except httpx.ConnectError:
                    what = "refused"
                except Exception as exc:  # any other failure is what a client would see too
                    what = type(exc).__name__
                took = time.monotonic() - started
                self._count(started, what, took)
                self._halt.wait(max(0.0, started + CLIENT_PERIOD_S - time.monotonic()))

    def _count(self, started: float, what: str, took: float) -> None:
        self.sent += 1
        self.longest_s = max(self.longest_s, took)
        if what == "ok":
            self.ok += 1
            self.longest_ok_s = max(self.longest_ok_s, took)
            return
        if what == "refused":
            self.refused += 1
        else:
            self.failed += 1
        self.failures.append((round(started - self._t0, 4), what, round(took, 4)))

    def stop(self) -> dict[str, Any]:
        self._halt.set()
        self.join(timeout=10)
        return {
            "requests": self.sent,
            "ok": self.ok,
            "refused": self.refused,
            "failed": self.failed,
            "longest_s": self.longest_s,
            "longest_ok_s": self.longest_ok_s,
            "failures": self.failures,
        }
