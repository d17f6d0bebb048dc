"""``selfheal models``: list, show and verify the registry's versions."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from selfheal_daemon.cli.common import EXIT_CODES, ConfigOption, JsonOption, fail, load_cli_config
from selfheal_daemon.errors import ChecksumMismatchError, RegistryError, SelfhealError

models_app = typer.Typer(
    help="The model registry: list, show and verify versions.", no_args_is_help=True
)


@models_app.command("list")
def models_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every registered version, oldest first, with its metrics and aliases."""
    from selfheal_daemon.model.registry import ModelRegistry

    try:
        registry = ModelRegistry(load_cli_config(config).registry_dir)
        aliases = {a: registry.alias(a) for a in ("current", "last_good")}
        rows: list[dict[str, Any]] = []
        for version in registry.versions():
            info = registry.info(version)
            tags = [a for a, v in aliases.items() if v == version]
            rows.append(
                {
                    "version": version,
                    "aliases": tags,
                    "created_at": info.created_at,
                    "metrics": info.metrics,
                    "origin": info.meta.get("origin", ""),
                }
            )
    except SelfhealError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no model versions registered yet (selfheal run trains the first one)")
        return
    header = ("VERSION", "ALIASES", "R2", "MAE", "RMSE", "CREATED (UTC)", "ORIGIN")
    typer.echo(_MODEL_ROW.format(*header))
    for row in rows:
        metrics = [f"{row['metrics'].get(k, float('nan')):.3f}" for k in ("r2", "mae", "rmse")]
        tagged = ",".join(row["aliases"]) or "-"
        typer.echo(
            _MODEL_ROW.format(row["version"], tagged, *metrics, row["created_at"], row["origin"])
        )


_MODEL_ROW = "{:<9} {:<19} {:>6} {:>6} {:>6}  {:<29} {}"


@models_app.command("show")
def models_show(
    version: Annotated[
        str, typer.Argument(help="a version (e.g. v3) or an alias (current, last_good)")
    ],
    config: ConfigOption = None,
) -> None:
    """One version's full meta.json."""
    from selfheal_daemon.model.registry import ALIASES, ModelRegistry

    try:
        registry = ModelRegistry(load_cli_config(config).registry_dir)
        if version in ALIASES:
            resolved = registry.alias(version)
            if resolved is None:
                raise RegistryError(f"alias {version} is not set yet")
            version = resolved
        info = registry.info(version)
    except SelfhealError as exc:
        raise fail(exc) from None
    typer.echo(json.dumps(info.meta, indent=2, sort_keys=True))


@models_app.command("verify")
def models_verify(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Re-check every artifact's sha256 against meta.json; exit 6 if any fails."""
    from selfheal_daemon.model.registry import ModelRegistry

    try:
        results = ModelRegistry(load_cli_config(config).registry_dir).verify()
    except SelfhealError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        for r in results:
            typer.echo(f"{r.version}: {'OK' if r.ok else 'FAILED: ' + r.problem}")
        typer.echo(f"{sum(r.ok for r in results)} of {len(results)} version(s) verified")
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_CODES[ChecksumMismatchError])
