"""``POST /feedback``: ground truth by request id or with the features, kept for the monitor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from selfheal_daemon.defaults import FEATURES
from service.app import create_app
from service.model_store import ModelStore
from service.settings import ServiceSettings
from tests.unit.service.conftest import Trained, predict_rows
from tests.unit.service.fakes import FakeSource, NanAboveModel
from tests.unit.service.mixed import fit_mixed
from tests.unit.service.servers import private_client
from tests.unit.service.test_app import ROW, rows, sample_value

NO_MEDINC = {k: v for k, v in ROW.items() if k != "MedInc"}


@pytest.fixture
def admin(settings: ServiceSettings, loaded_store: ModelStore) -> Iterator[TestClient]:
    """A client of an app serving v1, its requests arriving as on the private socket."""
    with private_client(create_app(settings, loaded_store)) as test_client:
        yield test_client


def feedback_of(client: TestClient) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = client.get("/admin/capture").json()["feedback"]
    return entries


def post(client: TestClient, body: Any) -> Any:
    return client.post("/feedback", content=json.dumps(body).encode())


# ----- accepted -----------------------------------------------------------------------------


def test_labels_by_request_id_are_kept_as_sent(admin: TestClient) -> None:
    """Labels for an earlier answer are kept with its request id, without features."""
    request_id = admin.post("/predict", json={"instances": [ROW, ROW]}).json()["request_id"]
    response = post(admin, {"request_id": request_id, "labels": [1.5, 2]})
    assert response.status_code == 202
    assert response.json() == {"accepted": 2}
    (entry,) = feedback_of(admin)
    assert entry["request_id"] == request_id
    assert entry["labels"] == [1.5, 2.0]
    assert (entry["features"], entry["predictions"], entry["model_version"]) == (None, None, None)
    assert entry["seq"] == 2  # after the prediction's 1: one seq space


def test_single_label_and_an_unknown_request_id_are_accepted(admin: TestClient) -> None:
    """``label`` works for one row; a request id another worker answered is accepted too."""
    response = post(admin, {"request_id": "from-another-worker", "label": 3.25})
    assert response.status_code == 202
    assert response.json() == {"accepted": 1}
    assert feedback_of(admin)[0]["labels"] == [3.25]


def test_features_with_a_label_are_predicted_now(admin: TestClient, trained: Trained) -> None:
    """A row sent with its label is predicted by the served model and kept with that prediction."""
    response = post(admin, {"features": ROW, "label": 4.0})
    (entry,) = feedback_of(admin)
    expected = predict_rows(trained, np.array([[ROW[f] for f in FEATURES]]))
    assert response.json() == {"accepted": 1}
    assert entry["features"] == [[ROW[f] for f in FEATURES]]
    assert entry["predictions"] == pytest.approx(expected.tolist(), rel=1e-12)
    assert (entry["labels"], entry["model_version"], entry["request_id"]) == ([4.0], "v1", None)


def test_items_mix_the_forms_and_keep_their_order(admin: TestClient, trained: Trained) -> None:
    """Several items: each becomes one entry, in order; features of all items predicted at once."""
    batch = rows(trained, 3)
    body = {
        "items": [
            {"instances": batch, "labels": [1.0, 2.0, 3.0]},
            {"request_id": "abc", "label": 9.0},
            {"features": ROW, "label": 5.0, "request_id": "def"},
        ]
    }
    response = post(admin, body)
    entries = feedback_of(admin)
    predicted = admin.post("/predict", json={"instances": [*batch, ROW]}).json()["predictions"]
    assert response.json() == {"accepted": 5}
    assert [e["request_id"] for e in entries] == [None, "abc", "def"]
    assert [e["seq"] for e in entries] == [1, 2, 3]
    assert entries[0]["features"] == [[r[f] for f in FEATURES] for r in batch]
    assert entries[0]["predictions"] == pytest.approx(predicted[:3], rel=1e-12)
    assert entries[1]["predictions"] is None
    assert entries[2]["predictions"] == pytest.approx(predicted[3:], rel=1e-12)


def test_feedback_is_counted_and_bounded(loaded_store: ModelStore) -> None:
    """Feedback rows are counted in /metrics; the feedback buffer drops its oldest entries."""
    app = create_app(ServiceSettings(feedback_rows=3), loaded_store)
    with private_client(app) as client:
        for label in (1.0, 2.0, 3.0):
            post(client, {"request_id": "r", "labels": [label, label]})
        document = client.get("/admin/capture").json()
        text = client.get("/metrics").text
    assert [e["labels"] for e in document["feedback"]] == [[3.0, 3.0]]
    assert document["dropped"] == 2
    assert sample_value(text, "selfheal_service_feedback_rows_total") == 6.0
    assert (
        sample_value(text, "selfheal_service_capture_dropped_entries_total", buffer="feedback")
        == 2.0
    )


def test_feedback_without_a_model_is_503(settings: ServiceSettings, store: ModelStore) -> None:
    """With no model served there is no schema to read features or labels by: 503, as /predict
    answers, and nothing is kept."""
    with private_client(create_app(settings, store)) as client:
        response = post(client, {"features": ROW, "label": 1.0})
        assert feedback_of(client) == []
    assert response.status_code == 503
    assert response.json() == {"detail": "no model loaded"}


def test_feedback_the_model_cannot_predict_is_kept_without_predictions(
    settings: ServiceSettings,
) -> None:
    """A model fault on feedback rows is not the client's: 202, labels kept, no prediction."""
    store = ModelStore()
    store.load(FakeSource({"v4": NanAboveModel(threshold=100.0)}), "v4")
    with private_client(create_app(settings, store)) as client:
        response = post(client, {"features": {**ROW, "MedInc": 500.0}, "label": 1.0})
        (entry,) = feedback_of(client)
    assert response.status_code == 202
    assert (entry["labels"], entry["predictions"]) == ([1.0], None)


