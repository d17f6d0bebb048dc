"""service.fast_path: which requests it answers itself, that it answers them as the route does,
and that everything else reaches the app whole (driven at the ASGI level, as uvicorn calls it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from starlette.types import Message, Receive, Scope, Send

from service.app import _model_output_error_handler, answer_json, create_app
from service.batching import Batcher
from service.fast_path import PredictFastPath
from service.metrics import ServiceMetrics
from service.model_store import ModelStore, Served
from service.oip import Answered
from service.settings import ServiceSettings
from tests.unit.service.fakes import FakeSource, NanAboveModel
from tests.unit.service.test_app import ROW

GOOD = json.dumps(ROW).encode()
BATCH = json.dumps({"instances": [ROW, {**ROW, "MedInc": 3.0}]}).encode()


@dataclass
class Spy:
    """The app behind the fast path: records what reached it, answers 299 with what it read."""

    calls: list[tuple[str, bytes, list[str]]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, kinds = b"", []
        while True:
            message = await receive()
            kinds.append(message["type"])
            body += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        self.calls.append((scope["path"], body, kinds))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})


def scope_of(
    headers: list[tuple[bytes, bytes]], method: str = "POST", path: str = "/predict"
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }


def length(body: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


async def _call(app: Any, scope: Scope, messages: list[Message]) -> tuple[int, dict, bytes]:
    queue = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return int(sent[0]["status"]), headers, body


def call(app: Any, scope: Scope, *chunks: bytes, end: bool = True) -> tuple[int, dict, bytes]:
    """Send ``chunks`` as the body (the last one ends it unless ``end`` is false)."""
    messages: list[Message] = [
        {"type": "http.request", "body": c, "more_body": not end or i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    return asyncio.run(_call(app, scope, messages))


@dataclass
class Layer:
    fast: PredictFastPath
    spy: Spy
    batcher: Batcher
    metrics: ServiceMetrics

    def counted(self, status: int) -> float:
        value = self.metrics.registry.get_sample_value(
            "selfheal_service_requests_total", {"endpoint": "/predict", "status": str(status)}
        )
        return value or 0.0


def layer_around(store: ModelStore, small_body_bytes: int = 16_384) -> Layer:
    """The fast path around a spy, with a real batcher, the route's encoder and error handler."""
    batcher = Batcher()
    metrics = ServiceMetrics()

    async def answer(served: Served, features: np.ndarray, wanted: str | None) -> Answered:
        return Answered(await batcher.submit(served, features), wanted or "made-here-1")

    spy = Spy()
    fast = PredictFastPath(
        spy,
        store=store,
        batcher=batcher,
        answer=answer,
        encode=answer_json,
        on_model_error=_model_output_error_handler,
        max_rows=1000,
        max_body_bytes=1_000_000,
        small_body_bytes=small_body_bytes,
        metrics=metrics,
    )
    return Layer(fast, spy, batcher, metrics)


@pytest.fixture
def layer(loaded_store: ModelStore) -> Iterator[Layer]:
    built = layer_around(loaded_store)
    yield built
    built.batcher.close()


def test_a_small_well_formed_predict_is_answered_without_the_app(
    layer: Layer, loaded_store: ModelStore
) -> None:
    status, headers, body = call(layer.fast, scope_of(length(BATCH)), BATCH)
    served = loaded_store.current()
    assert served is not None
    expected = served.predictor.answer(
        np.array([list(ROW.values()), [3.0, *list(ROW.values())[1:]]])
    )
    answer = json.loads(body)
    assert status == 200
    assert layer.spy.calls == []
    assert answer["predictions"] == pytest.approx(expected.values.tolist(), rel=1e-12)
    assert answer["model_version"] == "v1"
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert headers["x-request-id"] == answer["request_id"] == "made-here-1"
    assert layer.counted(200) == 1
    assert layer.batcher._arriving == 0


def test_the_clients_request_id_and_a_body_in_pieces(layer: Layer) -> None:
    headers = [*length(GOOD), (b"x-request-id", b"client-7")]
    status, answered, body = call(layer.fast, scope_of(headers), GOOD[:10], GOOD[10:])
    assert status == 200
    assert answered["x-request-id"] == json.loads(body)["request_id"] == "client-7"
    assert layer.spy.calls == []


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"MedInc": 1}', b"[]", json.dumps({**ROW, "MedInc": "high"}).encode()],
    ids=["not json", "missing keys", "a list", "a string for a number"],
)
def test_a_body_that_fails_validation_reaches_the_app_whole(layer: Layer, body: bytes) -> None:
    status, _headers, answer = call(layer.fast, scope_of(length(body)), body[:3], body[3:])
    assert (status, answer) == (299, b"app")
    assert layer.spy.calls == [("/predict", body, ["http.request", "http.request"])]
    assert layer.counted(422) == 0  # the app's metrics middleware counts what the app answers
    assert layer.batcher._arriving == 0  # the route counts it in again: no wait for a ghost


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("POST", "/predict", [(b"transfer-encoding", b"chunked")]),
        ("POST", "/predict", [*length(GOOD), (b"expect", b"100-continue")]),
        ("POST", "/predict", [(b"content-length", b"12abc")]),
        ("POST", "/predict", [*length(GOOD), (b"content-length", b"5")]),
        ("POST", "/predict", []),
        ("GET", "/predict", length(GOOD)),
        ("POST", "/feedback", length(GOOD)),
        ("POST", "/predict/", length(GOOD)),
    ],
    ids=["chunked", "expect", "bad length", "two lengths", "no length", "GET", "other", "slash"],
)
def test_requests_it_does_not_take_pass_untouched(
    layer: Layer, method: str, path: str, headers: list[tuple[bytes, bytes]]
) -> None:
    status, _headers, _body = call(layer.fast, scope_of(headers, method, path), GOOD)
    assert status == 299
    assert layer.spy.calls == [(path, GOOD, ["http.request"])]
    assert layer.batcher._arriving == 0


