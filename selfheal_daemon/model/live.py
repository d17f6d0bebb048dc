"""The live metric: the model's own metric over (label, prediction) pairs from feedback, with the
bar it must clear in its direction. Feedback carries the answered class, not its probability, so
a classifier whose metric needs probabilities (roc_auc, log_loss) is measured live by balanced
accuracy, and the note says so."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from selfheal_daemon.config import PerformanceConfig
from selfheal_daemon.model.metrics import live_metric, live_threshold, score, spec
from selfheal_daemon.model.schema import Schema


@dataclass(frozen=True)
class LiveScore:
    """One judged window: the metric measured, its value and bar, the task's other figures."""

    metric: str
    value: float
    threshold: float | None
    higher_is_better: bool
    others: dict[str, float] = field(default_factory=dict)
    note: str = ""


def live_scores(
    schema: Schema, y_true: np.ndarray, y_pred: np.ndarray, cfg: PerformanceConfig
) -> LiveScore:
    """The live metric of ``schema`` on the pairs (NaN where undefined, e.g. one class only)."""
    wanted = schema.metric
    name, value = live_metric(schema, wanted, y_true, y_pred)
    note = ""
    if name != wanted:
        note = f"{wanted} needs probabilities, which feedback lacks: measured as {name}"
    threshold = live_threshold(name, cfg, len(schema.classes), configured_for=wanted)
    others: dict[str, float] = {}
    extra = ("mae",) if not schema.is_classifier else ("accuracy",)
    for other in extra:
        if other != name:
            found = score(schema, other, y_true, y_pred)
            if found is not None and np.isfinite(found):
                others[other] = round(float(found), 4)
    return LiveScore(
        metric=name,
        value=float("nan") if value is None else float(value),
        threshold=threshold,
        higher_is_better=spec(name).direction == "higher",
        others=others,
        note=note,
    )
