"""The daemon's side of the warm template process (``service.template``).

``TemplateProcess.start(version)`` launches the template with the shared listener and one end of a
``SOCK_SEQPACKET`` pair; a reader thread turns its messages into calls of ``on_message(dict)``
(``ready``, ``forked``, ``fork_failed``) and, when the template is gone, ``on_message({"event":
"exited", "returncode": N})``. ``fork(worker, uds, seq)`` asks it for a worker; the answer arrives
as a message. Closing our end of the pair makes the template exit; workers it forked live on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from selfheal_daemon import contracts


@dataclass(frozen=True)
class TemplateSpec:
    """What the template (and so every worker) is started with."""

    registry_dir: Path
    listen_fd: int
    max_batch_rows: int
    max_body_bytes: int
    log_level: str
    batch_window_ms: float = 1.0
    batch_max_rows: int = 16_384
    drain_s: float = 1.0
    capture_rows: int = 20_000
    feedback_rows: int = 20_000
    observe: bool = True


class TemplateProcess:
    """One template process at a time; thread-safe ``fork`` requests."""

    def __init__(self, spec: TemplateSpec, on_message: Callable[[dict[str, Any]], None]) -> None:
        self.spec = spec
        self._on_message = on_message
        self._lock = threading.Lock()
        self._popen: subprocess.Popen[bytes] | None = None
        self._ctrl: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self.version: str | None = None

    @property
    def running(self) -> bool:
        with self._lock:
            return self._popen is not None

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._popen.pid if self._popen is not None else None

    def start(self, version: str) -> None:
        """Launch a template serving ``version`` (it says ``ready`` once the model is loaded)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs.set_inheritable(True)
        argv = [
            sys.executable, "-m", contracts.TEMPLATE_MODULE,
            "--fd", str(self.spec.listen_fd),
            "--control-fd", str(theirs.fileno()),
            "--registry", str(self.spec.registry_dir),
            "--version", version,
            "--max-batch-rows", str(self.spec.max_batch_rows),
            "--max-body-bytes", str(self.spec.max_body_bytes),
            "--batch-window-ms", str(self.spec.batch_window_ms),
            "--batch-max-rows", str(self.spec.batch_max_rows),
            "--drain-s", str(self.spec.drain_s),
            "--capture-rows", str(self.spec.capture_rows),
            "--feedback-rows", str(self.spec.feedback_rows),
            "--log-level", self.spec.log_level,
            *(() if self.spec.observe else ("--no-observe",)),
        ]  # fmt: skip
        env = dict(os.environ)
        # Fork safety and two cores: one OpenMP thread means no thread pool to inherit mid-lock.
        env["OMP_NUM_THREADS"] = "1"
        try:
            popen = subprocess.Popen(
                argv,
                pass_fds=(self.spec.listen_fd, theirs.fileno()),
                process_group=0,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        reader = threading.Thread(
            target=self._read, args=(popen, ours), name="template-reader", daemon=True
        )
        with self._lock:
            self._popen, self._ctrl, self.version = popen, ours, version
            self._reader = reader
        reader.start()
        logger.info("started the worker template (pid {}, model {})", popen.pid, version)

    def fork(self, worker: int, uds: Path, seq: int) -> None:
        """Ask for a worker in slot ``worker``; raises OSError if the template is not there."""
        with self._lock:
            ctrl = self._ctrl
        if ctrl is None:
            raise OSError("the worker template is not running")
        ctrl.send(contracts.encode(contracts.fork_request(worker, uds, seq)))

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close the control socket (the template exits on its own), then make sure it did.

        Returns only after its reader has delivered the ``exited`` message, so the owner still
        knows the exit was asked for (a late message would fail the requests meant for the next
        template)."""
        with self._lock:
            popen, ctrl, reader = self._popen, self._ctrl, self._reader
            self._ctrl = None
        if ctrl is not None:
            with contextlib.suppress(OSError):
                ctrl.shutdown(socket.SHUT_RDWR)
            ctrl.close()
        if popen is not None:
            try:
                popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=timeout_s)
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=timeout_s + 10.0)

    def _read(self, popen: subprocess.Popen[bytes], ctrl: socket.socket) -> None:
        while True:
            try:
                data = ctrl.recv(contracts.MAX_MESSAGE)
            except OSError:
                data = b""
            if not data:
                break
            try:
                message = contracts.decode(data)
            except ValueError:
                logger.error("unreadable message from the worker template: {!r}", data[:200])
                continue
            self._on_message(message)
        try:
            returncode = popen.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it closed the socket but lingers: end it
            popen.kill()
            returncode = popen.wait(timeout=10)
        with self._lock:
            if self._popen is popen:
                self._popen, self._ctrl = None, None
        with contextlib.suppress(OSError):
            ctrl.close()
        self._on_message({"event": "exited", "returncode": returncode, "pid": popen.pid})