def test_a_body_over_the_small_size_goes_the_long_way(loaded_store: ModelStore) -> None:
    built = layer_around(loaded_store, small_body_bytes=len(GOOD) - 1)
    try:
        assert call(built.fast, scope_of(length(GOOD)), GOOD)[0] == 299
        assert built.spy.calls == [("/predict", GOOD, ["http.request"])]
    finally:
        built.batcher.close()


def test_a_client_that_leaves_mid_body_and_a_body_longer_than_it_said(layer: Layer) -> None:
    assert call(layer.fast, scope_of(length(GOOD)), GOOD[:10], end=False)[0] == 299
    assert layer.spy.calls.pop() == ("/predict", GOOD[:10], ["http.request", "http.disconnect"])
    too_long = GOOD + b"   "
    assert call(layer.fast, scope_of(length(GOOD)), too_long)[0] == 299
    assert layer.spy.calls.pop() == ("/predict", too_long, ["http.request"])
    assert layer.batcher._arriving == 0


def test_a_read_that_fails_leaves_no_request_for_the_batcher_to_wait_for(layer: Layer) -> None:
    first = True

    async def receive() -> Message:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": GOOD[:10], "more_body": True}
        raise asyncio.CancelledError  # the server cancels the request mid-body

    async def send(message: Message) -> None:
        raise AssertionError(f"nothing is sent: {message}")

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(layer.fast(scope_of(length(GOOD)), receive, send))
    assert layer.batcher._arriving == 0
    assert layer.counted(500) == 1
    assert layer.spy.calls == []


def test_no_model_served_is_the_apps_answer(store: ModelStore) -> None:
    built = layer_around(store)
    assert call(built.fast, scope_of(length(GOOD)), GOOD)[0] == 299
    assert built.spy.calls == [("/predict", GOOD, ["http.request"])]


def test_a_model_that_misbehaves_is_a_500_answered_here_and_counted_once() -> None:
    store = ModelStore()
    store.load(FakeSource({"v4": NanAboveModel(threshold=100.0)}), "v4")
    built = layer_around(store)
    body = json.dumps({**ROW, "MedInc": 500.0}).encode()
    status, _headers, answer = call(built.fast, scope_of(length(body)), body)
    assert status == 500
    assert json.loads(answer) == {"detail": "model v4 returned a non-finite prediction"}
    assert built.spy.calls == []  # not asked twice
    assert built.counted(500) == 1


# ----- through the whole app: the same answers either way -----------------------------------

BODIES = [
    GOOD,
    BATCH,
    b"{not json",
    b'{"MedInc": 1}',
    json.dumps({**ROW, "MedInc": None}).encode(),
    json.dumps({"instances": [ROW] * 6}).encode(),
    b'{"instances": []}',
    b"NaN",
]


def test_the_app_answers_the_same_with_and_without_the_fast_path(loaded_store: ModelStore) -> None:
    """Each body sent with a Content-Length (the fast path takes it) and chunked (the route
    answers): the same status, headers and JSON; every request counted once."""
    app = create_app(ServiceSettings(max_batch_rows=5), loaded_store)
    for i, body in enumerate(BODIES):
        request_id = [(b"x-request-id", f"same-{i}".encode())]
        fast = call(app, scope_of([*length(body), *request_id]), body)
        slow = call(app, scope_of([(b"transfer-encoding", b"chunked"), *request_id]), body)
        assert fast[0] == slow[0], body
        assert json.loads(fast[2]) == json.loads(slow[2]), body
        assert {k: v for k, v in fast[1].items() if k != "content-length"} == {
            k: v for k, v in slow[1].items() if k != "content-length"
        }, body
    metrics = app.state.metrics
    total = sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "selfheal_service_requests"
        for sample in family.samples
        if sample.name.endswith("_total")
    )
    assert total == 2 * len(BODIES)
    assert app.state.batcher._arriving == 0


def test_through_the_app_only_what_the_fast_path_refuses_reaches_the_router(
    loaded_store: ModelStore,
) -> None:
    """FastAPI's router notes the route it matched in the scope: the fast path never does."""
    app = create_app(ServiceSettings(), loaded_store)
    taken, refused = scope_of(length(GOOD)), scope_of(length(b"{}"))
    assert call(app, taken, GOOD)[0] == 200
    assert call(app, refused, b"{}")[0] == 422
    assert "route" not in taken
    assert refused["route"].path == "/predict"
