"""The HTTP surface of the model service, through FastAPI's TestClient."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient  # conftest imported it first, muting its warning
from starlette.types import Message

from selfheal_daemon.defaults import FEATURES, MODEL_NAME
from selfheal_daemon.model.registry import ModelRegistry
from service.app import create_app
from service.model_store import ModelStore
from service.settings import ServiceSettings
from tests.unit.service.conftest import Trained, predict_rows
from tests.unit.service.fakes import ConstantModel, FakeSource, NanAboveModel
from tests.unit.service.mixed import Mixed, fit_mixed, register_mixed

ROW: dict[str, float] = {
    "MedInc": 8.3252,
    "HouseAge": 41.0,
    "AveRooms": 6.98,
    "AveBedrms": 1.02,
    "Population": 322.0,
    "AveOccup": 2.55,
    "Latitude": 37.88,
    "Longitude": -122.23,
}


def rows(trained: Trained, count: int) -> list[dict[str, float]]:
    """``count`` real California rows as request objects."""
    return [dict(zip(FEATURES, map(float, r), strict=True)) for r in trained.features[:count]]


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in Prometheus text, or None when it is absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(f"{name}{{{wanted}}}" if labels else name) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, flags=re.MULTILINE)
    return float(match.group(1)) if match else None


@pytest.fixture
def empty_client(settings: ServiceSettings, store: ModelStore) -> Iterator[TestClient]:
    """A client of an app whose store has no model yet."""
    with TestClient(create_app(settings, store)) as test_client:
        yield test_client


def small_client(loaded_store: ModelStore, **limits: Any) -> TestClient:
    """A client of an app serving v1 with tighter limits."""
    return TestClient(create_app(ServiceSettings(**limits), loaded_store))


# ----- predictions --------------------------------------------------------------------------


def test_single_object_predicts_one_value(client: TestClient, trained: Trained) -> None:
    """One object answers a list of one prediction equal to the model's, and the version."""
    response = client.post("/predict", json=ROW)
    assert response.status_code == 200
    expected = predict_rows(trained, np.array([[ROW[f] for f in FEATURES]]))
    answer = response.json()
    assert answer == {
        "predictions": expected.tolist(),
        "model_version": "v1",
        "request_id": answer["request_id"],
    }


def test_batch_equals_row_by_row(client: TestClient, trained: Trained) -> None:
    """A batch answers, in order, exactly what each row gets on its own."""
    batch = rows(trained, 25)
    answer = client.post("/predict", json={"instances": batch}).json()
    one_by_one = [client.post("/predict", json=row).json()["predictions"][0] for row in batch]
    assert answer["predictions"] == one_by_one
    assert answer["model_version"] == "v1"


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param({"Content-Type": "application/x-www-form-urlencoded"}, id="curl-d"),
        pytest.param({"Content-Type": "text/plain"}, id="text"),
        pytest.param({}, id="none"),
    ],
)
def test_body_is_json_whatever_the_content_type(
    client: TestClient, content_type: dict[str, str]
) -> None:
    """`curl -d '{...}'` (form content type) or no content type at all still predicts."""
    response = client.post("/predict", content=json.dumps(ROW).encode(), headers=content_type)
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


def test_predict_before_model_is_loaded_is_503(empty_client: TestClient) -> None:
    """Without a model, /predict answers 503 with a sentence, not a crash."""
    response = empty_client.post("/predict", json=ROW)
    assert response.status_code == 503
    assert response.json() == {"detail": "no model loaded"}


def test_swap_is_visible_to_the_next_request(settings: ServiceSettings) -> None:
    """After the store loads another version, /predict answers with it."""
    store = ModelStore()
    source = FakeSource({"v1": ConstantModel(1.0), "v2": ConstantModel(2.0)})
    store.load(source, "v1")
    with TestClient(create_app(settings, store)) as test_client:
        assert test_client.post("/predict", json=ROW).json()["predictions"] == [1.0]
        store.load(source, "v2")
        answer = test_client.post("/predict", json=ROW).json()
        assert (answer["predictions"], answer["model_version"]) == ([2.0], "v2")


def test_model_returning_nan_is_a_500_with_a_sentence(settings: ServiceSettings) -> None:
    """A model fault (non-finite output for valid input) is a JSON 500 naming the model."""
    store = ModelStore()
    store.load(FakeSource({"v4": NanAboveModel(threshold=100.0)}), "v4")
    with TestClient(create_app(settings, store)) as test_client:
        response = test_client.post("/predict", json={**ROW, "MedInc": 500.0})
    assert response.status_code == 500
    assert response.json() == {"detail": "model v4 returned a non-finite prediction"}


# ----- limits -------------------------------------------------------------------------------


