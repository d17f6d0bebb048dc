"""Dynamic batching: shared predictions give every caller exactly its own answer, faults stay with
the request that caused them, and the wait for a batch is bounded."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from selfheal_daemon.defaults import FEATURES
from selfheal_daemon.model.schema import Schema
from service.app import create_app
from service.batching import Batcher, ModelOutputError
from service.model_store import ModelStore, Served
from service.predictor import Answer
from service.settings import ServiceSettings
from tests.unit.service.conftest import Trained, predict_rows
from tests.unit.service.fakes import FakeSource
from tests.unit.service.mixed import fit_mixed, mixed_rows


class SumModel:
    """Predicts the row sum; counts calls; raises for any row whose first feature is 999."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.calls: list[int] = []

    def predict(self, frame: Any) -> np.ndarray:
        x = np.asarray(frame, dtype=np.float64)
        self.calls.append(x.shape[0])
        if (x[:, 0] == 999).any():
            raise ValueError("poisoned row")
        return np.asarray(x.sum(axis=1) + self.offset)


def loaded(model: Any, version: str = "v1", schema: Schema | None = None) -> Served:
    """``model`` served as ``version`` (through a store, smoke test included)."""
    schemas = {version: schema} if schema is not None else None
    served = ModelStore().load(FakeSource({version: model}, schemas), version)
    if isinstance(model, SumModel):
        model.calls.clear()  # the smoke test's probe is not the test's call
    return served


def rows(n: int, start: float = 0.0) -> np.ndarray:
    return np.arange(start, start + n * 8, dtype=np.float64).reshape(n, 8)


