"""The training data: the bundled California housing set and how its features derive from the
raw census columns, or the user's own table (``training.data`` with a ``[model]`` table).

``load_base(cfg)`` returns the trusted base data as the model's raw columns (features and target,
text for categories); ``learn_schema`` turns it into the version's ``Schema`` (``model.schema``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from selfheal_daemon.config import Config
from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.errors import DataError
from selfheal_daemon.model.schema import Column, Schema

RAW_COLUMNS: tuple[str, ...] = (
    "longitude",
    "latitude",
    "housing_median_age",
    "total_rooms",
    "total_bedrooms",
    "population",
    "households",
    "median_income",
    "median_house_value",
)
BUNDLED_SHA256 = "8a3727f4cf54ac1a327f69b1d5b4db54c5834ea81c6e4efc0d163300022a685e"
BUNDLED_ROWS = 20640


def load_bundled_raw() -> pd.DataFrame:
    """Read the bundled California housing CSV, refusing it if its sha256 is not the known one."""
    blob = (
        resources.files("selfheal_daemon").joinpath("data/california_housing.csv.gz").read_bytes()
    )
    raw = gzip.decompress(blob)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != BUNDLED_SHA256:
        raise DataError(f"bundled data is damaged: sha256 {digest}, expected {BUNDLED_SHA256}")
    return pd.read_csv(io.BytesIO(raw))


def derive_features(raw: pd.DataFrame) -> pd.DataFrame:
    """Return ``FEATURES`` and ``TARGET`` (if present) from raw census columns or feature columns.

    A frame that already has every feature column is taken as it is (extra columns are dropped). A
    frame in the raw census form is converted: ratios per household, target in units of $100,000.
    A ratio over zero households becomes NaN (the pipeline imputes it), never an infinity.
    """
    if all(name in raw.columns for name in FEATURES):
        keep = [*FEATURES, TARGET] if TARGET in raw.columns else list(FEATURES)
        return raw[keep].astype("float64").reset_index(drop=True)
    missing = [c for c in RAW_COLUMNS if c not in raw.columns and c != "median_house_value"]
    if missing:
        raise DataError(
            "data has neither the feature columns "
            f"({', '.join(FEATURES)}) nor the raw census columns; missing: {', '.join(missing)}"
        )
    households = raw["households"].astype("float64").replace(0.0, np.nan)
    out = pd.DataFrame(
        {
            "MedInc": raw["median_income"].astype("float64"),
            "HouseAge": raw["housing_median_age"].astype("float64"),
            "AveRooms": raw["total_rooms"].astype("float64") / households,
            "AveBedrms": raw["total_bedrooms"].astype("float64") / households,
            "Population": raw["population"].astype("float64"),
            "AveOccup": raw["population"].astype("float64") / households,
            "Latitude": raw["latitude"].astype("float64"),
            "Longitude": raw["longitude"].astype("float64"),
        }
    )
    if "median_house_value" in raw.columns:
        out[TARGET] = raw["median_house_value"].astype("float64") / 100_000.0
    return out.reset_index(drop=True)


def load_dataset(path: Path | None) -> pd.DataFrame:
    """Load training data as ``FEATURES`` + ``TARGET``: the bundled set when ``path`` is None.

    CSV and Parquet are accepted; rows without a target cannot be trained on and are a DataError.
    """
    if path is None:
        frame = derive_features(load_bundled_raw())
    else:
        frame = derive_features(read_table(path))
    if TARGET not in frame.columns:
        raise DataError(f"training data has no target column {TARGET!r} (or median_house_value)")
    return frame


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file into a frame, translating reader errors into DataError."""
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (OSError, ValueError, ImportError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def fingerprint(frame: pd.DataFrame) -> str:
    """A sha256 over the frame's columns and values: equal data gives an equal fingerprint."""
    digest = hashlib.sha256()
    digest.update(",".join(map(str, frame.columns)).encode())
    if all(pd.api.types.is_numeric_dtype(t) for t in frame.dtypes):
        digest.update(np.ascontiguousarray(frame.to_numpy(dtype="float64")).tobytes())
    else:
        hashed = pd.util.hash_pandas_object(frame.astype(object), index=False)
        digest.update(np.ascontiguousarray(hashed.to_numpy()).tobytes())
    return digest.hexdigest()


def load_base(cfg: Config) -> pd.DataFrame:
    """The trusted base data as the model's raw columns: the bundled California set (or a file
    in its form) without a ``[model]`` table; else ``training.data`` as it is, missing-value
    tokens read as missing. The target column must be there."""
    if cfg.is_default_model:
        return load_dataset(cfg.training_data)
    from selfheal_daemon.model.infer import read_table as read_user_table

    path = cfg.training_data
    if path is None:
        raise DataError("a [model] table needs training.data: the file to train it on")
    frame = read_user_table(path, cfg.model_spec.missing_values)
    target = cfg.model_spec.target
    if target not in frame.columns:
        raise DataError(
            f"training data {path} has no target column {target!r}; "
            f"columns are: {', '.join(map(str, frame.columns))}"
        )
    return frame


def learn_schema(cfg: Config, frame: pd.DataFrame, previous: Schema | None = None) -> Schema:
    """The schema of a model trained on ``frame``: inferred from the data under the ``[model]``
    table (the California schema without one), numeric bounds and categories as seen.

    With ``previous`` (the champion's schema, on a retrain) the features and their kinds stay
    the champion's, and its categories keep their places, new ones appended: a code the serving
    version wrote means the same category in its successor.
    """
    if cfg.is_default_model and previous is None:
        return Schema.california(_bounds(frame, FEATURES))
    if previous is not None:
        return _relearn(previous, frame)
    from selfheal_daemon.model.infer import infer_schema

    return infer_schema(frame, cfg.model_spec).schema


def _bounds(frame: pd.DataFrame, names: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for name in names:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64")
        finite = values[np.isfinite(values)]
        if len(finite):
            out[name] = (float(finite.min()), float(finite.max()))
    return out


def _relearn(previous: Schema, frame: pd.DataFrame) -> Schema:
    missing = [n for n in (*previous.features, previous.target) if n not in frame.columns]
    if missing:
        raise DataError(f"data lacks the model's columns: {', '.join(missing)}")
    columns: list[Column] = []
    encoded = previous.encode(frame)
    for j, col in enumerate(previous.columns):
        seen_missing = bool(np.isnan(encoded[:, j]).any())
        if col.is_numeric:
            low, high = _bounds(frame, (col.name,)).get(col.name, (col.low, col.high))
            columns.append(
                Column(col.name, "numeric", low=low, high=high, missing=col.missing or seen_missing)
            )
            continue
        from selfheal_daemon.model.schema import category_text

        known = set(col.categories)
        fresh = sorted(
            {t for v in frame[col.name].tolist() if (t := category_text(v))}
            - known
            - {m.strip() for m in previous.missing_values}
        )
        columns.append(
            Column(
                col.name,
                col.kind,
                categories=(*col.categories, *fresh) if col.kind == "categorical" else (),
                missing=col.missing or seen_missing,
            )
        )
    return Schema(
        name=previous.name,
        task=previous.task,
        target=previous.target,
        columns=tuple(columns),
        classes=previous.classes,
        metric=previous.metric,
        missing_values=previous.missing_values,
    )
