"""Refuse request bodies over a byte limit without ever buffering more than the limit.

Two checks, both answered ``413 {"detail": "..."}``:

* a declared ``Content-Length`` over the limit is refused before the app runs: the 413 goes out at
  once, then what the client still sends is read and thrown away (at most ``DRAIN_MAX_BYTES``, for
  at most ``DRAIN_S``) before the connection closes, so that a client that writes its whole body
  before it reads (urllib, requests) receives the 413 and not a reset: closing a socket with
  unread data makes the kernel answer with RST, which can overtake the 413 in flight. Nothing is
  buffered: each chunk is dropped as it arrives. A client that sent ``Expect: 100-continue`` is
  not drained: it was never told to send the body;
* a body without a usable length (chunked, streamed) is counted as it arrives, and the read that
  crosses the limit raises ``BodyTooLargeError`` (an ``HTTPException``), which FastAPI's exception
  middleware turns into the 413 for the route that was reading.

A ``Content-Length`` that is not a non-negative decimal integer is a 400: the request is malformed,
and guessing its length would defeat the first check.
"""

from __future__ import annotations

import asyncio
import time

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DRAIN_MAX_BYTES = 256 * 1_048_576  # read and dropped after an early 413, at most; then the close
DRAIN_S = 10.0  # ...and for at most this long


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
                await self._refuse_declared(scope, receive, send)
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

    async def _refuse_declared(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The 413 for a declared length over the limit: sent first, the connection closed only
        once what the client still sends was read and dropped (bounded), so it is not reset."""
        response = JSONResponse(
            {"detail": too_large_detail(self.max_body_bytes)},
            status_code=413,
            headers={"Connection": "close"},
        )
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        # The body is all there is to say, but the response stays open while we drain: the server
        # closes the connection as soon as a response with "Connection: close" is complete.
        await send({"type": "http.response.body", "body": response.body, "more_body": True})
        if Headers(scope=scope).get("expect", "").lower() != "100-continue":
            await drain(receive)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def drain(receive: Receive) -> int:
    """Read and drop the rest of a request body, at most ``DRAIN_MAX_BYTES`` for ``DRAIN_S``;
    the bytes dropped."""
    dropped = 0
    deadline = time.monotonic() + DRAIN_S
    while dropped <= DRAIN_MAX_BYTES:
        try:  # a client that stops sending does not hold the connection past the deadline
            message = await asyncio.wait_for(receive(), deadline - time.monotonic())
        except TimeoutError:
            break
        if message["type"] != "http.request":
            break  # the client went away
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return dropped
