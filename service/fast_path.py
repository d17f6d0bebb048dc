"""The short way through a worker for what it answers most: a small, well-formed ``POST /predict``.

A one-row prediction through FastAPI's full stack (its middleware, the router, the request
handler, dependency solving, the response classes) costs a worker far more than the work of the
prediction itself once the request has to wait for its batch: at 16 concurrent one-row requests
(California, ``python3 -m bench.request_path``) 235 us of CPU per request through the route
against 126 us answered here, where FastAPI answering a constant costs 52 (docs/BENCHMARKS.md).
``PredictFastPath`` is an ASGI layer, the outermost of the service's own, that answers such a
request itself with the very functions the route uses (``answer``: the batcher, the capture and
the request id; ``encode``: the response body), and hands everything else to the app.

It takes a request only when all of these hold, and otherwise passes it on untouched:

- ``POST /predict`` with a ``Content-Length`` of at most ``small_body_bytes`` (and at most the
  body limit), no ``Transfer-Encoding`` and no ``Expect`` header;
- a model is served.

Once taken, anything but the plain answer goes back to the app, which then answers exactly as it
would have: a body that fails validation, a client that goes away mid-body, or a body longer than
it said is passed on with the bytes already read replayed first (validation runs again there, on
the error path only). The one error answered here is a model that fails or answers badly
(``ModelOutputError``), after the prediction, with the app's own handler: asking the model again
would predict twice. The request is counted in the metrics here when answered here, and by the
metrics middleware when passed on, so once either way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.batching import Batcher, ModelOutputError
from service.metrics import ServiceMetrics
from service.model_store import ModelStore, Served
from service.oip import AnswerRows
from service.validation import InputError, parse_predict_body

PATH = "/predict"

EncodeAnswer = Callable[[Served, Any, str], bytes]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class PredictFastPath:
    """ASGI middleware answering small, well-formed ``POST /predict`` requests directly."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: ModelStore,
        batcher: Batcher,
        answer: AnswerRows,
        encode: EncodeAnswer,
        on_model_error: ErrorHandler,
        max_rows: int,
        max_body_bytes: int,
        small_body_bytes: int,
        metrics: ServiceMetrics | None,
    ) -> None:
        self.app = app
        self.store = store
        self.batcher = batcher
        self.answer = answer
        self.encode = encode
        self.on_model_error = on_model_error
        self.max_rows = max_rows
        self.body_limit = min(max_body_bytes, small_body_bytes)
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = self._takes(scope)
        served = self.store.current() if length is not None else None
        if length is None or served is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        outcome: int | list[Message] = 500
        try:
            outcome = await self._predict(scope, receive, send, served, length)
        finally:
            if isinstance(outcome, int) and self.metrics is not None:
                self.metrics.observe(PATH, outcome, time.perf_counter() - started)
        if isinstance(outcome, list):  # counted by the app's own metrics middleware
            await self.app(scope, _replaying(outcome, receive), send)

    def _takes(self, scope: Scope) -> int | None:
        """The declared body length of a request this path answers, else None."""
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            return None
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return None  # repeated or malformed: the body limiter says so
                length = int(value)
            elif name in {b"transfer-encoding", b"expect"}:
                return None
        if length is None or length > self.body_limit:
            return None
        return length

    async def _predict(
        self, scope: Scope, receive: Receive, send: Send, served: Served, length: int
    ) -> int | list[Message]:
        """Answer the request: its status; or the messages read, when the app is to answer."""
        self.batcher.arriving()  # as the route does: a batch forming may wait for this one
        messages: list[Message] = []
        try:
            body = await _read_body(receive, length, messages)
            if body is None:  # the client went away, or sent more than it said
                return self._pass_on(messages)
            features = parse_predict_body(body, self.max_rows, served.rows)
        except InputError:
            return self._pass_on(messages)
        except BaseException:
            self.batcher.abandoned()  # cancelled, or a fault: nobody is coming to the batch
            raise
        try:
            answered = await self.answer(served, features, _header(scope, b"x-request-id"))
        except ModelOutputError as exc:
            response = await self.on_model_error(Request(scope), exc)
            await response(scope, receive, send)
            return response.status_code
        body = self.encode(served, answered.answer, answered.request_id)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                    (b"x-request-id", answered.request_id.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return 200

    def _pass_on(self, messages: list[Message]) -> list[Message]:
        self.batcher.abandoned()  # the app's route counts the request in again
        return messages


async def _read_body(receive: Receive, length: int, messages: list[Message]) -> bytes | None:
    """The whole body (every message read is appended to ``messages``); None if the client
    disconnects first or sends more than ``length`` bytes."""
    chunks: list[bytes] = []
    read = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        read += len(chunk)
        if read > length:
            return None
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive``, with ``messages`` (already read) first."""
    replay = iter(messages)

    async def replaying() -> Message:
        return next(replay, None) or await receive()

    return replaying


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
