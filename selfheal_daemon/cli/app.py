"""The ``selfheal`` command line: parse, load config, build, run. Errors map to distinct exit codes.

The config file is ``--config PATH``, else ``$SELFHEAL_CONFIG``, else ``./config.toml`` when it
exists, else the built-in defaults (state in ``./var``).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from loguru import logger

from selfheal_daemon.cli.common import (
    ConfigOption,
    JsonOption,
    config_path,
    fail,
    load_cli_config,
)
from selfheal_daemon.cli.init import init_command
from selfheal_daemon.cli.models import models_app
from selfheal_daemon.errors import ConfigError, SelfhealError

if TYPE_CHECKING:
    from selfheal_daemon.config import Config

app = typer.Typer(
    help="selfheal: keeps a scikit-learn model service healthy with no human in the loop.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")
app.command("init")(init_command)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run in the foreground: train the first model if needed, start the workers, supervise them.

    Ctrl-C or SIGTERM stops every worker before the command returns. With backend.kind = "ray"
    the replicas are a Ray Serve application's: they go on serving after the daemon stops.
    """
    from selfheal_daemon.daemon.runner import run_daemon
    from selfheal_daemon.logs import configure_logging

    try:
        cfg = load_cli_config(config)
        configure_logging(cfg.logging.level)
        # Until the daemon installs its own handlers (after training), TERM ends us like Ctrl-C.
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        run_daemon(cfg)
    except SelfhealError as exc:
        logger.error("{}", exc)
        raise fail(exc) from None
    except KeyboardInterrupt:
        logger.info("interrupted before the service started")
        raise typer.Exit(130) from None


def _raise_keyboard_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command("check-config")
def check_config(path: Annotated[Path | None, typer.Argument(help="config file")] = None) -> None:
    """Validate a config file: exit 0, or non-zero naming the key and the reason."""
    from selfheal_daemon.config import load_config

    target = config_path(path)
    try:
        cfg = load_config(target)
    except ConfigError as exc:
        raise fail(exc) from None
    where = target if target is not None else "built-in defaults"
    serving = f"{cfg.service.workers} worker(s)"
    if cfg.backend.kind == "ray":
        serving = f"{cfg.backend.replicas} Ray replica(s) of a cluster at {cfg.backend.address}"
    typer.echo(
        f"{where}: OK (state_dir {cfg.state_dir}, {serving} on "
        f"{cfg.service.host}:{cfg.service.port})"
    )


# ----- operating a running daemon -------------------------------------------------------------


def _client(config: Path | None) -> Any:
    from selfheal_daemon.control.client import ControlClient

    cfg = load_cli_config(config)
    return ControlClient(cfg)


