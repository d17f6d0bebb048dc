"""The CLI: registry commands, config checking, and exit codes a script can rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from selfheal_daemon.cli.app import app
from selfheal_daemon.cli.common import EXIT_CODES, exit_code_for
from selfheal_daemon.config import GateConfig
from selfheal_daemon.errors import (
    ChecksumMismatchError,
    ConfigError,
    RegistryError,
    SelfhealError,
    VersionNotFoundError,
)
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.training import train_and_register
from tests.training import FAST_TRAINING

runner = CliRunner()


@pytest.fixture
def state(tmp_path: Path, small_frame: pd.DataFrame) -> Path:
    """A config file whose registry holds v1 (current, last_good) and v2."""
    config = tmp_path / "config.toml"
    config.write_text('state_dir = "state"\n')
    registry = ModelRegistry(tmp_path / "state" / "registry")
    for origin in ("bootstrap: test", "retrain: test"):
        train_and_register(
            registry, small_frame, FAST_TRAINING, GateConfig(min_r2=0.5), origin=origin, parent=None
        )
    registry.set_alias("current", "v1")
    registry.set_alias("last_good", "v1")
    return config


def test_models_list_shows_versions_aliases_and_metrics(state: Path) -> None:
    """The table names each version, its aliases, its R2 and its origin."""
    result = runner.invoke(app, ["models", "list", "--config", str(state)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:5] == ["VERSION", "ALIASES", "R2", "MAE", "RMSE"]
    assert lines[1].split()[:2] == ["v1", "current,last_good"]
    assert lines[2].split()[:2] == ["v2", "-"]
    assert lines[2].endswith("retrain: test")


def test_models_list_json_is_machine_readable(state: Path) -> None:
    """--json prints a list of objects with the same facts."""
    result = runner.invoke(app, ["models", "list", "--json", "--config", str(state)])
    rows = json.loads(result.output)
    assert [r["version"] for r in rows] == ["v1", "v2"]
    assert rows[0]["aliases"] == ["current", "last_good"]
    assert set(rows[0]["metrics"]) == {"r2", "mae", "rmse"}


def test_models_list_on_empty_registry_says_so(tmp_path: Path) -> None:
    """With nothing registered the command explains how the first model appears."""
    config = tmp_path / "c.toml"
    config.write_text('state_dir = "s"\n')
    result = runner.invoke(app, ["models", "list", "--config", str(config)])
    assert result.exit_code == 0
    assert "no model versions registered yet" in result.output


def test_models_show_accepts_version_or_alias(state: Path) -> None:
    """show prints meta.json for a version name or an alias."""
    by_alias = runner.invoke(app, ["models", "show", "current", "--config", str(state)])
    by_name = runner.invoke(app, ["models", "show", "v1", "--config", str(state)])
    assert by_alias.exit_code == 0
    assert json.loads(by_alias.output) == json.loads(by_name.output)
    assert json.loads(by_name.output)["version"] == "v1"


@pytest.mark.parametrize(("name", "code"), [("v9", 5), ("../../etc", 5), ("nonsense", 5)])
def test_models_show_refuses_unknown_or_unsafe_names(state: Path, name: str, code: int) -> None:
    """A missing version or a path-like name is an error with the registry exit code."""
    result = runner.invoke(app, ["models", "show", name, "--config", str(state)])
    assert result.exit_code == code
    assert "selfheal: error:" in result.output


def test_models_verify_passes_then_flags_tampering(state: Path) -> None:
    """verify exits 0 on a clean registry and 6 naming the version once an artifact changes."""
    ok = runner.invoke(app, ["models", "verify", "--config", str(state)])
    assert ok.exit_code == 0
    assert "2 of 2 version(s) verified" in ok.output
    model = state.parent / "state" / "registry" / "v2" / "model.joblib"
    model.write_bytes(model.read_bytes() + b"\0")
    bad = runner.invoke(app, ["models", "verify", "--config", str(state)])
    assert bad.exit_code == 6
    assert "v2: FAILED: model.joblib sha256" in bad.output
    assert "v1: OK" in bad.output


def test_check_config_accepts_the_shipped_file() -> None:
    """The repository's config.toml passes check-config."""
    repo_config = Path(__file__).resolve().parents[3] / "config.toml"
    result = runner.invoke(app, ["check-config", str(repo_config)])
    assert result.exit_code == 0
    assert "OK" in result.output


def test_check_config_names_key_and_reason(tmp_path: Path) -> None:
    """A bad value exits 3 with the key path and the reason on stderr."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[service]\nport = 70000\n")
    result = runner.invoke(app, ["check-config", str(bad)])
    assert result.exit_code == 3
    assert "service.port: Input should be less than or equal to 65535 (got 70000)" in result.output


def test_exit_codes_are_distinct_and_most_specific_first() -> None:
    """Each error kind has its own code; a checksum mismatch is not reported as a generic one."""
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert exit_code_for(ChecksumMismatchError("x")) == 6
    assert exit_code_for(VersionNotFoundError("x")) == exit_code_for(RegistryError("x")) == 5
    assert exit_code_for(ConfigError("x")) == 3
    assert exit_code_for(SelfhealError("x")) == 1


def test_installed_console_script_runs() -> None:
    """The `selfheal` entry point installed by pyproject.toml answers --help with every command."""
    script = Path(sys.executable).parent / "selfheal"
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    for command in ("run", "check-config", "models"):
        assert command in result.stdout


def test_control_commands_on_the_ray_backend_reach_its_daemon_like_a_local_one(
    tmp_path: Path,
) -> None:
    """The Ray daemon serves the same control socket: with none running, status says so."""
    config = tmp_path / "config.toml"
    config.write_text('state_dir = "state"\n[backend]\nkind = "ray"\n')
    result = runner.invoke(app, ["status", "--config", str(config)])
    assert result.exit_code != 0
    local = tmp_path / "local.toml"
    local.write_text('state_dir = "state"\n')
    assert runner.invoke(app, ["status", "--config", str(local)]).output == result.output
    assert runner.invoke(app, ["history", "--config", str(config)]).exit_code == 0
    checked = runner.invoke(app, ["check-config", str(config)])
    assert "2 Ray replica(s) of a cluster at local on 127.0.0.1:8000" in checked.output
