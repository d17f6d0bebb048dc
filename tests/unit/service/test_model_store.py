"""ModelStore: verified load, schema check, smoke test, atomic swap; the old model stays when a load
fails."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from selfheal_daemon.errors import ChecksumMismatchError, VersionNotFoundError
from selfheal_daemon.model.registry import MODEL_FILE, ModelRegistry
from selfheal_daemon.model.schema import UNSEEN, Column, Schema
from service.compiled import FastPredictor
from service.model_store import (
    PROBE_ROW,
    ModelStore,
    SchemaBreakError,
    SmokeTestError,
    probe_matrix,
    probe_row,
    smoke_test,
)
from service.validation import RowParser, parse_predict_body
from tests.unit.service.conftest import Trained, california_pipeline, register
from tests.unit.service.fakes import (
    BadProbabilityClassifier,
    ConstantModel,
    FakeSource,
    NanModel,
    RaisingModel,
    StrangerClassifier,
    WrongShapeModel,
    loaded,
)
from tests.unit.service.mixed import fit_mixed, mixed_schema, register_mixed


def register_fake(registry: ModelRegistry, model: Any) -> str:
    """Register a fake model as the next version (pickled by reference like a real one)."""
    return registry.register(
        model,
        metrics={"r2": 0.1},
        reference=np.zeros((1, 8)),
        data_fingerprint="fake",
        data_rows=1,
        parent="v1",
        origin="test",
    )


def test_new_store_serves_nothing(store: ModelStore) -> None:
    """Before any load the store has no model and is not ready."""
    assert store.current() is None
    assert not store.ready
    assert store.last_error is None


def test_load_serves_the_verified_version(store: ModelStore, registry: ModelRegistry) -> None:
    """A successful load serves that version with the sha256 recorded in meta.json."""
    served = store.load(registry, "v1")
    assert store.current() is served
    assert store.ready
    assert served.version == "v1"
    assert served.sha256 == registry.info("v1").meta["sha256"]
    assert served.metrics == {"r2": 0.7, "mae": 0.45}


def test_probe_row_gets_a_plausible_price_from_the_real_model(trained: Trained) -> None:
    """The smoke-test probe (each feature at the middle of its training range) gets a house value
    within the range of the training targets."""
    answer = smoke_test(loaded("v1", trained.model, trained.schema))
    assert trained.target.min() <= answer.values[0] <= trained.target.max()
    assert answer.proba is None
    probe = probe_matrix(trained.schema)
    assert probe.shape == (1, 8)
    low, high = trained.schema.columns[0].low, trained.schema.columns[0].high
    assert low is not None
    assert high is not None
    assert probe[0, 0] == (low + high) / 2


def test_probe_of_a_mixed_schema_takes_each_columns_first_category() -> None:
    """The probe of a mixed schema: numeric midpoints, each categorical and boolean column's
    first category; as a request body, the category's text and ``false``."""
    schema = mixed_schema("binary")
    assert probe_matrix(schema).tolist() == [[0.0, 54.0, 0.0, 0.0, 5.0]]
    assert probe_row(schema) == {
        "color": "c0",
        "age": 54.0,
        "member": False,
        "size": "S",
        "visits": 5.0,
    }
    parsed = parse_predict_body(json.dumps(probe_row(schema)).encode(), 1, RowParser(schema))
    np.testing.assert_array_equal(parsed, probe_matrix(schema))
    unknown = Schema("u", "regression", "y", (Column("x", "numeric"), Column("c", "categorical")))
    assert probe_matrix(unknown).tolist() == [[0.0, UNSEEN]]


