"""The CLI's side of the control endpoint: HTTP over the daemon's unix socket with httpx.

Errors become ``ControlError`` with a message for a person: the daemon is not running, the token
is wrong, or the daemon refused the action (its reason is passed on).
"""

from __future__ import annotations

from typing import Any

import httpx

from selfheal_daemon.config import Config
from selfheal_daemon.control.server import read_token
from selfheal_daemon.errors import ControlError


class ControlClient:
    """Talks to a running daemon through ``run/control.sock``."""

    def __init__(self, cfg: Config, *, timeout_s: float | None = None) -> None:
        self.cfg = cfg
        self.socket = cfg.control_socket
        timeout = timeout_s if timeout_s is not None else cfg.control.action_timeout_s + 5.0
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            base_url="http://selfheal",
            timeout=timeout,
        )

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self.socket.exists():
            raise ControlError(
                f"the daemon is not running (no control socket at {self.socket});"
                " start it with: selfheal run"
            )
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ControlError(f"cannot reach the daemon at {self.socket}: {exc}") from None
        if response.status_code >= 400:
            try:
                reason = response.json().get("detail", response.text)
            except ValueError:
                reason = response.text
            raise ControlError(f"{method} {path}: {response.status_code}: {reason}")
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self._send("GET", path, params=clean)

    def act(self, action: str, **params: Any) -> dict[str, Any]:
        token = read_token(self.cfg.control_token_file)
        result: dict[str, Any] = self._send(
            "POST",
            f"/actions/{action}",
            json={k: v for k, v in params.items() if v is not None},
            headers={"Authorization": f"Bearer {token}"},
        )
        return result
