"""The Open Inference Protocol (v2) routes of the model service, through FastAPI's TestClient.

The request and response shapes are the protocol's own (the REST examples of the KServe v2 /
Open Inference Protocol specification, ``required_api.md``): the inference request example with
``id`` "42", two inputs and one requested output; tensor data flat or in its natural nested
form; the error object ``{"error": "..."}``. The rows go the way ``/predict`` rows go (the same
check, batcher, capture and metrics), so each answer is compared with ``/predict``'s.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient  # conftest imported it first, muting its warning
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selfheal_daemon.defaults import FEATURES, MODEL_NAME
from selfheal_daemon.model.registry import ModelRegistry
from service.app import create_app
from service.model_store import ModelStore
from service.settings import ServiceSettings
from tests.unit.service.conftest import Trained, predict_rows
from tests.unit.service.mixed import Mixed, fit_mixed, register_mixed
from tests.unit.service.servers import private_client
from tests.unit.service.test_app import ROW, rows, sample_value

INFER = f"/v2/models/{MODEL_NAME}/infer"
SHOP_INFER = "/v2/models/shop/infer"

# The specification's inference request example, verbatim (required_api.md, "Inference Request
# Examples"): a request for some other model, with two inputs and one requested output.
SPEC_REQUEST: dict[str, Any] = {
    "id": "42",
    "inputs": [
        {"name": "input0", "shape": [2, 2], "datatype": "UINT32", "data": [1, 2, 3, 4]},
        {"name": "input1", "shape": [3], "datatype": "BOOL", "data": [True]},
    ],
    "outputs": [{"name": "output0"}],
}
RESPONSE_KEYS = {"model_name", "model_version", "id", "parameters", "outputs"}
TENSOR_KEYS = {"name", "shape", "datatype", "parameters", "data"}


def columns_request(
    table: list[dict[str, Any]], datatypes: dict[str, str], **extra: Any
) -> dict[str, Any]:
    """An inference request with one tensor per feature of ``table``'s rows (MLServer's way)."""
    names = list(table[0])
    return {
        **extra,
        "inputs": [
            {
                "name": name,
                "shape": [len(table)],
                "datatype": datatypes.get(name, "FP64"),
                "data": [row[name] for row in table],
            }
            for name in names
        ],
    }


def output(answer: dict[str, Any], name: str) -> dict[str, Any]:
    found = [tensor for tensor in answer["outputs"] if tensor["name"] == name]
    assert len(found) == 1, answer
    return found[0]


def assert_protocol_response(answer: dict[str, Any]) -> None:
    """The answer is a $inference_response: its keys, and each output a $response_output whose
    data holds as many elements as its shape says."""
    assert set(answer) <= RESPONSE_KEYS
    assert {"model_name", "id", "outputs"} <= set(answer)
    for tensor in answer["outputs"]:
        assert set(tensor) <= TENSOR_KEYS
        assert {"name", "shape", "datatype", "data"} <= set(tensor)
        assert len(np.asarray(tensor["data"], dtype=object).reshape(-1)) == math.prod(
            tensor["shape"]
        )


def assert_error(response: Any, status: int, *words: str) -> str:
    """The protocol's error object with ``status``; its message names every word."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    message: str = body["error"]
    for word in words:
        assert word in message, message
    return message


# ----- fixtures: the California model, and a classifier of a mixed schema --------------------

SHOP_ROWS: list[dict[str, Any]] = [
    {"color": "c3", "age": 40.0, "member": True, "size": "M", "visits": 2.5},
    {"color": None, "age": 61.0, "member": False, "size": "3", "visits": 7.0},
    {"color": "c7", "age": None, "member": True, "size": "L", "visits": 0.5},
]
SHOP_TYPES = {"color": "BYTES", "member": "BOOL", "size": "BYTES"}


@pytest.fixture(scope="module")
def multiclass() -> Mixed:
    """The trainer's pipeline of a multiclass mixed schema (classes low, mid, high)."""
    return fit_mixed("multiclass")


@pytest.fixture
def shop_app(tmp_path: Any, settings: ServiceSettings, multiclass: Mixed) -> FastAPI:
    """An app serving the multiclass model ``shop`` as v1."""
    registry = ModelRegistry(tmp_path / "shop")
    version = register_mixed(registry, multiclass)
    store = ModelStore()
    store.load(registry, version)
    return create_app(settings, store, registry)


