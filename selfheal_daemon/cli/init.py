"""``selfheal init``: infer the schema of the user's data, print it, write a config that serves it.

The config lists everything that was inferred explicitly (the features in order, the categorical
ones, the ignored ones with the reason as a comment, the task and the metric), so what the
daemon trains is what the person checked, and a later retrain on new rows keeps the same schema.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from selfheal_daemon.cli.common import fail
from selfheal_daemon.errors import ConfigError, SelfhealError

if TYPE_CHECKING:
    from selfheal_daemon.config import ModelConfig
    from selfheal_daemon.model.infer import Inference

_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_TABLE_SUFFIXES = (".csv.gz", ".csv", ".parquet", ".pq", ".gz", ".tsv", ".txt")
_MAX_UPS = 2
"""A data file more than this many directories above the config is written as an absolute path."""


def init_command(  # noqa: PLR0917 - typer maps parameters to options
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            help="training data: CSV (.csv, .csv.gz) or Parquet, with a header line",
            show_default=False,
        ),
    ],
    target: Annotated[
        str, typer.Option("--target", help="the label column to predict", show_default=False)
    ],
    task: Annotated[
        Literal["auto", "regression", "binary", "multiclass"],
        typer.Option(help="auto: regression for a numeric target with many values, else classes"),
    ] = "auto",
    out: Annotated[Path, typer.Option("--out", help="the config file to write")] = Path(
        "config.toml"
    ),
    name: Annotated[
        str | None, typer.Option(help="the model's name (default: the data file's name)")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite OUT if it exists")] = False,
) -> None:
    """Infer a model's schema from your data, print it, and write a config that serves it.

    Each column becomes numeric, categorical, boolean, or ignored with the reason
    (constant, an id, all missing, too many distinct text values).

    The task comes from the target: regression, binary or multiclass.

    Check the table, edit OUT where a column should be read otherwise,
    then serve it: selfheal run --config OUT.
    """
    from selfheal_daemon.model.infer import format_schema, infer_schema, read_table
    from selfheal_daemon.system.files import atomic_write_text

    try:
        if out.exists() and not force:
            raise ConfigError(f"{out} exists; pass --force to overwrite it")
        if out.is_dir():
            raise ConfigError(f"{out} is a directory; --out names the config file to write")
        spec = _spec(name or model_name(data), target, task)
        inference = infer_schema(read_table(data, spec.missing_values), spec)
        text = config_text(inference, spec, data=data, out=out)
        _check(text, out)
        typer.echo(format_schema(inference))
        try:
            atomic_write_text(out, text)
        except OSError as exc:
            raise ConfigError(f"cannot write {out}: {exc.strerror or exc}") from None
    except SelfhealError as exc:
        raise fail(exc) from None
    typer.echo("")
    typer.echo(f"wrote {out}; check the columns above, then serve it: selfheal run --config {out}")


def model_name(data: Path) -> str:
    """A model name (``[A-Za-z0-9._-]``, at most 64) from the data file's name; else ``model``."""
    stem = data.name
    for suffix in _TABLE_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    cleaned = _NAME_CHARS.sub("-", stem).strip("-._")[:64].rstrip("-._")
    return cleaned or "model"


def _spec(name: str, target: str, task: str) -> ModelConfig:
    from pydantic import ValidationError

    from selfheal_daemon.config import ModelConfig

    try:
        return ModelConfig.model_validate({"name": name, "target": target, "task": task})
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'.'.join(str(p) for p in e['loc'])}: "
            f"{str(e['msg']).removeprefix('Value error, ')} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        raise ConfigError(problems) from None


def _check(text: str, out: Path) -> None:
    """The config must load as written: a failure here is a bug in ``config_text``."""
    from selfheal_daemon.config import parse_config

    try:
        parse_config(tomllib.loads(text), out.resolve())
    except (tomllib.TOMLDecodeError, ConfigError) as exc:
        raise ConfigError(f"the config written for this data would not load ({exc})") from None


def data_path(data: Path, out: Path) -> str:
    """``data`` as ``[training] data`` in ``out``: relative to ``out``'s directory when it is
    close by, else absolute."""
    absolute = data.resolve()
    relative = Path(os.path.relpath(absolute, out.resolve().parent))
    if relative.parts.count("..") > _MAX_UPS:
        return absolute.as_posix()
    return relative.as_posix()


def config_text(inference: Inference, spec: ModelConfig, *, data: Path, out: Path) -> str:
    """The ``config.toml`` serving the inferred schema, every decision written out."""
    schema = inference.schema
    features = {c.name for c in schema.columns}
    reasons = {d.column: d.reason for d in inference.decisions}
    categorical = [c.name for c in schema.columns if c.kind == "categorical"]
    ignored = [d for d in inference.ignored if d.column not in features]
    lines = [
        f"# selfheal: the model {_comment(schema.name)!r}, written by `selfheal init` from "
        f"{_comment(data.name)}.",
        "# Check the [model] table: each column of the data is a feature (with what was inferred)",
        "# or in `ignore` (with the reason). Serve it: selfheal run --config " + _comment(out.name),
        "",
        'state_dir = "./var"  # registry, audit trail, sockets; relative to this file',
        "",
        "[training]",
        f"data = {_toml_str(data_path(data, out))}  # relative to this file",
        "",
        "[model]",
        f"name = {_toml_str(schema.name)}",
        f"task = {_toml_str(schema.task)}  # {_comment(inference.task_reason)}",
        f"target = {_toml_str(schema.target)}",
        "features = [  # in this order",
        *_entries([(c.name, reasons.get(c.name, c.kind)) for c in schema.columns]),
        "]",
        "categorical = [" + ("" if categorical else "]"),
        *([*_entries([(n, "") for n in categorical]), "]"] if categorical else []),
        "ignore = [" + ("" if ignored else "]"),
        *([*_entries([(d.column, d.detail) for d in ignored]), "]"] if ignored else []),
        "missing_values = [" + ", ".join(_toml_str(m) for m in spec.missing_values) + "]",
        'pipeline = ""  # "" = built in; or "package.module:function" returning an estimator',
        f"metric = {_toml_str(schema.metric)}  # {_comment(inference.metric_reason)}",
    ]
    slices = inference.slice_candidates() if schema.is_classifier else []
    if slices:
        lines += [
            "",
            "# The gate can compare a candidate with the champion on each category of a few",
            "# categorical columns, and reject one worse by more than gate.slice_tolerance on any:",
            "# [gate]",
            "# slices = [" + ", ".join(_toml_str(s) for s in slices) + "]",
        ]
    return "\n".join(lines) + "\n"


def _entries(items: list[tuple[str, str]]) -> list[str]:
    width = max(len(_toml_str(n)) for n, _ in items) + 1
    out = []
    for name, note in items:
        entry = f"    {_toml_str(name) + ',':<{width}}"
        out.append(f"{entry}  # {_comment(note)}" if note else entry.rstrip())
    return out


def _toml_str(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _comment(text: str) -> str:
    """Text safe on one comment line (no control characters)."""
    return re.sub(r"[\x00-\x1f\x7f]", " ", text)
