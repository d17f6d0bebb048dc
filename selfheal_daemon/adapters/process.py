"""Service worker processes: the shared listening socket, spawning, stopping, reaping, pid files.

The daemon binds the service's TCP socket once and every worker inherits it (``pass_fds``), so a
worker that dies never closes the port: connections wait in the kernel's backlog while another
worker, or the replacement, accepts them. Each worker also listens on a private unix socket
``run/worker-<n>.sock`` so the daemon can probe that one process.

Workers run in their own process group, so a Ctrl-C at the terminal reaches only the daemon, which
then stops them in order. ``subprocess.Popen`` keeps each child unreaped until we ``poll()`` it, so
a signal sent through it can never hit a recycled pid.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil
from loguru import logger

from selfheal_daemon.adapters.files import atomic_write_json
from selfheal_daemon.errors import ServiceStartError

_UDS_MAX = 107  # sun_path is 108 bytes including the terminating NUL


def bind_listener(host: str, port: int, backlog: int) -> socket.socket:
    """Bind and listen on host:port; the socket is inheritable so workers can serve on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServiceStartError(
                f"cannot listen on {host}:{port}: the address is in use (service.port)"
            ) from exc
        raise ServiceStartError(f"cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker process is started with."""

    registry_dir: Path
    run_dir: Path
    listen_fd: int
    max_batch_rows: int
    max_body_bytes: int
    log_level: str

    def uds_path(self, worker: int) -> Path:
        return self.run_dir / f"worker-{worker}.sock"


@dataclass
class WorkerProcess:
    """One running worker: its slot, its process and its private socket."""

    worker: int
    version: str
    popen: subprocess.Popen[bytes]
    uds: Path
    create_time: float

    @property
    def pid(self) -> int:
        return self.popen.pid


class ProcessControl:
    """Spawns, signals and reaps worker processes; records them in ``run/workers.json``."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._procs: dict[int, WorkerProcess] = {}  # pid -> process, until reaped
        self._lock = threading.Lock()

    def spawn(self, worker: int, version: str) -> WorkerProcess:
        """Start a worker serving ``version``; raises OSError if the process cannot be created."""
        uds = self.spec.uds_path(worker)
        if len(os.fsencode(uds)) > _UDS_MAX:
            raise ServiceStartError(
                f"unix socket path {uds} is longer than {_UDS_MAX} bytes: use a shorter state_dir"
            )
        argv = [
            sys.executable,
            "-m",
            "service.worker",
            "--fd",
            str(self.spec.listen_fd),
            "--uds",
            str(uds),
            "--registry",
            str(self.spec.registry_dir),
            "--version",
            version,
            "--worker-id",
            str(worker),
            "--max-batch-rows",
            str(self.spec.max_batch_rows),
            "--max-body-bytes",
            str(self.spec.max_body_bytes),
            "--log-level",
            self.spec.log_level,
        ]
        env = dict(os.environ)
        # Two cores, several workers: one OpenMP thread each avoids oversubscribing the machine.
        env.setdefault("OMP_NUM_THREADS", "1")
        popen = subprocess.Popen(
            argv,
            pass_fds=(self.spec.listen_fd,),
            process_group=0,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        try:
            create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            create_time = 0.0  # it already died; the reaper reports it
        proc = WorkerProcess(worker, version, popen, uds, create_time)
        with self._lock:
            self._procs[popen.pid] = proc
            self._write_pidfile()
        return proc

    def stop(self, pid: int, grace_s: float) -> None:
        """Send TERM now and KILL after ``grace_s`` if the same process is still unreaped."""
        with self._lock:
            proc = self._procs.get(pid)
        if proc is None:
            return
        _signal(proc.popen, signal.SIGTERM)
        timer = threading.Timer(grace_s, self._kill_if_alive, args=(proc,))
        timer.daemon = True
        timer.start()

    def _kill_if_alive(self, proc: WorkerProcess) -> None:
        with self._lock:
            still_ours = self._procs.get(proc.pid) is proc
        if still_ours and proc.popen.poll() is None:
            logger.warning("worker {} (pid {}) ignored TERM; sending KILL", proc.worker, proc.pid)
            _signal(proc.popen, signal.SIGKILL)

    def reap(self) -> list[tuple[WorkerProcess, int]]:
        """Collect every worker that has exited: (process, returncode). Never blocks."""
        exited = []
        with self._lock:
            for pid, proc in list(self._procs.items()):
                code = proc.popen.poll()
                if code is not None:
                    exited.append((proc, code))
                    del self._procs[pid]
                    with contextlib.suppress(FileNotFoundError):
                        if not self._uds_in_use(proc.uds):
                            proc.uds.unlink()
            if exited:
                self._write_pidfile()
        return exited

    def alive(self) -> list[WorkerProcess]:
        with self._lock:
            return list(self._procs.values())

    def kill_all(self) -> None:
        """Last resort at exit: KILL anything still running and reap it."""
        for proc in self.alive():
            if proc.popen.poll() is None:
                _signal(proc.popen, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=5)
        self.reap()

    def _uds_in_use(self, path: Path) -> bool:
        return any(p.uds == path for p in self._procs.values())

    def _write_pidfile(self) -> None:
        records = [
            {"worker": p.worker, "pid": p.pid, "create_time": p.create_time, "version": p.version}
            for p in self._procs.values()
        ]
        atomic_write_json(self.spec.run_dir / "workers.json", records)


def _signal(popen: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        popen.send_signal(sig)


# ----- pid files and leftovers of a previous daemon --------------------------------------------


def _same_process(pid: int, create_time: float) -> psutil.Process | None:
    """The process ``pid`` if it is the one started at ``create_time`` (a recycled pid is not)."""
    try:
        proc = psutil.Process(pid)
        same = abs(proc.create_time() - create_time) <= 0.01
    except psutil.Error:
        return None
    return proc if same else None


def claim_daemon_pidfile(run_dir: Path) -> None:
    """Record this daemon in ``run/daemon.pid``; refuse if a live daemon already holds it."""
    path = run_dir / "daemon.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
        record = json.loads(path.read_text())
        other = _same_process(int(record["pid"]), float(record["create_time"]))
        if other is not None and other.pid != os.getpid():
            raise ServiceStartError(
                f"another selfheal daemon (pid {other.pid}) is running on this state directory"
            )
    me = psutil.Process()
    atomic_write_json(path, {"pid": me.pid, "create_time": me.create_time()})


def release_daemon_pidfile(run_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (run_dir / "daemon.pid").unlink()


def cleanup_stale_workers(run_dir: Path, grace_s: float) -> list[int]:
    """Stop workers a previous daemon left behind (matched by pid *and* create time).

    Returns the pids stopped. A pid that now belongs to some other process is left alone.
    """
    path = run_dir / "workers.json"
    try:
        records = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    stale = []
    for record in records if isinstance(records, list) else []:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            proc = _same_process(int(record["pid"]), float(record["create_time"]))
            if proc is not None:
                stale.append(proc)
    for proc in stale:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _gone, still = psutil.wait_procs(stale, timeout=grace_s)
    for proc in still:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(still, timeout=grace_s)
    path.unlink(missing_ok=True)
    return [p.pid for p in stale]
