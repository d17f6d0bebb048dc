"""The first start trains and registers a model; later ones reuse it or heal a damaged registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfheal_daemon.config import Config, parse_config
from selfheal_daemon.errors import TrainingError
from selfheal_daemon.model.bootstrap import ensure_model
from selfheal_daemon.model.registry import ModelRegistry


def _cfg(tmp_path: Path, **training: object) -> Config:
    return parse_config(
        {
            "state_dir": str(tmp_path / "state"),
            "training": {"max_iter": 20, "learning_rate": 0.3, "reference_rows": 200, **training},
        },
        tmp_path / "config.toml",
    )


def _tamper(registry: ModelRegistry, version: str) -> None:
    path = registry.root / version / "model.joblib"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")


def test_empty_state_trains_and_sets_both_aliases(tmp_path: Path) -> None:
    """On an empty state dir the bundled data trains v1, which becomes current and last_good."""
    cfg = _cfg(tmp_path)
    registry = ModelRegistry(cfg.registry_dir)
    messages: list[str] = []
    assert ensure_model(cfg, registry, messages.append) == "v1"
    assert registry.alias("current") == registry.alias("last_good") == "v1"
    assert registry.info("v1").meta["origin"] == "bootstrap: bundled California housing data"
    assert any("training the first one" in m for m in messages)


def test_second_start_reuses_the_model(tmp_path: Path) -> None:
    """A second start trains nothing and serves the same version."""
    cfg = _cfg(tmp_path)
    registry = ModelRegistry(cfg.registry_dir)
    ensure_model(cfg, registry, lambda _m: None)
    messages: list[str] = []
    assert ensure_model(cfg, registry, messages.append) == "v1"
    assert messages == []
    assert registry.versions() == ["v1"]


def test_damaged_current_falls_back_to_last_good(tmp_path: Path) -> None:
    """If current fails its checksum, last_good is served and current is pointed back at it."""
    cfg = _cfg(tmp_path)
    registry = ModelRegistry(cfg.registry_dir)
    ensure_model(cfg, registry, lambda _m: None)
    v1 = registry.load("v1")
    v2 = registry.register(
        v1.model,
        metrics=v1.metrics,
        reference=registry.load_reference("v1"),
        data_fingerprint="x",
        data_rows=1,
        parent="v1",
        origin="test",
    )
    registry.set_alias("current", v2)
    _tamper(registry, v2)
    assert ensure_model(cfg, registry, lambda _m: None) == "v1"
    assert registry.alias("current") == "v1"


def test_no_valid_version_trains_a_fresh_one(tmp_path: Path) -> None:
    """With every aliased version damaged, a new model is trained, and its origin says why."""
    cfg = _cfg(tmp_path)
    registry = ModelRegistry(cfg.registry_dir)
    ensure_model(cfg, registry, lambda _m: None)
    _tamper(registry, "v1")
    assert ensure_model(cfg, registry, lambda _m: None) == "v2"
    meta = registry.info("v2").meta
    assert "no valid version" in meta["origin"]
    assert meta["parent"] == "v1"


def test_user_data_file_is_trained_on(tmp_path: Path) -> None:
    """training.data names a CSV in raw census form, which trains the first model."""
    from selfheal_daemon.model.features import load_bundled_raw

    data = tmp_path / "mine.csv"
    load_bundled_raw().sample(n=4000, random_state=1).to_csv(data, index=False)
    cfg = _cfg(tmp_path, data="mine.csv")
    registry = ModelRegistry(cfg.registry_dir)
    ensure_model(cfg, registry, lambda _m: None)
    meta = registry.info("v1").meta
    assert meta["data_rows"] == 4000
    assert str(data) in meta["origin"]


def test_a_first_model_below_the_gate_is_not_served(tmp_path: Path) -> None:
    """An impossible gate stops the start with TrainingError and leaves no alias behind."""
    cfg = parse_config(
        {"state_dir": str(tmp_path / "s"), "gate": {"min_r2": 0.99}, "training": {"max_iter": 10}},
        tmp_path / "c.toml",
    )
    registry = ModelRegistry(cfg.registry_dir)
    with pytest.raises(TrainingError):
        ensure_model(cfg, registry, lambda _m: None)
    assert registry.alias("current") is None
