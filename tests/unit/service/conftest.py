"""Fixtures for the model service: one small real model, fitted once, registered per test.

The California model is fitted as the trainer fits every model now: on ``schema.model_input`` (a
DataFrame), with its schema (bounds learned from the rows) in the version's meta.json. The models
of a mixed schema are in ``tests.unit.service.mixed``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.model.features import load_dataset
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.schema import Schema
from service.app import create_app
from service.model_store import ModelStore
from service.settings import ServiceSettings

with warnings.catch_warnings():
    # Starlette 1.x wants the httpx2 fork for its TestClient and warns once, at import, when it
    # finds plain httpx (what the project depends on). Scoped here so filterwarnings=error still
    # catches every other deprecation.
    warnings.filterwarnings("ignore", message=".*install `httpx2` instead", category=Warning)
    from fastapi.testclient import TestClient

TRAIN_ROWS = 2000


@dataclass(frozen=True)
class Trained:
    """A fitted pipeline, its schema, and the rows it was fitted on (FEATURES order, float64)."""

    model: Pipeline
    features: np.ndarray
    metrics: dict[str, float]
    schema: Schema
    target: np.ndarray


def california_pipeline() -> Pipeline:
    """The trainer's built-in pipeline of an all-numeric schema, small."""
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("model", HistGradientBoostingRegressor(max_iter=20, random_state=0)),
        ]
    )


@pytest.fixture(scope="session")
def trained() -> Trained:
    """A small California model, fitted once per session (a fraction of a second)."""
    frame = load_dataset(None).sample(n=TRAIN_ROWS, random_state=0)
    features = frame[list(FEATURES)].to_numpy(dtype=np.float64)
    target = frame[TARGET].to_numpy(dtype=np.float64)
    bounds = {
        name: (float(np.nanmin(features[:, j])), float(np.nanmax(features[:, j])))
        for j, name in enumerate(FEATURES)
    }
    schema = Schema.california(bounds)
    model = california_pipeline()
    # One OpenMP thread: on a busy 2-core machine libgomp's spin-waiting barriers made this
    # 0.05 s fit take ~60 s while other processes held the cores.
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(schema.model_input(features), target)
    return Trained(
        model=model,
        features=features,
        metrics={"r2": 0.7, "mae": 0.45},
        schema=schema,
        target=target,
    )


def register(registry: ModelRegistry, trained: Trained) -> str:
    """Register ``trained`` as the next version of ``registry``; returns the version name."""
    return registry.register(
        trained.model,
        metrics=trained.metrics,
        reference=trained.features[:200],
        data_fingerprint="test",
        data_rows=TRAIN_ROWS,
        parent=None,
        origin="test",
        extra={"schema": trained.schema.to_dict()},
    )


def predict_rows(trained: Trained, rows: np.ndarray) -> np.ndarray:
    """What the trained model answers for encoded ``rows``, asked as the service asks it."""
    return trained.schema.predict(trained.model, np.asarray(rows, dtype=np.float64))


@pytest.fixture
def registry(tmp_path: Path, trained: Trained) -> ModelRegistry:
    """A fresh registry of this test's own, holding the trained model as ``v1``."""
    reg = ModelRegistry(tmp_path / "registry")
    assert register(reg, trained) == "v1"
    return reg


@pytest.fixture
def store() -> ModelStore:
    """An empty model store: nothing served yet."""
    return ModelStore()


@pytest.fixture
def loaded_store(store: ModelStore, registry: ModelRegistry) -> ModelStore:
    """A store serving ``v1`` of ``registry``."""
    store.load(registry, "v1")
    return store


@pytest.fixture
def settings() -> ServiceSettings:
    """Default service settings with a recognisable worker id."""
    return ServiceSettings(worker_id=3)


@pytest.fixture
def client(settings: ServiceSettings, loaded_store: ModelStore) -> Iterator[TestClient]:
    """A test client of an app serving ``v1``."""
    with TestClient(create_app(settings, loaded_store)) as test_client:
        yield test_client