def test_too_many_rows_is_413(loaded_store: ModelStore) -> None:
    """A batch over max_batch_rows is refused with 413 and the limit in the message."""
    with small_client(loaded_store, max_batch_rows=5) as test_client:
        ok = test_client.post("/predict", json={"instances": [ROW] * 5})
        response = test_client.post("/predict", json={"instances": [ROW] * 6})
    assert ok.status_code == 200
    assert response.status_code == 413
    assert response.json() == {"detail": "batch of 6 rows exceeds the limit of 5 rows"}


def test_oversized_body_is_413_by_content_length(loaded_store: ModelStore) -> None:
    """A body whose Content-Length is over max_body_bytes is refused before it is read."""
    body = json.dumps({"instances": [ROW] * 20}).encode()
    with small_client(loaded_store, max_body_bytes=1024) as test_client:
        response = test_client.post("/predict", content=body)
    assert len(body) > 1024
    assert response.status_code == 413
    assert response.json() == {"detail": "request body exceeds the limit of 1024 bytes"}


def test_streamed_body_is_cut_off_at_the_limit(loaded_store: ModelStore) -> None:
    """A chunked body with no Content-Length is refused as soon as it passes the limit, unread."""
    # Driven at the ASGI level because TestClient reads a streamed request body whole before
    # handing it to the app.
    app = create_app(ServiceSettings(max_body_bytes=4096), loaded_store)
    chunk = json.dumps(ROW).encode() + b","  # about 170 bytes
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1  # an endless body: only the limit can end this request
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predict",
        "raw_path": b"/predict",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"detail": "request body exceeds the limit of 4096 bytes"}
    assert pulled == 4096 // len(chunk) + 1  # stopped at the first chunk over the limit


def test_malformed_content_length_is_400(client: TestClient) -> None:
    """A Content-Length that is not a decimal number is a 400, never a 500."""
    response = client.post("/predict", content=b"{}", headers={"Content-Length": "12abc"})
    assert response.status_code == 400
    assert response.json() == {"detail": "invalid Content-Length header"}


# ----- input errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        pytest.param(
            {k: v for k, v in ROW.items() if k != "MedInc"}, ["body", "MedInc"], id="missing"
        ),
        pytest.param({**ROW, "zip": 94110}, ["body", "zip"], id="unknown"),
        pytest.param({**ROW, "HouseAge": "41"}, ["body", "HouseAge"], id="string"),
        pytest.param({**ROW, "HouseAge": True}, ["body", "HouseAge"], id="bool"),
        pytest.param({**ROW, "AveRooms": None}, ["body", "AveRooms"], id="null"),
        pytest.param({**ROW, "Latitude": float("nan")}, ["body", "Latitude"], id="nan"),
        pytest.param({**ROW, "Longitude": float("-inf")}, ["body", "Longitude"], id="-inf"),
        pytest.param(
            {"instances": [ROW, {**ROW, "AveOccup": [2]}]},
            ["body", "instances", 1, "AveOccup"],
            id="batch-list-value",
        ),
        pytest.param({"instances": None}, ["body", "instances"], id="instances-null"),
        pytest.param([], ["body"], id="array"),
        pytest.param("x", ["body"], id="string-body"),
    ],
)
def test_invalid_input_is_422_naming_the_field(
    client: TestClient, body: Any, loc: list[Any]
) -> None:
    """Each invalid body is a 422 in FastAPI's shape whose loc names the offending field."""
    response = client.post("/predict", content=json.dumps(body).encode())
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == loc
    assert set(error) == {"loc", "msg", "type"}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\xfa\xfb", id="invalid-utf8"),
        pytest.param(b'{"MedInc": "\xc3\x28"}', id="invalid-utf8-in-string"),
        pytest.param(b"[" * 50_000, id="deeply-nested"),
        pytest.param(b'{"a": {"b": {"c": [[[{"d": null}]]]}}}', id="nested-junk"),
        pytest.param(b'{"MedInc": 1e400}', id="overflow"),
        pytest.param(b"\x00\x01\x02", id="binary"),
    ],
)
def test_junk_is_never_a_500(client: TestClient, body: bytes) -> None:
    """Garbage bodies are refused with 422, never an internal error."""
    response = client.post("/predict", content=body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


# ----- probes -------------------------------------------------------------------------------


def test_health_answers_even_without_a_model(empty_client: TestClient) -> None:
    """Liveness is 200 with pid and worker id whether or not a model is loaded."""
    response = empty_client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "pid": os.getpid(), "worker": 3}


