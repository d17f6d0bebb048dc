"""``selfheal models``: list, show, verify and import the registry's versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from selfheal_daemon.cli.common import EXIT_CODES, ConfigOption, JsonOption, fail, load_cli_config
from selfheal_daemon.errors import ChecksumMismatchError, RegistryError, SelfhealError

models_app = typer.Typer(
    help="The model registry: list, show, verify and import versions.", no_args_is_help=True
)


@models_app.command("list")
def models_list(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Every registered version, oldest first, with its metrics and aliases."""
    from selfheal_daemon.model.registry import ModelRegistry

    try:
        registry = ModelRegistry(load_cli_config(config).registry_dir)
        aliases = {a: registry.alias(a) for a in ("current", "last_good")}
        versions = registry.versions()
        newest = aliases["current"] or (versions[-1] if versions else None)
        schema = registry.info(newest).schema if newest else None
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
    names: tuple[str, ...] = ("r2", "mae", "rmse")
    if schema is not None and schema.is_classifier:
        names = tuple(dict.fromkeys((schema.metric, "accuracy", "log_loss")))[:3]
    shown = [
        n.upper() if n in ("r2", "mae", "rmse") else n.replace("balanced_accuracy", "bal_acc")
        for n in names
    ]
    header = ("VERSION", "ALIASES", *shown, "CREATED (UTC)", "ORIGIN")
    row_format = _MODEL_ROW if len(names) == 3 else _MODEL_ROW.replace(" {:>6}", "", 3 - len(names))
    typer.echo(row_format.format(*header))
    for row in rows:
        metrics = [f"{row['metrics'].get(k, float('nan')):.3f}" for k in names]
        tagged = ",".join(row["aliases"]) or "-"
        typer.echo(
            row_format.format(row["version"], tagged, *metrics, row["created_at"], row["origin"])
        )


_MODEL_ROW = "{:<9} {:<19} {:>8} {:>8} {:>8}  {:<29} {}"


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


@models_app.command("import")
def models_import(
    file: Annotated[Path, typer.Argument(help="the model: a .skops file (or .joblib/.pkl)")],
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="labelled rows (CSV or Parquet) to measure it on", show_default=False
        ),
    ],
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="load a joblib/pickle file: this RUNS ANY CODE in it; only for a file you trust",
        ),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a model trained elsewhere: measured on DATA, gated against the champion.

    A skops file is read without running code (only scikit-learn, NumPy and SciPy types). With a
    champion, the model must pass the same gate as a retrained candidate; if the daemon is
    running it then deploys the new version, else the version becomes current for the next start.
    """
    from selfheal_daemon.control.client import ControlClient
    from selfheal_daemon.errors import ControlError
    from selfheal_daemon.model.importer import import_model
    from selfheal_daemon.model.registry import ModelRegistry

    try:
        cfg = load_cli_config(config)
        registry = ModelRegistry(cfg.registry_dir)
        had_champion = registry.alias("current") is not None
        done = import_model(
            cfg,
            registry,
            file,
            data,
            trust_pickle=trust_pickle,
            progress=lambda m: typer.echo(f"import: {m}", err=True),
        )
        deployed = "alias"
        if cfg.control_socket.exists() and cfg.control_token_file.exists():
            try:  # the daemon runs: it deploys the version like any other, on every worker
                with ControlClient(cfg) as client:
                    client.act("rollback", to=done.version)
                deployed = "daemon"
            except ControlError as exc:
                raise ControlError(
                    f"registered {done.version}, but the daemon did not deploy it ({exc}); "
                    f"deploy it with: selfheal rollback --to {done.version}"
                ) from None
        else:  # no daemon: the next start serves it
            registry.set_alias("current", done.version)
            if not had_champion:
                registry.set_alias("last_good", done.version)
    except SelfhealError as exc:
        raise fail(exc) from None
    summary = {
        "version": done.version,
        "task": done.schema.task,
        "metric": done.schema.metric,
        "metrics": done.metrics,
        "gate": done.verdict,
        "deployed_by": deployed,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    shown = ", ".join(f"{k} {v:.3f}" for k, v in done.metrics.items())
    typer.echo(f"registered {done.version}: {done.schema.task} model {done.schema.name} ({shown})")
    if deployed == "daemon":
        typer.echo(f"the running daemon is deploying {done.version}")
    else:
        typer.echo(f"{done.version} is current: the next selfheal run serves it")