@pytest.fixture
def shop(shop_app: FastAPI) -> Iterator[TestClient]:
    """A client of ``shop_app``, its requests arriving as on the private socket (so the capture
    can be read too)."""
    with private_client(shop_app) as test_client:
        yield test_client


@pytest.fixture
def empty(settings: ServiceSettings, store: ModelStore) -> Iterator[TestClient]:
    """A client of an app whose store has no model yet."""
    with TestClient(create_app(settings, store)) as test_client:
        yield test_client


# ----- health and metadata ---------------------------------------------------------------------


def test_server_live_ready_and_metadata(client: TestClient) -> None:
    """GET /v2/health/live and /ready answer 200 with the protocol's objects; GET /v2 is the
    server metadata object: name, version, no extension."""
    live = client.get("/v2/health/live")
    assert (live.status_code, live.json()) == (200, {"live": True})
    ready = client.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    metadata = client.get("/v2").json()
    assert set(metadata) == {"name", "version", "extensions"}
    assert metadata["name"] == "selfheal"
    assert isinstance(metadata["version"], str)
    assert metadata["version"]
    assert metadata["extensions"] == []


def test_nothing_served_is_not_ready(empty: TestClient) -> None:
    """Live but not ready (4xx: false); model ready is false; metadata and infer are a 503."""
    assert empty.get("/v2/health/live").status_code == 200
    ready = empty.get("/v2/health/ready")
    assert (ready.status_code, ready.json()) == (400, {"ready": False})
    model_ready = empty.get(f"/v2/models/{MODEL_NAME}/ready")
    assert (model_ready.status_code, model_ready.json()) == (
        400,
        {"name": MODEL_NAME, "ready": False},
    )
    assert_error(empty.get(f"/v2/models/{MODEL_NAME}"), 503, "no model")
    assert_error(empty.post(INFER, json=columns_request([ROW], {})), 503, "no model")


def test_model_metadata_of_a_regression(client: TestClient) -> None:
    """The model metadata object: the schema's name, the served version, one FP64 input per
    feature in order, one FP64 output; the /versions form for the served version alike."""
    metadata = client.get(f"/v2/models/{MODEL_NAME}").json()
    assert metadata == {
        "name": MODEL_NAME,
        "versions": ["v1"],
        "platform": "scikit-learn",
        "inputs": [{"name": name, "datatype": "FP64", "shape": [-1]} for name in FEATURES],
        "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1]}],
    }
    assert client.get(f"/v2/models/{MODEL_NAME}/versions/v1").json() == metadata


def test_model_metadata_of_a_classifier(shop: TestClient) -> None:
    """Inputs by kind (BYTES categorical, FP64 numeric, BOOL boolean); outputs the labels as
    BYTES and the probabilities [-1, classes] with the classes in the parameters."""
    metadata = shop.get("/v2/models/shop").json()
    assert metadata["name"] == "shop"
    assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [
        ("color", "BYTES"),
        ("age", "FP64"),
        ("member", "BOOL"),
        ("size", "BYTES"),
        ("visits", "FP64"),
    ]
    assert metadata["outputs"] == [
        {"name": "predict", "datatype": "BYTES", "shape": [-1]},
        {
            "name": "predict_proba",
            "datatype": "FP64",
            "shape": [-1, 3],
            "parameters": {"classes": ["low", "mid", "high"]},
        },
    ]


def test_model_ready_and_its_versions_form(client: TestClient) -> None:
    """Ready for the served name and version; a 404 error object for another name or version."""
    for path in (f"/v2/models/{MODEL_NAME}/ready", f"/v2/models/{MODEL_NAME}/versions/v1/ready"):
        response = client.get(path)
        assert (response.status_code, response.json()) == (200, {"name": MODEL_NAME, "ready": True})
    assert_error(client.get("/v2/models/other/ready"), 404, "'other'", MODEL_NAME)
    assert_error(client.get(f"/v2/models/{MODEL_NAME}/versions/v2/ready"), 404, "'v2'", "v1")
    assert_error(client.get(f"/v2/models/{MODEL_NAME}/versions/v7"), 404, "'v7'")
    assert_error(client.get("/v2/models/other"), 404, "'other'")


# ----- inference: the specification's examples -------------------------------------------------


def test_the_specification_example_request_is_refused_naming_its_input(client: TestClient) -> None:
    """The spec's example request is for another model: a 400 error object naming input0 and
    what this model takes instead."""
    message = assert_error(client.post(INFER, json=SPEC_REQUEST), 400, "'input0'", "MedInc")
    assert "one tensor per feature" in message


