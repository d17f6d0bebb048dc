"""The model's features and target, and how they derive from the bundled California housing data.

The model always sees a float64 matrix whose columns are ``FEATURES`` in this order; the service and
training share this one definition so a column can never be swapped between them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.errors import DataError

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
    digest.update(np.ascontiguousarray(frame.to_numpy(dtype="float64")).tobytes())
    return digest.hexdigest()
