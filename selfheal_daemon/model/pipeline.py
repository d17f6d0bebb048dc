"""The model pipeline's steps on files: take in labelled batches, assemble training data, train a
candidate and put it through the gate, with one repair-and-retry after a failed model test.

Used by the retrain job (``python -m selfheal_daemon.model.retrain``, a child of the daemon) and
by ``selfheal once``. The daemon itself only takes in incoming batches here (cheap, and it feeds the
drift window); it never trains in its own process.

- ``take_in``: every CSV or Parquet file in ``data/incoming/`` is checked and repaired against the
  quality profile learned from the trusted base data (``model.quality``); the kept rows go to
  ``data/labelled/`` (atomic write), the rows that cannot be repaired to ``data/quarantine/`` with
  the reason, and only then is the incoming file removed: a crash in between takes the file in
  again, never loses it. A file that is not a table, or lacks columns, is moved to quarantine whole.
- ``recent_labelled``: the most recent ``retrain.recent_rows`` labelled rows, added to the base
  data (the bundled set or ``training.data``) and checked again ("before every training").
  Everything here reads the model's schema (the serving version's, or learned from the base
  data for the first model): its feature columns, target and task, never a constant.
- ``retrain``: train, then the gate against the champion on the same fresh holdout (rows no
  earlier model learned from: ``fresh_holdout``). If a model test failed, the recent rows whose
  labels disagree most with the champion are set aside (``gate.suspect_labels``, quarantined with
  the reason) and the candidate is trained once more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from selfheal_daemon.config import Config
from selfheal_daemon.errors import DataError, SelfhealError
from selfheal_daemon.model import gate
from selfheal_daemon.model.features import learn_schema, load_base
from selfheal_daemon.model.label_repair import suspect_labels
from selfheal_daemon.model.quality import check_and_repair, describe
from selfheal_daemon.model.quality_io import (
    CSV_SUFFIXES,
    PARQUET_SUFFIXES,
    quarantine_write,
    read_batch,
    write_table,
)
from selfheal_daemon.model.quality_profile import QualityProfile
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.schema import Schema
from selfheal_daemon.model.training import TrainResult, register_result, train

Progress = Callable[[str], None]
TABLE_SUFFIXES = (*CSV_SUFFIXES, *PARQUET_SUFFIXES)


@dataclass(frozen=True)
class Intake:
    """One incoming file taken in: what was found and done, and where its rows went."""

    source: str
    details: dict[str, Any]
    kept: pd.DataFrame
    labelled_path: str | None
    quarantine_path: str | None
    rejected: str | None = None

    @property
    def had_problems(self) -> bool:
        return bool(self.details.get("fixes")) or self.rejected is not None


def base_frame(cfg: Config) -> pd.DataFrame:
    """The trusted base data: the bundled California set, or ``training.data``."""
    return load_base(cfg)


def current_schema(cfg: Config, base: pd.DataFrame) -> Schema:
    """The serving version's schema, or (no model yet) the one the first model would have."""
    registry = ModelRegistry(cfg.registry_dir)
    version = registry.alias("current")
    if version is not None:
        with contextlib.suppress(SelfhealError, OSError):
            return registry.info(version).schema
    return learn_schema(cfg, base)


def learn_profile(base: pd.DataFrame, schema: Schema) -> QualityProfile:
    return QualityProfile.learn(base, schema)


def model_columns(schema: Schema) -> list[str]:
    """The columns a labelled row of this model has: its features, then its target."""
    return [*schema.features, schema.target]


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def take_in(
    cfg: Config, profile: QualityProfile, now: datetime, settle_s: float = 0.0
) -> list[Intake]:
    """Check, repair and take in every table in ``data/incoming/``, oldest first.

    Hidden files (a name starting with ".") and files changed less than ``settle_s`` ago are left
    for the next pass: a batch still being copied in is not read half-written.
    """
    incoming = cfg.incoming_dir
    if not incoming.is_dir():
        return []
    cfg.labelled_dir.mkdir(parents=True, exist_ok=True)
    cfg.quarantine_dir.mkdir(parents=True, exist_ok=True)
    fresh_after = now.timestamp() - settle_s
    files = [
        p
        for p in incoming.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.stat().st_mtime <= fresh_after
    ]
    files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [_take_in_one(cfg, profile, path, now) for path in files]


def _take_in_one(cfg: Config, profile: QualityProfile, path: Path, now: datetime) -> Intake:
    if not path.name.lower().endswith(TABLE_SUFFIXES):
        return _reject_whole(cfg, path, now, "not a CSV (.csv, .csv.gz) or Parquet file")
    try:
        raw = read_batch(path, profile)
    except DataError as exc:
        return _reject_whole(cfg, path, now, str(exc))
    result = check_and_repair(raw, profile, require_target=True)
    if result.rejected is not None:
        return _reject_whole(cfg, path, now, result.rejected, rows=len(raw))
    labelled = None
    if result.rows_kept:
        stem = path.name.split(".")[0] or "batch"
        target = cfg.labelled_dir / f"{_stamp(now)}-{stem}.csv"
        write_table(result.frame, target)
        labelled = str(target)
    quarantined = None
    if result.rows_quarantined:
        quarantined = str(quarantine_write(result.quarantined, cfg.quarantine_dir, path.name, now))
    path.unlink(missing_ok=True)  # only now: every row is written somewhere first
    details = {"file": path.name, **describe(result)}
    if quarantined:
        details["quarantine"] = quarantined
    return Intake(path.name, details, result.frame, labelled, quarantined)


