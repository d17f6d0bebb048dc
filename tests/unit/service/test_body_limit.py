"""The body limit against real clients: a large body is answered 413, never reset, and the
drain that makes that possible is bounded in bytes, in time, and skipped for 100-continue."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from starlette.types import Message

from service import body_limit
from service.body_limit import BodyLimitMiddleware
from service.model_store import PROBE_ROW, ModelStore
from service.settings import ServiceSettings
from tests.unit.service.servers import serving

LIMIT = 1024


def test_a_35_mb_body_from_a_client_that_writes_before_it_reads_gets_the_413(
    tmp_path: Path, loaded_store: ModelStore
) -> None:
    """200,000 instances (35 MB) sent whole by urllib before it reads: the client receives the
    413 naming the limit (it was 'connection reset by peer' before the drain)."""
    body = json.dumps({"instances": [PROBE_ROW] * 200_000}).encode()
    assert len(body) > 25 * 1_048_576
    settings = ServiceSettings()
    with serving(tmp_path, loaded_store, settings) as running:
        request = urllib.request.Request(
            f"http://127.0.0.1:{running.port}/predict",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)  # noqa: S310 - loopback, our server
        assert refused.value.code == 413
        assert json.loads(refused.value.read()) == {
            "detail": f"request body exceeds the limit of {settings.max_body_bytes} bytes"
        }
        assert refused.value.headers["Connection"] == "close"
        with running.tcp() as client:  # the worker serves on
            assert client.post("/predict", json=PROBE_ROW).status_code == 200


async def _inner_app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("the app must not run for a body declared over the limit")


def _run(headers: list[tuple[bytes, bytes]], chunks: list[Message]) -> tuple[list[Message], int]:
    """Drive the middleware at the ASGI level: what it sent, and how many messages it pulled."""
    sent: list[Message] = []
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        if pulled <= len(chunks):
            return chunks[pulled - 1]
        await asyncio.sleep(3600)  # a client that stopped sending
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": headers}
    asyncio.run(BodyLimitMiddleware(_inner_app, LIMIT)(scope, receive, send))  # type: ignore[arg-type]
    return sent, pulled


def _chunk(size: int, more: bool = True) -> Message:
    return {"type": "http.request", "body": b"x" * size, "more_body": more}


def test_the_413_goes_out_first_and_the_rest_of_the_body_is_dropped() -> None:
    """The 413's status and body are sent before a byte is read; the body that follows is read
    to its end and dropped; only then is the response completed."""
    sent, pulled = _run(
        [(b"content-length", b"5000")], [_chunk(2000), _chunk(2000), _chunk(1000, more=False)]
    )
    assert pulled == 3
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"]) == {
        "detail": f"request body exceeds the limit of {LIMIT} bytes"
    }
    assert sent[1]["more_body"] is True
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_the_drain_stops_at_its_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """An endless body is dropped only up to DRAIN_MAX_BYTES, then the response completes."""
    monkeypatch.setattr(body_limit, "DRAIN_MAX_BYTES", 10_000)
    sent, pulled = _run([(b"content-length", b"99999999")], [_chunk(4000)] * 100)
    assert pulled == 3  # 12,000 bytes dropped: past the bound
    assert sent[-1]["more_body"] is False


def test_the_drain_stops_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that stops sending mid-body holds the worker no longer than DRAIN_S."""
    monkeypatch.setattr(body_limit, "DRAIN_S", 0.2)
    started = time.monotonic()
    sent, pulled = _run([(b"content-length", b"99999999")], [_chunk(4000)])
    assert pulled == 2
    assert sent[-1]["more_body"] is False
    assert time.monotonic() - started < 5.0


def test_a_client_that_expects_100_continue_is_not_drained() -> None:
    """Expect: 100-continue: the client waits for permission, so the 413 ends it unread."""
    sent, pulled = _run(
        [(b"content-length", b"5000"), (b"expect", b"100-continue")], [_chunk(5000, more=False)]
    )
    assert pulled == 0
    assert sent[0]["status"] == 413
    assert sent[-1]["more_body"] is False


def test_a_client_gone_mid_drain_ends_it() -> None:
    """http.disconnect while dropping: nothing more is read."""
    sent, pulled = _run([(b"content-length", b"5000")], [_chunk(1000), {"type": "http.disconnect"}])
    assert pulled == 2
    assert sent[-1]["more_body"] is False
