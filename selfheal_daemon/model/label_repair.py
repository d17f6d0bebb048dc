"""The repair of the data at fault after a failed model test: set aside the recent labels that
disagree most with the champion (``suspect_labels``), so the candidate can be trained once more.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from selfheal_daemon.config import GateConfig
from selfheal_daemon.errors import DataError, TrainingError
from selfheal_daemon.model.gate_tests import Predictor, predict_rows, proba_rows
from selfheal_daemon.model.schema import Schema, category_text

# A recent label is suspect when it is further from the champion's prediction than this many times
# the median distance (and further than golden_tolerance, so a near-perfect champion does not turn
# ordinary noise into suspects). Residuals are heavy-tailed: on the bundled holdout the healthy
# model has 5.6% of honest labels beyond 5x its median distance, 3.4% beyond 6x, 1.8% beyond 8x.
SUSPECT_CUT_MULTIPLE = 6.0
# A classifier's label is suspect when the champion gives another class at least this probability:
# a confident disagreement, not a close call between two plausible classes.
SUSPECT_CONFIDENCE = 0.9


def suspect_labels(
    frame: pd.DataFrame,
    champion: Predictor,
    cfg: GateConfig,
    schema: Schema,
    *,
    scale: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split recent labelled rows (raw feature columns and the target) into (kept, quarantined)
    by how far the champion disagrees with their labels.

    This is the "repair the data at fault" step after a candidate fails a model test. It trusts the
    champion. For a regression, a label is suspect when ``|label - champion prediction|`` exceeds
    ``SUSPECT_CUT_MULTIPLE`` times a scale (and ``golden_tolerance``): ``scale`` when given (the
    champion's mean absolute error on its own holdout: trusted, and not inflated when most recent
    labels are poisoned), else the median of those distances. For a classifier, a label is
    suspect when the champion predicts another class with probability at least
    ``SUSPECT_CONFIDENCE``, the most confident first. A missing label (or, for a classifier, one
    that is none of the classes) is always suspect. At most ``suspect_max_share`` of the rows are
    quarantined, the worst first; ``quarantined`` has a ``reason`` column, and both frames keep
    ``frame``'s index so a row can be traced back.

    Why trust the champion: it has served and passed this gate on the trusted data, and the failed
    candidate differs from it only by the recent rows, so the recent labels that contradict the
    champion are the likeliest cause of the failure. The prior is wrong when the world really
    changed (then the champion is the stale one), which is why this is allowed once: the retry is
    judged by the same gate, and if it fails too the candidate is rejected and the incident
    escalated rather than trimming the data again. Quarantined rows are set aside, never deleted,
    and the share cap bounds what a wrong prior can discard.
    """
    missing = [c for c in (*schema.features, schema.target) if c not in frame.columns]
    if missing:
        raise DataError(f"recent labelled rows lack columns: {', '.join(missing)}")
    if frame.empty:
        return frame.copy(), frame.iloc[0:0].assign(reason=pd.Series(dtype="object"))
    x = schema.encode(frame)
    raw = frame[schema.target].tolist()
    y = schema.encode_target(raw)
    try:
        if schema.is_classifier:
            badness, reasons = _classifier(schema, proba_rows(champion, schema, x), y, raw)
        else:
            badness, reasons = _regression(cfg, predict_rows(champion, schema, x), y, scale)
    except Exception as exc:
        raise TrainingError(f"the champion cannot judge the recent labels: {exc}") from exc

    limit = math.floor(cfg.suspect_max_share * len(frame) + 1e-9)
    order = np.argsort(-badness, kind="stable")
    chosen = [int(i) for i in order if reasons[i] is not None][:limit]
    quarantined = frame.iloc[chosen].assign(
        reason=pd.Series([reasons[i] for i in chosen], dtype="object").to_numpy()
    )
    keep = np.ones(len(frame), dtype=bool)
    keep[chosen] = False
    return frame.iloc[keep].copy(), quarantined


def _regression(
    cfg: GateConfig, pred: np.ndarray, y: np.ndarray, scale: float | None
) -> tuple[np.ndarray, list[str | None]]:
    """How bad each label is (larger: worse) and why it is suspect (None: it is not)."""
    distance = np.abs(y - pred)
    judged = np.isfinite(distance)
    median = float(np.median(distance[judged])) if judged.any() else 0.0
    if scale is not None and np.isfinite(scale) and scale > 0:
        median, basis = float(scale), "the champion's holdout MAE"
    else:
        basis = "the median distance"
    cut = max(SUSPECT_CUT_MULTIPLE * median, cfg.golden_tolerance)
    bad_label = ~np.isfinite(y)
    # A row the champion cannot predict (non-finite output) gives no evidence: it is kept.
    badness = np.where(bad_label, np.inf, np.where(judged, distance, 0.0))
    reasons: list[str | None] = []
    for i in range(len(y)):
        if bad_label[i]:
            reasons.append(f"label {y[i]} is not a finite number")
        elif judged[i] and distance[i] > cut:
            reasons.append(
                f"label {y[i]:.2f} is {distance[i]:.2f} from the champion's prediction"
                f" {pred[i]:.2f} (cut {cut:.2f}: {SUSPECT_CUT_MULTIPLE:g} x {basis}"
                f" {median:.2f}, at least the golden tolerance {cfg.golden_tolerance:g})"
            )
        else:
            reasons.append(None)
    return badness, reasons


def _classifier(
    schema: Schema, proba: np.ndarray, y: np.ndarray, raw: list[object]
) -> tuple[np.ndarray, list[str | None]]:
    """How confidently the champion contradicts each label, and why it is suspect (or None)."""
    usable = np.isfinite(proba).all(axis=1)
    safe = np.where(np.isfinite(proba), proba, 0.0)
    guess = safe.argmax(axis=1)
    confidence = np.where(usable, safe.max(axis=1), 0.0)
    unknown = ~np.isfinite(y)
    disagrees = ~unknown & usable & (guess != np.where(unknown, -1, y))
    suspect = disagrees & (confidence >= SUSPECT_CONFIDENCE)
    badness = np.where(unknown, np.inf, np.where(suspect, confidence, 0.0))
    reasons: list[str | None] = []
    for i in range(len(y)):
        if unknown[i]:
            text = category_text(raw[i])
            reasons.append(
                "label is missing"
                if text is None or not text
                else f"label {text!r} is none of the classes {', '.join(schema.classes)}"
            )
        elif suspect[i]:
            reasons.append(
                f"label {schema.classes[int(y[i])]!r} disagrees with the champion, which answers"
                f" {schema.classes[guess[i]]!r} with probability {confidence[i]:.2f} (at least"
                f" {SUSPECT_CONFIDENCE:g})"
            )
        else:
            reasons.append(None)
    return badness, reasons