def test_ready_is_503_until_a_model_is_loaded(
    empty_client: TestClient, store: ModelStore, registry: ModelRegistry
) -> None:
    """/ready is 503 with a reason before a load and 200 with the version after."""
    before = empty_client.get("/ready")
    store.load(registry, "v1")
    after = empty_client.get("/ready")
    assert before.status_code == 503
    assert before.json() == {"detail": "no model loaded"}
    assert after.status_code == 200
    assert after.json() == {"status": "ready", "model_version": "v1"}


def test_ready_reason_names_the_failed_load(
    empty_client: TestClient, store: ModelStore, registry: ModelRegistry
) -> None:
    """When the only load failed, /ready says which version failed and why."""
    with pytest.raises(Exception, match="v7"):
        store.load(registry, "v7")
    detail = empty_client.get("/ready").json()["detail"]
    assert detail.startswith("no model loaded: loading v7 failed: VersionNotFoundError")


def test_model_endpoint_describes_the_served_model(
    client: TestClient, registry: ModelRegistry
) -> None:
    """/model answers version, artifact sha256, training metrics and the schema."""
    assert client.get("/model").json() == {
        "version": "v1",
        "sha256": registry.info("v1").meta["sha256"],
        "metrics": {"r2": 0.7, "mae": 0.45},
        "schema": registry.info("v1").meta["schema"],
    }


def test_model_endpoint_is_503_without_a_model(empty_client: TestClient) -> None:
    """/model has nothing to describe before a load."""
    response = empty_client.get("/model")
    assert response.status_code == 503
    assert response.json() == {"detail": "no model loaded"}


# ----- metrics ------------------------------------------------------------------------------


def test_metrics_count_requests_rows_and_model(client: TestClient) -> None:
    """/metrics counts requests by route and status, predicted rows, and names the model."""
    client.post("/predict", json={"instances": [ROW] * 3})
    client.post("/predict", json=ROW)
    client.post("/predict", json={"MedInc": "x"})
    client.get("/health")
    client.get("/no/such/path")
    response = client.get("/metrics")
    text = response.text
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    total = "selfheal_service_requests_total"
    assert sample_value(text, total, endpoint="/predict", status="200") == 2.0
    assert sample_value(text, total, endpoint="/predict", status="422") == 1.0
    assert sample_value(text, total, endpoint="/health", status="200") == 1.0
    assert sample_value(text, total, endpoint="unmatched", status="404") == 1.0
    assert sample_value(text, "selfheal_service_predicted_rows_total") == 4.0
    assert (
        sample_value(text, "selfheal_service_request_duration_seconds_count", endpoint="/predict")
        == 3.0
    )
    assert f'selfheal_service_model_info{{metric="r2",name="{MODEL_NAME}",sha256="' in text
    assert 'task="regression",version="v1"} 1.0' in text
    assert sample_value(text, "selfheal_service_model_ready") == 1.0
    assert "selfheal_service_unseen_categories_total{" not in text  # no categorical feature


def test_metrics_count_body_limit_refusals(loaded_store: ModelStore) -> None:
    """A 413 from the body limiter is counted under /predict like any other answer."""
    with small_client(loaded_store, max_body_bytes=10) as test_client:
        test_client.post("/predict", json=ROW)
        text = test_client.get("/metrics").text
    assert (
        sample_value(text, "selfheal_service_requests_total", endpoint="/predict", status="413")
        == 1.0
    )


def test_each_app_has_its_own_metrics(settings: ServiceSettings, loaded_store: ModelStore) -> None:
    """Two apps in one process do not share counters (no global Prometheus registry)."""
    with TestClient(create_app(settings, loaded_store)) as first:
        first.post("/predict", json=ROW)
    with TestClient(create_app(settings, loaded_store)) as second:
        text = second.get("/metrics").text
    assert sample_value(text, "selfheal_service_predicted_rows_total") == 0.0


def test_metrics_show_no_model_when_empty(empty_client: TestClient) -> None:
    """Before a load the readiness gauge is 0 and the model info is empty."""
    text = empty_client.get("/metrics").text
    assert sample_value(text, "selfheal_service_model_ready") == 0.0
    assert 'selfheal_service_model_info{metric="",name="",sha256="",task="",version=""} 1.0' in text


# ----- schema -------------------------------------------------------------------------------


def test_openapi_is_served_and_docs_are_not(client: TestClient) -> None:
    """/openapi.json documents /predict's body; /docs (CDN assets) is switched off."""
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["oneOf"][0]["required"] == list(FEATURES)
    assert client.get("/docs").status_code == 404
    assert client.get("/redoc").status_code == 404


# ----- a classifier of a mixed schema ----------------------------------------------------------

SHOP_ROW: dict[str, Any] = {"color": "c3", "age": 40, "member": True, "size": "M", "visits": 2.5}


