"""HTTP probes of one worker over its private unix socket (httpx).

Each slot gets its own client, so a hung worker only ever blocks the probe aimed at it. Keep-alive
is off: a replacement worker binds a new socket at the same path, and a pooled connection to the
old one would count as a spurious failure. httpx errors are translated to a (False, reason) result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx


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

    def _client(self, uds: Path) -> httpx.Client:
        client = self._clients.get(uds)
        if client is None:
            transport = httpx.HTTPTransport(uds=str(uds), retries=0)
            client = httpx.Client(
                transport=transport,
                base_url="http://worker",
                timeout=self.timeout_s,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
            self._clients[uds] = client
        return client

    def check(self, uds: Path, path: str = "/health") -> ProbeOutcome:
        """Probe ``path`` on the worker at ``uds``; never raises."""
        started = time.monotonic()
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

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
