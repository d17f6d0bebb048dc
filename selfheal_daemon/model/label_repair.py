"""The repair of the data at fault after a failed model test: set aside the recent labels that
disagree most with the champion (``suspect_labels``), so the candidate can be trained once more.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from selfheal_daemon.config import GateConfig
from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.errors import DataError, TrainingError
from selfheal_daemon.model.gate import Predictor, predict_rows

# A recent label is suspect when it is further from the champion's prediction than this many times
# the median distance (and further than golden_tolerance, so a near-perfect champion does not turn
# ordinary noise into suspects). Residuals are heavy-tailed: on the bundled holdout the healthy
# model has 5.6% of honest labels beyond 5x its median distance, 3.4% beyond 6x, 1.8% beyond 8x.
SUSPECT_CUT_MULTIPLE = 6.0


def suspect_labels(
    frame: pd.DataFrame, champion: Predictor, cfg: GateConfig, *, scale: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split recent labelled rows into (kept, quarantined) by how far the champion disagrees.

    This is the "repair the data at fault" step after a candidate fails a model test. It trusts the
    champion: a label is suspect when ``|label - champion prediction|`` exceeds
    ``SUSPECT_CUT_MULTIPLE`` times a scale (and ``golden_tolerance``): ``scale`` when given (the
    champion's mean absolute error on its own holdout: trusted, and not inflated when most recent
    labels are poisoned), else the median of those distances; a missing or infinite label is
    always suspect. At most ``suspect_max_share`` of the rows are
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
    missing = [c for c in (*FEATURES, TARGET) if c not in frame.columns]
    if missing:
        raise DataError(f"recent labelled rows lack columns: {', '.join(missing)}")
    if frame.empty:
        return frame.copy(), frame.iloc[0:0].assign(reason=pd.Series(dtype="object"))
    x = np.array(frame[list(FEATURES)].to_numpy(dtype="float64"), copy=True)
    x[~np.isfinite(x)] = np.nan  # as training does: an infinity is a missing value to the imputer
    y = frame[TARGET].to_numpy(dtype="float64")
    try:
        pred = predict_rows(champion, x)
    except Exception as exc:
        raise TrainingError(f"the champion cannot judge the recent labels: {exc}") from exc

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
    suspect = bad_label | (judged & (distance > cut))

    limit = math.floor(cfg.suspect_max_share * len(frame) + 1e-9)
    order = np.argsort(-badness, kind="stable")
    chosen = [int(i) for i in order if suspect[i]][:limit]
    reasons = [
        f"label {y[i]} is not a finite number"
        if bad_label[i]
        else (
            f"label {y[i]:.2f} is {distance[i]:.2f} from the champion's prediction {pred[i]:.2f}"
            f" (cut {cut:.2f}: {SUSPECT_CUT_MULTIPLE:g} x {basis} {median:.2f},"
            f" at least the golden tolerance {cfg.golden_tolerance:g})"
        )
        for i in chosen
    ]
    quarantined = frame.iloc[chosen].assign(reason=pd.Series(reasons, dtype="object").to_numpy())
    keep = np.ones(len(frame), dtype=bool)
    keep[chosen] = False
    return frame.iloc[keep].copy(), quarantined


# --- the tests -----------------------------------------------------------------------------------
