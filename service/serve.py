"""Run one worker's HTTP server on the shared listener and its private unix socket.

Used both by a worker started cold (``python -m service.worker``) and by a worker forked from the
warm template (``service.template``): the model is already loaded and smoke-tested when ``serve``
is called, so the worker answers ``/ready`` as soon as uvicorn accepts.

Drill hook: SIGUSR2 makes the worker allocate and keep ``LEAK_STEP_MB`` more memory, a real leak
for ``selfheal drill leak`` and the fault tests. Only a process of the same user can send it.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from types import FrameType

import uvicorn

from service.app import create_app
from service.model_store import ModelStore
from service.settings import ServiceSettings

_UVICORN_LEVELS = {
    "TRACE": "trace",
    "DEBUG": "debug",
    "INFO": "info",
    "SUCCESS": "info",
    "WARNING": "warning",
    "ERROR": "error",
    "CRITICAL": "critical",
}


LEAK_STEP_MB = 64
_leaked: list[bytearray] = []


def _leak(_signum: int, _frame: FrameType | None) -> None:
    _leaked.append(bytearray(os.urandom(1024)) * (LEAK_STEP_MB * 1024))  # touched, so resident


def bind_private_socket(path: Path) -> socket.socket:
    """Listen on a unix socket at ``path`` that only this user can connect to (mode 0600)."""
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # created 0600: no window in which others could connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    sock.listen(128)
    return sock


def serve(
    shared: socket.socket,
    uds: Path,
    store: ModelStore,
    settings: ServiceSettings,
    log_level: str,
) -> None:
    """Serve until SIGTERM or SIGINT (uvicorn drains in-flight requests, then returns)."""
    private = bind_private_socket(uds)
    signal.signal(signal.SIGUSR2, _leak)
    try:
        config = uvicorn.Config(
            create_app(settings, store),
            log_level=_UVICORN_LEVELS.get(log_level.upper(), "info"),
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        uvicorn.Server(config).run(sockets=[shared, private])
    finally:
        private.close()
        uds.unlink(missing_ok=True)
