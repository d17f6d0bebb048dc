"""Feature derivation from the bundled data and from data a user brings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.errors import DataError
from selfheal_daemon.model.features import (
    BUNDLED_ROWS,
    derive_features,
    fingerprint,
    load_bundled_raw,
    load_dataset,
)


def test_bundled_data_is_the_known_file() -> None:
    """The packaged CSV has all 20,640 rows and passes its sha256 check."""
    raw = load_bundled_raw()
    assert len(raw) == BUNDLED_ROWS
    assert int(raw["total_bedrooms"].isna().sum()) == 207


def test_derived_features_match_the_standard_definitions(housing: pd.DataFrame) -> None:
    """The first row matches scikit-learn's fetch_california_housing values for the same block."""
    first = housing.iloc[0]
    assert list(housing.columns) == [*FEATURES, TARGET]
    assert first["MedInc"] == pytest.approx(8.3252)
    assert first["AveRooms"] == pytest.approx(880 / 126)
    assert first["AveBedrms"] == pytest.approx(129 / 126)
    assert first["AveOccup"] == pytest.approx(322 / 126)
    assert first[TARGET] == pytest.approx(4.526)


def test_zero_households_become_missing_not_infinite() -> None:
    """A ratio over zero households is NaN (imputed later), never inf."""
    raw = load_bundled_raw().head(3).copy()
    raw.loc[0, "households"] = 0
    out = derive_features(raw)
    assert math.isnan(out.loc[0, "AveRooms"])
    assert np.isfinite(out.loc[1:, "AveRooms"]).all()


def test_feature_form_is_taken_as_is() -> None:
    """Data already in feature form keeps its values; extra columns are dropped."""
    frame = pd.DataFrame(
        {name: [1.0, 2.0] for name in FEATURES} | {TARGET: [3.0, 4.0], "note": ["a", "b"]}
    )
    out = derive_features(frame)
    assert list(out.columns) == [*FEATURES, TARGET]


def test_missing_columns_are_named() -> None:
    """Data in neither form is refused with the columns it lacks."""
    with pytest.raises(DataError, match=r"missing: .*median_income"):
        derive_features(pd.DataFrame({"longitude": [1.0]}))


def test_user_csv_without_target_cannot_train(tmp_path: Path) -> None:
    """Training data must carry the target."""
    path = tmp_path / "x.csv"
    pd.DataFrame({name: [1.0] for name in FEATURES}).to_csv(path, index=False)
    with pytest.raises(DataError, match="no target column"):
        load_dataset(path)


def test_unreadable_file_is_a_data_error(tmp_path: Path) -> None:
    """A missing file is reported as DataError naming it."""
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(tmp_path / "missing.csv")


def test_fingerprint_is_stable_and_sensitive(housing: pd.DataFrame) -> None:
    """Equal data has an equal fingerprint; one changed value changes it."""
    a = housing.head(100)
    b = a.copy()
    assert fingerprint(a) == fingerprint(b)
    b.iloc[5, 0] += 0.001
    assert fingerprint(a) != fingerprint(b)