@pytest.fixture(scope="module")
def multiclass() -> Mixed:
    """The trainer's pipeline of a multiclass mixed schema (classes low, mid, high)."""
    return fit_mixed("multiclass")


@pytest.fixture
def shop_client(
    tmp_path: Any, settings: ServiceSettings, multiclass: Mixed
) -> Iterator[TestClient]:
    """A client of an app serving the multiclass model from a registry."""
    registry = ModelRegistry(tmp_path / "shop")
    version = register_mixed(registry, multiclass)
    store = ModelStore()
    store.load(registry, version)
    with TestClient(create_app(settings, store, registry)) as test_client:
        yield test_client


def test_a_classifier_answers_labels_classes_and_probabilities(
    shop_client: TestClient, multiclass: Mixed
) -> None:
    """A classifier's /predict answers its predicted labels, its classes, and per instance the
    probabilities in the order of the classes, as the model gives them."""
    rows = [SHOP_ROW, {**SHOP_ROW, "color": None, "size": 3, "member": "false"}]
    response = shop_client.post("/predict", json={"instances": rows})
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"predictions", "classes", "probabilities", "model_version", "request_id"}
    assert answer["classes"] == ["low", "mid", "high"]
    frame = multiclass.schema.model_input(
        np.array([[3.0, 40.0, 1.0, 1.0, 2.5], [np.nan, 40.0, 0.0, 3.0, 2.5]])
    )
    assert answer["predictions"] == list(multiclass.model.predict(frame))
    own = multiclass.model.predict_proba(frame)
    order = [list(multiclass.model.classes_).index(c) for c in answer["classes"]]
    np.testing.assert_allclose(answer["probabilities"], own[:, order], rtol=1e-9)


def test_unseen_categories_are_answered_and_counted(shop_client: TestClient) -> None:
    """A category the model never saw is answered (200) and counted per feature in /metrics,
    which names the model and its task."""
    before = shop_client.get("/metrics").text
    assert sample_value(before, "selfheal_service_unseen_categories_total", feature="size") == 0
    rows = [{**SHOP_ROW, "color": "teal"}, {**SHOP_ROW, "color": "navy", "size": "XXL"}]
    assert shop_client.post("/predict", json={"instances": rows}).status_code == 200
    text = shop_client.get("/metrics").text
    total = "selfheal_service_unseen_categories_total"
    assert sample_value(text, total, feature="color") == 2.0
    assert sample_value(text, total, feature="size") == 1.0
    assert sample_value(text, total, feature="member") == 0.0
    assert 'name="shop"' in text
    assert 'task="multiclass"' in text


def test_model_endpoint_shows_a_mixed_schema(shop_client: TestClient, multiclass: Mixed) -> None:
    """/model shows the schema: task, classes, and each feature's kind and categories."""
    schema = shop_client.get("/model").json()["schema"]
    assert schema == multiclass.schema.to_dict()
    assert schema["classes"] == ["low", "mid", "high"]
    assert [f["kind"] for f in schema["features"]] == [
        "categorical",
        "numeric",
        "boolean",
        "categorical",
        "numeric",
    ]


@pytest.mark.parametrize(
    ("row", "loc"),
    [
        pytest.param({**SHOP_ROW, "size": None}, ["body", "size"], id="null-not-allowed"),
        pytest.param({**SHOP_ROW, "member": "perhaps"}, ["body", "member"], id="boolean"),
        pytest.param({**SHOP_ROW, "color": True}, ["body", "color"], id="bool-category"),
        pytest.param({**SHOP_ROW, "age": "forty"}, ["body", "age"], id="text-number"),
        pytest.param(
            {k: v for k, v in SHOP_ROW.items() if k != "size"}, ["body", "size"], id="missing"
        ),
    ],
)
def test_bad_mixed_input_is_a_422_naming_the_field(
    shop_client: TestClient, row: dict[str, Any], loc: list[Any]
) -> None:
    """Through the app, a bad value of any kind of column is a 422 whose loc names it."""
    response = shop_client.post("/predict", content=json.dumps(row).encode())
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_openapi_describes_the_served_schema(shop_client: TestClient) -> None:
    """/openapi.json describes the served schema's row: its features, a categorical one as text
    or a number, null where missing values are allowed; and the classes as feedback labels."""
    document = shop_client.get("/openapi.json").json()
    row = document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["oneOf"][0]
    assert row["required"] == ["color", "age", "member", "size", "visits"]
    assert {"type": "null"} in row["properties"]["color"]["anyOf"]
    assert row["properties"]["size"]["anyOf"] == [{"type": "string"}, {"type": "number"}]
    feedback = document["paths"]["/feedback"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["oneOf"][0]
    assert feedback["properties"]["label"]["enum"] == ["low", "mid", "high"]
