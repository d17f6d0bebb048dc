"""Ways to reach a worker's app in tests: through TestClient as if on the private unix socket, and
a real uvicorn server (the worker's own ``make_server``) on a loopback TCP port and a unix socket.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient  # conftest imported it first, muting its warning
from starlette.types import ASGIApp, Receive, Scope, Send

from service.model_store import ModelSource, ModelStore
from service.serve import bind_private_socket, make_server
from service.settings import ServiceSettings
from tests.helpers import wait_until

START_TIMEOUT_S = 10.0


def as_private(app: FastAPI, uds: str = "/run/worker-0.sock") -> ASGIApp:
    """``app`` as uvicorn calls it for a request on a unix socket (``server`` is (path, None))."""

    async def on_unix_socket(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "server": (uds, None)}, receive, send)

    return on_unix_socket


def private_client(app: FastAPI) -> TestClient:
    """A TestClient whose requests arrive as if on the worker's private unix socket."""
    return TestClient(as_private(app))


@dataclass(frozen=True)
class Running:
    """A real worker server: ``tcp()`` and ``unix()`` make clients of its two listeners."""

    port: int
    uds: Path

    def tcp(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", timeout=timeout, trust_env=False
        )

    def unix(self, timeout: float = 10.0) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.uds)),
            base_url="http://worker",
            timeout=timeout,
            trust_env=False,
        )


@contextmanager
def serving(
    tmp_path: Path,
    store: ModelStore,
    settings: ServiceSettings,
    registry: ModelSource | None = None,
) -> Iterator[Running]:
    """Run the worker's real uvicorn server in a thread on 127.0.0.1:0 and ``tmp_path/w.sock``.

    As ``service.serve.serve`` does, minus its signal handler (this is not the main thread); the
    server is always stopped and its thread joined on the way out.
    """
    with ExitStack() as stack:
        tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(128)
        uds = tmp_path / "w.sock"
        private = stack.enter_context(bind_private_socket(uds))
        server = make_server(store, settings, "warning", registry=registry)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [tcp, private]}, name="uvicorn", daemon=True
        )
        thread.start()
        try:
            wait_until(lambda: server.started, START_TIMEOUT_S, interval=0.01, what="uvicorn")
            yield Running(port=int(tcp.getsockname()[1]), uds=uds)
        finally:
            server.should_exit = True
            thread.join(timeout=START_TIMEOUT_S)
            assert not thread.is_alive(), "uvicorn did not stop"
