"""The model registry: immutable versions on disk, and the ``current`` / ``last_good`` aliases.

Layout under ``<state_dir>/registry``::

    v1/model.joblib      the fitted scikit-learn pipeline
    v1/meta.json         sha256 of every artifact, metrics, data fingerprint, parent, origin, ...
    v1/reference.npz     the reference sample the drift monitor compares against (no pickle)
    v1/drift.npz         the reference summary for drift checks (bins, frequencies, sorted sample,
                         feature importance), computed once at training time (no pickle)
    current              text file naming the version the service serves
    last_good            text file naming the version to roll back to

A version is built in a hidden staging directory and published by one ``rename``, so a version
directory is either complete or absent. Aliases are replaced atomically (temp, fsync, rename). No
artifact is unpickled unless its sha256 matches ``meta.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import reprlib
import shutil
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from selfheal_daemon.errors import (
    ChecksumMismatchError,
    InvalidVersionName,
    RegistryError,
    VersionNotFoundError,
)
from selfheal_daemon.model.schema import Schema
from selfheal_daemon.system.files import (
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    sha256_file,
)

ALIASES = ("current", "last_good")
MODEL_FILE = "model.joblib"
META_FILE = "meta.json"
REFERENCE_FILE = "reference.npz"
_VERSION_RE = re.compile(r"^v([1-9][0-9]{0,8})$")
_STAGING_PREFIX = ".staging-"


def validate_version(name: str) -> str:
    """Return ``name`` if it is a registry version name (``v1`` .. ``v999999999``), else raise.

    This is the only gate between user input and a path: ``../x`` or ``v1/..`` never reach open().
    """
    if not isinstance(name, str) or not _VERSION_RE.fullmatch(name):
        shown = reprlib.repr(name)  # a 100 kB name is echoed in 30 characters, not 100 kB
        raise InvalidVersionName(f"invalid model version {shown}: expected v<number>, e.g. v3")
    return name


@dataclass(frozen=True)
class VersionInfo:
    """What ``meta.json`` says about one version."""

    version: str
    meta: dict[str, Any]

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.meta.get("metrics", {}))

    @property
    def created_at(self) -> str:
        return str(self.meta.get("created_at", ""))

    @property
    def schema(self) -> Schema:
        """The version's schema (the California regression's for a version from before schemas)."""
        return Schema.from_meta(self.meta)


@dataclass(frozen=True)
class LoadedModel:
    """A model that passed its checksum and was unpickled; it answers through ``schema``
    (``schema.predict(model, x)``)."""

    version: str
    sha256: str
    metrics: dict[str, float]
    model: Any
    schema: Schema = field(default_factory=Schema.california)


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-checking one version's artifacts."""

    version: str
    ok: bool
    problem: str = ""


