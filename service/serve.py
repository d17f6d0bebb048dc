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
import time
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.app import create_app
from service.model_store import ModelSource, ModelStore
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


class CloseWhenDraining:
    """ASGI wrapper: once ``draining`` is set, every response says ``Connection: close``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.draining:
            await self.app(scope, receive, send)
            return

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain before its shutdown on SIGTERM.

    uvicorn's own shutdown closes idle keep-alive connections at once, and a client that sends its
    next request on one at that instant gets a reset. Instead, on the first SIGTERM this server
    stops accepting (the other workers take the shared backlog), answers whatever still comes on
    open connections with ``Connection: close`` so each client reconnects elsewhere, and shuts
    down as uvicorn does once no connection is left or ``drain_s`` has passed. A second signal, or
    SIGINT, skips the rest of the drain.
    """

    def __init__(self, config: uvicorn.Config, app: CloseWhenDraining, drain_s: float) -> None:
        super().__init__(config)
        self.drain_app = app
        self.drain_s = drain_s
        self.drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.drain_started is None and self.drain_s > 0:
            self.drain_started = time.monotonic()  # the next tick starts the drain
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_started is not None and not self.should_exit:
            if not self.drain_app.draining:
                self.drain_app.draining = True
                for server in self.servers:
                    server.close()
            done = not self.server_state.connections
            if done or time.monotonic() - self.drain_started >= self.drain_s:
                self.should_exit = True
        return await super().on_tick(counter)


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


def make_server(
    store: ModelStore,
    settings: ServiceSettings,
    log_level: str,
    *,
    registry: ModelSource | None = None,
) -> DrainingServer:
    """The worker's uvicorn server around a fresh app; ``run(sockets=[...])`` starts it.

    The app tells its listeners apart by ``scope["server"]`` (see ``service.app``), so the
    admin routes answer on a unix socket and 404 on TCP.
    """
    app = CloseWhenDraining(create_app(settings, store, registry))
    config = uvicorn.Config(
        app,
        log_level=_UVICORN_LEVELS.get(log_level.upper(), "info"),
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return DrainingServer(config, app, settings.drain_s)


def serve(
    shared: socket.socket,
    uds: Path,
    store: ModelStore,
    settings: ServiceSettings,
    log_level: str,
    *,
    registry: ModelSource | None = None,
) -> None:
    """Serve until SIGTERM (a drain, see ``DrainingServer``) or SIGINT, then return.

    ``registry`` is where ``POST /admin/model`` (private socket only) loads versions from.
    """
    private = bind_private_socket(uds)
    signal.signal(signal.SIGUSR2, _leak)
    try:
        make_server(store, settings, log_level, registry=registry).run(sockets=[shared, private])
    finally:
        private.close()
        uds.unlink(missing_ok=True)
