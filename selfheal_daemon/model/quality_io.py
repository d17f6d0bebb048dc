"""Files around the data-quality check: reading a batch, writing the repaired table and the
quarantine, each write atomic (temp file beside the target, fsync, rename).

Every reader or writer failure becomes a DataError naming the file.

Reading a batch for a profile (``read_batch(path, profile)``) keeps the profile's text columns
(categorical and boolean features, a classifier's labels) as text: ``007`` stays ``007``, not the
number 7. Every column reads pandas' default missing markers ("", "NA", "null"...) and the
schema's missing-value tokens ("?"...) as missing, except in a text column where such a marker is
itself a known category. A numeric column that is still text after that (a token with stray
spaces, `` ?``) has its tokens blanked and becomes numbers when every other cell is one; when some
cell is not, it stays text and the check reports the cells it cannot read.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from selfheal_daemon.errors import DataError
from selfheal_daemon.model.features import read_table
from selfheal_daemon.model.quality import QualityResult, check_and_repair
from selfheal_daemon.model.quality_categorical import folded_tokens
from selfheal_daemon.model.quality_profile import CategoryProfile, QualityProfile
from selfheal_daemon.system.files import atomic_write_bytes

CSV_SUFFIXES = (".csv", ".csv.gz")
PANDAS_NA = (
    *("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"),
    *("<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"),
)
"""The text ``pandas.read_csv`` reads as missing by default (its ``na_values`` documentation)."""
PARQUET_SUFFIXES = (".parquet", ".pq")


def table_format(path: Path) -> str:
    """ "csv" or "parquet" by the file's name; DataError for anything else."""
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise DataError(f"{path} is neither CSV (.csv, .csv.gz) nor Parquet (.parquet, .pq)")


def read_batch(path: Path, profile: QualityProfile | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet batch; DataError if the name or the content is not such a table.

    With ``profile`` a CSV is read as the module docstring says; without, with pandas' defaults.
    """
    if table_format(path) == "parquet" or profile is None:
        return read_table(path)
    try:
        header = pd.read_csv(path, nrows=0).columns
        known = _known_categories(profile)
        names = _loose_names(header, (*profile.feature_names, profile.target_name))
        tokens = set(PANDAS_NA) | {t.strip() for t in profile.missing_values} | {""}
        na_values = {c: sorted(tokens - known.get(names.get(c, ""), set())) for c in header}
        dtype = {c: object for c in header if names.get(c) in known}
        frame = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=na_values)
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    absent = folded_tokens(profile.missing_values)
    for c in frame.columns:
        name = names.get(c)
        if name is None or name in known or pd.api.types.is_numeric_dtype(frame[c]):
            continue
        cells = frame[c].map(
            lambda v: None if isinstance(v, str) and v.strip().casefold() in absent else v
        )
        try:
            frame[c] = pd.to_numeric(cells.astype(object)).astype("float64")
        except (ValueError, TypeError):
            frame[c] = cells.astype(object)
    return frame


def _known_categories(profile: QualityProfile) -> dict[str, set[str]]:
    """Each text column's known categories (a classifier's target: its classes)."""
    cols = [*profile.columns, *([profile.target] if profile.target is not None else [])]
    return {c.name: set(c.categories) for c in cols if isinstance(c, CategoryProfile)}


def _loose_names(header: pd.Index, wanted: tuple[str, ...]) -> dict[object, str]:
    """Which wanted name each header column is: exactly, else ignoring case and spaces (as the
    check matches them)."""
    exact = {c: str(c) for c in header if c in wanted}
    loose = {w.casefold(): w for w in wanted if w not in exact.values()}
    for c in header:
        if c not in exact and (w := loose.get(str(c).strip().casefold())) is not None:
            exact[c] = w
    return exact


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV or Parquet (by ``path``'s name), atomically, without its index."""
    fmt = table_format(path)
    try:
        if fmt == "csv":
            compression = "gzip" if path.name.lower().endswith(".gz") else None
            buffer = io.BytesIO()
            frame.to_csv(buffer, index=False, compression=compression)
            data = buffer.getvalue()
        else:
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            data = buffer.getvalue()
        atomic_write_bytes(path, data)
    except (OSError, ValueError, TypeError, ImportError) as exc:  # pyarrow: ArrowTypeError
        raise DataError(f"cannot write {path}: {exc}") from exc


def quarantine_name(source_name: str, now: datetime) -> str:
    """``<source stem>-<UTC timestamp>.csv``, e.g. ``batch-20261127T100000Z.csv``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    stem = _stem(Path(source_name).name) or "batch"
    return f"{stem}-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}.csv"


def quarantine_write(
    quarantined: pd.DataFrame, quarantine_dir: Path, source_name: str, now: datetime
) -> Path:
    """Write the quarantined rows (with ``row`` and ``reason``) as a new CSV in ``quarantine_dir``.

    The name is ``quarantine_name``; an existing file is never overwritten: a second batch of the
    same name in the same second gets ``-1``, ``-2``... Returns the path written.
    """
    base = quarantine_name(source_name, now)
    path = quarantine_dir / base
    n = 0
    while path.exists():
        n += 1
        path = quarantine_dir / f"{base.removesuffix('.csv')}-{n}.csv"
    write_table(quarantined, path)
    return path


def default_quarantine_path(out_path: Path) -> Path:
    """Where ``fix_file`` puts the quarantined rows: ``<out stem>.quarantine.csv`` beside OUT."""
    return out_path.with_name(f"{_stem(out_path.name)}.quarantine.csv")


def _stem(name: str) -> str:
    """A file name without its table suffix: ``b.csv.gz`` -> ``b``, ``x.y.parquet`` -> ``x.y``."""
    for suffix in (*CSV_SUFFIXES, *PARQUET_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def fix_file(
    in_path: Path,
    out_path: Path,
    profile: QualityProfile,
    *,
    quarantine_path: Path | None = None,
    require_target: bool = False,
) -> QualityResult:
    """Check and repair IN, write the kept rows to OUT and any quarantined rows beside it.

    A file without the feature columns is a DataError (nothing is written): it is the wrong file,
    not a batch to repair. OUT may be IN. The quarantine goes to ``quarantine_path`` or
    ``default_quarantine_path(out_path)``, only when rows were quarantined.
    """
    table_format(out_path)
    frame = read_batch(in_path, profile)
    result = check_and_repair(frame, profile, require_target=require_target)
    if result.rejected is not None:
        raise DataError(f"{in_path}: {result.rejected}; nothing written")
    write_table(result.frame, out_path)
    if result.rows_quarantined:
        write_table(result.quarantined, quarantine_path or default_quarantine_path(out_path))
    return result
