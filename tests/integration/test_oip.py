"""The Open Inference Protocol on a real daemon, spoken by a client no one here wrote: Triton's
``tritonclient.http.InferenceServerClient`` (the test dependency ``tritonclient[http]``).

Two daemons on loopback: (a) the bundled California regression, (b) a binary classifier of a
config's own ``[model]`` table, trained from a generated CSV with a categorical text column and a
boolean one. The client checks health and metadata, builds its inputs from the model metadata
(one ``InferInput`` per column, BYTES from ``np.object_`` arrays), and its answers must be those
of ``/predict`` for the same rows. Tensors travel as JSON (``binary_data=False``); the client's
default binary tensors are refused with a 400 that says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from selfheal_daemon.defaults import FEATURES, MODEL_NAME
from tests.daemons import ROW

pytestmark = pytest.mark.integration

NP_DATATYPE = {"FP64": np.float64, "BOOL": np.bool_, "BYTES": np.object_}


def client_of(daemon: Any) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(
        url=f"127.0.0.1:{daemon.port}", connection_timeout=10.0, network_timeout=30.0
    )


def inputs_from_metadata(metadata: dict[str, Any], table: pd.DataFrame) -> list[triton.InferInput]:
    """One InferInput per input the model metadata lists, of its datatype, from the column."""
    inputs = []
    for spec in metadata["inputs"]:
        column = table[spec["name"]].to_numpy(dtype=NP_DATATYPE[spec["datatype"]])
        tensor = triton.InferInput(spec["name"], [len(table)], spec["datatype"])
        tensor.set_data_from_numpy(column, binary_data=False)
        inputs.append(tensor)
    return inputs


def test_the_california_model_speaks_the_protocol_to_tritonclient(start_daemon: Any) -> None:
    """Live, ready, metadata; per-column and 2-D FP32 requests answer /predict's values; a
    missing input, a wrong version and binary tensors are the protocol's errors."""
    daemon = start_daemon(service={"workers": 1})
    daemon.wait_serving(timeout=60)
    client = client_of(daemon)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL_NAME)
        assert client.is_model_ready(MODEL_NAME, "v1")
        assert not client.is_model_ready(MODEL_NAME, "v9")
        assert not client.is_model_ready("some-other-model")
        server = client.get_server_metadata()
        assert server["name"] == "selfheal"
        assert server["extensions"] == []
        metadata = client.get_model_metadata(MODEL_NAME)
        assert metadata["versions"] == ["v1"]
        assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
            (name, "FP64") for name in FEATURES
        ]

        rng = np.random.default_rng(0)
        base = np.array([float(ROW[name]) for name in FEATURES])
        x = base * rng.uniform(0.9, 1.1, size=(4, len(FEATURES)))
        table = pd.DataFrame(x, columns=list(FEATURES))
        expected = httpx.post(
            f"{daemon.url}/predict",
            json={"instances": table.to_dict(orient="records")},
            timeout=10,
        ).json()["predictions"]

        result = client.infer(MODEL_NAME, inputs_from_metadata(metadata, table), request_id="r-1")
        assert result.get_response()["id"] == "r-1"
        assert result.get_response()["model_version"] == "v1"
        np.testing.assert_allclose(result.as_numpy("predict"), expected, rtol=1e-12)

        rows = triton.InferInput("input-0", [4, len(FEATURES)], "FP32")
        rows.set_data_from_numpy(x.astype(np.float32), binary_data=False)
        asked = [triton.InferRequestedOutput("predict", binary_data=False)]
        result = client.infer(MODEL_NAME, [rows], outputs=asked, model_version="v1")
        assert result.as_numpy("predict").shape == (4,)
        np.testing.assert_allclose(result.as_numpy("predict"), expected, rtol=1e-3)

        with pytest.raises(InferenceServerException) as missing:
            client.infer(MODEL_NAME, inputs_from_metadata(metadata, table)[1:])
        assert missing.value.status() == "400"
        assert "missing input 'MedInc'" in missing.value.message()

        with pytest.raises(InferenceServerException) as wrong_version:
            client.infer(MODEL_NAME, [rows], model_version="v7")
        assert wrong_version.value.status() == "404"

        binary = triton.InferInput("input-0", [4, len(FEATURES)], "FP32")
        binary.set_data_from_numpy(x.astype(np.float32))  # the client's default: binary data
        with pytest.raises(InferenceServerException) as refused:
            client.infer(MODEL_NAME, [binary])
        assert refused.value.status() == "400"
        assert "binary_data=False" in refused.value.message()
    finally:
        client.close()


# ----- a classifier of its own, with a categorical and a boolean column -------------------------


