"""Dynamic batching: concurrent /predict requests share one ``model.predict`` call.

A tree ensemble predicts one row in about a millisecond and a thousand rows in about four, so
sixteen clients asking one row each are served far faster by one 16-row call than by sixteen
1-row calls (Triton's dynamic batcher, Ray Serve's ``@serve.batch``, BentoML's adaptive batching).

How a batch forms, in the worker's event loop:

- each request is validated on its own first (a bad row is that request's 422, nobody else's), then
  ``submit`` queues its feature matrix and awaits its own slice of the answer;
- one prediction runs at a time, on a dedicated thread, so the event loop keeps reading and
  validating requests meanwhile: whatever queued during a prediction is the next batch. A batch
  the predictor answers in well under a millisecond (``inline_rows``: up to 8 rows through a
  tree ensemble's flattened trees, ``service.compiled``) runs on the event loop itself: the hop
  to the thread and back would cost more than the answer;
- after taking what is queued, the batcher waits for more only while other requests are known to
  be on their way (``arriving`` was called and they have not submitted yet), and never longer
  than ``window_s`` after the batch's first request: a lone request never waits;
- a batch holds at most ``max_rows`` rows and only requests for the same model object (a model
  swap never mixes versions in one call);
- if the batched call fails, or its output is malformed, each request of that batch is predicted
  alone, so only the request at fault gets the error; no batch's failure reaches another batch.

A prediction is an ``Answer`` (``service.predictor``): one float64 per row (a value, or a class
index), and a classifier's probabilities; each request gets the slice of its own rows.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.model_store import Served
from service.predictor import Answer


class ModelOutputError(Exception):
    """The served model raised, or returned something other than one finite answer per row
    (and, from a classifier, one row of finite probabilities per row)."""


@dataclass
class _Item:
    loaded: Served
    features: np.ndarray
    future: asyncio.Future[Answer] = field(repr=False)


def predict_checked(served: Served, features: np.ndarray) -> Answer:
    """The served predictor's answer with its output checked: one finite float per row, and for
    a classifier a finite probability for each class."""
    rows = features.shape[0]
    try:
        answer = served.predictor.answer(features)
    except Exception as exc:  # foreign model code: its fault, reported as such
        raise ModelOutputError(
            f"model {served.version} failed to predict: {type(exc).__name__}"
        ) from exc
    values = np.asarray(answer.values, dtype=np.float64)
    if values.shape != (rows,):
        raise ModelOutputError(
            f"model {served.version} returned shape {values.shape} for {rows} rows"
        )
    if not np.isfinite(values).all():
        if served.schema.is_classifier:
            raise ModelOutputError(
                f"model {served.version} predicted a class that is not in its schema"
            )
        raise ModelOutputError(f"model {served.version} returned a non-finite prediction")
    proba = answer.proba
    if served.schema.is_classifier:
        expected = (rows, len(served.schema.classes))
        if proba is None or proba.shape != expected or not np.isfinite(proba).all():
            raise ModelOutputError(f"model {served.version} returned invalid probabilities")
    return Answer(values, proba)


class Batcher:
    """Gathers concurrent requests into shared predictions; one instance per worker process."""

    def __init__(
        self,
        max_rows: int = 16_384,
        window_s: float = 0.001,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rows = max_rows
        self.window_s = window_s
        self._clock = clock
        self._queue: deque[_Item] = deque()
        self._arriving = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self.batches = 0  # predictions made, for tests and metrics
        self.batched_rows = 0

    def arriving(self) -> None:
        """A request started (its body is being read and checked): worth waiting for."""
        self._arriving += 1

    def abandoned(self) -> None:
        """A request that called ``arriving`` will not submit (bad input, client gone)."""
        self._arriving = max(0, self._arriving - 1)

    async def submit(self, loaded: Served, features: np.ndarray) -> Answer:
        """Queue one request's rows and return its answers, in order."""
        self._arriving = max(0, self._arriving - 1)
        loop = asyncio.get_running_loop()
        item = _Item(loaded, features, loop.create_future())
        self._queue.append(item)
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="batcher")
        return await item.future

    async def _run(self) -> None:
        wakeup = self._wakeup
        if wakeup is None:  # pragma: no cover - submit() creates it before starting us
            return
        while True:
            await wakeup.wait()
            wakeup.clear()
            while self._queue:
                batch = await self._collect()
                await self._predict(batch)

    async def _collect(self) -> list[_Item]:
        """Take the first queued request and those that may join it (see the module docstring)."""
        first = self._queue.popleft()
        items, rows = [first], first.features.shape[0]
        deadline = self._clock() + self.window_s
        while rows < self.max_rows:
            while (
                self._queue
                and self._queue[0].loaded is first.loaded
                and rows + self._queue[0].features.shape[0] <= self.max_rows
            ):
                item = self._queue.popleft()
                items.append(item)
                rows += item.features.shape[0]
            if self._queue or self._arriving <= 0 or self._clock() >= deadline:
                break  # full for this model, nobody else coming, or the window is over
            await asyncio.sleep(0)  # let the requests still being read reach submit()
        return items

    async def _predict(self, items: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        live = [i for i in items if not i.future.done()]  # a cancelled caller needs no answer
        if not live:
            return
        loaded = live[0].loaded
        features = (
            live[0].features if len(live) == 1 else np.concatenate([i.features for i in live])
        )
        self.batches += 1
        self.batched_rows += features.shape[0]
        try:
            if features.shape[0] <= getattr(loaded.predictor, "inline_rows", 0):
                output = predict_checked(loaded, features)  # microseconds: no thread hop
            else:
                output = await loop.run_in_executor(
                    self._executor, predict_checked, loaded, features
                )
        except Exception as exc:
            if len(live) == 1:
                _settle(live[0], exc=exc)
                return
            for item in live:  # find the culprit: each request alone, so only it gets the error
                try:
                    alone = await loop.run_in_executor(
                        self._executor, predict_checked, item.loaded, item.features
                    )
                except Exception as item_exc:
                    _settle(item, exc=item_exc)
                else:
                    _settle(item, result=alone)
            return
        start = 0
        for item in live:
            stop = start + item.features.shape[0]
            _settle(item, result=output.slice(start, stop))
            start = stop

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _settle(item: _Item, *, result: Any = None, exc: BaseException | None = None) -> None:
    if item.future.done():
        return
    if exc is not None:
        item.future.set_exception(exc)
    else:
        item.future.set_result(result)
