"""Recovery from a crashed service process: selfheal's daemon against supervisord, kill after kill.

What is measured, each scenario on its own free loopback port, with the same model:

- **selfheal**: the real daemon (``selfheal run``, 1 and then 2 workers, default probe settings).
  Each cycle sends ``kill -9`` to one worker, the pid taken from ``run/workers.json``, and measures
  MTTR from the kill to when ``workers.json`` lists a new pid for that slot *and* that new worker
  answers: with one worker, a ``POST /predict`` on the shared port returns 200; with two, ``GET
  /ready`` on the new worker's private unix socket returns 200 and ``GET /health`` there reports
  the new pid (the other worker keeps the shared port answering meanwhile). The socket is the
  ``uds`` of the worker's record in workers.json when it has one, else ``run/worker-<slot>.sock``.
- **supervisord**: the same model served by one plain uvicorn process that binds the port itself
  (``bench/standalone_app.py``), under supervisord (autorestart, startsecs=1, startretries=3).
  Each cycle sends ``kill -9`` to the child (pid from ``supervisorctl status``) and measures MTTR
  from the kill to the first ``GET /health`` 200 that reports a new pid.
- **a hung worker**: the daemon with 2 workers; each cycle sends SIGSTOP to one worker and measures
  from the signal to a new worker in that slot answering ``/ready``: detection by failed liveness
  probes (at most ``failure_threshold`` x ``interval_s`` + ``timeout_s``, 7 s with the defaults,
  printed as the configured bound) plus the replacement. The stopped process is killed by the
  daemon (TERM cannot reach it; KILL after the grace period).
- **the floor**: the cold start of ``bench/standalone_app.py``, ``Popen`` to the first ``/health``
  200 (one unmeasured warm-up start, then the median of a few): what any restart that starts a
  fresh interpreter pays. ``bench/cold_start.py`` breaks the same cost down for a daemon worker.

During every scenario a client thread POSTs ``/predict`` every 10 ms (httpx, one pooled client,
connect timeout 1 s, read timeout 5 s) and counts requests, refused connections
(``httpx.ConnectError``), other failures (non-200 or any other exception) and the longest time one
request took to get an answer (or its error). Cycles are 1 s of steady state apart; a cycle that has
not recovered 30 s after its kill is recorded as a failure and the run goes on.

The daemon runs with ``restart.stable_after_s = 0.2`` (default 30) and ``restart.budget = 1000``
(default 5 per 60 s): every kill then hits a worker that has been ready for longer than that, so
each cycle measures the daemon's first-crash path (restart at once) rather than its backoff and
crash-loop policy, which 20 kills in half a minute would rightly trigger; supervisord likewise
restarts a RUNNING process at once, with no budget. Everything else is the default configuration.

The benchmark has its own venv, ``bench/.venv`` (``pip install -e .`` plus
``bench/requirements.txt``, i.e. supervisor): it is created on the first run, re-used (and
re-installed when pyproject.toml or the requirements change) later, and the script re-runs itself
in it, so supervisord is never a dependency of the project. Every process it starts is stopped at
the end (SIGTERM, then SIGKILL by pid). Only 127.0.0.1 is used. Prints progress, then a markdown
table; ``--json PATH`` writes the raw per-cycle data. ``--registry DIR`` serves a copy of a registry
trained before (bench/suite.py trains one for every part) instead of training the model here.

    python3 bench/recovery.py [--cycles 20 | --quick] [--hang-cycles 6] [--floor-runs 5]
        [--registry DIR] [--json bench/out/recovery.json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported at run time only inside bench/.venv, after the re-exec
    import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = ROOT / "bench" / ".venv"
BENCH_BIN = BENCH_VENV / "bin"
REQUIREMENTS = ROOT / "bench" / "requirements.txt"
STANDALONE_APP = ROOT / "bench" / "standalone_app.py"

# service.model_store.PROBE_ROW, repeated (test_bench_row_is_the_probe_row checks it): this script
# runs on the bare standard library until it has re-run itself in bench/.venv.
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
CYCLE_TIMEOUT_S = 30.0  # a cycle not recovered this long after its kill is a failure
STEADY_S = 1.0  # steady state between cycles
START_TIMEOUT_S = 120.0  # first start of a daemon or of supervisord's app
STABLE_AFTER_S = 0.2  # the daemon's restart.stable_after_s; well below STEADY_S (see above)
RESTART_BUDGET = 1000  # the daemon's restart.budget: 20 kills a minute is a crash loop otherwise
DEFAULT_CYCLES = 20
QUICK_CYCLES = 5
FLOOR_RUNS = 5
QUICK_FLOOR_RUNS = 3
HANG_CYCLES = 6  # each takes the probe schedule's detection time (up to 7 s by default)
QUICK_HANG_CYCLES = 2
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # as the daemon sets for its workers

T = TypeVar("T")
_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f} s] {message}", flush=True)


# ----- the benchmark's own venv ------------------------------------------------------------------


def ensure_bench_venv() -> Path:
    """Create bench/.venv (plain venv: the project plus bench/requirements.txt) unless current."""
    python = BENCH_BIN / "python"
    stamp = BENCH_VENV / ".installed"
    inputs = (ROOT / "pyproject.toml", REQUIREMENTS)
    if (
        python.exists()
        and stamp.exists()
        and all(stamp.stat().st_mtime >= p.stat().st_mtime for p in inputs)
    ):
        progress(f"re-using the benchmark venv {BENCH_VENV.relative_to(ROOT)}")
        return python
    if not python.exists():
        progress(f"creating the benchmark venv {BENCH_VENV.relative_to(ROOT)} ...")
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    progress("installing the project (editable) and bench/requirements.txt into it ...")
    started = time.monotonic()
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-e", str(ROOT), "-r", str(REQUIREMENTS)],
        check=True,
    )
    stamp.touch()
    progress(f"  installed in {time.monotonic() - started:.0f} s")
    return python


def in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == BENCH_VENV.resolve()


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


# ----- the client that keeps asking for predictions ----------------------------------------------


class ClientPoller(threading.Thread):
    """POSTs /predict every CLIENT_PERIOD_S and counts what a client of the service sees."""

    def __init__(self, url: str) -> None:
        super().__init__(name="client-poller", daemon=True)
        self.url = url
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
                    response = client.post(self.url, json=ROW)
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


def run_cycles(  # noqa: PLR0917 - a benchmark's internal helper
    name: str,
    cycles: int,
    one_cycle: Callable[[int], dict[str, Any]],
    supervisor: Started,
    log: Path,
    url: str,
    result: dict[str, Any],
) -> None:
    """Steady state, then ``cycles`` faults under the client poller; fills ``result``."""
    supervisor.remember()
    progress(f"{name}: serving; {cycles} fault cycles, {STEADY_S:.0f} s of steady state apart")
    time.sleep(STEADY_S)
    poller = ClientPoller(url + "/predict")
    poller.start()
    try:
        for i in range(cycles):
            cycle = one_cycle(i)
            cycle["cycle"] = i + 1
            result["cycles"].append(cycle)
            report_cycle(name, i + 1, cycles, cycle)
            supervisor.remember()
            if not supervisor.alive():
                raise RuntimeError(f"{name}: the supervisor exited; its log ends:\n{tail(log)}")
            time.sleep(STEADY_S)
    finally:
        result["client"] = poller.stop()


# ----- scenario A: selfheal ----------------------------------------------------------------------


def write_daemon_config(path: Path, state_dir: Path, port: int, workers: int) -> None:
    """Defaults, but for ``stable_after_s`` (see the module docstring)."""
    path.write_text(
        f"state_dir = {json.dumps(str(state_dir))}\n"
        "[service]\n"
        f'host = "{HOST}"\n'
        f"port = {port}\n"
        f"workers = {workers}\n"
        "[restart]\n"
        f"stable_after_s = {STABLE_AFTER_S}\n"
        f"budget = {RESTART_BUDGET}\n"
    )


def read_workers(run_dir: Path) -> list[dict[str, Any]]:
    try:
        records = json.loads((run_dir / "workers.json").read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def live_worker(run_dir: Path, slot: int) -> tuple[int, float] | None:
    """(pid, create_time) of the slot's worker in workers.json, if that very process is alive."""
    import psutil

    for record in read_workers(run_dir):
        if record.get("worker") != slot:
            continue
        with contextlib.suppress(psutil.Error, KeyError, TypeError, ValueError):
            pid, created = int(record["pid"]), float(record["create_time"])
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                return pid, created
    return None