def test_the_specification_example_shape_answers_as_the_specification_shows(
    client: TestClient, trained: Trained
) -> None:
    """The spec's example, shaped for this model (one 2-D tensor of rows, as KServe's
    scikit-learn examples send): the answer echoes the id and has the spec's output object."""
    x = trained.features[:2]
    request = {
        "id": "42",
        "inputs": [
            {"name": "input-0", "shape": [2, 8], "datatype": "FP64", "data": x.tolist()},
        ],
        "outputs": [{"name": "predict"}],
    }
    response = client.post(INFER, json=request)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert_protocol_response(answer)
    assert answer == {
        "model_name": MODEL_NAME,
        "model_version": "v1",
        "id": "42",
        "outputs": [
            {
                "name": "predict",
                "shape": [2],
                "datatype": "FP64",
                "data": predict_rows(trained, x).tolist(),
            }
        ],
    }


def test_tensor_data_flat_or_nested_is_the_same_request(client: TestClient) -> None:
    """The spec's 'Tensor Data': the natural multi-dimensional form and the flattened one are
    the same tensor; so are a column [n] and [n, 1]."""
    x = [[ROW[name] for name in FEATURES], [ROW[name] + 1 for name in FEATURES]]
    flat = [value for row in x for value in row]

    def answer(tensor: dict[str, Any]) -> Any:
        response = client.post(INFER, json={"inputs": [tensor]})
        assert response.status_code == 200, response.text
        return response.json()["outputs"][0]["data"]

    nested = answer({"name": "x", "shape": [2, 8], "datatype": "FP32", "data": x})
    assert answer({"name": "x", "shape": [2, 8], "datatype": "FP32", "data": flat}) == nested
    as_columns = columns_request([ROW, {k: v + 1 for k, v in ROW.items()}], {})
    by_column = client.post(INFER, json=as_columns).json()["outputs"][0]["data"]
    for tensor in as_columns["inputs"]:
        tensor["shape"] = [2, 1]
        tensor["data"] = [[value] for value in tensor["data"]]
    assert client.post(INFER, json=as_columns).json()["outputs"][0]["data"] == by_column
    assert by_column == nested


# ----- inference: the same answers as /predict ------------------------------------------------


def test_one_tensor_per_feature_answers_what_predict_answers(
    client: TestClient, trained: Trained
) -> None:
    """Eight FP64 columns of 20 rows answer exactly /predict's predictions for those rows, and
    the versions form answers the same."""
    table = rows(trained, 20)
    predicted = client.post("/predict", json={"instances": table}).json()["predictions"]
    for path in (INFER, f"/v2/models/{MODEL_NAME}/versions/v1/infer"):
        response = client.post(path, json=columns_request(table, {}))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert_protocol_response(answer)
        assert answer["model_version"] == "v1"
        assert output(answer, "predict") == {
            "name": "predict",
            "datatype": "FP64",
            "shape": [20],
            "data": predicted,
        }


@pytest.mark.parametrize("datatype", ["FP32", "FP16", "INT64", "INT32", "UINT8"])
def test_every_number_datatype_reads_numbers(client: TestClient, datatype: str) -> None:
    """Whole numbers in any integer or float tensor are the numbers /predict reads."""
    row = {name: float(round(abs(value))) for name, value in ROW.items()}
    row["Longitude"] = 122.0  # an unsigned tensor holds no negative number
    expected = client.post("/predict", json=row).json()["predictions"]
    response = client.post(INFER, json=columns_request([row], dict.fromkeys(FEATURES, datatype)))
    assert response.status_code == 200, response.text
    assert output(response.json(), "predict")["data"] == expected


