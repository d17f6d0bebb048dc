"""The worker's drain on SIGTERM: responses tell clients to reconnect elsewhere."""

from __future__ import annotations

import asyncio
from typing import Any

from service.serve import CloseWhenDraining


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"connection", b"keep-alive")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _headers(wrapper: CloseWhenDraining) -> list[tuple[bytes, bytes]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    asyncio.run(wrapper({"type": "http"}, receive, send))
    return list(sent[0]["headers"])


def test_responses_keep_the_connection_until_draining() -> None:
    """Before a drain the app's own headers go out unchanged."""
    assert _headers(CloseWhenDraining(_app)) == [(b"connection", b"keep-alive")]


def test_draining_responses_close_the_connection() -> None:
    """During a drain every response says Connection: close, replacing what the app said."""
    wrapper = CloseWhenDraining(_app)
    wrapper.draining = True
    assert _headers(wrapper) == [(b"connection", b"close")]