def kill_exact(pid: int, created: float, sig: int = signal.SIGKILL) -> float | None:
    """Send ``sig`` to ``pid`` if it is still the process created at ``created``; the time sent."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) >= 0.01:
            return None
        killed_at = time.monotonic()
        proc.send_signal(sig)  # psutil refuses if the pid was recycled meanwhile
    except psutil.Error:
        return None
    return killed_at


def selfheal_cycle(  # noqa: PLR0917 - a benchmark's internal helper, called in one place
    run_dir: Path, slot: int, workers: int, url: str, daemon: Started, sig: int = signal.SIGKILL
) -> dict:
    """Kill (or, with SIGSTOP, hang) the slot's worker; time until workers.json lists a new pid
    for the slot and that worker answers."""
    record: dict[str, Any] = {"slot": slot}
    victim = wait_for(lambda: live_worker(run_dir, slot), time.monotonic() + 30, daemon.alive)
    if victim is None:
        return {**record, "error": "no live worker in workers.json for this slot within 30 s"}
    old_pid, created = victim
    killed_at = kill_exact(old_pid, created, sig)
    if killed_at is None:
        return {**record, "old_pid": old_pid, "error": "the worker exited before the kill"}
    record["old_pid"] = old_pid
    deadline = killed_at + CYCLE_TIMEOUT_S

    def new_worker() -> dict[str, Any] | None:
        for entry in read_workers(run_dir):
            if entry.get("worker") == slot and entry.get("pid") not in (None, old_pid):
                return entry
        return None

    listed = wait_for(new_worker, deadline, daemon.alive)
    if listed is None:
        return {**record, "error": "workers.json listed no new pid for the slot in time"}
    record["listed_s"] = time.monotonic() - killed_at
    pid = record["new_pid"] = int(listed["pid"])
    # The worker's private socket: named in its record if the daemon says, else the README's name.
    uds = Path(listed.get("uds") or run_dir / f"worker-{slot}.sock")
    with fresh_client(None if workers == 1 else uds) as client:
        if workers == 1:
            answered = wait_for(lambda: predict_ok(client, url, deadline), deadline, daemon.alive)
        else:
            answered = wait_for(lambda: worker_ready(client, pid, deadline), deadline, daemon.alive)
    if not answered:
        return {**record, "error": "the new worker did not answer in time"}
    record["mttr_s"] = time.monotonic() - killed_at
    return record


def predict_ok(client: httpx.Client, url: str, deadline: float) -> bool:
    """One POST /predict on the shared port (it may wait in the backlog for the new worker)."""
    import httpx

    try:
        response = client.post(url + "/predict", json=ROW, timeout=request_timeout(deadline, 5.0))
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def worker_ready(private: httpx.Client, pid: int, deadline: float) -> bool:
    """GET /ready 200 on the worker's private socket, and /health there says it is ``pid``."""
    import httpx

    try:
        timeout = request_timeout(deadline, 1.0)
        if private.get("http://worker/ready", timeout=timeout).status_code != 200:
            return False
        health = private.get("http://worker/health", timeout=timeout)
        return health.status_code == 200 and health.json().get("pid", pid) == pid
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def run_selfheal(  # noqa: PLR0917 - a benchmark's internal helper, called in two places
    workers: int,
    cycles: int,
    state_dir: Path,
    workdir: Path,
    procs: Processes,
    sig: int = signal.SIGKILL,
) -> dict[str, Any]:
    fault = "hang (SIGSTOP)" if sig == signal.SIGSTOP else "kill -9"
    name = f"selfheal {fault}, {workers} worker(s)"
    port = free_port()
    tag = f"{workers}w-{'hang' if sig == signal.SIGSTOP else 'kill'}"  # one log per scenario
    config = workdir / f"selfheal-{tag}.toml"
    write_daemon_config(config, state_dir, port, workers)
    log = workdir / f"selfheal-{tag}.log"
    url = f"http://{HOST}:{port}"
    run_dir = state_dir / "run"
    progress(f"{name}: starting `selfheal run` on {url} ...")
    daemon = procs.start(name, [str(BENCH_BIN / "selfheal"), "run", "--config", str(config)], log)
    result: dict[str, Any] = {
        "scenario": "selfheal" if sig == signal.SIGKILL else "selfheal, hung worker (SIGSTOP)",
        "workers": workers,
        "config": config.read_text(),
        "cycles": [],
    }
    try:
        serving = wait_for(
            lambda: "serving model" in log.read_text(errors="replace"),
            time.monotonic() + START_TIMEOUT_S,
            daemon.alive,
        )
        if not serving:
            raise RuntimeError(f"the daemon did not serve in time; its log ends:\n{tail(log)}")
        run_cycles(
            name,
            cycles,
            lambda i: selfheal_cycle(run_dir, i % workers, workers, url, daemon, sig),
            daemon,
            log,
            url,
            result,
        )
    finally:
        progress(f"{name}: stopping the daemon (SIGTERM)")
        procs.stop(daemon, grace_s=20.0)
    return result


