"""The scenarios of bench/recovery.py (its docstring says what each measures, and why the daemon
runs with ``restart.stable_after_s = 0.2`` and ``restart.budget = 1000``): selfheal's daemon under
``kill -9`` or SIGSTOP of a worker, supervisord under ``kill -9`` of its app, and the floor, a cold
start of bench/standalone_app.py. Each returns its raw data as a dict for the JSON.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.harness import (
    HOST,
    ROW,
    ClientPoller,
    Processes,
    Started,
    free_port,
    fresh_client,
    health_pid,
    progress,
    request_timeout,
    tail,
    wait_for,
)
from bench.supervisord_baseline import (
    launch_supervisord,
    program_section,
    standalone_argv,
    supervised_pid,
    supervisord_header,
)
from bench.venvs import BENCH_BIN

if TYPE_CHECKING:  # imported at run time only inside bench/.venv, after the re-exec
    import httpx

CYCLE_TIMEOUT_S = 30.0  # a cycle not recovered this long after its kill is a failure
STEADY_S = 1.0  # steady state between cycles
START_TIMEOUT_S = 120.0  # first start of a daemon or of supervisord's app
STABLE_AFTER_S = 0.2  # the daemon's restart.stable_after_s; well below STEADY_S (see recovery.py)
RESTART_BUDGET = 1000  # the daemon's restart.budget: 20 kills a minute is a crash loop otherwise


# ----- the fault cycles under the client poller --------------------------------------------------


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


# ----- scenario A: selfheal ----------------------------------------------------------------------


def write_daemon_config(path: Path, state_dir: Path, port: int, workers: int) -> None:
    """Defaults, but for ``stable_after_s`` (see the docstring of bench/recovery.py)."""
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


# supervisord's defaults (bench/supervisord_baseline.py), with what they mean for a kill -9.
AUTORESTART_NOTE = (
    '; supervisord\'s defaults, spelled out (its autorestart default, "unexpected", '
    "also restarts\n; after a kill -9)\n"
)


def write_supervisord_conf(directory: Path, port: int, registry: Path, version: str) -> Path:
    conf = directory / "supervisord.conf"
    program = program_section(
        "app", registry, version, port, directory / "app.log", note=AUTORESTART_NOTE
    )
    conf.write_text(supervisord_header(directory) + program)
    return conf


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
    supervisord = launch_supervisord(procs, name, conf, log)
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
            argv = standalone_argv(registry, version, port)
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
