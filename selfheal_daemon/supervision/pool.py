"""The worker pool: starts workers through the warm template, tracks them by pidfd, stops them.

Everything here reports back by posting events (``WorkerSpawned``, ``WorkerExited``) to the daemon's
queue; nothing decides. A start is asynchronous: the request waits until the template is ready
(about two seconds after the daemon starts, or after the template itself was restarted) and is
answered with the new pid in tens of milliseconds after that. The live workers are recorded in
``run/workers.json`` (pid, create time, slot, version, private socket, listener fd) so that a daemon
started after a ``kill -9`` of this one can find and adopt them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from loguru import logger

from selfheal_daemon import contracts
from selfheal_daemon.errors import ServiceStartError
from selfheal_daemon.supervision.events import Event, WorkerExited, WorkerSpawned
from selfheal_daemon.supervision.template import TemplateProcess, TemplateSpec
from selfheal_daemon.system.files import atomic_write_json
from selfheal_daemon.system.process import UDS_MAX, ExitWatcher


@dataclass
class WorkerHandle:
    """One live worker process, held through its pidfd (never signalled by bare pid)."""

    worker: int
    pid: int
    version: str
    uds: Path
    create_time: float
    pidfd: int
    listen_fd: int
    adopted: bool = False
    exited: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def send(self, sig: int) -> bool:
        """Signal the process unless it has exited; True when the signal was delivered."""
        with self.lock:
            if self.exited:
                return False
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                return False
            return True

    def close(self) -> None:
        with self.lock:
            if not self.exited:
                self.exited = True
                os.close(self.pidfd)

    def record(self, port: int) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "pid": self.pid,
            "create_time": self.create_time,
            "version": self.version,
            "uds": str(self.uds),
            "listen_fd": self.listen_fd,
            "port": port,
        }


class WorkerPool:
    """Live workers by pid, plus the template that makes new ones."""

    def __init__(
        self,
        run_dir: Path,
        spec: TemplateSpec,
        port: int,
        version: str,
        post: Callable[[Event], None],
        *,
        forget: Callable[[Path], None] = lambda _uds: None,
    ) -> None:
        self.run_dir = run_dir
        self.spec = spec
        self.port = port
        self.version = version
        self._post = post
        self._forget = forget  # told each gone worker's socket path (the probe drops its client)
        self._lock = threading.RLock()
        self._handles: dict[int, WorkerHandle] = {}
        self._requests: dict[int, tuple[int, Path]] = {}  # seq -> (slot, socket path)
        self._unsent: list[int] = []
        self._template_ready = False
        self._switching = False
        self._closing = False
        self._seq = itertools.count(1)
        self.template = TemplateProcess(spec, self._on_template)
        self.watcher = ExitWatcher(self._on_exit)

    # ----- starting -------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Start the template now, so the first workers do not wait for it later.

        If it cannot even be spawned, every open request fails (as a crash, so the policy backs off
        and retries) instead of waiting for a template that is not coming.
        """
        with self._lock:
            if self.template.running or self._closing:
                return
            try:
                self.template.start(self.version)
            except OSError as exc:
                logger.error("cannot start the worker template: {}", exc)
                self._fail_requests(f"the worker template could not start: {exc}", None)

    def start(self, worker: int) -> None:
        """Ask for a new worker in slot ``worker``; the answer is posted as an event."""
        seq = next(self._seq)
        # Unique across daemons too: an adopted worker keeps the name its own daemon gave it.
        uds = self.run_dir / f"worker-{worker}-{os.getpid()}-{seq}.sock"
        if len(os.fsencode(uds)) > UDS_MAX:
            raise ServiceStartError(
                f"socket path {uds} is longer than {UDS_MAX} bytes: use a shorter state_dir"
            )
        with self._lock:
            self._requests[seq] = (worker, uds)
            if self._template_ready:
                self._send(seq)
            else:
                self._unsent.append(seq)
        self.warm_up()

    def _send(self, seq: int) -> None:
        worker, uds = self._requests[seq]
        try:
            self.template.fork(worker, uds, seq)
        except OSError as exc:
            del self._requests[seq]
            self._post(WorkerExited(worker, None, None, detail=f"fork request failed: {exc}"))

    def set_version(self, version: str) -> None:
        """Serve ``version`` from now on: restart the template on it (running workers stay)."""
        with self._lock:
            self.version = version
            self._template_ready = False
            self._switching = True
        try:
            self.template.stop()
        finally:
            with self._lock:
                self._switching = False
        self.warm_up()

    def mark_version(self, pid: int, version: str) -> None:
        """Worker ``pid`` now serves ``version`` (swapped in place); recorded in workers.json."""
        with self._lock:
            handle = self._handles.get(pid)
            if handle is None:
                return
            handle.version = version
            self._write_records()

    def _on_template(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        with self._lock:
            if event == contracts.READY:
                if message.get("version") != self.version:
                    return  # a template for a version we no longer serve
                self._template_ready = True
                logger.info("worker template ready (pid {})", message.get("pid"))
                unsent, self._unsent = self._unsent, []
                for seq in unsent:
                    self._send(seq)
            elif event == contracts.FORKED:
                version = str(message.get("version", self.version))
                self._forked(int(message["seq"]), int(message["pid"]), version)
            elif event == contracts.FORK_FAILED:
                worker, _uds = self._requests.pop(int(message["seq"]), (message["worker"], None))
                self._post(WorkerExited(int(worker), None, None, detail=str(message.get("error"))))
            elif event == "exited":
                self._template_exited(message)

    def _forked(self, seq: int, pid: int, version: str) -> None:
        worker, uds = self._requests.pop(seq)
        try:
            pidfd = os.pidfd_open(pid)
            create_time = psutil.Process(pid).create_time()
        except (OSError, psutil.Error) as exc:
            self._post(WorkerExited(worker, pid, None, detail=f"vanished at once: {exc}"))
            return
        handle = WorkerHandle(
            worker, pid, version, uds, create_time, pidfd, listen_fd=self.spec.listen_fd
        )
        self._handles[pid] = handle
        self._write_records()
        self._post(WorkerSpawned(worker, pid))
        self.watcher.watch(pidfd, handle)

    def _template_exited(self, message: dict[str, Any]) -> None:
        was_ready = self._template_ready
        self._template_ready = False
        code = message.get("returncode")
        if self._switching:  # replaced on purpose: its successor answers the open requests
            self._unsent = list(self._requests)
            return
        if not self._closing:
            level = "WARNING" if was_ready else "ERROR"
            logger.log(level, "worker template (pid {}) exited with {}", message.get("pid"), code)
        self._fail_requests(f"the worker template exited with code {code} before forking", code)
        if was_ready and not self._closing:  # keep a warm template for the next restart
            self.warm_up()

    def _fail_requests(self, detail: str, code: int | None) -> None:
        """Answer every open start request with a failure: nobody else will answer them now."""
        for seq in list(self._requests):
            worker, _uds = self._requests.pop(seq)
            self._post(WorkerExited(worker, None, code, detail=detail))
        self._unsent.clear()

    # ----- adopting -------------------------------------------------------------------------
    def adopt(self, record: dict[str, Any], pidfd: int) -> WorkerHandle:
        """Take over a live worker a previous daemon started (it is not our child)."""
        handle = WorkerHandle(
            worker=int(record["worker"]),
            pid=int(record["pid"]),
            version=str(record["version"]),
            uds=Path(record["uds"]),
            create_time=float(record["create_time"]),
            pidfd=pidfd,
            listen_fd=int(record["listen_fd"]),
            adopted=True,
        )
        with self._lock:
            self._handles[handle.pid] = handle
            self._write_records()
        self.watcher.watch(pidfd, handle)
        return handle

    # ----- stopping and exits ---------------------------------------------------------------
    def stop(self, pid: int, grace_s: float) -> None:
        """TERM now (a worker drains in-flight requests), KILL after ``grace_s`` if still there."""
        with self._lock:
            handle = self._handles.get(pid)
        if handle is None or not handle.send(signal.SIGTERM):
            return
        timer = threading.Timer(grace_s, self._kill_if_alive, args=(handle,))
        timer.daemon = True
        timer.start()

    def _kill_if_alive(self, handle: WorkerHandle) -> None:
        if handle.send(signal.SIGKILL):
            logger.warning("worker {} (pid {}) ignored TERM; sent KILL", handle.worker, handle.pid)

    def _on_exit(self, owner: object, returncode: int | None) -> None:
        if not isinstance(owner, WorkerHandle):  # pragma: no cover - we only ever watch handles
            return
        owner.close()
        with self._lock:
            self._handles.pop(owner.pid, None)
            self._write_records()
        owner.uds.unlink(missing_ok=True)  # a killed worker cannot remove its own socket file
        self._forget(owner.uds)
        self._post(WorkerExited(owner.worker, owner.pid, returncode))

    def handle(self, pid: int) -> WorkerHandle | None:
        with self._lock:
            return self._handles.get(pid)

    def alive(self) -> list[WorkerHandle]:
        with self._lock:
            return list(self._handles.values())

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the template, KILL any worker still there, and wait for every exit to be seen."""
        with self._lock:
            self._closing = True
        self.template.stop()
        for handle in self.alive():
            handle.send(signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.watcher.close()

    def _write_records(self) -> None:
        records = [h.record(self.port) for h in self._handles.values()]
        with contextlib.suppress(OSError):  # a full disk must not stop supervision
            atomic_write_json(self.run_dir / "workers.json", records)