@app.command()
def status(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The running daemon: workers (or Ray replicas and nodes), models, last drift and quality
    results, open incidents."""
    from selfheal_daemon.cli.ops import format_status

    try:
        with _client(config) as client:
            data = client.get("/status")
    except SelfhealError as exc:
        raise fail(exc) from None
    typer.echo(json.dumps(data, indent=2) if as_json else format_status(data))


def _read_trail(config: Path | None) -> tuple[Config, list[dict[str, Any]], int]:
    from selfheal_daemon.record.audit import ReadStats, read_records

    cfg = load_cli_config(config)
    stats = ReadStats()
    records = list(read_records(cfg.audit_dir, stats))
    return cfg, records, stats.unreadable


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


@app.command()
def history(
    config: ConfigOption = None,
    since: Annotated[
        str | None, typer.Option(help="only records after this: 90s, 30m, 2h, 7d or an ISO date")
    ] = None,
    issue: Annotated[str | None, typer.Option(help="only this issue kind")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many records")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The audit trail, newest first (rotated files included; the daemon need not run)."""
    from selfheal_daemon.cli.report_format import format_history
    from selfheal_daemon.record.report import filter_history, parse_since

    try:
        _cfg, records, _bad = _read_trail(config)
        moment = parse_since(since, _now()) if since else None
    except SelfhealError as exc:
        raise fail(exc) from None
    except ValueError as exc:
        typer.echo(f"selfheal: error: --since: {exc}", err=True)
        raise typer.Exit(2) from None
    rows = filter_history(records, since=moment, issue=issue, limit=limit)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif not rows:
        typer.echo("no audit records match")
    else:
        typer.echo(format_history(rows))


@app.command()
def report(
    config: ConfigOption = None,
    days: Annotated[
        int | None, typer.Option(min=1, help="the last N days (default: the whole trail)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Self-healing metrics from the trail: MTTR, incidents by kind and outcome, per day, MTBF."""
    import dataclasses

    from selfheal_daemon.cli.report_format import format_report
    from selfheal_daemon.record.report import build_report

    try:
        cfg, records, unreadable = _read_trail(config)
    except SelfhealError as exc:
        raise fail(exc) from None
    result = build_report(
        records,
        now=_now(),
        days=days,
        manual_minutes_per_incident=cfg.report.manual_minutes_per_incident,
        hourly_rate=cfg.report.hourly_rate,
    )
    result = dataclasses.replace(result, unreadable=result.unreadable + unreadable)
    typer.echo(json.dumps(result.to_json(), indent=2) if as_json else format_report(result))


def _act(config: Path | None, action: str, **params: Any) -> dict[str, Any]:
    try:
        with _client(config) as client:
            result: dict[str, Any] = client.act(action, **params)
    except SelfhealError as exc:
        raise fail(exc) from None
    return result


def _accepted(what: str, result: dict[str, Any]) -> None:
    typer.echo(f"{what} (incident {result.get('incident_id', '-')}); follow: selfheal history")


@app.command()
def restart(config: ConfigOption = None) -> None:
    """Replace every worker now (no dropped connection); audited as manual."""
    _accepted("restart started", _act(config, "restart"))


@app.command()
def rollback(
    config: ConfigOption = None,
    to: Annotated[str | None, typer.Option("--to", help="version (default: last_good)")] = None,
) -> None:
    """Serve an earlier model version on every worker; audited as manual."""
    result = _act(config, "rollback", to=to)
    _accepted(f"rolling back to {result.get('to')}", result)


@app.command()
def pause(config: ConfigOption = None) -> None:
    """Stop automatic healing: detections are still recorded, nothing is acted on."""
    _act(config, "pause")
    typer.echo("healing paused: detections are recorded but not acted on (selfheal resume)")


@app.command()
def resume(config: ConfigOption = None) -> None:
    """Heal again; what was skipped while paused is handled now."""
    _act(config, "resume")
    typer.echo("healing resumed")


@app.command()
def retrain(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Retrain now (in a child process) and promote only through the gate; audited as manual.

    Bypasses the cooldown and the daily budget. Follow it with `selfheal status` or
    `selfheal history --issue manual_action`.
    """
    result = _act(config, "retrain")
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(
        "retrain started in a child process; the candidate is promoted only if it passes the gate"
        " (follow: selfheal history --issue manual_action)"
    )


@app.command()
def check(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Run the monitoring jobs now (capture, incoming data, drift, live metric); print verdicts."""
    from selfheal_daemon.cli.ops import format_check

    result = _act(config, "check")
    typer.echo(json.dumps(result, indent=2) if as_json else format_check(result))


@app.command("fix-data")
def fix_data(  # noqa: PLR0917 - typer maps parameters to options
    in_path: Annotated[Path, typer.Argument(metavar="IN", help="CSV or Parquet batch to repair")],
    out_path: Annotated[Path, typer.Argument(metavar="OUT", help="where the repaired rows go")],
    config: ConfigOption = None,
    quarantine: Annotated[
        Path | None,
        typer.Option(help="where unrepairable rows go (default: OUT's name + .quarantine.csv)"),
    ] = None,
    require_target: Annotated[
        bool, typer.Option("--require-target", help="refuse a batch without the target column")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check and repair a data file against the bounds learned from the training data."""
    from selfheal_daemon.model.pipeline import base_frame, current_schema, learn_profile
    from selfheal_daemon.model.quality import describe, format_fixes
    from selfheal_daemon.model.quality_io import default_quarantine_path, fix_file

    try:
        cfg = load_cli_config(config)
        base = base_frame(cfg)
        profile = learn_profile(base, current_schema(cfg, base))
        result = fix_file(
            in_path,
            out_path,
            profile,
            quarantine_path=quarantine,
            require_target=require_target,
        )
    except SelfhealError as exc:
        raise fail(exc) from None
    where = quarantine or default_quarantine_path(out_path)
    if as_json:
        summary = {**describe(result), "out": str(out_path)}
        if result.rows_quarantined:
            summary["quarantine"] = str(where)
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(format_fixes(result))
    typer.echo(f"wrote {result.rows_kept:,} rows to {out_path}")
    if result.rows_quarantined:
        typer.echo(f"quarantined {result.rows_quarantined:,} rows (with reasons) to {where}")


@app.command()
def once(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """One pass of the pipeline for CI: repair data, train, test, gate, promote or keep, drift.

    Exit 0 promoted; 10 the gate's metrics kept the champion; 11 the model tests failed even after
    repairing the data; 12 the current model failed verification and last_good was restored.
    """
    from selfheal_daemon.cli.once import run_once
    from selfheal_daemon.logs import configure_logging

    try:
        cfg = load_cli_config(config)
        configure_logging(cfg.logging.level)
        result = run_once(cfg, progress=lambda msg: logger.info("once: {}", msg))
    except SelfhealError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        verdict = result.verdict
        cand, champ = verdict.get("candidate") or {}, verdict.get("champion") or {}
        typer.echo(f"outcome: {result.outcome} (exit {result.exit_code})")
        if result.candidate:
            typer.echo(f"promoted {result.candidate} over {result.champion}")
        if cand:
            metric = str(verdict.get("metric") or "r2")
            label = "R2" if metric == "r2" else metric
            typer.echo(
                f"candidate {label} {cand.get(metric, float('nan')):.3f}, champion {label} "
                f"{champ.get(metric, float('nan')):.3f} on the same holdout"
            )
        for reason in verdict.get("reasons", []):
            typer.echo(f"  - {reason}")
        if result.drift is not None:
            typer.echo(f"drift: {result.drift.get('reason')}")
    raise typer.Exit(result.exit_code)


@app.command()
def drill(
    kind: Annotated[
        str, typer.Argument(help="crash, hang, leak, bad-model, corrupt-artifact or drift")
    ],
    config: ConfigOption = None,
    timeout: Annotated[float, typer.Option(min=1, help="give up waiting after seconds")] = 180.0,
    as_json: JsonOption = False,
) -> None:
    """Inject a real fault into the running system; print detection time and time to recovery."""
    from selfheal_daemon.cli.ops import follow_drill

    try:
        with _client(config) as client:
            started = client.act("drill", kind=kind)
            if not as_json:
                where = (
                    f" on worker {started['worker']}"
                    if started.get("worker") is not None
                    else f" on {started['scope']}"
                    if isinstance(started.get("scope"), str)
                    else ""
                )
                typer.echo(f"{kind} drill: fault injected{where}: {started['details']}")
            seen = follow_drill(client, started, timeout_s=timeout)
    except SelfhealError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps({"drill": started, "result": seen.__dict__}, indent=2))
    elif seen.incident_id is None:
        typer.echo(f"{kind} drill: NOT DETECTED within {timeout:.0f} s")
    else:
        typer.echo(
            f"{kind} drill: detected in {seen.detected_s:.3f} s ({started['issue']}:"
            f" {seen.detection}), incident {seen.incident_id}"
        )
        if seen.outcome is None:
            typer.echo(f"{kind} drill: NOT RECOVERED within {timeout:.0f} s")
        else:
            typer.echo(f"{kind} drill: {seen.outcome} in {seen.recovered_s:.3f} s")
    if seen.outcome != "resolved":
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="selfheal")


if __name__ == "__main__":  # pragma: no cover
    main()
