"""Label repair after a failed model test: the recent labels the champion contradicts most are set
aside, for a regression by distance, for a classifier by confident disagreement."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from selfheal_daemon.config import GateConfig
from selfheal_daemon.errors import DataError
from selfheal_daemon.model.label_repair import SUSPECT_CONFIDENCE, suspect_labels
from tests.unit.model.test_gate import SCHEMA, fit, housing_like
from tests.unit.model.test_gate_classifier import BINARY, MULTI, census_like
from tests.unit.model.test_gate_classifier import fit as fit_classifier

GATE = GateConfig()


# --- a regression --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def champion() -> Any:
    """A healthy regressor on the bundled schema."""
    return fit(housing_like(3000, 0), 50)


@pytest.fixture
def recent() -> tuple[pd.DataFrame, np.ndarray]:
    """The incident: 1,000 recent rows, 40 with labels in $10,000 instead of $100,000, one NaN."""
    frame = housing_like(1000, 2)
    frame.index = frame.index + 5000  # the caller's index must survive the split
    rng = np.random.default_rng(3)
    pool = frame.index[frame[SCHEMA.target] > 1.0]  # where ten times the label is far from it
    planted = pool[rng.choice(len(pool), size=41, replace=False)]
    frame.loc[planted[:40], SCHEMA.target] *= 10
    frame.loc[planted[40], SCHEMA.target] = np.nan
    return frame, np.asarray(planted)


def test_suspect_labels_quarantines_planted_bad_labels(
    recent: tuple[pd.DataFrame, np.ndarray], champion: Any
) -> None:
    """Every planted label is quarantined with a reason, few honest ones are, and no row is lost."""
    frame, planted = recent
    kept, quarantined = suspect_labels(frame, champion, GATE, SCHEMA)
    assert set(planted) <= set(quarantined.index)
    assert len(quarantined) <= 41 + 0.06 * 1000
    assert sorted([*kept.index, *quarantined.index]) == sorted(frame.index)
    assert set(kept.index).isdisjoint(quarantined.index)
    assert list(kept.columns) == list(frame.columns)
    assert quarantined.loc[planted[40], "reason"] == "label nan is not a finite number"
    assert "from the champion's prediction" in quarantined.loc[planted[0], "reason"]


def test_suspect_labels_respects_the_share_cap_worst_first(
    recent: tuple[pd.DataFrame, np.ndarray], champion: Any
) -> None:
    """With a 2% cap exactly 20 rows go, the missing label and the 19 furthest from the champion."""
    frame, planted = recent
    kept, quarantined = suspect_labels(frame, champion, GateConfig(suspect_max_share=0.02), SCHEMA)
    assert len(quarantined) == 20
    assert len(kept) == 980
    pred = champion.predict(SCHEMA.model_input(SCHEMA.encode(frame)))
    distance = np.abs(frame[SCHEMA.target] - pred)
    worst = distance.dropna().sort_values(ascending=False).index[:19]
    assert list(quarantined.index) == [planted[40], *worst]


def test_suspect_labels_with_a_zero_cap_keeps_everything(
    recent: tuple[pd.DataFrame, np.ndarray], champion: Any
) -> None:
    """A share cap of 0 turns the repair off: nothing is quarantined."""
    frame, _ = recent
    kept, quarantined = suspect_labels(frame, champion, GateConfig(suspect_max_share=0.0), SCHEMA)
    assert len(kept) == len(frame)
    assert quarantined.empty
    assert "reason" in quarantined.columns


def test_suspect_labels_refuses_rows_without_the_target(champion: Any) -> None:
    """Recent rows without the schema's target column are a DataError naming it."""
    frame = housing_like(10, 4).drop(columns=[SCHEMA.target])
    with pytest.raises(DataError, match="MedHouseVal"):
        suspect_labels(frame, champion, GATE, SCHEMA)


# --- a classifier --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier() -> Any:
    """A healthy binary classifier with categorical columns."""
    return fit_classifier(census_like(3000, 0), BINARY)