def _reject_whole(
    cfg: Config, path: Path, now: datetime, reason: str, rows: int | None = None
) -> Intake:
    """Move a file that cannot be taken in to quarantine as it is, with the reason beside it."""
    target = cfg.quarantine_dir / f"{_stamp(now)}-{path.name}"
    path.replace(target)
    reason_file = target.with_name(target.name + ".reason.txt")
    with contextlib.suppress(OSError):
        reason_file.write_text(reason + "\n")
    details: dict[str, Any] = {
        "file": path.name,
        "rows_in": rows,
        "rows_kept": 0,
        "rejected": reason,
        "fixes": [f"Quarantined the whole file {path.name}: {reason}"],
        "quarantine": str(target),
    }
    return Intake(path.name, details, pd.DataFrame(), None, str(target), rejected=reason)


def read_labelled(path: Path, schema: Schema) -> pd.DataFrame:
    """A labelled file as written by ``take_in``: category columns (and a classifier's target)
    read as text, so "01" stays "01"; the rest as numbers."""
    text = [c.name for c in schema.columns if not c.is_numeric]
    if schema.is_classifier:
        text.append(schema.target)
    try:
        return pd.read_csv(path, dtype=dict.fromkeys(text, object))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read labelled data {path}: {exc}") from exc


def recent_labelled(cfg: Config, schema: Schema) -> tuple[pd.DataFrame, np.ndarray]:
    """The most recent ``retrain.recent_rows`` labelled rows taken in, oldest first, and for each
    row the name of the file it came from."""
    limit = cfg.retrain.recent_rows
    directory = cfg.labelled_dir
    columns = model_columns(schema)
    empty = pd.DataFrame(columns=columns)
    if limit == 0 or not directory.is_dir():
        return empty, np.array([], dtype=object)
    files = sorted(
        (p for p in directory.iterdir() if p.name.endswith(".csv")),
        key=lambda p: p.name,  # names start with a UTC timestamp
        reverse=True,
    )
    frames: list[pd.DataFrame] = []
    sources: list[np.ndarray] = []
    total = 0
    for path in files:
        frame = read_labelled(path, schema)
        if not set(columns).issubset(frame.columns):
            continue
        frames.append(frame[columns])
        sources.append(np.full(len(frame), path.name, dtype=object))
        total += len(frame)
        if total >= limit:
            break
    if not frames:
        return empty, np.array([], dtype=object)
    recent = pd.concat(frames[::-1], ignore_index=True)
    names = np.concatenate(sources[::-1])
    return recent.tail(limit).reset_index(drop=True), names[-limit:]


def fresh_holdout(base_rows: int, sources: np.ndarray, seen: set[str], cfg: Config) -> np.ndarray:
    """The holdout over base + recent rows: rows no earlier model was trained on.

    The base data's holdout is the seeded split of the base alone, the one every model (the first
    included) leaves out; of the recent rows only those from files the champion did not train on
    are fresh, and the same share of them is held out. Judging the champion on rows it learned
    from would flatter it.
    """
    seed, share = cfg.training.seed, cfg.training.test_size
    _, base_test = train_test_split(
        np.arange(base_rows), test_size=share, random_state=seed, shuffle=True
    )
    mask = np.zeros(base_rows + len(sources), dtype=bool)
    mask[base_test] = True
    fresh = np.flatnonzero([name not in seen for name in sources])
    if len(fresh) >= 2:
        rng = np.random.default_rng(seed)
        take = max(1, round(len(fresh) * share))
        mask[base_rows + rng.choice(fresh, size=take, replace=False)] = True
    return mask


@dataclass
class Candidate:
    """What one pass of train-and-gate produced."""

    result: TrainResult
    verdict: gate.GateVerdict
    recent_rows: int
    recent_files: list[str]


@dataclass
class RetrainOutcome:
    """The retrain job's answer, written as ``result.json`` for the daemon."""

    promote: bool
    candidate: str | None = None
    verdict: dict[str, Any] = field(default_factory=dict)
    test_failure: dict[str, Any] | None = None
    repaired: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "candidate": self.candidate,
            "verdict": self.verdict,
            "test_failure": self.test_failure,
            "repaired": self.repaired,
            "details": self.details,
        }


