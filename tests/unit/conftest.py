"""Fixtures for the unit tests: the bundled data, a tiny trained model, a registry holding it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from selfheal_daemon.config import GateConfig
from selfheal_daemon.model.features import load_dataset
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.training import train_and_register
from tests.training import FAST_TRAINING


@pytest.fixture(scope="session")
def housing() -> pd.DataFrame:
    """The bundled data set as features and target."""
    return load_dataset(None)


@pytest.fixture(scope="session")
def small_frame(housing: pd.DataFrame) -> pd.DataFrame:
    """3,000 rows of the bundled data: enough to clear the gate, quick to fit."""
    return housing.sample(n=3000, random_state=0).reset_index(drop=True)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


@pytest.fixture
def registered(registry: ModelRegistry, small_frame: pd.DataFrame) -> tuple[ModelRegistry, str]:
    """A registry with one trained version, not yet aliased."""
    version, _ = train_and_register(
        registry, small_frame, FAST_TRAINING, GateConfig(min_r2=0.5), origin="test", parent=None
    )
    return registry, version
