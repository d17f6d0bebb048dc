"""Operating-system plumbing for supervision: the shared listener, pidfds, pid files.

The daemon binds the service's TCP socket once and every worker inherits it, so a worker that dies
never closes the port: connections wait in the kernel's backlog while another worker, or the
replacement, accepts them.

Processes are tracked through pidfds (Linux 5.3+): a pidfd becomes readable the moment its process
exits, signals sent through it can never reach a recycled pid, and ``waitid(P_PIDFD)`` collects
the exit status when the process is our child. The daemon is a child subreaper, so workers forked
by the template (grandchildren) are re-parented to it and count as its children.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import selectors
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import psutil

from selfheal_daemon.errors import ServiceStartError
from selfheal_daemon.system.files import atomic_write_json

UDS_MAX = 107  # sun_path is 108 bytes including the terminating NUL
_PR_SET_CHILD_SUBREAPER = 36
_SYS_PIDFD_GETFD = 438  # the same number on every architecture Linux supports
_libc = ctypes.CDLL(None, use_errno=True)


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


def set_child_subreaper() -> None:
    """Make orphaned descendants (workers forked by the template) children of this process."""
    if _libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def pidfd_getfd(pidfd: int, target_fd: int) -> int:
    """Duplicate file descriptor ``target_fd`` of the process behind ``pidfd`` into this one."""
    fd = int(_libc.syscall(_SYS_PIDFD_GETFD, pidfd, target_fd, 0))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd: {os.strerror(err)}")
    os.set_inheritable(fd, False)
    return fd


def exit_status(pidfd: int) -> int | None:
    """Reap the exited child behind ``pidfd``: its exit code, minus the signal that killed it, or
    None when it is not our child (an adopted worker) and so cannot be reaped by us."""
    try:
        result = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return int(result.si_status)
    return -int(result.si_status)


class ExitWatcher:
    """One thread that waits on many pidfds and reports each exit the moment it happens.

    ``watch(pidfd, key)`` adds a process; when it exits, ``on_exit(key, returncode)`` is called on
    the watcher's thread (returncode as ``exit_status``). The pidfd itself stays open: its owner
    closes it, so a signal sent through it after the exit fails instead of reaching a new process.
    """

    def __init__(self, on_exit: Callable[[object, int | None], None]) -> None:
        self._on_exit = on_exit
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pending: list[tuple[int, object]] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="exit-watcher", daemon=True)
        self._thread.start()

    def watch(self, pidfd: int, key: object) -> None:
        with self._lock:
            self._pending.append((pidfd, key))
        self._wake()

    def close(self) -> None:
        self._stopped = True
        self._wake()
        self._thread.join(timeout=5)
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _run(self) -> None:
        while not self._stopped:
            for key, _mask in self._selector.select():
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    continue
                pidfd, owner = key.fd, key.data
                self._selector.unregister(pidfd)
                self._on_exit(owner, exit_status(pidfd))
            with self._lock:
                pending, self._pending = self._pending, []
            for pidfd, owner in pending:
                self._selector.register(pidfd, selectors.EVENT_READ, owner)


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