@pytest.fixture
def flipped(classifier: Any) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The incident: 1,000 recent rows, 40 labels flipped where the champion is sure of the
    truth, one missing and one no class of the model's."""
    frame = census_like(1000, 5)
    frame.index = frame.index + 7000
    proba = BINARY.predict_proba(classifier, BINARY.encode(frame))
    truth = BINARY.encode_target(frame[BINARY.target].tolist())
    sure = frame.index[(proba.max(axis=1) >= 0.97) & (proba.argmax(axis=1) == truth)]
    picks = sure[np.random.default_rng(6).choice(len(sure), size=42, replace=False)]
    frame.loc[picks[:40], BINARY.target] = np.where(
        frame.loc[picks[:40], BINARY.target] == "yes", "no", "yes"
    )
    frame.loc[picks[40], BINARY.target] = None
    frame.loc[picks[41], BINARY.target] = "maybe"
    return frame, np.asarray(picks[:40]), np.asarray(picks[40:])


def test_classifier_quarantines_confident_disagreements(
    flipped: tuple[pd.DataFrame, np.ndarray, np.ndarray], classifier: Any
) -> None:
    """Every flipped label and both unknown labels are set aside with reasons; the honest rows
    set aside are only the champion's confident disagreements, and few."""
    frame, planted, unknown = flipped
    kept, quarantined = suspect_labels(frame, classifier, GATE, BINARY)
    assert set(planted) | set(unknown) <= set(quarantined.index)
    assert len(quarantined) <= 42 + 0.05 * 1000
    assert sorted([*kept.index, *quarantined.index]) == sorted(frame.index)
    assert quarantined.loc[unknown[0], "reason"] == "label is missing"
    assert quarantined.loc[unknown[1], "reason"] == "label 'maybe' is none of the classes no, yes"
    reason = quarantined.loc[planted[0], "reason"]
    assert reason.startswith(f"label {frame.loc[planted[0], BINARY.target]!r} disagrees with")
    assert f"(at least {SUSPECT_CONFIDENCE:g})" in reason
    proba = BINARY.predict_proba(classifier, BINARY.encode(frame.loc[kept.index]))
    labels = BINARY.encode_target(kept[BINARY.target].tolist())
    confident_wrong = (proba.max(axis=1) >= SUSPECT_CONFIDENCE) & (proba.argmax(axis=1) != labels)
    assert not confident_wrong.any()  # no confident disagreement is kept


def test_classifier_cap_takes_unknown_labels_then_the_most_confident(
    flipped: tuple[pd.DataFrame, np.ndarray, np.ndarray], classifier: Any
) -> None:
    """With a 2% cap the two unknown labels go first, then the 18 disagreements the champion is
    surest of, in that order."""
    frame, _, unknown = flipped
    _, quarantined = suspect_labels(frame, classifier, GateConfig(suspect_max_share=0.02), BINARY)
    assert len(quarantined) == 20
    assert set(quarantined.index[:2]) == set(unknown)
    proba = BINARY.predict_proba(classifier, BINARY.encode(quarantined.iloc[2:]))
    confidence = proba.max(axis=1)
    assert (confidence >= SUSPECT_CONFIDENCE).all()
    assert (np.diff(confidence) <= 0).all()


def test_multiclass_labels_are_judged_in_the_schema_class_order() -> None:
    """For a multiclass model whose classes_ order differs from the schema's, a label the
    champion contradicts with confidence is found, and an agreeing one is kept."""
    model = fit_classifier(census_like(3000, 0, MULTI), MULTI)
    frame = census_like(300, 8, MULTI)
    proba = MULTI.predict_proba(model, MULTI.encode(frame))
    sure = int(np.flatnonzero(proba.max(axis=1) >= 0.95)[0])
    answer = MULTI.classes[int(proba[sure].argmax())]
    other = next(c for c in MULTI.classes if c != answer)
    frame.loc[sure, MULTI.target] = other
    kept, quarantined = suspect_labels(frame, model, GATE, MULTI)
    assert sure in quarantined.index
    assert f"answers {answer!r} with probability" in quarantined.loc[sure, "reason"]
    assert len(kept) + len(quarantined) == 300
