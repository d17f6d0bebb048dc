"""bench/request_path.py: the apps it compares are what it says they are, and a run counts."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench.request_path import one_request, request_scope, run, without_fast_path
from selfheal_daemon.defaults import FEATURES
from service.app import create_app
from service.model_store import ModelStore
from service.settings import ServiceSettings
from tests.unit.service.fakes import ConstantModel, FakeSource

ROW = dict(zip(FEATURES, (8.3, 41.0, 6.9, 1.0, 322.0, 2.5, 37.9, -122.2), strict=True))
BODY = json.dumps(ROW).encode()


def served_app(store: ModelStore) -> object:
    return create_app(ServiceSettings(), store)


@pytest.fixture
def store() -> ModelStore:
    store = ModelStore()
    store.load(FakeSource({"v1": ConstantModel(2.0)}), "v1")
    return store


def routed(app: object) -> bool:
    """Whether FastAPI's router answered the one-row request (it notes the route in the scope)."""
    scope = request_scope(BODY)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[operator]
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["predictions"] == [2.0]
    return "route" in scope


def test_the_served_app_answers_by_its_fast_path_and_the_other_by_its_route(
    store: ModelStore,
) -> None:
    assert not routed(served_app(store))
    assert routed(without_fast_path(served_app(store)))


def test_a_run_is_cpu_per_request_and_a_refusal_stops_it(store: ModelStore) -> None:
    app = served_app(store)
    process, loop = asyncio.run(run(app, BODY, 64, 16))
    assert process >= loop > 0
    with pytest.raises(RuntimeError, match="answered 422"):
        asyncio.run(one_request(app, b"{}"))
