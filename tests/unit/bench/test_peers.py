"""bench/peers.py's pure parts: the bodies it sends the peers, how it reads their answers, the
targets of issue 19 and the summary rows the suite writes from its JSON.

The Open Inference Protocol body is checked against selfheal's own OIP route (a real app, in
process): the bytes the benchmark sends MLServer must be a valid request answering what /predict
answers for the same rows. That MLServer and BentoML accept theirs is checked by the benchmark
itself, which refuses to measure an app whose answers differ from selfheal's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.peers import answers, bentoml_body, gap_text, oip_body, records
from bench.suite_rows import rows_peers, summarise_peers
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.schema import Schema
from service.app import create_app
from service.model_store import ModelStore
from service.settings import ServiceSettings
from tests.unit.service.conftest import TestClient  # imported there with its warning muted
from tests.unit.service.mixed import fit_mixed, register_mixed

ROWS: list[dict[str, Any]] = [
    {"color": "c3", "age": 40.0, "member": True, "size": "M", "visits": 2.5},
    {"color": None, "age": 61.0, "member": False, "size": "3", "visits": 7.0},  # a text gap
    {"color": "c7", "age": 33.0, "member": True, "size": "L", "visits": 0.5},
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, Schema]:
    """selfheal's app serving a multiclass model of a mixed schema (shop, classes low/mid/high)."""
    mixed = fit_mixed("multiclass")
    registry = ModelRegistry(tmp_path_factory.mktemp("shop"))
    store = ModelStore()
    store.load(registry, register_mixed(registry, mixed))
    return TestClient(create_app(ServiceSettings(worker_id=1), store, registry)), mixed.schema


def test_the_oip_body_answers_on_selfheals_oip_route_what_predict_answers(
    shop: tuple[TestClient, Schema],
) -> None:
    client, schema = shop
    predicted = client.post("/predict", json={"instances": ROWS})
    inferred = client.post(
        f"/v2/models/{schema.name}/infer",
        content=oip_body(ROWS, schema),
        headers={"Content-Type": "application/json"},
    )
    assert predicted.status_code == 200, predicted.text
    assert inferred.status_code == 200, inferred.text
    _, ours = answers("selfheal", predicted.json(), len(ROWS))
    _, theirs = answers("selfheal OIP", inferred.json(), len(ROWS))
    assert ours.shape == (3, 3)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-12)
    # columns in sorted class order (scikit-learn's classes_), whatever order selfheal answers in
    document = predicted.json()
    column = document["classes"].index("high")
    np.testing.assert_allclose(ours[:, 0], np.asarray(document["probabilities"])[:, column])


def test_the_oip_body_of_a_mixed_schema_is_one_tensor_per_column() -> None:
    schema = fit_mixed("multiclass").schema
    document = json.loads(oip_body(ROWS, schema))
    assert document["parameters"] == {"content_type": "pd"}
    assert document["outputs"] == [{"name": "predict_proba"}]
    tensors = {t["name"]: t for t in document["inputs"]}
    assert list(tensors) == list(schema.features)
    assert tensors["age"] == {"name": "age", "shape": [3], "datatype": "FP64", "data": [40, 61, 33]}
    assert tensors["color"]["data"] == ["c3", "?", "c7"]  # a gap is "?", the data's own mark
    assert tensors["color"]["parameters"] == {"content_type": "str"}


def test_an_all_numeric_schema_is_one_fp64_matrix_and_asks_no_output() -> None:
    schema = Schema.california()
    row = dict.fromkeys(schema.features, 1.5)
    document = json.loads(oip_body([row, row], schema))
    assert "outputs" not in document
    (tensor,) = document["inputs"]
    assert tensor["shape"] == [2, len(schema.features)]
    assert tensor["datatype"] == "FP64"
    assert tensor["data"] == [1.5] * (2 * len(schema.features))


def test_the_bentoml_body_is_rows_in_feature_order() -> None:
    schema = fit_mixed("multiclass").schema
    body = json.loads(bentoml_body(ROWS[:2], schema))
    assert body == {"rows": [["c3", 40.0, True, "M", 2.5], ["?", 61.0, False, "3", 7.0]]}


