"""The model registry: atomic versions and aliases, and checksums that refuse tampered artifacts."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.errors import (
    ChecksumMismatchError,
    InvalidVersionName,
    RegistryError,
    VersionNotFoundError,
)
from selfheal_daemon.model.registry import ModelRegistry, validate_version
from tests.training import probe_rows


def test_register_writes_complete_version_with_meta(registered: tuple[ModelRegistry, str]) -> None:
    """A registered version has the model, the reference sample, and meta.json with both hashes."""
    registry, version = registered
    assert version == "v1"
    meta = registry.info(version).meta
    for key in (
        "sha256",
        "reference_sha256",
        "metrics",
        "data_fingerprint",
        "data_rows",
        "parent",
        "created_at",
        "origin",
        "features",
        "target",
    ):
        assert key in meta, key
    assert set(meta["metrics"]) == {"r2", "mae", "rmse"}
    assert meta["created_at"].endswith("+00:00")
    assert registry.verify_version(version).ok


def test_versions_are_numbered_in_order(registered: tuple[ModelRegistry, str]) -> None:
    """Each registration takes the next number; the list is oldest first."""
    registry, v1 = registered
    loaded = registry.load(v1)
    v2 = registry.register(
        loaded.model,
        metrics={"r2": 0.9},
        reference=np.zeros((3, 8)),
        data_fingerprint="x",
        data_rows=3,
        parent=v1,
        origin="test",
    )
    assert (v1, v2) == ("v1", "v2")
    assert registry.versions() == ["v1", "v2"]
    assert registry.info(v2).meta["parent"] == "v1"


def test_concurrent_registrations_never_share_a_name(registered: tuple[ModelRegistry, str]) -> None:
    """Writers racing to publish get distinct version names and complete directories."""
    registry, v1 = registered
    model = registry.load(v1).model
    names: list[str] = []

    def publish() -> None:
        names.append(
            registry.register(
                model,
                metrics={},
                reference=np.zeros((2, 8)),
                data_fingerprint="x",
                data_rows=2,
                parent=None,
                origin="race",
            )
        )

    threads = [threading.Thread(target=publish) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 6
    assert all(r.ok for r in registry.verify())


def test_load_returns_a_working_model(
    registered: tuple[ModelRegistry, str], small_frame: pd.DataFrame
) -> None:
    """A verified load gives a model that predicts finite values for real rows."""
    registry, version = registered
    loaded = registry.load(version)
    assert loaded.sha256 == registry.info(version).meta["sha256"]
    assert np.all(np.isfinite(loaded.schema.predict(loaded.model, probe_rows(small_frame))))


def test_tampered_model_is_refused_without_unpickling(
    registered: tuple[ModelRegistry, str],
) -> None:
    """A model file whose bytes changed fails its checksum and is never handed to joblib."""
    registry, version = registered
    path = registry.root / version / "model.joblib"
    # A payload that would run code if unpickled: the checksum must stop it first.
    path.write_bytes(b"cos\nsystem\n(S'touch /tmp/selfheal-pwned'\ntR.")
    with pytest.raises(ChecksumMismatchError, match="refusing to load model version v1"):
        registry.load(version)
    assert not Path("/tmp/selfheal-pwned").exists()
    result = registry.verify_version(version)
    assert not result.ok
    assert "model.joblib" in result.problem


def test_tampered_reference_fails_verify(registered: tuple[ModelRegistry, str]) -> None:
    """verify re-hashes the reference sample too."""
    registry, version = registered
    ref = registry.root / version / "reference.npz"
    ref.write_bytes(ref.read_bytes() + b"x")
    assert "reference.npz" in registry.verify_version(version).problem
    with pytest.raises(ChecksumMismatchError):
        registry.load_reference(version)


def test_reference_sample_round_trips(registered: tuple[ModelRegistry, str]) -> None:
    """The reference sample comes back with its rows and the eight feature columns."""
    registry, version = registered
    sample = registry.load_reference(version)
    assert sample.shape == (200, 8)


def test_missing_model_file_fails_verify(registered: tuple[ModelRegistry, str]) -> None:
    """A version whose artifact vanished is reported, not crashed on."""
    registry, version = registered
    (registry.root / version / "model.joblib").unlink()
    assert registry.verify_version(version).problem == "model.joblib is missing"


def test_aliases_are_set_atomically_and_read_back(registered: tuple[ModelRegistry, str]) -> None:
    """An alias names a version; no temp file is left beside it."""
    registry, version = registered
    assert registry.alias("current") is None
    registry.set_alias("current", version)
    assert registry.alias("current") == version
    assert not [p for p in registry.root.iterdir() if p.name.startswith(".current")]


def test_alias_to_missing_version_is_refused(registered: tuple[ModelRegistry, str]) -> None:
    """An alias can only point at a version that exists."""
    registry, _ = registered
    with pytest.raises(VersionNotFoundError):
        registry.set_alias("current", "v9")
    with pytest.raises(RegistryError, match="unknown alias"):
        registry.set_alias("best", "v1")


def test_corrupt_alias_file_is_an_error_not_a_path(registered: tuple[ModelRegistry, str]) -> None:
    """An alias file holding a path-like value is reported as corrupt."""
    registry, _ = registered
    (registry.root / "current").write_text("../../etc\n")
    with pytest.raises(RegistryError, match="alias current is corrupt"):
        registry.alias("current")


@pytest.mark.parametrize(
    "name", ["../v1", "v1/..", "v0", "v01", "1", "v1 ", "", "current", "v1/model.joblib", "/etc"]
)
def test_version_names_that_could_escape_are_refused(name: str) -> None:
    """Only v<number> names reach the filesystem."""
    with pytest.raises(InvalidVersionName):
        validate_version(name)


def test_refusal_of_a_huge_name_is_short_and_names_it() -> None:
    """A 100 kB version name is refused with a one-line message that shows its start, not all
    of it (found by tests/chaos/test_abuse_api.py: the whole name came back in the 422)."""
    with pytest.raises(InvalidVersionName) as info:
        validate_version("../" * 40_000)
    assert len(str(info.value)) < 120
    assert "invalid model version '../../" in str(info.value)


def test_info_of_traversal_name_is_refused(registered: tuple[ModelRegistry, str]) -> None:
    """Reading meta of a traversal name never touches a path outside the registry."""
    registry, _ = registered
    with pytest.raises(InvalidVersionName):
        registry.info("../../etc/passwd")


def test_staging_leftovers_are_invisible_and_cleaned(registered: tuple[ModelRegistry, str]) -> None:
    """A half-written version (a writer killed mid-way) is not listed and is removed at cleanup."""
    registry, _ = registered
    leftover = registry.root / ".staging-deadbeef"
    leftover.mkdir()
    (leftover / "model.joblib").write_bytes(b"partial")
    assert registry.versions() == ["v1"]
    assert registry.cleanup_staging() == [".staging-deadbeef"]
    assert not leftover.exists()


def test_failed_register_leaves_nothing(registry: ModelRegistry) -> None:
    """A model that cannot be pickled leaves no version and no staging directory."""
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever pickle raises for a lambda
        registry.register(
            lambda x: x,
            metrics={},
            reference=np.zeros((1, 8)),
            data_fingerprint="",
            data_rows=0,
            parent=None,
            origin="test",
        )
    assert registry.versions() == []
    assert list(registry.root.iterdir()) == []


def test_meta_is_plain_json(registered: tuple[ModelRegistry, str]) -> None:
    """meta.json is readable by any tool, not just ours."""
    registry, version = registered
    meta = json.loads((registry.root / version / "meta.json").read_text())
    assert meta["version"] == version
