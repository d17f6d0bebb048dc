"""ModelStore: verified load, smoke test, atomic swap; the old model stays when a load fails."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from selfheal_daemon.errors import ChecksumMismatchError, VersionNotFoundError
from selfheal_daemon.model.registry import MODEL_FILE, ModelRegistry
from service.model_store import ModelStore, SmokeTestError, probe_matrix, smoke_test
from tests.unit.service.conftest import Trained, register
from tests.unit.service.fakes import (
    ConstantModel,
    FakeSource,
    NanModel,
    RaisingModel,
    WrongShapeModel,
    loaded,
)


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
    """The smoke-test probe (California medians) predicts a house value between $50k and $500k."""
    value = smoke_test(loaded("v1", trained.model))
    assert 0.5 < value < 5.0
    assert probe_matrix().shape == (1, 8)


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
    assert current.model.predict(probe_matrix()).tolist() == [2.5]
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
    assert snapshot.model.predict(probe_matrix()).tolist() == [1.0]  # old snapshot still usable


def test_bench_row_is_the_probe_row() -> None:
    """bench/harness.py keeps a stdlib-only copy of the probe row; it must not drift."""
    import ast
    from pathlib import Path

    from service.model_store import PROBE_ROW

    source = (Path(__file__).resolve().parents[3] / "bench" / "harness.py").read_text()
    tree = ast.parse(source)
    (row,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "ROW" for t in node.targets)
    ]
    assert row == PROBE_ROW
