"""HTTP probes of one worker over its private unix socket (httpx).

Each worker (each private socket path) gets its own client, so a hung worker only ever blocks the
probe aimed at it; ``forget`` drops the client when the worker is gone. Keep-alive is off, so a
probe never reuses a connection a draining worker is about to close. httpx errors are translated
to a (False, reason) result.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from selfheal_daemon import contracts


@dataclass(frozen=True)
class ProbeOutcome:
    """One probe: whether it passed, why not, and how long it took (seconds)."""

    ok: bool
    detail: str
    latency_s: float


class HealthProbe:
    """GET a path on a worker's unix socket with a timeout; 200 is a pass, anything else a fail."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._clients: dict[Path, httpx.Client] = {}
        self._lock = threading.Lock()  # probes of different workers run on different threads

    def _client(self, uds: Path) -> httpx.Client:
        with self._lock:
            return self._clients.get(uds) or self._new_client(uds)

    def _new_client(self, uds: Path) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(uds), retries=0)
        client = httpx.Client(
            transport=transport,
            base_url="http://worker",
            timeout=self.timeout_s,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._clients[uds] = client
        return client

    def check(self, uds: Path, path: str = contracts.HEALTH_PATH) -> ProbeOutcome:
        """Probe ``path`` on the worker at ``uds``; never raises."""
        started = time.monotonic()
        if (
            not uds.exists()
        ):  # not bound yet (a starting worker), or gone; httpx would leak a socket
            return ProbeOutcome(False, f"no socket at {uds}", 0.0)
        try:
            response = self._client(uds).get(path)
        except httpx.TimeoutException:
            return ProbeOutcome(False, f"timed out after {self.timeout_s:g} s", self.timeout_s)
        except httpx.HTTPError as exc:
            return ProbeOutcome(False, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
        latency = time.monotonic() - started
        if response.status_code != 200:
            return ProbeOutcome(False, f"HTTP {response.status_code} from {path}", latency)
        return ProbeOutcome(True, "", latency)

    def ready_version(self, uds: Path) -> str | None:
        """The version the worker at ``uds`` says it serves on ``/ready``; None if not ready."""
        if not uds.exists():
            return None
        try:
            response = self._client(uds).get(contracts.READY_PATH)
            body = response.json()
            version = body.get(contracts.READY_VERSION) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        return version if isinstance(version, str) else None

    def forget(self, uds: Path) -> None:
        """Drop the client of a worker that is gone (each worker has its own socket path)."""
        with self._lock:
            client = self._clients.pop(uds, None)
        if client is not None:
            client.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