def test_tampered_artifact_is_refused_and_old_model_kept(
    loaded_store: ModelStore, registry: ModelRegistry, trained: Trained
) -> None:
    """A version whose model.joblib changed after registration raises and v1 keeps serving."""
    version = register(registry, trained)
    artifact = registry.root / version / MODEL_FILE
    blob = bytearray(artifact.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    artifact.write_bytes(bytes(blob))
    with pytest.raises(ChecksumMismatchError):
        loaded_store.load(registry, version)
    current = loaded_store.current()
    assert current is not None
    assert current.version == "v1"
    assert loaded_store.ready
    assert loaded_store.last_error is not None
    assert "ChecksumMismatchError" in loaded_store.last_error


def test_unknown_version_is_refused_and_old_model_kept(
    loaded_store: ModelStore, registry: ModelRegistry
) -> None:
    """Loading a version the registry does not have raises and keeps the served model."""
    with pytest.raises(VersionNotFoundError):
        loaded_store.load(registry, "v9")
    current = loaded_store.current()
    assert current is not None
    assert current.version == "v1"


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        pytest.param(NanModel(), "not a finite number", id="nan-output"),
        pytest.param(RaisingModel(), "AttributeError", id="predict-raises"),
        pytest.param(WrongShapeModel(), "shape", id="wrong-shape"),
    ],
)
def test_model_failing_smoke_test_is_refused_and_old_model_kept(
    loaded_store: ModelStore, registry: ModelRegistry, model: Any, reason: str
) -> None:
    """A model that cannot predict one finite number for the probe row is never served."""
    version = register_fake(registry, model)
    with pytest.raises(SmokeTestError, match=reason):
        loaded_store.load(registry, version)
    current = loaded_store.current()
    assert current is not None
    assert current.version == "v1"


def test_successful_swap_replaces_model_and_clears_last_error(
    loaded_store: ModelStore, registry: ModelRegistry
) -> None:
    """After a failed load, a good one is served and the failure is forgotten."""
    with pytest.raises(VersionNotFoundError):
        loaded_store.load(registry, "v9")
    version = register_fake(registry, ConstantModel(2.5))
    loaded_store.load(registry, version)
    current = loaded_store.current()
    assert current is not None
    assert current.version == version
    assert current.predictor.answer(probe_matrix(current.schema)).values.tolist() == [2.5]
    assert loaded_store.last_error is None


def test_old_model_answers_while_new_one_loads() -> None:
    """During a slow load, readers still get the old model; the new one appears only when ready."""
    store = ModelStore()
    source = FakeSource({"v1": ConstantModel(1.0), "v2": ConstantModel(2.0)})
    store.load(source, "v1")
    gate = source.hold()
    source.entered.clear()
    loader = threading.Thread(target=store.load, args=(source, "v2"))
    loader.start()
    try:
        assert source.entered.wait(timeout=10)
        snapshot = store.current()
        assert snapshot is not None
        assert snapshot.version == "v1"
    finally:
        gate.set()
        loader.join(timeout=10)
    assert not loader.is_alive()
    current = store.current()
    assert current is not None
    assert current.version == "v2"
    old = snapshot.predictor.answer(probe_matrix(snapshot.schema))  # old snapshot still usable
    assert old.values.tolist() == [1.0]


def test_bench_row_is_a_request_the_default_model_takes() -> None:
    """bench/harness.py keeps a stdlib-only request row for the bundled model; it must stay one
    the default schema accepts, with the same features as PROBE_ROW."""
    import ast
    from pathlib import Path

    source = (Path(__file__).resolve().parents[3] / "bench" / "harness.py").read_text()
    tree = ast.parse(source)
    (row,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "ROW" for t in node.targets)
    ]
    assert list(row) == list(PROBE_ROW)
    parser = RowParser(Schema.california())
    assert parse_predict_body(json.dumps(row).encode(), 1, parser).shape == (1, 8)


# ----- classifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        pytest.param(BadProbabilityClassifier(), "invalid probabilities", id="proba-sum"),
        pytest.param(StrangerClassifier(), "not one of its schema's classes", id="stranger"),
    ],
)
def test_a_classifier_must_answer_a_known_class_and_valid_probabilities(
    model: Any, reason: str
) -> None:
    """A classifier whose probe answer is a class outside its schema, or whose probabilities do
    not sum to 1, is never served."""
    store = ModelStore()
    source = FakeSource({"v1": model}, schemas={"v1": mixed_schema("binary")})
    with pytest.raises(SmokeTestError, match=reason):
        store.load(source, "v1")
    assert store.current() is None