def test_a_missing_number_has_no_peer_body() -> None:
    with pytest.raises(RuntimeError, match="missing number in column 'age'"):
        gap_text(None, "age", numeric=True)
    assert gap_text(None, "color", numeric=False) == "?"
    assert gap_text(0.0, "age", numeric=True) == 0.0


def test_answers_read_each_apps_shape() -> None:
    values, proba = answers("selfheal", {"predictions": [1.0, 2.0]}, 2)
    assert proba is None
    np.testing.assert_array_equal(values, [1.0, 2.0])
    mlserver = {"outputs": [{"name": "predict_proba", "data": [0.25, 0.75, 0.5, 0.5]}]}
    _, proba = answers("mlserver", mlserver, 2)
    np.testing.assert_array_equal(proba, [[0.25, 0.75], [0.5, 0.5]])
    values, proba = answers("bentoml", [3.0, 4.0], 2)
    assert proba is None
    np.testing.assert_array_equal(values, [3.0, 4.0])
    _, proba = answers("bentoml", [[0.1, 0.9]], 1)
    np.testing.assert_array_equal(proba, [[0.1, 0.9]])


def test_records_are_the_rows_of_selfheals_two_bodies() -> None:
    bodies = {
        "single": json.dumps(ROWS[0]).encode(),
        "batch": json.dumps({"instances": ROWS}).encode(),
    }
    assert records(bodies) == {"single": [ROWS[0]], "batch": ROWS}


def stats(requests_s: float, p99_ms: float = 5.0, rows: int = 1) -> dict[str, float]:
    return {
        "requests_s": requests_s,
        "rows_s": requests_s * rows,
        "p50_ms": p99_ms / 2,
        "p99_ms": p99_ms,
        "errors": 0,
    }


MEDIANS = {
    "single-c1/selfheal": stats(1000, 1.0),
    "single-c1/mlserver": stats(100, 20.0),
    "single-c1/bentoml": stats(50, 30.0),
    "single-c1/ceiling": stats(4000, 0.5),
    "single-c16/selfheal": stats(6000, 9.5),
    "single-c16/selfheal OIP": stats(5000, 9.9),
    "single-c16/mlserver": stats(2100, 40.0),  # 6000 / 2100 = 2.86: under 3x
    "single-c16/bentoml": stats(500, 60.0),
    "single-c16/ceiling": stats(11000, 4.0),  # 6000 / 11000 = 0.55: over half
    "batch-c16/selfheal": stats(90, 300.0, 1000),
    "batch-c16/mlserver": stats(100, 200.0, 1000),  # slower than MLServer here
    "batch-c16/bentoml": stats(60, 400.0, 1000),
}


def test_the_targets_of_issue_19_are_judged_from_the_medians() -> None:
    judged = {r["row"]: r for r in rows_peers(summarise_peers({"medians": MEDIANS}))}
    ceiling = "throughput, selfheal / the ceiling (a no-work route, same stack)"
    faster = judged["1 row, c=16: throughput, selfheal / MLServer"]  # the faster peer
    assert faster["ratio"] == pytest.approx(6000 / 2100)
    assert faster["met"] is False
    assert judged["1 row, c=16: selfheal's p99"]["met"] is True
    assert judged[f"1 row, c=16: {ceiling}"]["met"] is True
    assert judged[f"1 row, c=1: {ceiling}"]["met"] is None  # shown, no target
    assert judged["1000 rows, c=16: throughput, selfheal / MLServer"]["met"] is False
    assert judged["1000 rows, c=16: throughput, selfheal / BentoML"]["met"] is True
    assert not any(name.startswith("1000 rows, c=1:") for name in judged)  # not run


def raw_document() -> dict[str, Any]:
    kill = {
        "replaced_s": 0.05,
        "client_requests": 300,
        "client_failed": 0,
        "client_longest_s": 0.02,
    }
    return {
        "model": "california",
        "duration_s": 4,
        "runs_per_scenario": 3,
        "medians": MEDIANS,
        "cold_start_s": {"selfheal": [3.0, 3.5, 4.0], "mlserver": [5.0, 6.0, 7.0]},
        "memory_idle": {
            "selfheal": {"tree_pss_mib": 400.0, "processes": 4},
            "mlserver": {"tree_pss_mib": 500.0, "processes": 4},
        },
        "recovery": {
            "selfheal": [kill, kill],
            "mlserver": [{**kill, "client_failed": 1}, {**kill, "replaced_s": None}],
        },
        "versions": {"mlserver": "1.7.1", "bentoml": "1.4.40", "scikit-learn": "1.9.1"},
    }