# ----- scenario B: supervisord -------------------------------------------------------------------


def supervisord_header(directory: Path) -> str:
    """supervisord's own sections, everything in ``directory``; the programs follow."""
    return f"""[unix_http_server]
file = {directory / "supervisor.sock"}
chmod = 0700

[supervisord]
nodaemon = true
logfile = {directory / "supervisord.log"}
pidfile = {directory / "supervisord.pid"}
childlogdir = {directory}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://{directory / "supervisor.sock"}

"""


def write_supervisord_conf(directory: Path, port: int, registry: Path, version: str) -> Path:
    command = (
        f"{BENCH_BIN / 'python'} {STANDALONE_APP} --registry {registry} --version {version} "
        f"--host {HOST} --port {port}"
    )
    conf = directory / "supervisord.conf"
    conf.write_text(
        supervisord_header(directory)
        + f"""[program:app]
command = {command}
directory = {ROOT}
environment = OMP_NUM_THREADS="1"
; supervisord's defaults, spelled out (its autorestart default, "unexpected", also restarts
; after a kill -9)
autostart = true
autorestart = true
startsecs = 1
startretries = 3
stdout_logfile = {directory / "app.log"}
redirect_stderr = true
"""
    )
    return conf


def supervised_pid(conf: Path) -> int | None:
    """The app's pid when supervisorctl says it is RUNNING, else None."""
    out = subprocess.run(
        [str(BENCH_BIN / "supervisorctl"), "-c", str(conf), "status", "app"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    words = out.replace(",", " ").split()
    if "RUNNING" in words and "pid" in words:
        with contextlib.suppress(IndexError, ValueError):
            return int(words[words.index("pid") + 1])
    return None


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


def supervisord_cycle(
    conf: Path, url: str, supervisord: Started, client: httpx.Client
) -> dict[str, Any]:
    """Kill the app; time until a process with a new pid answers /health."""
    import psutil

    record: dict[str, Any] = {}
    old_pid = wait_for(lambda: supervised_pid(conf), time.monotonic() + 30, supervisord.alive)
    if old_pid is None:
        return {"error": "supervisorctl showed no RUNNING app within 30 s"}
    try:
        created = psutil.Process(old_pid).create_time()
    except psutil.Error:
        return {"old_pid": old_pid, "error": "the app exited before the kill"}
    killed_at = kill_exact(old_pid, created)
    if killed_at is None:
        return {"old_pid": old_pid, "error": "the app exited before the kill"}
    record["old_pid"] = old_pid
    deadline = killed_at + CYCLE_TIMEOUT_S

    def recovered() -> int | None:
        if "respawned_s" not in record:  # when supervisord has a new child, for the record
            with contextlib.suppress(psutil.Error):
                if any(c.pid != old_pid for c in psutil.Process(supervisord.proc.pid).children()):
                    record["respawned_s"] = time.monotonic() - killed_at
        pid = health_pid(client, url)
        return pid if pid not in (None, old_pid) else None

    pid = wait_for(recovered, deadline, supervisord.alive)
    if pid is None:
        return {**record, "error": "no new process answered /health in time"}
    record["new_pid"] = pid
    record["mttr_s"] = time.monotonic() - killed_at
    return record


def run_supervisord(
    cycles: int, registry: Path, version: str, workdir: Path, procs: Processes
) -> dict[str, Any]:
    name = "supervisord, 1 process"
    port = free_port()
    directory = workdir / "supervisord"
    directory.mkdir()
    conf = write_supervisord_conf(directory, port, registry, version)
    url = f"http://{HOST}:{port}"
    log = directory / "supervisord.out"
    progress(f"{name}: starting supervisord with bench/standalone_app.py on {url} ...")
    supervisord = procs.start(
        name, [str(BENCH_BIN / "supervisord"), "-n", "-c", str(conf)], log, cwd=directory
    )
    result: dict[str, Any] = {
        "scenario": "supervisord",
        "workers": 1,
        "config": conf.read_text(),
        "cycles": [],
    }
    client = fresh_client()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        if not wait_for(lambda: health_pid(client, url), deadline, supervisord.alive):
            raise RuntimeError(
                f"the app did not answer in time; logs end:\n{tail(log)}\n"
                f"{tail(directory / 'app.log')}"
            )
        run_cycles(
            name,
            cycles,
            lambda _i: supervisord_cycle(conf, url, supervisord, client),
            supervisord,
            log,
            url,
            result,
        )
    finally:
        client.close()
        progress(f"{name}: stopping supervisord (SIGTERM)")
        procs.stop(supervisord, grace_s=20.0)
    return result


# ----- the floor: a cold start of the standalone app ---------------------------------------------


def run_floor(runs: int, registry: Path, version: str, workdir: Path, procs: Processes) -> dict:
    progress(f"floor: cold start of bench/standalone_app.py, 1 warm-up + {runs} runs ...")
    starts: list[float] = []
    with fresh_client() as client:  # made before the clock starts, so its setup is not counted
        for i in range(runs + 1):
            port = free_port()
            url = f"http://{HOST}:{port}"
            argv = [str(BENCH_BIN / "python"), str(STANDALONE_APP), "--registry", str(registry)]
            argv += ["--version", version, "--host", HOST, "--port", str(port)]
            started_at = time.monotonic()
            app = procs.start("standalone app", argv, workdir / "floor.log")
            try:
                answered = wait_for(lambda u=url: health_pid(client, u), started_at + 60, app.alive)
                took = time.monotonic() - started_at
            finally:
                procs.stop(app, grace_s=10.0)
            if not answered:
                log = tail(workdir / "floor.log")
                raise RuntimeError(f"the standalone app did not answer; its log ends:\n{log}")
            if i == 0:
                progress(f"floor: warm-up {took * 1000:.0f} ms (not counted)")
                continue
            starts.append(took)
            progress(f"floor: run {i}/{runs}: spawn to /health 200 in {took * 1000:.0f} ms")
    return {"scenario": "floor", "spawn_to_health_s": starts}


# ----- reporting ---------------------------------------------------------------------------------


def report_cycle(name: str, i: int, cycles: int, cycle: dict[str, Any]) -> None:
    where = f"slot {cycle['slot']} " if "slot" in cycle else ""
    pids = f"pid {cycle.get('old_pid', '?')} -> {cycle.get('new_pid', '?')}"
    if "error" in cycle:
        progress(f"{name}: cycle {i}/{cycles}: {where}{pids}: FAILED: {cycle['error']}")
        return
    step = cycle.get("listed_s", cycle.get("respawned_s"))
    step_text = ""
    if step is not None:
        label = "listed" if "listed_s" in cycle else "respawned"
        step_text = f"{label} {step * 1000:.0f} ms, "
    progress(
        f"{name}: cycle {i}/{cycles}: {where}{pids}: {step_text}"
        f"answering {cycle['mttr_s'] * 1000:.0f} ms after the kill"
    )


def mttrs(result: dict[str, Any]) -> list[float]:
    return [c["mttr_s"] for c in result.get("cycles", []) if "mttr_s" in c]


def table(results: list[dict[str, Any]], floor: dict[str, Any] | None) -> list[str]:
    lines = [
        "| scenario | workers | cycles recovered | MTTR median ms | MTTR max ms | requests "
        "| refused | failed | longest wait ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        times = [t * 1000 for t in mttrs(result)]
        client = result.get("client", {})
        median = f"{statistics.median(times):.0f}" if times else "-"
        worst = f"{max(times):.0f}" if times else "-"
        longest = f"{client['longest_s'] * 1000:.0f}" if client else "-"
        lines.append(
            f"| {result['scenario']} | {result['workers']} "
            f"| {len(times)}/{len(result.get('cycles', []))} | {median} | {worst} "
            f"| {client.get('requests', '-')} | {client.get('refused', '-')} "
            f"| {client.get('failed', '-')} | {longest} |"
        )
    if floor and floor.get("spawn_to_health_s"):
        starts = [t * 1000 for t in floor["spawn_to_health_s"]]
        lines.append(
            f"| floor: cold start of standalone_app.py, spawn to /health 200 | 1 "
            f"| {len(starts)} runs | {statistics.median(starts):.0f} | {max(starts):.0f} "
            "| - | - | - | - |"
        )
    return lines


def ratios(results: list[dict[str, Any]]) -> list[str]:
    baseline = next((r for r in results if r["scenario"] == "supervisord" and mttrs(r)), None)
    if baseline is None:
        return ["ratio: no supervisord MTTR to compare with"]
    base = statistics.median(mttrs(baseline))
    return [
        f"selfheal median MTTR / supervisord median MTTR, {r['workers']} worker(s): "
        f"{statistics.median(mttrs(r)) / base:.2f}"
        for r in results
        if r["scenario"] == "selfheal" and mttrs(r)
    ]


# ----- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=None, help=f"default {DEFAULT_CYCLES}")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_CYCLES} cycles, {QUICK_FLOOR_RUNS} floor runs"
    )
    parser.add_argument(
        "--hang-cycles",
        type=int,
        default=None,
        help=f"default {HANG_CYCLES} ({QUICK_HANG_CYCLES} with --quick); 0 skips the scenario",
    )
    parser.add_argument(
        "--floor-runs",
        type=int,
        default=None,
        help=f"default {FLOOR_RUNS} ({QUICK_FLOOR_RUNS} with --quick)",
    )
    parser.add_argument(
        "--registry", type=Path, default=None, help="serve a copy of this trained registry"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the raw data here")
    args = parser.parse_args()
    if args.cycles is None:
        args.cycles = QUICK_CYCLES if args.quick else DEFAULT_CYCLES
    if args.hang_cycles is None:
        args.hang_cycles = QUICK_HANG_CYCLES if args.quick else HANG_CYCLES
    if args.floor_runs is None:
        args.floor_runs = QUICK_FLOOR_RUNS if args.quick else FLOOR_RUNS
    if args.cycles < 1 or args.floor_runs < 1 or args.hang_cycles < 0:
        parser.error("--cycles and --floor-runs must be at least 1, --hang-cycles at least 0")
    return args


def scenario(results: list[dict[str, Any]], name: str, run: Callable[[], dict]) -> None:
    """Run one scenario; a scenario that cannot start is reported and the others still run."""
    try:
        results.append(run())
    except RuntimeError as exc:
        progress(f"{name}: FAILED: {exc}")


def benchmark(args: argparse.Namespace) -> None:
    from importlib.metadata import version as dist_version

    from selfheal_daemon.config import ProbeConfig

    procs = Processes()
    results: list[dict[str, Any]] = []
    floor: dict[str, Any] | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="selfheal-recovery-") as tmp:
            workdir = Path(tmp)
            state_dir = workdir / "state"
            cfg, version = model_to_serve(state_dir, workdir, args.registry)
            registry = cfg.registry_dir
            try:
                floor = run_floor(args.floor_runs, registry, version, workdir, procs)
            except RuntimeError as exc:
                progress(f"floor: FAILED: {exc}")
            for workers in (1, 2):
                scenario(
                    results,
                    f"selfheal, {workers} worker(s)",
                    lambda w=workers: run_selfheal(w, args.cycles, state_dir, workdir, procs),
                )
            if args.hang_cycles:
                scenario(
                    results,
                    "selfheal, hung worker",
                    lambda: run_selfheal(
                        2, args.hang_cycles, state_dir, workdir, procs, signal.SIGSTOP
                    ),
                )
            scenario(
                results,
                "supervisord",
                lambda: run_supervisord(args.cycles, registry, version, workdir, procs),
            )
    finally:
        procs.stop_all()

    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"supervisor {dist_version('supervisor')}, uvicorn {dist_version('uvicorn')}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}"
    )
    print()
    print(f"machine: {machine}")
    for line in table(results, floor):
        print(line)
    probe = ProbeConfig()
    bound = probe.failure_threshold * probe.interval_s + probe.timeout_s
    print(
        f"hung worker: configured detection bound {bound:.1f} s (failure_threshold "
        f"{probe.failure_threshold} x interval_s {probe.interval_s:g} "
        f"+ timeout_s {probe.timeout_s:g})"
    )
    print()
    for line in ratios(results):
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine,
                    "cycles": args.cycles,
                    "steady_s": STEADY_S,
                    "client_period_s": CLIENT_PERIOD_S,
                    "cycle_timeout_s": CYCLE_TIMEOUT_S,
                    "scenarios": results,
                    "floor": floor,
                },
                indent=2,
            )
        )
        progress(f"raw data written to {args.json}")


def main() -> None:
    args = parse_args()
    if args.json:
        args.json = args.json.resolve()
    enter_bench_venv(Path(__file__))
    benchmark(args)


def enter_bench_venv(script: Path) -> None:
    """Re-run ``script`` (same arguments) in bench/.venv unless already there; then make SIGTERM
    unwind like Ctrl-C, so that every process the benchmark started is stopped."""
    python = ensure_bench_venv()
    if not in_bench_venv():
        progress("re-running this script in the benchmark venv")
        sys.stdout.flush()
        # The same script and arguments, in the benchmark venv's interpreter (no shell involved).
        os.execv(python, [str(python), str(script.resolve()), *sys.argv[1:]])  # noqa: S606
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))


if __name__ == "__main__":
    main()