def test_a_classifier_answers_labels_and_probabilities_with_its_classes(
    shop: TestClient,
) -> None:
    """BYTES, BOOL and FP64 columns (nulls where the schema allows missing cells): the labels as
    BYTES and the probabilities [n, 3] in the order of the classes, exactly /predict's."""
    predicted = shop.post("/predict", json={"instances": SHOP_ROWS}).json()
    response = shop.post(SHOP_INFER, json=columns_request(SHOP_ROWS, SHOP_TYPES, id="abc"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert_protocol_response(answer)
    assert answer["id"] == "abc"
    assert [tensor["name"] for tensor in answer["outputs"]] == ["predict", "predict_proba"]
    assert output(answer, "predict") == {
        "name": "predict",
        "datatype": "BYTES",
        "shape": [3],
        "data": predicted["predictions"],
    }
    proba = output(answer, "predict_proba")
    assert proba["datatype"] == "FP64"
    assert proba["shape"] == [3, 3]
    assert proba["parameters"] == {"classes": ["low", "mid", "high"]}
    assert proba["data"] == [p for row in predicted["probabilities"] for p in row]


def test_cells_are_read_as_predict_reads_them(shop: TestClient) -> None:
    """A boolean as text or as 0/1, a category as a number: the answer of the typed row."""
    typed = shop.post(SHOP_INFER, json=columns_request(SHOP_ROWS, SHOP_TYPES)).json()
    as_text = [{**row, "member": "true" if row["member"] else "no"} for row in SHOP_ROWS]
    request = columns_request(as_text, {**SHOP_TYPES, "member": "BYTES"})
    assert shop.post(SHOP_INFER, json=request).json()["outputs"] == typed["outputs"]
    one = SHOP_ROWS[1]  # member false, size "3"
    alone = shop.post(SHOP_INFER, json=columns_request([one], SHOP_TYPES)).json()
    as_numbers = {**one, "member": 0, "size": 3}
    request = columns_request([as_numbers], {**SHOP_TYPES, "member": "INT64", "size": "INT64"})
    assert shop.post(SHOP_INFER, json=request).json()["outputs"] == alone["outputs"]


def test_nan_in_a_float_tensor_is_a_missing_cell_where_one_is_allowed(shop: TestClient) -> None:
    """NaN (numpy's missing value, which tritonclient sends as a NaN literal) reads as null
    where the feature allows a missing cell; elsewhere it is the non-finite number it is."""
    with_null = shop.post(SHOP_INFER, json=columns_request(SHOP_ROWS, SHOP_TYPES)).json()
    request = columns_request(SHOP_ROWS, SHOP_TYPES)
    assert request["inputs"][1]["name"] == "age"
    request["inputs"][1]["data"][2] = math.nan  # was null: age allows a missing cell
    body = json.dumps(request)
    assert "NaN" in body
    nan = shop.post(SHOP_INFER, content=body.encode())
    assert nan.status_code == 200, nan.text
    assert nan.json()["outputs"] == with_null["outputs"]
    request["inputs"][4]["data"][2] = math.nan  # visits takes no missing value
    refused = shop.post(SHOP_INFER, content=json.dumps(request).encode())
    assert_error(refused, 400, "input 'visits', element 2", "not a finite number")


def test_outputs_select_what_is_answered(shop: TestClient) -> None:
    """Only the outputs named are answered, in the order asked; tritonclient's binary_data
    parameter is ignored (data always comes as JSON)."""
    request = columns_request(
        SHOP_ROWS,
        SHOP_TYPES,
        outputs=[{"name": "predict_proba", "parameters": {"binary_data": True}}],
        parameters={"binary_data_output": True},
    )
    answer = shop.post(SHOP_INFER, json=request).json()
    assert [tensor["name"] for tensor in answer["outputs"]] == ["predict_proba"]
    assert "binary_data_size" not in json.dumps(answer)
    request["outputs"] = [{"name": "predict"}, {"name": "predict_proba"}, {"name": "predict"}]
    answer = shop.post(SHOP_INFER, json=request).json()
    assert [tensor["name"] for tensor in answer["outputs"]] == ["predict", "predict_proba"]
    request["outputs"] = [{"name": "output0"}]
    assert_error(shop.post(SHOP_INFER, json=request), 400, "'output0'", "predict_proba")


def test_a_regression_has_no_probabilities(client: TestClient) -> None:
    request = columns_request([ROW], {}, outputs=[{"name": "predict_proba"}])
    assert_error(client.post(INFER, json=request), 400, "'predict_proba'", "predict")


# ----- one path with /predict: capture, metrics, batching ---------------------------------------


def test_infer_is_captured_batched_and_counted_like_predict(
    shop: TestClient, shop_app: FastAPI
) -> None:
    """An answered request is captured under its id (also X-Request-ID), its rows counted as
    predicted and its unseen categories counted per feature; it went through the batcher."""
    app: Any = shop_app
    batched = app.state.batcher.batched_rows
    unseen = [{**SHOP_ROWS[0], "color": "teal"}, SHOP_ROWS[1]]
    response = shop.post(SHOP_INFER, json=columns_request(unseen, SHOP_TYPES, id="order-7"))
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "order-7"
    assert app.state.batcher.batched_rows == batched + 2
    captured = shop.get("/admin/capture").json()["predictions"]
    assert [entry["request_id"] for entry in captured] == ["order-7"]
    assert captured[0]["model_version"] == "v1"
    assert captured[0]["features"][0][0] == -1.0  # the unseen color, encoded as /predict does
    text = shop.get("/metrics").text
    assert sample_value(text, "selfheal_service_predicted_rows_total") == 2.0
    assert sample_value(text, "selfheal_service_unseen_categories_total", feature="color") == 1.0
    assert (
        sample_value(
            text,
            "selfheal_service_requests_total",
            endpoint="/v2/models/{name}/infer",
            status="200",
        )
        == 1.0
    )


def test_request_ids_answered_and_kept(shop: TestClient) -> None:
    """Without an id the answer's id is the capture's request id; an id that is not a valid
    request id is echoed, and the capture keeps one made here; a valid X-Request-ID wins."""
    made = shop.post(SHOP_INFER, json=columns_request(SHOP_ROWS, SHOP_TYPES))
    assert made.json()["id"] == made.headers["x-request-id"]
    odd = shop.post(SHOP_INFER, json=columns_request(SHOP_ROWS, SHOP_TYPES, id="has spaces"))
    assert odd.json()["id"] == "has spaces"
    assert odd.headers["x-request-id"] != "has spaces"
    headed = shop.post(
        SHOP_INFER,
        json=columns_request(SHOP_ROWS, SHOP_TYPES, id="42"),
        headers={"X-Request-ID": "trace-1"},
    )
    assert (headed.json()["id"], headed.headers["x-request-id"]) == ("42", "trace-1")
    kept = [e["request_id"] for e in shop.get("/admin/capture").json()["predictions"]]
    assert kept == [made.headers["x-request-id"], odd.headers["x-request-id"], "trace-1"]
    feedback = shop.post("/feedback", json={"request_id": "trace-1", "labels": ["low"] * 3})
    assert feedback.status_code == 202


def test_a_refused_request_is_neither_captured_nor_counted(
    shop: TestClient, shop_app: FastAPI
) -> None:
    table = [{**SHOP_ROWS[0], "size": None}]  # size takes no missing value
    assert shop.post(SHOP_INFER, json=columns_request(table, SHOP_TYPES)).status_code == 400
    assert shop.get("/admin/capture").json()["predictions"] == []
    text = shop.get("/metrics").text
    assert sample_value(text, "selfheal_service_predicted_rows_total") == 0.0
    app: Any = shop_app
    assert app.state.batcher._arriving == 0  # the refused request no longer holds a batch open


# ----- errors: the protocol's error object, naming the input ---------------------------------


DATATYPE_OF = {str: "BYTES", bool: "BOOL", float: "FP64"}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"size": None}, id="null-not-allowed"),
        pytest.param({"member": "perhaps"}, id="boolean"),
        pytest.param({"color": True}, id="bool-category"),
        pytest.param({"age": "forty"}, id="text-number"),
        pytest.param({"visits": None}, id="null-number"),
    ],
)
def test_a_bad_cell_is_a_400_saying_what_predict_says(
    shop: TestClient, change: dict[str, Any]
) -> None:
    """A tensor whose datatype fits its cell but whose cell the feature refuses: a 400 naming the
    input and element, with the message of /predict's 422 for the same row."""
    ((name, value),) = change.items()
    row = {**SHOP_ROWS[0], **change}
    types = {**SHOP_TYPES, name: DATATYPE_OF.get(type(value), SHOP_TYPES.get(name, "FP64"))}
    predicted = shop.post("/predict", json=row)
    assert predicted.status_code == 422
    detail = predicted.json()["detail"][0]
    assert detail["loc"] == ["body", name]
    response = shop.post(SHOP_INFER, json=columns_request([row], types))
    assert_error(response, 400)
    assert response.json()["error"] == f"input {name!r}, element 0: {detail['msg']}"