def test_the_suite_rows_carry_each_target_and_the_side_by_side_figures() -> None:
    summary = summarise_peers(raw_document())
    assert summary["versions"] == {"mlserver": "1.7.1", "bentoml": "1.4.40"}
    assert summary["recovery"]["mlserver"]["not_replaced"] == 1
    rows = {r["row"]: r for r in rows_peers(summary, "peers_adult")}
    assert all(r["part"] == "peers_adult" for r in rows.values())
    c16 = rows["1 row, c=16: throughput, selfheal / MLServer"]
    assert (c16["target"], c16["met"]) == (">= 3", False)
    assert rows["1 row, c=16: throughput, selfheal / BentoML"]["met"] is True
    assert rows["1 row, c=1: throughput, selfheal / MLServer"]["target"] == ">= 1"
    assert rows["1000 rows, c=16: throughput, selfheal / MLServer"]["met"] is False
    ceiling = rows["1 row, c=16: throughput, selfheal / the ceiling (a no-work route, same stack)"]
    assert ceiling["met"] is True
    assert rows["1 row, c=16: selfheal's p99"]["met"] is True
    oip = rows["1 row, c=16: throughput, selfheal's OIP route / MLServer (the same body bytes)"]
    assert oip["ratio"] == pytest.approx(5000 / 2100)
    assert oip["met"] is None
    cost = rows["1 row, c=1: what selfheal's request path costs on top of the no-work route (p50)"]
    assert "+250 us" in cost["selfheal"]  # p50 0.5 ms against 0.25 ms
    cold = rows["cold start (spawn to the first 200 of a prediction), selfheal / MLServer"]
    assert cold["ratio"] == pytest.approx(3.5 / 6.0)
    kill = rows[
        "`kill -9` of a worker under a client (a request every 10 ms), selfheal / MLServer: "
        "failed requests"
    ]
    assert kill["ratio"] == 0.0
    assert "1 not replaced in 30 s" in kill["baseline"]
    assert not any("BentoML" in name and "cold start" in name for name in rows)  # not measured


def test_a_failed_run_summarises_to_no_rows(tmp_path: Path) -> None:
    summary = summarise_peers({"failure": "mlserver exited", "medians": {}})
    assert summary["failure"] == "mlserver exited"
    assert rows_peers(summary) == []


def test_a_profile_sample_goes_to_the_first_bucket_its_stack_matches() -> None:
    from bench.profile_worker import bucket

    thread = "thread (1): MainThread"
    app = "Route.handle (starlette/routing.py:289)"
    assert bucket([thread, app, "decode_json (service/validation.py:220)", "loads (json)"]) == (
        "JSON decode"
    )
    assert bucket([thread, app, "parse_columns (service/validation.py:309)"]) == "validation"
    send = "RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:522)"
    assert bucket([thread, app, send]) == "HTTP (uvicorn)"
    predict = "TreePredictor.predict (sklearn/ensemble/_hist_gradient_boosting/predictor.py:74)"
    worker = "_worker (concurrent/futures/thread.py:83)"
    assert bucket(["thread (2): predict_0", worker, predict]) == "model: scikit-learn"
    idle = "_worker (concurrent/futures/thread.py:81)"
    assert bucket(["thread (2): predict_0", idle]) == "waiting"
    assert bucket([thread, "Runner.run (asyncio/runners.py:118)"]) == "waiting"


def test_a_profile_tally_shares_the_samples_out(tmp_path: Path) -> None:
    from bench.profile_worker import tally

    raw = tmp_path / "worker.txt"
    predict = "t;_worker (concurrent/futures/thread.py:83);predict (sklearn/x.py:1)"
    raw.write_text(f"{predict} 30\nt;Runner.run (asyncio/runners.py:118) 10\nbroken\n")
    result = tally([raw])
    assert result["samples"] == 40
    assert result["buckets"]["model: scikit-learn"] == {
        "samples": 30,
        "share": 0.75,
        "busy_share": 1.0,
        "top_leaves": ["predict (sklearn/x.py:1)"],
    }
    assert result["buckets"]["waiting"]["busy_share"] is None
