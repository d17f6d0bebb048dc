"""The exception tree of selfheal.

    SelfhealError                 base of everything we raise on purpose
    ├── ConfigError               a config file is missing, unparsable or invalid (names the key)
    ├── DataError                 input data lacks columns or cannot be read
    ├── RegistryError             the model registry is inconsistent
    │   ├── VersionNotFoundError  a version or alias points at nothing
    │   ├── InvalidVersionName    a version name that could escape the registry directory
    │   └── ChecksumMismatchError an artifact's sha256 differs from meta.json: never unpickled
    ├── TrainingError             training failed or the model did not clear the gate
    └── ServiceStartError         a service worker did not become ready in time

Adapters translate third-party exceptions (OSError, psutil, httpx) into these at the boundary; the
CLI maps each to a distinct exit code (see ``cli.EXIT_CODES``).
"""

from __future__ import annotations


class SelfhealError(Exception):
    """Base class for every error selfheal raises on purpose."""


class ConfigError(SelfhealError):
    """A config file is missing, unparsable, or fails validation."""


class DataError(SelfhealError):
    """Input data cannot be read or lacks the required columns."""


class RegistryError(SelfhealError):
    """The model registry is missing or inconsistent."""


class VersionNotFoundError(RegistryError):
    """A version or alias does not exist in the registry."""


class InvalidVersionName(RegistryError):
    """A version name is not of the form the registry writes (e.g. tries path traversal)."""


class ChecksumMismatchError(RegistryError):
    """An artifact's sha256 does not match meta.json, so it is refused without unpickling."""


class TrainingError(SelfhealError):
    """Training failed, or the trained model did not clear the promotion gate."""


class ServiceStartError(SelfhealError):
    """A service worker exited or did not become ready within its start timeout."""


class ControlError(SelfhealError):
    """The daemon's control endpoint cannot be reached, or refused a request."""