def test_a_bad_cell_in_the_second_row_names_its_element(client: TestClient) -> None:
    table = [ROW, {**ROW, "HouseAge": "old"}]
    request = columns_request(table, {})
    assert_error(client.post(INFER, json=request), 400, "'HouseAge', element 1", "FP64")
    request = columns_request([ROW, ROW], {})
    request["inputs"][2]["data"][1] = 1e400  # inf: JSON's way to say a non-finite number
    body = json.dumps(request).replace("Infinity", "1e400").encode()
    assert_error(client.post(INFER, content=body), 400, "'AveRooms', element 1", "finite")


def test_a_bad_cell_of_a_2d_tensor_names_its_row_and_feature(client: TestClient) -> None:
    x = [[ROW[name] for name in FEATURES]] * 2
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [2, 8], "datatype": "FP64", "data": x}]}
    ).replace("-122.23]]", "NaN]]")  # California's features take no missing value
    assert_error(client.post(INFER, content=body), 400, "'x', row 1, feature 'Longitude'", "finite")


@pytest.mark.parametrize(
    ("mutate", "status", "words"),
    [
        pytest.param(
            lambda r: r["inputs"].pop(3), 400, ["missing input 'AveBedrms'"], id="missing"
        ),
        pytest.param(
            lambda r: r["inputs"].append({**r["inputs"][0]}), 400, ["'MedInc'", "twice"], id="twice"
        ),
        pytest.param(
            lambda r: r["inputs"].append({**r["inputs"][0], "name": "extra"}),
            400,
            ["unknown input 'extra'", "MedInc"],
            id="unknown",
        ),
        pytest.param(
            lambda r: r["inputs"][1].update(datatype="FP128"), 400, ["'HouseAge'", "FP128"], id="dt"
        ),
        pytest.param(
            lambda r: r["inputs"][1].update(shape=[2]), 400, ["'HouseAge'", "[2]", "1"], id="count"
        ),
        pytest.param(
            lambda r: r["inputs"][1].update(shape=[1, 1, 1]), 400, ["'HouseAge'", "[n]"], id="rank"
        ),
        pytest.param(
            lambda r: r["inputs"][1].update(shape=[-1]), 400, ["'HouseAge'", "shape"], id="negative"
        ),
        pytest.param(
            lambda r: r["inputs"][1].update(data=[True]), 400, ["'HouseAge'", "boolean"], id="type"
        ),
        pytest.param(
            lambda r: r["inputs"][1].update(datatype="INT64", data=[1.5]),
            400,
            ["'HouseAge'", "1.5", "INT64"],
            id="fraction",
        ),
        pytest.param(
            lambda r: r["inputs"][7].update(datatype="UINT32"),
            400,
            ["'Longitude'", "UINT32"],
            id="unsigned",
        ),
        pytest.param(
            lambda r: r["inputs"][1].update(parameters={"binary_data_size": 8}),
            400,
            ["'HouseAge'", "binary"],
            id="binary-input",
        ),
        pytest.param(lambda r: r.update(id=42), 400, ["id"], id="id-number"),
        pytest.param(lambda r: r.update(inputs=[]), 400, ["inputs"], id="no-inputs"),
        pytest.param(lambda r: r.pop("inputs"), 400, ["inputs"], id="inputs-absent"),
        pytest.param(lambda r: r.update(outputs="predict"), 400, ["outputs"], id="outputs"),
    ],
)
def test_malformed_requests_are_error_objects_naming_the_input(
    client: TestClient, mutate: Any, status: int, words: list[str]
) -> None:
    request = columns_request([ROW], {})
    mutate(request)
    assert_error(client.post(INFER, json=request), status, *words)