def test_a_real_classifier_is_served_with_its_probabilities(tmp_path: Any) -> None:
    """The trainer's pipeline of a multiclass mixed schema loads, passes the probe with valid
    probabilities, and gets the fast path."""
    registry = ModelRegistry(tmp_path / "registry")
    version = register_mixed(registry, fit_mixed("multiclass"))
    store = ModelStore()
    served = store.load(registry, version)
    assert served.schema.classes == ("low", "mid", "high")
    assert isinstance(served.predictor, FastPredictor)
    answer = smoke_test(served.loaded, served.predictor)
    assert answer.proba is not None
    assert answer.proba.shape == (1, 3)
    assert answer.proba.sum() == pytest.approx(1.0)


# ----- schemas --------------------------------------------------------------------------------


def test_a_version_whose_schema_breaks_clients_is_refused(loaded_store: ModelStore) -> None:
    """Swapping in a version whose schema old clients would break on (other features, another
    task) raises SchemaBreakError naming why, and the served version stays."""
    source = FakeSource({"v2": ConstantModel(1.0)}, schemas={"v2": mixed_schema("regression")})
    with pytest.raises(SchemaBreakError) as refused:
        loaded_store.load(source, "v2")
    assert "model version v2 would break clients of v1" in str(refused.value)
    assert "feature 'MedInc' is no longer taken" in str(refused.value)
    current = loaded_store.current()
    assert current is not None
    assert current.version == "v1"
    assert loaded_store.last_error is not None
    assert "SchemaBreakError" in loaded_store.last_error


def test_a_compatible_schema_change_is_served() -> None:
    """A new category (and a column that now accepts missing values) breaks no client: the swap
    happens and the new version's rows are read by its own schema."""
    before = mixed_schema("regression")
    features = [dict(f) for f in before.to_dict()["features"]]
    features[3]["categories"] = [*features[3]["categories"], "XL"]
    features[4]["missing"] = True
    after = Schema.from_dict({**before.to_dict(), "features": features})
    assert before.breaks(after) == []
    store = ModelStore()
    source = FakeSource(
        {"v1": ConstantModel(1.0), "v2": ConstantModel(2.0)}, schemas={"v1": before, "v2": after}
    )
    store.load(source, "v1")
    served = store.load(source, "v2")
    row = {"color": "c1", "age": 30, "member": True, "size": "XL", "visits": None}
    parsed = parse_predict_body(json.dumps(row).encode(), 1, served.rows)
    assert parsed[0, 3] == 4.0
    assert np.isnan(parsed[0, 4])


def test_a_version_from_before_schemas_is_the_california_regression(
    tmp_path: Any, trained: Trained
) -> None:
    """A version whose meta.json has no schema, its model fitted on a bare array, is served as
    the California regression, fast path included, answering what its predict answers."""
    legacy = california_pipeline()
    with threadpool_limits(limits=1, user_api="openmp"):
        legacy.fit(trained.features, trained.target)
    registry = ModelRegistry(tmp_path / "registry")
    version = registry.register(
        legacy,
        metrics={"r2": 0.7},
        reference=trained.features[:100],
        data_fingerprint="old",
        data_rows=len(trained.features),
        parent=None,
        origin="before schemas",
    )
    assert "schema" not in registry.info(version).meta
    served = ModelStore().load(registry, version)
    assert served.schema == Schema.california()
    assert isinstance(served.predictor, FastPredictor)
    rows = trained.features[:40]  # past the fast path's batch size: the model itself
    np.testing.assert_array_equal(served.predictor.answer(rows).values, legacy.predict(rows))
    np.testing.assert_array_equal(
        served.predictor.answer(rows[:3]).values, legacy.predict(rows[:3])
    )