def test_large_feedback_is_parsed_off_the_event_loop(admin: TestClient) -> None:
    """A body over the inline-parse size (hundreds of rows) is accepted whole."""
    response = post(admin, {"instances": [ROW] * 400, "labels": [1.0] * 400})
    assert response.json() == {"accepted": 400}
    assert len(feedback_of(admin)[0]["predictions"]) == 400


def test_openapi_documents_feedback(admin: TestClient) -> None:
    """/feedback is in the schema with its 202 answer and its request body."""
    operation = admin.get("/openapi.json").json()["paths"]["/feedback"]["post"]
    assert "202" in operation["responses"]
    assert len(operation["requestBody"]["content"]["application/json"]["schema"]["oneOf"]) == 4


# ----- refused ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        pytest.param(
            {"features": NO_MEDINC, "label": 1.0},
            ["body", "features", "MedInc"],
            id="missing-feature",
        ),
        pytest.param(
            {"features": {**ROW, "zip": 1.0}, "label": 1.0},
            ["body", "features", "zip"],
            id="unknown-feature",
        ),
        pytest.param(
            {"features": {**ROW, "HouseAge": "41"}, "label": 1.0},
            ["body", "features", "HouseAge"],
            id="string-feature",
        ),
        pytest.param(
            {"features": {**ROW, "Latitude": float("nan")}, "label": 1.0},
            ["body", "features", "Latitude"],
            id="nan-feature",
        ),
        pytest.param(
            {"features": [1.0], "label": 1.0}, ["body", "features"], id="features-not-object"
        ),
        pytest.param(
            {"instances": [ROW, {**ROW, "AveOccup": None}], "labels": [1.0, 2.0]},
            ["body", "instances", 1, "AveOccup"],
            id="instance-null",
        ),
        pytest.param(
            {"instances": [], "labels": [1.0]}, ["body", "instances"], id="instances-empty"
        ),
        pytest.param(
            {"instances": [ROW, ROW], "labels": [1.0]}, ["body", "labels"], id="too-few-labels"
        ),
        pytest.param(
            {"features": ROW, "labels": [1.0, 2.0]}, ["body", "labels"], id="two-labels-one-row"
        ),
        pytest.param({"request_id": "r", "label": "1.5"}, ["body", "label"], id="label-string"),
        pytest.param({"request_id": "r", "label": True}, ["body", "label"], id="label-bool"),
        pytest.param({"request_id": "r", "label": float("inf")}, ["body", "label"], id="label-inf"),
        pytest.param(
            {"request_id": "r", "labels": [1.0, float("nan")]},
            ["body", "labels", 1],
            id="labels-nan",
        ),
        pytest.param(
            {"request_id": "r", "labels": [1.0, None]}, ["body", "labels", 1], id="labels-null"
        ),
        pytest.param({"request_id": "r", "labels": 1.0}, ["body", "labels"], id="labels-not-list"),
        pytest.param({"request_id": "r", "labels": []}, ["body", "labels"], id="labels-empty"),
        pytest.param({"request_id": "r"}, ["body", "labels"], id="no-labels"),
        pytest.param({"features": ROW}, ["body", "label"], id="no-label"),
        pytest.param(
            {"request_id": "r", "label": 1.0, "labels": [1.0]},
            ["body", "labels"],
            id="label-and-labels",
        ),
        pytest.param(
            {"features": ROW, "instances": [ROW], "label": 1.0},
            ["body", "instances"],
            id="features-and-instances",
        ),
        pytest.param({"label": 1.0}, ["body", "request_id"], id="nothing-to-join"),
        pytest.param(
            {"request_id": "has space", "label": 1.0}, ["body", "request_id"], id="bad-request-id"
        ),
        pytest.param(
            {"request_id": "x" * 65, "label": 1.0}, ["body", "request_id"], id="long-request-id"
        ),
        pytest.param(
            {"request_id": 42, "label": 1.0}, ["body", "request_id"], id="number-request-id"
        ),
        pytest.param(
            {"request_id": "r", "label": 1.0, "weight": 2.0}, ["body", "weight"], id="extra-key"
        ),
        pytest.param({"items": []}, ["body", "items"], id="items-empty"),
        pytest.param({"items": {"request_id": "r"}}, ["body", "items"], id="items-not-list"),
        pytest.param(
            {"items": [{"request_id": "r", "label": 1.0}], "x": 1}, ["body", "x"], id="items-extra"
        ),
        pytest.param(
            {"items": [{"request_id": "r", "label": 1.0}, {"request_id": "r", "label": "y"}]},
            ["body", "items", 1, "label"],
            id="second-item",
        ),
        pytest.param(
            {"items": [{"request_id": "r", "label": 1.0}, 7]},
            ["body", "items", 1],
            id="item-not-object",
        ),
        pytest.param([1.0], ["body"], id="array"),
    ],
)
def test_invalid_feedback_is_422_naming_the_field(
    admin: TestClient, body: Any, loc: list[Any]
) -> None:
    """Each invalid body is a 422 in FastAPI's shape whose loc names the offending field,
    and nothing is kept."""
    response = post(admin, body)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == loc
    assert set(error) == {"loc", "msg", "type"}
    assert feedback_of(admin) == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"request_id": "r", "labels": [1.0] * 6}, id="labels"),
        pytest.param({"instances": [ROW] * 6, "labels": [1.0] * 6}, id="instances"),
        pytest.param({"items": [{"request_id": "r", "labels": [1.0] * 3}] * 2}, id="items-rows"),
        pytest.param({"items": [{"request_id": "r", "label": 1.0}] * 6}, id="items"),
    ],
)
def test_feedback_over_the_row_limit_is_413(loaded_store: ModelStore, body: Any) -> None:
    """More labelled rows than max_batch_rows, in one item or across items, is a 413."""
    with private_client(create_app(ServiceSettings(max_batch_rows=5), loaded_store)) as client:
        response = post(client, body)
        assert feedback_of(client) == []
    assert response.status_code == 413
    assert "limit of 5 rows" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\xfa\xfb", id="invalid-utf8"),
        pytest.param(b"[" * 50_000, id="deeply-nested"),
        pytest.param(b'{"request_id": "r", "label": 1e400}', id="overflow"),
        pytest.param(b'{"request_id": "r", "label": 1' + b"0" * 5000 + b"}", id="huge-int"),
        pytest.param(b'{"items": [[[{"a": null}]]]}', id="nested-junk"),
        pytest.param(b"\x00\x01\x02", id="binary"),
    ],
)
def test_junk_feedback_is_never_a_500(admin: TestClient, body: bytes) -> None:
    """Garbage bodies are refused with 422, never an internal error."""
    response = admin.post("/feedback", content=body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


def test_oversized_feedback_body_is_413(loaded_store: ModelStore) -> None:
    """The body limit applies to /feedback as to /predict."""
    body = json.dumps({"request_id": "r", "labels": [1.0] * 300}).encode()
    with private_client(create_app(ServiceSettings(max_body_bytes=1024), loaded_store)) as client:
        response = client.post("/feedback", content=body)
    assert response.status_code == 413


# ----- a classifier -------------------------------------------------------------------------

SHOP_ROW: dict[str, Any] = {"color": "c3", "age": 40, "member": True, "size": "M", "visits": 2.5}


@pytest.fixture(scope="module")
def binary_store() -> ModelStore:
    """A store serving the trainer's pipeline of a binary mixed schema (classes no, yes)."""
    mixed = fit_mixed("binary")
    store = ModelStore()
    store.load(FakeSource({"v1": mixed.model}, {"v1": mixed.schema}), "v1")
    return store


def test_classifier_feedback_keeps_class_indices(
    settings: ServiceSettings, binary_store: ModelStore
) -> None:
    """A classifier's labels are class labels; they are kept as class indices, beside the
    predicted class index of rows sent with them."""
    with private_client(create_app(settings, binary_store)) as client:
        predicted = client.post("/predict", json={"instances": [SHOP_ROW, SHOP_ROW]}).json()
        body = {"instances": [SHOP_ROW, SHOP_ROW], "labels": ["yes", "no"]}
        response = post(client, body)
        (entry,) = feedback_of(client)
    assert response.status_code == 202
    assert entry["labels"] == [1.0, 0.0]
    assert [["no", "yes"][int(i)] for i in entry["predictions"]] == predicted["predictions"]


def test_a_classifier_label_it_does_not_know_is_a_422_naming_it(
    settings: ServiceSettings, binary_store: ModelStore
) -> None:
    """A label that is not one of the classifier's classes is refused at that label, naming it;
    nothing is kept."""
    with private_client(create_app(settings, binary_store)) as client:
        response = post(client, {"request_id": "r", "labels": ["yes", "maybe"]})
        assert feedback_of(client) == []
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "labels", 1]
    assert error["msg"].startswith("'maybe' is not a class of this model")