def refusal(
    client: triton.InferenceServerClient,
    metadata: dict[str, Any],
    table: pd.DataFrame,
    *,
    name: str,
    datatype: str,
    column: np.ndarray,
) -> InferenceServerException:
    """What the server answers when the input ``name`` of ``table`` is ``column`` instead."""
    replaced = triton.InferInput(name, [len(column)], datatype)
    replaced.set_data_from_numpy(column, binary_data=False)
    inputs = [i for i in inputs_from_metadata(metadata, table) if i.name() != name]
    with pytest.raises(InferenceServerException) as refused:
        client.infer(metadata["name"], [*inputs, replaced])
    return refused.value


def churn_table(rows: int = 1200, seed: int = 0) -> pd.DataFrame:
    """A learnable binary target from two numbers, a plan (text) and a member flag."""
    rng = np.random.default_rng(seed)
    tenure = rng.uniform(0, 60, rows).round(1)
    spend = rng.normal(50, 15, rows).round(2)
    plan = rng.choice(["basic", "plus", "pro"], rows)
    member = rng.choice(["true", "false"], rows)
    score = (
        (tenure - 30) / 10
        + (spend - 50) / 15
        + np.where(plan == "pro", 1.5, np.where(plan == "basic", -1.5, 0.0))
        + np.where(member == "true", 0.8, -0.8)
        + rng.normal(0, 0.3, rows)
    )
    churned = np.where(score < 0, "yes", "no")
    return pd.DataFrame(
        {"tenure": tenure, "spend": spend, "plan": plan, "member": member, "churned": churned}
    )


def test_a_classifier_of_its_own_answers_tritonclient_labels_and_probabilities(
    start_daemon: Any, tmp_path: Path
) -> None:
    """The [model] table's name is the protocol's model name; inputs by kind (BYTES plan, BOOL
    member); outputs the labels and the probabilities with their classes, those of /predict."""
    data = tmp_path / "churn.csv"
    churn_table().to_csv(data, index=False)
    daemon = start_daemon(
        service={"workers": 1},
        model={
            "name": "churn",
            "task": "binary",
            "target": "churned",
            "features": ["tenure", "spend", "plan", "member"],
            "categorical": ["plan"],
        },
        training={"data": str(data)},
    )
    daemon.wait_serving(timeout=60)
    client = client_of(daemon)
    try:
        assert client.is_model_ready("churn")
        assert not client.is_model_ready(MODEL_NAME)
        metadata = client.get_model_metadata("churn", "v1")
        kinds = {i["name"]: i["datatype"] for i in metadata["inputs"]}
        assert kinds == {"tenure": "FP64", "spend": "FP64", "plan": "BYTES", "member": "BOOL"}
        proba_meta = metadata["outputs"][1]
        assert proba_meta["name"] == "predict_proba"
        classes = proba_meta["parameters"]["classes"]
        assert sorted(classes) == ["no", "yes"]
        assert proba_meta["shape"] == [-1, 2]

        table = pd.DataFrame(
            {
                "tenure": [5.0, 55.0, 30.0],
                "spend": [30.0, 80.0, 50.0],
                "plan": ["basic", "pro", "enterprise"],  # the last one unseen: still answered
                "member": [False, True, True],
            }
        )
        expected = httpx.post(
            f"{daemon.url}/predict",
            json={"instances": table.to_dict(orient="records")},
            timeout=10,
        ).json()
        result = client.infer("churn", inputs_from_metadata(metadata, table))
        labels = result.as_numpy("predict")
        assert labels.dtype == np.object_
        assert [str(label) for label in labels] == expected["predictions"]
        assert result.get_output("predict_proba")["parameters"]["classes"] == classes
        proba = result.as_numpy("predict_proba")
        assert proba.shape == (3, 2)
        np.testing.assert_allclose(proba, expected["probabilities"], rtol=1e-12)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-9)

        only = [triton.InferRequestedOutput("predict_proba", binary_data=False)]
        result = client.infer("churn", inputs_from_metadata(metadata, table), outputs=only)
        assert [o["name"] for o in result.get_response()["outputs"]] == ["predict_proba"]

        member = np.array(["perhaps", "true", "false"], dtype=np.object_)
        refused = refusal(client, metadata, table, name="member", datatype="BYTES", column=member)
        assert refused.status() == "400"
        assert "input 'member', element 0" in refused.message()
        assert "'perhaps'" in refused.message()
        gap = np.array([30.0, np.nan, 50.0])  # NaN: missing, and spend never was in training
        refused = refusal(client, metadata, table, name="spend", datatype="FP64", column=gap)
        assert "input 'spend', element 1: not a finite number" in refused.message()

        with pytest.raises(InferenceServerException) as unknown:
            client.get_model_metadata(MODEL_NAME)
        assert unknown.value.status() == "404"
    finally:
        client.close()