class ModelRegistry:
    """Versions and aliases under one directory. Safe for one writer and any number of readers."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # ----- writing -------------------------------------------------------------------------
    def register(
        self,
        model: Any,
        *,
        metrics: dict[str, float],
        reference: np.ndarray,
        data_fingerprint: str,
        data_rows: int,
        parent: str | None,
        origin: str,
        extra: dict[str, Any] | None = None,
        artifacts: Mapping[str, Callable[[Path], None]] | None = None,
    ) -> str:
        """Write and atomically publish a new version; return its name. Aliases are not moved.

        ``artifacts`` maps more file names to functions that write them; their sha256 go into
        meta.json beside the model's, and ``verify`` re-checks them too.
        """
        for name in artifacts or {}:
            if name in (MODEL_FILE, META_FILE, REFERENCE_FILE) or "/" in name:
                raise RegistryError(f"artifact name {name!r} is reserved or not a file name")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            model_path = staging / MODEL_FILE
            joblib.dump(model, model_path)
            _fsync_file(model_path)
            ref_path = staging / REFERENCE_FILE
            with ref_path.open("wb") as fh:
                np.savez(fh, sample=np.asarray(reference, dtype="float64"))
                fh.flush()
                os.fsync(fh.fileno())
            hashes: dict[str, str] = {}
            for name, write in (artifacts or {}).items():
                write(staging / name)
                _fsync_file(staging / name)
                hashes[name] = sha256_file(staging / name)
            meta: dict[str, Any] = {
                "sha256": sha256_file(model_path),
                "reference_sha256": sha256_file(ref_path),
                "metrics": {k: float(v) for k, v in metrics.items()},
                "data_fingerprint": data_fingerprint,
                "data_rows": int(data_rows),
                "reference_rows": int(reference.shape[0]),
                "parent": parent,
                "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "origin": origin,
                "artifacts": hashes,
                **(extra or {}),
            }
            fsync_dir(staging)
            return self._publish(staging, meta)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _publish(self, staging: Path, meta: dict[str, Any]) -> str:
        """Rename the staging directory to the next free version name; retry if one is taken."""
        for _ in range(100):
            version = f"v{self._max_number() + 1}"
            meta["version"] = version
            atomic_write_json(staging / META_FILE, meta)
            try:
                os.rename(staging, self.root / version)
            except OSError as exc:  # another writer took the name: try the next one
                if (self.root / version).exists():
                    continue
                raise RegistryError(f"cannot publish {version}: {exc}") from exc
            fsync_dir(self.root)
            return version
        raise RegistryError("could not allocate a version name after 100 attempts")

    def set_alias(self, alias: str, version: str) -> None:
        """Point ``alias`` at an existing version, atomically."""
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}; aliases are {', '.join(ALIASES)}")
        self.info(version)  # raises if the version is absent or its meta unreadable
        atomic_write_text(self.root / alias, version + "\n")

    def cleanup_staging(self) -> list[str]:
        """Remove half-built versions left by a writer that died; returns what was removed."""
        removed = []
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.name.startswith(_STAGING_PREFIX) and entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry.name)
        return removed

    # ----- reading -------------------------------------------------------------------------
    def alias(self, alias: str) -> str | None:
        """The version an alias names, or None when the alias has never been set."""
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r}; aliases are {', '.join(ALIASES)}")
        try:
            text = (self.root / alias).read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return validate_version(text)
        except InvalidVersionName as exc:
            raise RegistryError(f"alias {alias} is corrupt: {exc}") from exc

    def versions(self) -> list[str]:
        """Every published version, oldest first."""
        if not self.root.is_dir():
            return []
        found = [
            e.name for e in self.root.iterdir() if e.is_dir() and _VERSION_RE.fullmatch(e.name)
        ]
        return sorted(found, key=lambda v: int(v[1:]))

    def info(self, version: str) -> VersionInfo:
        """Read one version's meta.json."""
        path = self._dir(version) / META_FILE
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise VersionNotFoundError(f"model version {version} is not in the registry") from exc
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path} is unreadable: {exc}") from exc
        return VersionInfo(version=version, meta=meta)

    def verify_version(self, version: str) -> VerifyResult:
        """Re-hash one version's artifacts against meta.json without unpickling anything."""
        try:
            meta = self.info(version).meta
        except RegistryError as exc:
            return VerifyResult(version, ok=False, problem=str(exc))
        expected = {MODEL_FILE: meta.get("sha256"), REFERENCE_FILE: meta.get("reference_sha256")}
        extra = meta.get("artifacts")
        if isinstance(extra, dict):
            expected.update({str(k): v for k, v in extra.items()})
        for file_name, digest in expected.items():
            path = self._dir(version) / file_name
            if not path.is_file():
                return VerifyResult(version, ok=False, problem=f"{file_name} is missing")
            actual = sha256_file(path)
            if actual != digest:
                return VerifyResult(
                    version,
                    ok=False,
                    problem=f"{file_name} sha256 {actual[:12]}… does not match meta.json "
                    f"{str(digest)[:12]}…",
                )
        return VerifyResult(version, ok=True)

    def artifact(self, version: str, name: str) -> Path | None:
        """The path of an extra artifact after its sha256 matched meta.json; None if the version
        has no such artifact (older versions); ChecksumMismatchError if it is damaged."""
        hashes = self.info(version).meta.get("artifacts")
        if not isinstance(hashes, dict) or name not in hashes:
            return None
        path = self._dir(version) / name
        try:
            actual = sha256_file(path)
        except FileNotFoundError as exc:
            raise RegistryError(f"model version {version} has no {name}") from exc
        if actual != hashes[name]:
            raise ChecksumMismatchError(f"{name} of {version} fails its checksum")
        return path

    def verify(self) -> list[VerifyResult]:
        """Re-check every version's artifacts."""
        return [self.verify_version(v) for v in self.versions()]

    def load(self, version: str) -> LoadedModel:
        """Unpickle a version's model, but only after its sha256 matches meta.json.

        The bytes are read once, hashed, and unpickled from that same buffer, so the file cannot be
        swapped between the check and the load.
        """
        info = self.info(version)
        path = self._dir(version) / MODEL_FILE
        try:
            blob = path.read_bytes()
        except FileNotFoundError as exc:
            raise RegistryError(f"model version {version} has no {MODEL_FILE}") from exc
        actual = hashlib.sha256(blob).hexdigest()
        expected = info.meta.get("sha256")
        if actual != expected:
            raise ChecksumMismatchError(
                f"refusing to load model version {version}: {MODEL_FILE} sha256 {actual} "
                f"does not match meta.json {expected}"
            )
        model = joblib.load(io.BytesIO(blob))
        return LoadedModel(
            version=version, sha256=actual, metrics=info.metrics, model=model, schema=info.schema
        )

    def load_reference(self, version: str) -> np.ndarray:
        """The reference sample of a version, checksum-verified (npz read without pickle)."""
        info = self.info(version)
        path = self._dir(version) / REFERENCE_FILE
        actual = sha256_file(path)
        if actual != info.meta.get("reference_sha256"):
            raise ChecksumMismatchError(f"reference sample of {version} fails its checksum")
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data["sample"])

    def _dir(self, version: str) -> Path:
        return self.root / validate_version(version)

    def _max_number(self) -> int:
        numbers = [int(v[1:]) for v in self.versions()]
        return max(numbers, default=0)


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as fh:
        os.fsync(fh.fileno())
