"""The daemon's calls to a worker's private admin endpoints, over its unix socket (httpx).

``swap_model``: ``POST /admin/model`` (load, verify checksum, smoke-predict, swap in place).
``fetch_capture``: ``GET /admin/capture?after=SEQ`` (recent requests and feedback, from memory).
Both never raise: a refused or failed call is an ``AdminReply`` with ``ok`` False and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from selfheal_daemon import contracts


@dataclass(frozen=True)
class AdminReply:
    ok: bool
    status: int | None
    detail: str
    body: dict[str, Any] = field(default_factory=dict)


def _call(uds: Path, method: str, path: str, timeout_s: float, **kwargs: Any) -> AdminReply:
    if not uds.exists():
        return AdminReply(False, None, f"no socket at {uds}")
    transport = httpx.HTTPTransport(uds=str(uds), retries=0)
    try:
        with httpx.Client(transport=transport, base_url="http://worker", timeout=timeout_s) as c:
            response = c.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        return AdminReply(False, None, f"{type(exc).__name__}: {exc}")
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if response.status_code != 200:
        detail = body.get("detail", response.text[:200])
        return AdminReply(False, response.status_code, f"HTTP {response.status_code}: {detail}")
    return AdminReply(True, 200, "", body)


def swap_model(uds: Path, version: str, timeout_s: float) -> AdminReply:
    """Ask the worker at ``uds`` to serve ``version``; ok once it does."""
    return _call(
        uds, "POST", contracts.ADMIN_MODEL_PATH, timeout_s, json=contracts.swap_request(version)
    )


def fetch_capture(uds: Path, after: int, timeout_s: float, limit: int = 100_000) -> AdminReply:
    """What the worker captured after sequence number ``after``."""
    query = contracts.capture_query(after, limit)
    return _call(uds, "GET", contracts.ADMIN_CAPTURE_PATH, timeout_s, params=query)
