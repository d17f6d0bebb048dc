"""Request ids, and the in-memory capture of answered requests read with ``GET /admin/capture``."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from selfheal_daemon.defaults import FEATURES
from service.app import create_app
from service.capture import Capture, CaptureSlice, RequestIds, render_slice
from service.model_store import ModelStore
from service.settings import ServiceSettings
from tests.unit.service.conftest import Trained
from tests.unit.service.fakes import FakeSource, NanAboveModel
from tests.unit.service.servers import private_client
from tests.unit.service.test_app import ROW, rows, sample_value

GENERATED = re.compile(r"[0-9a-f]{12}-[0-9]+")


def matrix(*request_rows: dict[str, float]) -> list[list[float]]:
    return [[row[name] for name in FEATURES] for row in request_rows]


def fill(capture: Capture, *sizes: int, feedback: bool = False) -> None:
    """Record one entry of each size (rows), predictions or feedback."""
    for size in sizes:
        if feedback:
            capture.record_feedback(None, np.zeros(size))
        else:
            capture.record_prediction("r", "v1", np.zeros((size, 8)), np.zeros(size))


def seqs(found: CaptureSlice) -> tuple[list[int], list[int]]:
    return [e.seq for e in found.predictions], [e.seq for e in found.feedback]


@pytest.fixture
def admin(settings: ServiceSettings, loaded_store: ModelStore) -> Iterator[TestClient]:
    """A client of an app serving v1, its requests arriving as on the private socket."""
    with private_client(create_app(settings, loaded_store)) as test_client:
        yield test_client


def capture_of(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/admin/capture", params=params)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


# ----- request ids --------------------------------------------------------------------------


def test_request_id_is_generated_and_sent_twice(admin: TestClient) -> None:
    """Without a client id each answer gets a fresh one, in the body and the X-Request-ID header."""
    first, second = (admin.post("/predict", json=ROW) for _ in range(2))
    ids = [r.json()["request_id"] for r in (first, second)]
    assert [r.headers["x-request-id"] for r in (first, second)] == ids
    assert all(GENERATED.fullmatch(i) for i in ids)
    assert ids[0] != ids[1]


@pytest.mark.parametrize("sent", ["order-42", "a", "A.b_c:d-9", "x" * 64])
def test_valid_client_request_id_is_echoed(admin: TestClient, sent: str) -> None:
    """A client's X-Request-ID of 1-64 allowed characters is the answer's request id."""
    response = admin.post("/predict", json=ROW, headers={"X-Request-ID": sent})
    assert response.json()["request_id"] == sent
    assert response.headers["x-request-id"] == sent


@pytest.mark.parametrize(
    "sent", ["", "x" * 65, "has space", "semi;colon", "slash/", "caf\u00e9", "new\\nline"]
)
def test_invalid_client_request_id_is_replaced(admin: TestClient, sent: str) -> None:
    """An X-Request-ID outside the allowed form is ignored: the worker makes its own."""
    response = admin.post("/predict", json=ROW, headers={"X-Request-ID": sent.encode("utf-8")})
    assert response.status_code == 200
    assert GENERATED.fullmatch(response.json()["request_id"])
    assert response.headers["x-request-id"] == response.json()["request_id"]


def test_each_process_and_app_draws_its_own_prefix() -> None:
    """Two id sources (two workers) never share a prefix, so their ids never collide."""
    first, second = RequestIds(), RequestIds()
    assert first.prefix != second.prefix
    assert first.next() == f"{first.prefix}-1"
    assert first.next() == f"{first.prefix}-2"


def test_openapi_documents_the_request_id(admin: TestClient) -> None:
    """The /predict answer schema names request_id."""
    schema = admin.get("/openapi.json").json()
    assert "request_id" in schema["components"]["schemas"]["PredictResponse"]["required"]


# ----- what the app captures ----------------------------------------------------------------


def test_capture_holds_exactly_the_successful_requests(admin: TestClient, trained: Trained) -> None:
    """Answered requests are captured with their rows, predictions, version and request id;
    refused ones (422, 413 by body) are not."""
    batch = rows(trained, 3)
    one = admin.post("/predict", json=ROW, headers={"X-Request-ID": "mine"}).json()
    admin.post("/predict", json={**ROW, "MedInc": "x"})
    admin.post("/predict", json={"instances": []})
    three = admin.post("/predict", json={"instances": batch}).json()
    document = capture_of(admin)
    assert [e["request_id"] for e in document["predictions"]] == ["mine", three["request_id"]]
    first, second = document["predictions"]
    assert first["features"] == matrix(ROW)
    assert second["features"] == matrix(*batch)
    assert first["predictions"] == one["predictions"]
    assert second["predictions"] == three["predictions"]
    assert {first["model_version"], second["model_version"]} == {"v1"}
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["ts"] <= second["ts"]
    assert (document["next"], document["dropped"], document["feedback"]) == (2, 0, [])
    assert document["worker"] == 3


def test_a_model_fault_is_not_captured(settings: ServiceSettings) -> None:
    """A 500 (the model returned NaN) leaves nothing in the capture."""
    store = ModelStore()
    store.load(FakeSource({"v4": NanAboveModel(threshold=100.0)}), "v4")
    with private_client(create_app(settings, store)) as client:
        assert client.post("/predict", json={**ROW, "MedInc": 500.0}).status_code == 500
        assert client.post("/predict", json=ROW).status_code == 200
        document = capture_of(client)
    assert [e["features"] for e in document["predictions"]] == [matrix(ROW)]


def test_capture_is_bounded_by_rows_and_counts_what_it_dropped(loaded_store: ModelStore) -> None:
    """With room for 5 rows, three 2-row requests keep the last two; the first is dropped."""
    app = create_app(ServiceSettings(capture_rows=5), loaded_store)
    with private_client(app) as client:
        ids = [
            client.post("/predict", json={"instances": [ROW, ROW]}).json()["request_id"]
            for _ in range(3)
        ]
        document = capture_of(client)
        text = client.get("/metrics").text
    assert [e["request_id"] for e in document["predictions"]] == ids[1:]
    assert (document["next"], document["dropped"]) == (3, 1)
    assert sample_value(text, "selfheal_service_captured_rows_total") == 6.0
    assert (
        sample_value(text, "selfheal_service_capture_dropped_entries_total", buffer="predictions")
        == 1.0
    )


def test_after_cursor_returns_only_newer_entries(admin: TestClient) -> None:
    """Asking after the last ``next`` returns nothing new, then exactly the next request."""
    admin.post("/predict", json=ROW)
    cursor = capture_of(admin)["next"]
    empty = capture_of(admin, after=cursor)
    later = admin.post("/predict", json=ROW).json()["request_id"]
    newer = capture_of(admin, after=cursor)
    assert (empty["predictions"], empty["next"], empty["dropped"]) == ([], cursor, 0)
    assert [e["request_id"] for e in newer["predictions"]] == [later]
    assert newer["next"] == cursor + 1


def test_limit_pages_through_the_capture(admin: TestClient) -> None:
    """``limit`` caps the rows of one answer; following ``next`` reads the rest, nothing twice."""
    for _ in range(5):
        admin.post("/predict", json={"instances": [ROW, ROW]})
    pages, cursor = [], 0
    for _ in range(5):
        page = capture_of(admin, after=cursor, limit=4)
        if not page["predictions"]:
            break
        pages.append([e["seq"] for e in page["predictions"]])
        cursor = page["next"]
    assert pages == [[1, 2], [3, 4], [5]]


@pytest.mark.parametrize(
    "params", [{"after": -1}, {"after": "x"}, {"limit": 0}, {"limit": "all"}], ids=str
)
def test_bad_capture_query_is_422(admin: TestClient, params: dict[str, Any]) -> None:
    """A negative or non-integer cursor or limit is refused, not guessed."""
    assert admin.get("/admin/capture", params=params).status_code == 422


# ----- the ring buffers and the cursor contract ---------------------------------------------


def test_ring_keeps_the_newest_entries_within_its_rows() -> None:
    """Oldest entries make room; the held rows never exceed the bound; each loss is counted."""
    capture = Capture(capture_rows=10, feedback_rows=10)
    fill(capture, 3, 3, 3, 3, 3)
    found = capture.read()
    assert seqs(found) == ([3, 4, 5], [])
    assert (found.next, found.dropped) == (5, 2)
    assert capture.counters().dropped_predictions == 2
    assert capture.counters().prediction_rows == 15


def test_entry_larger_than_its_buffer_is_dropped_on_arrival() -> None:
    """An entry over the whole bound is never held, but is counted and takes its seq."""
    capture = Capture(capture_rows=4, feedback_rows=4)
    fill(capture, 2)
    fill(capture, 5)
    fill(capture, 1)
    found = capture.read()
    assert seqs(found) == ([1, 3], [])
    assert (found.next, found.dropped) == (3, 1)


def test_one_seq_space_orders_both_buffers() -> None:
    """Predictions and feedback share the counter; ``after`` applies to both."""
    capture = Capture()
    fill(capture, 1)
    fill(capture, 1, feedback=True)
    fill(capture, 1)
    fill(capture, 1, feedback=True)
    assert seqs(capture.read()) == ([1, 3], [2, 4])
    assert seqs(capture.read(after=2)) == ([3], [4])


def test_limit_cuts_in_seq_order_across_buffers_and_always_progresses() -> None:
    """A limited read is a seq-ordered prefix of both buffers; an entry over the limit still
    comes alone, so a reader never stalls."""
    capture = Capture()
    fill(capture, 2)
    fill(capture, 2, feedback=True)
    fill(capture, 2)
    first = capture.read(limit=3)
    big = Capture()
    fill(big, 10, 1)
    alone = big.read(limit=3)
    assert (seqs(first), first.next, first.dropped) == (([1], []), 1, 0)
    assert seqs(capture.read(after=1, limit=4)) == ([3], [2])
    assert (seqs(alone), alone.next) == (([1], []), 1)


def test_dropped_counts_entries_lost_since_the_cursor_only() -> None:
    """``dropped`` counts the entries after ``after`` that overflowed, in both buffers."""
    capture = Capture(capture_rows=2, feedback_rows=2)
    fill(capture, 1, 1)  # seqs 1, 2
    cursor = capture.read().next
    fill(capture, 1, 1, 1)  # 3, 4, 5: 3 pushes out
    fill(capture, 2, feedback=True)  # 6
    fill(capture, 1, feedback=True)  # 7 pushes out 6
    found = capture.read(after=cursor)
    assert seqs(found) == ([4, 5], [7])
    assert (found.next, found.dropped) == (7, 2)


def test_a_cursor_from_another_process_returns_nothing() -> None:
    """A cursor beyond anything issued (an earlier process's) reads nothing and keeps itself."""
    capture = Capture()
    fill(capture, 1)
    found = capture.read(after=100)
    assert (seqs(found), found.next, found.dropped) == (([], []), 100, 0)


def test_concurrent_reader_sees_every_entry_exactly_once() -> None:
    """While a thread appends to both buffers, a reader following ``next`` gets every seq
    exactly once and, with no overflow, reports nothing dropped (no entry is skipped)."""
    capture = Capture(capture_rows=10**6, feedback_rows=10**6)
    total = 8_000
    done = threading.Event()

    def write() -> None:
        for i in range(total):
            fill(capture, 1 + i % 3, feedback=i % 4 == 0)
        done.set()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads as often as possible: races show up, if any
    writer = threading.Thread(target=write)
    returned: list[int] = []
    cursor = dropped = 0
    try:
        writer.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            finished = done.is_set()
            found = capture.read(after=cursor, limit=40)
            returned += sorted(seqs(found)[0] + seqs(found)[1])
            dropped += found.dropped
            cursor = found.next
            if finished and cursor == total:
                break
    finally:
        sys.setswitchinterval(switch)
        writer.join(timeout=10)
    assert dropped == 0
    assert returned == list(range(1, total + 1))


def test_render_is_the_documented_json() -> None:
    """The admin body has every field, floats exactly as predicted, nulls for what is absent."""
    capture = Capture(clock=lambda: 1700000000.25)
    features = np.array([[0.1, 1e-300, -2.5, 3.0, 4.0, 5.0, 6.0, 7.0]])
    capture.record_prediction("r1", "v1", features, np.array([1.0 / 3.0]))
    capture.record_feedback("r1", np.array([0.7]))
    capture.record_feedback(None, np.array([1.5, 2.5]), np.vstack([features, features]), None)
    document = json.loads(render_slice(capture.read(), worker=2, pid=99))
    assert document == {
        "worker": 2,
        "pid": 99,
        "after": 0,
        "next": 3,
        "dropped": 0,
        "predictions": [
            {
                "seq": 1,
                "ts": 1700000000.25,
                "request_id": "r1",
                "model_version": "v1",
                "features": features.tolist(),
                "predictions": [1.0 / 3.0],
            }
        ],
        "feedback": [
            {
                "seq": 2,
                "ts": 1700000000.25,
                "request_id": "r1",
                "features": None,
                "labels": [0.7],
                "predictions": None,
                "model_version": None,
            },
            {
                "seq": 3,
                "ts": 1700000000.25,
                "request_id": None,
                "features": [features[0].tolist()] * 2,
                "labels": [1.5, 2.5],
                "predictions": None,
                "model_version": None,
            },
        ],
    }


# ----- observe = false ----------------------------------------------------------------------


def test_without_observe_nothing_is_captured_or_counted(
    settings: ServiceSettings, loaded_store: ModelStore
) -> None:
    """service.observe = false: answers are the same, the monitor sees no request, /metrics
    counts none; feedback with features is still kept."""
    blind = replace(settings, observe=False)
    with private_client(create_app(blind, loaded_store)) as client:
        answer = client.post("/predict", json=ROW)
        assert answer.status_code == 200
        assert answer.json()["request_id"]
        labelled = client.post("/feedback", json={"features": ROW, "label": 2.0})
        assert labelled.status_code == 202
        document = capture_of(client)
        metrics = client.get("/metrics").text
    assert document["predictions"] == []
    assert len(document["feedback"]) == 1
    assert 'endpoint="/predict"' not in metrics
    assert "selfheal_service_predicted_rows_total 0.0" in metrics
    with private_client(create_app(settings, loaded_store)) as observed:
        observed.post("/predict", json=ROW)
        seen = observed.get("/metrics").text
    assert 'endpoint="/predict"' in seen  # the same check on an observing app does see it
    assert "selfheal_service_predicted_rows_total 1.0" in seen


def test_a_full_capture_leaves_the_garbage_collector_nothing_to_walk() -> None:
    """20,000 captured requests add no objects the cyclic collector tracks once it has seen them:
    every full collection in a worker would otherwise walk them all (a p99 spike)."""
    import gc

    capture = Capture(20_000, 20_000)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(20_000):
        capture.record_prediction(f"r-{i}", "v1", np.zeros((1, 8)), np.zeros(1))
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert len(capture.read(0).predictions) == 20_000  # still all there for the reader


def test_a_classifiers_requests_are_captured_encoded(settings: ServiceSettings) -> None:
    """A mixed-schema request is captured as the encoded matrix (category indices, -1 for an
    unseen category, NaN for a missing one) with the predicted class indices as float64."""
    from tests.unit.service.mixed import fit_mixed

    mixed = fit_mixed("binary")
    store = ModelStore()
    store.load(FakeSource({"v1": mixed.model}, {"v1": mixed.schema}), "v1")
    row = {"color": "teal", "age": None, "member": False, "size": "3", "visits": 1}
    with private_client(create_app(settings, store)) as client:
        answer = client.post("/predict", json=row).json()
        document = capture_of(client)
    (entry,) = document["predictions"]
    color, age, member, size, visits = entry["features"][0]
    assert (color, member, size, visits) == (-1.0, 0.0, 3.0, 1.0)
    assert np.isnan(age)  # a missing value, as the drift monitor reads it
    assert [["no", "yes"][int(i)] for i in entry["predictions"]] == answer["predictions"]