def _train_and_judge(
    cfg: Config,
    base: pd.DataFrame,
    recent: pd.DataFrame,
    *,
    sources: np.ndarray,
    seen: set[str],
    champion: Any,
    probes: gate.ProbeSet,
    progress: Progress,
    schema: Schema,
    window: np.ndarray | None = None,
) -> Candidate:
    frame = pd.concat([base[model_columns(schema)], recent], ignore_index=True)
    schema = learn_schema(cfg, frame, previous=schema)
    result = train(
        frame,
        cfg.training,
        progress,
        schema=schema,
        factory=cfg.model_spec.pipeline,
        recent_from=len(base),
        min_recent_reference=cfg.drift.min_rows,
        window=window,
        holdout=fresh_holdout(len(base), sources, seen, cfg),
    )
    progress("running the gate: metrics against the champion on the same holdout, model tests")
    verdict = gate.judge(
        result.model,
        champion,
        result.x_test,
        result.y_test,
        probes,
        cfg.gate,
        schema,
    )
    return Candidate(result, verdict, len(recent), sorted(set(sources)))


def retrain(
    cfg: Config,
    registry: ModelRegistry,
    champion_version: str,
    reason: str,
    *,
    progress: Progress,
    window: np.ndarray | None = None,
) -> RetrainOutcome:
    """Train a candidate on base + recent labelled data, gate it, repair and retry once on a failed
    model test, and register it when it passes. Aliases are never moved here."""
    progress("loading the base data and the recent labelled data")
    base = base_frame(cfg)
    champion_info = registry.info(champion_version)
    schema = champion_info.schema
    recent_raw, raw_sources = recent_labelled(cfg, schema)
    profile = learn_profile(base, schema)
    checked = check_and_repair(recent_raw, profile, require_target=True)
    kept_rows = np.setdiff1d(
        np.arange(len(recent_raw)), checked.quarantined["row"].to_numpy(dtype="int64")
    )
    columns = model_columns(schema)
    recent = checked.frame[columns] if checked.rows_kept else recent_raw.iloc[:0]
    sources = raw_sources[kept_rows] if checked.rows_kept else raw_sources[:0]
    seen = set(champion_info.meta.get("recent_files") or [])
    details: dict[str, Any] = {
        "reason": reason,
        "champion": champion_version,
        "base_rows": len(base),
        "recent_rows": len(recent),
        "recent_files": len(set(sources)),
        "fresh_rows": int(sum(name not in seen for name in sources)),
        "quality": describe(checked),
    }
    progress(
        f"{len(base):,} base rows, {len(recent):,} recent labelled rows "
        f"({details['fresh_rows']:,} new since {champion_version})"
    )
    champion = registry.load(champion_version).model
    probes = gate.ProbeSet.from_frame(base, schema, cfg.gate, cfg.directional_checks)

    def attempt(rows: pd.DataFrame, names: np.ndarray) -> Candidate:
        return _train_and_judge(
            cfg,
            base,
            rows,
            sources=names,
            seen=seen,
            champion=champion,
            probes=probes,
            progress=progress,
            schema=schema,
            window=window,
        )

    first = attempt(recent, sources)
    outcome = RetrainOutcome(promote=first.verdict.promote, details=details)
    chosen = first
    if not first.verdict.promote and first.verdict.test_failure:
        outcome.test_failure = first.verdict.to_details()
        progress(f"model tests failed ({', '.join(first.verdict.failed_tests)}): repairing")
        scale = champion_info.metrics.get("mae")
        kept, suspects = suspect_labels(recent, champion, cfg.gate, schema, scale=scale)
        repaired: dict[str, Any] = {"rows_set_aside": len(suspects), "rows_kept": len(kept)}
        if len(suspects):
            now = datetime.now(UTC)
            path = quarantine_write(suspects, cfg.quarantine_dir, "suspect-labels.csv", now)
            repaired["quarantine"] = str(path)
            repaired["fixes"] = [
                f"Set aside {len(suspects):,} recent rows whose labels disagree most with "
                f"the champion {champion_version}"
            ]
        outcome.repaired = repaired
        progress(f"retraining once more without {len(suspects):,} suspect rows")
        positions = recent.index.get_indexer(kept.index)
        chosen = attempt(kept.reset_index(drop=True), sources[positions])
        outcome.promote = chosen.verdict.promote
    outcome.verdict = chosen.verdict.to_details()
    if outcome.promote:
        progress("registering the candidate")
        outcome.candidate = register_result(
            registry,
            chosen.result,
            cfg.training,
            origin=f"retrain: {reason}",
            parent=champion_version,
            bins=cfg.drift.bins,
            extra={
                "pipeline": cfg.model_spec.pipeline or "built-in",
                "gate": outcome.verdict,
                "recent_rows": chosen.recent_rows,
                "recent_files": chosen.recent_files,
            },
        )
        progress(f"candidate {outcome.candidate} passed the gate")
    else:
        progress("the candidate was rejected: " + "; ".join(chosen.verdict.reasons))
    return outcome


def window_array(frames: list[pd.DataFrame], schema: Schema) -> np.ndarray:
    """The features of ``frames`` encoded as one (n, features) float64 array."""
    usable = [schema.encode(f) for f in frames if len(f)]
    if not usable:
        return np.empty((0, len(schema.columns)))
    return np.concatenate(usable)


__all__ = [
    "Intake",
    "RetrainOutcome",
    "SelfhealError",
    "base_frame",
    "learn_profile",
    "recent_labelled",
    "retrain",
    "take_in",
    "window_array",
]
