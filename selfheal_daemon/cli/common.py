"""What every ``selfheal`` command shares: the config option, loading it, errors as exit codes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from selfheal_daemon.errors import (
    ChecksumMismatchError,
    ConfigError,
    ControlError,
    DataError,
    RegistryError,
    SelfhealError,
    ServiceStartError,
    TrainingError,
)

if TYPE_CHECKING:
    from selfheal_daemon.config import Config

EXIT_CODES: dict[type[SelfhealError], int] = {
    ConfigError: 3,
    DataError: 4,
    ChecksumMismatchError: 6,
    RegistryError: 5,
    TrainingError: 7,
    ServiceStartError: 8,
    ControlError: 9,
}
"""Exit codes by error type (most specific first); 1 is any other failure, 2 a usage error."""

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="config file (default: $SELFHEAL_CONFIG or ./config.toml)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def exit_code_for(exc: SelfhealError) -> int:
    for kind, code in EXIT_CODES.items():
        if isinstance(exc, kind):
            return code
    return 1


def config_path(explicit: Path | None) -> Path | None:
    """``--config``, else ``$SELFHEAL_CONFIG``, else ``./config.toml`` if it exists, else None."""
    if explicit is not None:
        return explicit
    env = os.environ.get("SELFHEAL_CONFIG")
    if env:
        return Path(env)
    default = Path("config.toml")
    return default if default.is_file() else None


def load_cli_config(explicit: Path | None) -> Config:
    """The validated config the command was pointed at (``ConfigError`` naming the key)."""
    from selfheal_daemon.config import load_config
    from selfheal_daemon.model.user_code import activate

    cfg = load_config(config_path(explicit))
    activate(cfg)  # a model.pipeline module beside config.toml imports here and in children
    return cfg


def fail(exc: SelfhealError) -> typer.Exit:
    """Say what went wrong on stderr; the ``typer.Exit`` to raise carries its exit code."""
    typer.echo(f"selfheal: error: {exc}", err=True)
    return typer.Exit(exit_code_for(exc))