def test_rows_must_agree_and_stay_within_the_limit(loaded_store: ModelStore) -> None:
    """Columns of different lengths are a 400; more rows than max_batch_rows a 413; none a 400."""
    with TestClient(create_app(ServiceSettings(max_batch_rows=3), loaded_store)) as small:
        request = columns_request([ROW, ROW], {})
        request["inputs"][5].update(shape=[1], data=[1.0])
        assert_error(small.post(INFER, json=request), 400, "'AveOccup' has 1 rows", "'MedInc'")
        assert_error(small.post(INFER, json=columns_request([ROW] * 4, {})), 413, "4 rows", "3")
        empty = columns_request([ROW], {})
        for tensor in empty["inputs"]:
            tensor.update(shape=[0], data=[])
        assert_error(small.post(INFER, json=empty), 400, "no rows")
        matrix = {"name": "x", "shape": [4, 8], "datatype": "FP64", "data": [0.0] * 32}
        assert_error(small.post(INFER, json={"inputs": [matrix]}), 413, "4 rows")


def test_a_2d_tensor_needs_an_all_numeric_schema_and_its_width(
    client: TestClient, shop: TestClient
) -> None:
    matrix = {"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [1.0] * 5}
    assert_error(shop.post(SHOP_INFER, json={"inputs": [matrix]}), 400, "'x'", "every feature")
    matrix = {"name": "x", "shape": [1, 7], "datatype": "FP64", "data": [1.0] * 7}
    assert_error(client.post(INFER, json={"inputs": [matrix]}), 400, "[n, 8]", "MedInc")
    matrix = {"name": "x", "shape": [1, 8], "datatype": "BYTES", "data": ["1"] * 8}
    assert_error(client.post(INFER, json={"inputs": [matrix]}), 400, "'x'", "BYTES")


def test_binary_tensor_data_is_refused_with_a_clear_400(client: TestClient) -> None:
    """A request with the binary extension's header is refused before its body is read."""
    body = json.dumps(columns_request([ROW], {})).encode()
    response = client.post(
        INFER, content=body + b"\x00" * 8, headers={"Inference-Header-Content-Length": "12"}
    )
    assert_error(response, 400, "binary", "binary_data=False")


def test_unknown_model_or_version_is_a_404(client: TestClient) -> None:
    request = columns_request([ROW], {})
    assert_error(client.post("/v2/models/other/infer", json=request), 404, "'other'")
    assert_error(
        client.post(f"/v2/models/{MODEL_NAME}/versions/v2/infer", json=request), 404, "'v2'", "v1"
    )


def test_errors_answered_before_a_route_are_error_objects_too(loaded_store: ModelStore) -> None:
    """Under /v2 an unknown path, a wrong method, a bad body and the body limiter's 413 come
    as {"error": ...}; /predict keeps FastAPI's {"detail": ...}."""
    with TestClient(create_app(ServiceSettings(max_body_bytes=2000), loaded_store)) as small:
        assert_error(small.get("/v2/nothing/here"), 404, "Not Found")
        assert_error(small.get(INFER), 405, "Method Not Allowed")
        assert_error(small.post(INFER, content=b"{not json"), 400, "JSON")
        assert_error(small.post(INFER, content=b"[]"), 400, "JSON object")
        assert_error(small.post(INFER, content=b" " * 3000), 413, "2000 bytes")
        assert small.post("/predict", content=b" " * 3000).json() == {
            "detail": "request body exceeds the limit of 2000 bytes"
        }
        assert "detail" in small.get("/nothing").json()


def test_the_v2_routes_are_not_in_openapi(client: TestClient) -> None:
    """The protocol's own specification describes them; /openapi.json keeps to ours."""
    paths = client.get("/openapi.json").json()["paths"]
    assert "/predict" in paths
    assert not [path for path in paths if path.startswith("/v2")]


# ----- anything a client sends: an answer or an error object, never a 500 -------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
NAMES = st.sampled_from([*FEATURES, "x", "input0", ""])
DATATYPES = st.sampled_from(["FP64", "FP32", "INT64", "UINT8", "BOOL", "BYTES", "FP8", None])
TENSORS = st.fixed_dictionaries(
    {
        "name": NAMES,
        "datatype": DATATYPES,
        "shape": st.lists(st.integers(-1, 9), min_size=0, max_size=3),
        "data": st.lists(
            st.floats(allow_nan=False, allow_infinity=False)
            | st.booleans()
            | st.text(max_size=3)
            | st.none(),
            max_size=10,
        ),
    },
    optional={
        "parameters": st.dictionaries(
            st.sampled_from(["binary_data_size", "content_type"]), JSON_VALUES
        )
    },
)
REQUESTS = st.fixed_dictionaries(
    {"inputs": st.lists(TENSORS, max_size=9) | JSON_VALUES},
    optional={
        "id": JSON_VALUES,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["predict", "x"])}))
        | JSON_VALUES,
        "parameters": JSON_VALUES,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(request=REQUESTS | JSON_VALUES)
def test_any_request_is_answered_or_refused_with_an_error_object(
    client: TestClient, request: Any
) -> None:
    response = client.post(INFER, json=request)
    if response.status_code == 200:
        assert_protocol_response(response.json())
        return
    assert response.status_code in (400, 413), response.text
    assert set(response.json()) == {"error"}
    assert len(response.json()["error"]) > 5