class TickingClock:
    """A fake clock that moves ``step`` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.step
        return self.now


@pytest.fixture
def batcher() -> Iterator[Batcher]:
    b = Batcher(max_rows=64, window_s=0.001)
    yield b
    b.close()


def test_concurrent_requests_share_a_prediction_and_get_their_own_rows(batcher: Batcher) -> None:
    """Sixteen concurrent one-row requests take fewer predictions than requests, and each gets
    exactly what predicting it alone would give."""
    model = SumModel()
    served = loaded(model)
    inputs = [rows(1, start=i * 100) for i in range(16)]

    async def go() -> list[Answer]:
        for _ in inputs:
            batcher.arriving()
        return await asyncio.gather(*(batcher.submit(served, x) for x in inputs))

    answers = asyncio.run(go())
    for x, answer in zip(inputs, answers, strict=True):
        np.testing.assert_array_equal(answer.values, SumModel().predict(x))
    assert len(model.calls) < 16
    assert sum(model.calls) == 16


def test_batched_answers_equal_unbatched_for_the_real_model(trained: Trained) -> None:
    """With the real HistGradientBoosting pipeline, batched predictions are identical row for row
    to predicting each request alone, for requests of different sizes."""
    served = loaded(trained.model, schema=trained.schema)
    sizes = [1, 3, 1, 7, 2, 1, 1, 5]
    offsets = np.cumsum([0, *sizes])
    inputs = [trained.features[offsets[i] : offsets[i + 1]] for i in range(len(sizes))]
    b = Batcher(max_rows=1024, window_s=0.001)

    async def go() -> list[Answer]:
        return await asyncio.gather(*(b.submit(served, x) for x in inputs))

    try:
        answers = asyncio.run(go())
    finally:
        b.close()
    for x, answer in zip(inputs, answers, strict=True):
        np.testing.assert_array_equal(answer.values, predict_rows(trained, x))
    assert b.batches < len(sizes)


def test_batched_classifier_answers_carry_each_requests_probabilities() -> None:
    """A classifier's batched answers give every request its own classes and probability rows,
    the same as answering it alone."""
    mixed = fit_mixed("binary")
    served = loaded(mixed.model, schema=mixed.schema)
    inputs = [mixed_rows(n, seed=n) for n in (1, 3, 2)]
    b = Batcher(max_rows=1024, window_s=0.001)

    async def go() -> list[Answer]:
        return await asyncio.gather(*(b.submit(served, x) for x in inputs))

    try:
        answers = asyncio.run(go())
    finally:
        b.close()
    for x, answer in zip(inputs, answers, strict=True):
        alone = served.predictor.answer(x)
        assert answer.proba is not None
        assert alone.proba is not None
        np.testing.assert_array_equal(answer.values, alone.values)
        np.testing.assert_array_equal(answer.proba, alone.proba)


def test_a_failing_row_fails_only_its_own_request(batcher: Batcher) -> None:
    """When a shared prediction fails, each request is retried alone: only the poisoned one errs."""
    model = SumModel()
    served = loaded(model)
    good = [rows(1, start=1), rows(2, start=50)]
    bad = rows(1)
    bad[0, 0] = 999

    async def go() -> list[Any]:
        return await asyncio.gather(
            batcher.submit(served, good[0]),
            batcher.submit(served, bad),
            batcher.submit(served, good[1]),
            return_exceptions=True,
        )

    first, poisoned, second = asyncio.run(go())
    np.testing.assert_array_equal(first.values, SumModel().predict(good[0]))
    np.testing.assert_array_equal(second.values, SumModel().predict(good[1]))
    assert isinstance(poisoned, ModelOutputError)
    assert "failed to predict: ValueError" in str(poisoned)


def test_non_finite_output_is_the_models_fault_for_that_request_only(batcher: Batcher) -> None:
    """A NaN in the output fails the request it belongs to, not its batch neighbours."""

    class NanForNegative(SumModel):
        def predict(self, frame: Any) -> np.ndarray:
            out = super().predict(frame)
            out[np.asarray(frame, dtype=np.float64)[:, 0] < 0] = np.nan
            return out

    served = loaded(NanForNegative())
    negative = -rows(1, start=1)

    async def go() -> list[Any]:
        return await asyncio.gather(
            batcher.submit(served, rows(1, start=1)),
            batcher.submit(served, negative),
            return_exceptions=True,
        )

    fine, broken = asyncio.run(go())
    assert fine.values.shape == (1,)
    assert isinstance(broken, ModelOutputError)
    assert "non-finite" in str(broken)


def test_versions_are_never_mixed_in_one_prediction(batcher: Batcher) -> None:
    """Requests made against two models (a swap in progress) are answered each by its own."""
    old, new = SumModel(offset=0), SumModel(offset=1000)
    a, b = loaded(old, "v1"), loaded(new, "v2")

    async def go() -> tuple[Answer, Answer, Answer]:
        return await asyncio.gather(
            batcher.submit(a, rows(1)), batcher.submit(b, rows(1)), batcher.submit(a, rows(1))
        )

    r1, r2, r3 = asyncio.run(go())
    assert r1.values[0] == r3.values[0] == rows(1).sum()
    assert r2.values[0] == rows(1).sum() + 1000
    assert sum(old.calls) == 2
    assert new.calls == [1]


def test_a_batch_never_exceeds_max_rows() -> None:
    """Requests adding up to more than max_rows are split across predictions."""
    model = SumModel()
    served = loaded(model)
    b = Batcher(max_rows=10, window_s=0.001)

    async def go() -> list[Answer]:
        return await asyncio.gather(*(b.submit(served, rows(4)) for _ in range(5)))

    try:
        answers = asyncio.run(go())
    finally:
        b.close()
    assert all(a.values.shape == (4,) for a in answers)
    assert max(model.calls) <= 10
    assert sum(model.calls) == 20


def test_a_lone_request_does_not_wait_for_the_window() -> None:
    """With nobody else arriving, the batch goes at once: the clock is read only to set the
    deadline, however long the window."""
    clock = TickingClock(step=0.0)
    b = Batcher(max_rows=64, window_s=60.0, clock=clock)
    try:
        b.arriving()
        answer = asyncio.run(b.submit(loaded(SumModel()), rows(1)))
    finally:
        b.close()
    assert answer.values.shape == (1,)
    assert clock.reads == 1


def test_the_window_bounds_the_wait_for_a_request_that_never_comes() -> None:
    """A request announced but never submitted holds a batch back only until the window ends,
    measured on the injected clock."""
    clock = TickingClock(step=0.001)
    b = Batcher(max_rows=64, window_s=0.005, clock=clock)
    try:
        b.arriving()  # this one never submits
        b.arriving()
        answer = asyncio.run(b.submit(loaded(SumModel()), rows(1)))
    finally:
        b.close()
    assert answer.values.shape == (1,)
    assert clock.reads == 6  # the deadline, then 0.001 s steps until 0.005 s have passed


def test_abandoned_requests_stop_holding_batches_back() -> None:
    """A request that fails validation after announcing itself no longer makes a batch wait."""
    clock = TickingClock(step=0.0)  # time stands still: only the count can release the batch
    b = Batcher(max_rows=64, window_s=1.0, clock=clock)
    try:
        b.arriving()
        b.arriving()
        b.abandoned()
        answer = asyncio.run(b.submit(loaded(SumModel()), rows(1)))
    finally:
        b.close()
    assert answer.values.shape == (1,)


def test_bad_row_in_one_request_does_not_affect_a_concurrent_one(trained: Trained) -> None:
    """Through the app: a 422 for one client while concurrent valid clients get 200s with the
    same values as when asked alone."""
    store = ModelStore()
    store.load(FakeSource({"v1": trained.model}, {"v1": trained.schema}), "v1")
    app = create_app(ServiceSettings(batch_window_ms=5.0), store)
    good = [dict(zip(FEATURES, map(float, trained.features[i]), strict=True)) for i in range(6)]
    bad = {**good[0], "MedInc": float("nan")}

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            calls = [client.post("/predict", json=row) for row in good]
            calls.insert(3, client.post("/predict", content=_json_with_nan(bad)))
            return await asyncio.gather(*calls)

    responses = asyncio.run(go())
    assert responses[3].status_code == 422
    assert responses[3].json()["detail"][0]["loc"] == ["body", "MedInc"]
    oks = [r for i, r in enumerate(responses) if i != 3]
    assert all(r.status_code == 200 for r in oks)
    expected = predict_rows(trained, trained.features[:6])
    got = [r.json()["predictions"][0] for r in oks]
    np.testing.assert_array_equal(got, expected)
    assert app.state.batcher.batches < 6


def _json_with_nan(row: dict[str, float]) -> bytes:
    import json

    return json.dumps(row).encode()  # json.dumps writes NaN, which the service must refuse


class ThreadNoting:
    """A predictor answering as ``inner`` does, noting the thread each call ran on; batches of
    up to ``inline_rows`` rows are ones it answers in microseconds (as the flattened trees do)."""

    def __init__(self, inner: Any, inline_rows: int) -> None:
        self.inner = inner
        self.inline_rows = inline_rows
        self.threads: list[tuple[int, str]] = []

    def answer(self, x: np.ndarray) -> Answer:
        self.threads.append((x.shape[0], threading.current_thread().name))
        answer: Answer = self.inner.answer(x)
        return answer


def test_a_batch_the_fast_path_answers_runs_on_the_event_loop_a_larger_one_on_its_thread(
    batcher: Batcher,
) -> None:
    """No thread hop for a batch of up to ``inline_rows`` rows (its answer takes microseconds, a
    hop to the prediction thread and back costs more); a larger batch, or a predictor without a
    fast path, runs on the prediction thread so that the event loop keeps reading requests."""
    served = loaded(SumModel())
    noting = ThreadNoting(served.predictor, inline_rows=4)
    fast = dataclasses.replace(served, predictor=noting)

    async def go() -> list[Answer]:
        small = await batcher.submit(fast, rows(4))
        large = await batcher.submit(fast, rows(5))
        plain = await batcher.submit(served, rows(2))
        return [small, large, plain]

    loop_thread = threading.current_thread().name
    small, large, plain = asyncio.run(go())
    np.testing.assert_array_equal(small.values, SumModel().predict(rows(4)))
    np.testing.assert_array_equal(large.values, SumModel().predict(rows(5)))
    np.testing.assert_array_equal(plain.values, SumModel().predict(rows(2)))
    assert noting.threads[0] == (4, loop_thread)
    assert noting.threads[1][0] == 5
    assert noting.threads[1][1].startswith("predict")


def test_a_fault_of_an_inline_batch_stays_with_the_request_that_caused_it(
    batcher: Batcher,
) -> None:
    served = loaded(SumModel())
    fast = dataclasses.replace(served, predictor=ThreadNoting(served.predictor, inline_rows=64))
    poisoned = rows(1)
    poisoned[0, 0] = 999

    async def go() -> list[Any]:
        for _ in range(3):
            batcher.arriving()
        return await asyncio.gather(
            batcher.submit(fast, rows(1)),
            batcher.submit(fast, poisoned),
            batcher.submit(fast, rows(1, start=8)),
            return_exceptions=True,
        )

    first, bad, third = asyncio.run(go())
    assert isinstance(bad, ModelOutputError)
    np.testing.assert_array_equal(first.values, SumModel().predict(rows(1)))
    np.testing.assert_array_equal(third.values, SumModel().predict(rows(1, start=8)))
