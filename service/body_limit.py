"""Refuse request bodies over a byte limit without ever buffering more than the limit.

Two checks, both answered ``413 {"detail": "..."}``:

* a declared ``Content-Length`` over the limit is refused before the app runs or a byte is read;
* a body without a usable length (chunked, streamed) is counted as it arrives, and the read that
  crosses the limit raises ``BodyTooLargeError`` (an ``HTTPException``), which FastAPI's exception
  middleware turns into the 413 for the route that was reading.

A ``Content-Length`` that is not a non-negative decimal integer is a 400: the request is malformed,
and guessing its length would defeat the first check.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(HTTPException):
    """The request body exceeds the configured limit (HTTP 413)."""

    def __init__(self, limit_bytes: int) -> None:
        super().__init__(status_code=413, detail=too_large_detail(limit_bytes))


def too_large_detail(limit_bytes: int) -> str:
    """The 413 message for a body over ``limit_bytes`` bytes."""
    return f"request body exceeds the limit of {limit_bytes} bytes"


class BodyLimitMiddleware:
    """ASGI middleware enforcing ``max_body_bytes`` on every HTTP request body."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                response = JSONResponse(
                    {"detail": "invalid Content-Length header"}, status_code=400
                )
                await response(scope, receive, send)
                return
            if int(declared) > self.max_body_bytes:
                response = JSONResponse(
                    {"detail": too_large_detail(self.max_body_bytes)}, status_code=413
                )
                await response(scope, receive, send)
                return

        limit = self.max_body_bytes
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, limited_receive, send)
