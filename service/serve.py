"""Run one worker's HTTP server on the shared listener and its private unix socket.

Used both by a worker started cold (``python -m service.worker``) and by a worker forked from the
warm template (``service.template``): the model is already loaded and smoke-tested when ``serve``
is called, so the worker answers ``/ready`` as soon as uvicorn accepts.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

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
