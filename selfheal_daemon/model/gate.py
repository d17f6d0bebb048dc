"""The promotion gate: whether a candidate model may replace the champion (the serving model).

A candidate is promoted only when all of these hold (SPEC, "Healing"), in the gate's metric (the
schema's, or the one given; ``metrics.choose_metric``) and in that metric's own direction (higher
R2 or ROC AUC is better, lower MAE or log loss is):

- its holdout metric clears the absolute bar ``metrics.threshold_for`` (``gate.threshold``, else
  ``min_r2`` for R2, else the metric's default; none for MAE, RMSE and log loss);
- it is no worse than the champion's on the same fresh holdout, within ``champion_tolerance``
  (skipped when there is no champion, or the champion cannot be measured);
- it passes the model tests that apply (``gate_tests``: golden, non_finite, probabilities,
  directional, slices, latency) on a fixed, trusted ``ProbeSet``.

Where the metric is undefined on the holdout (ROC AUC with a class absent from its labels), the
gate measures balanced accuracy instead (a regression: MAE) and notes it.

Pure apart from calling the models through the schema and reading a timer (injectable): no
files, no processes. A candidate that raises, returns the wrong shape, non-finite values or
invalid probabilities fails a test or the metric check with the error in words; the gate never
crashes on it. The repair step after a test failure is ``label_repair.suspect_labels``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selfheal_daemon.config import GateConfig
from selfheal_daemon.errors import DataError, TrainingError
from selfheal_daemon.model.gate_tests import (
    BATCH_ROWS,
    TEST_NAMES,
    Answers,
    Predictor,
    ProbeSet,
    TestResult,
    Timer,
    describe_error,
    model_tests,
    predict_rows,
    proba_rows,
)
from selfheal_daemon.model.metrics import (
    FALLBACK_METRIC,
    answers,
    as_json,
    fails_threshold,
    nan_metrics,
    resolve,
    score,
    scores,
    shortfall,
    spec,
    threshold_for,
)
from selfheal_daemon.model.schema import Schema, slice_values

__all__ = [
    "BATCH_ROWS",
    "TEST_NAMES",
    "GateVerdict",
    "Predictor",
    "ProbeSet",
    "TestResult",
    "check_threshold",
    "judge",
    "model_tests",
    "predict_rows",
    "proba_rows",
    "slice_test",
    "threshold_failure",
]


@dataclass(frozen=True)
class GateVerdict:
    """The gate's decision with everything that led to it.

    ``candidate`` and ``champion`` hold the task's metrics (``metrics.task_metrics``) on the same
    holdout; a model whose holdout answers could not be measured has NaN there (None in
    ``to_details``). ``champion`` is None when there is no champion. ``metric`` is the metric the
    gate judged by. ``reasons`` names every failure; ``notes`` are remarks that did not block
    promotion (a champion that could not be measured, a metric undefined on this holdout).
    """

    promote: bool
    candidate: dict[str, float]
    champion: dict[str, float] | None
    tests: tuple[TestResult, ...]
    reasons: tuple[str, ...]
    metric: str
    notes: tuple[str, ...] = field(default=())

    @property
    def failed_tests(self) -> tuple[str, ...]:
        """Names of the model tests that failed, in test order."""
        return tuple(t.name for t in self.tests if not t.passed)

    @property
    def test_failure(self) -> bool:
        """True when a model test failed (a ``test_failure``), not only a metric check."""
        return bool(self.failed_tests)

    def to_details(self) -> dict[str, Any]:
        """JSON-ready summary for an audit record; non-finite numbers become None."""
        return {
            "promote": self.promote,
            "metric": self.metric,
            "candidate": as_json(self.candidate),
            "champion": None if self.champion is None else as_json(self.champion),
            "tests": [
                {
                    "name": t.name,
                    "passed": t.passed,
                    "detail": t.detail,
                    "value": t.value if math.isfinite(t.value) else None,
                }
                for t in self.tests
            ],
            "failed_tests": list(self.failed_tests),
            "reasons": list(self.reasons),
            "notes": list(self.notes),
        }


def threshold_failure(
    metrics: Mapping[str, float],
    cfg: GateConfig,
    schema: Schema,
    metric: str | None = None,
    *,
    who: str = "model",
    configured_for: str | None = None,
) -> str | None:
    """The gate's absolute bar, its one definition: why ``who`` fails it, or None.

    ``metric`` defaults to the schema's. ``configured_for``: the metric ``gate.threshold`` was set
    for, when ``metric`` is a fallback measured in its place (its own default bar applies then).
    """
    metric = resolve(schema, metric)
    bar = threshold_for(metric, cfg, len(schema.classes), configured_for=configured_for)
    value = float(metrics.get(metric, math.nan))
    if not fails_threshold(metric, value, bar):
        return None
    title = spec(metric).title
    if not math.isfinite(value):
        return f"{who} {title} could not be measured, so it does not clear the gate's bar"
    if spec(metric).direction == "higher":
        return f"{who} {title} {value:.3f} is below the gate's minimum {_bar(bar)}"
    return f"{who} {title} {value:.3f} is above the gate's maximum {_bar(bar)}"


def check_threshold(
    metrics: Mapping[str, float], cfg: GateConfig, schema: Schema, metric: str | None = None
) -> None:
    """``TrainingError`` unless a model's holdout metrics clear the absolute bar (the first
    model, which has no champion to be judged against, is held to this alone)."""
    failure = threshold_failure(metrics, cfg, schema, metric)
    if failure is not None:
        raise TrainingError(failure)


def judge(  # noqa: PLR0917 - the agreed API passes the inputs positionally
    candidate: Predictor,
    champion: Predictor | None,
    holdout_x: np.ndarray,
    holdout_y: np.ndarray,
    probes: ProbeSet,
    cfg: GateConfig,
    schema: Schema,
    metric: str | None = None,
    *,
    timer: Timer = time.perf_counter,
) -> GateVerdict:
    """Decide whether ``candidate`` replaces ``champion``, measuring both on the same holdout
    (``holdout_x`` in schema feature order, ``holdout_y`` encoded targets) in ``metric`` (default:
    the schema's; ``"auto"`` resolved for its task)."""
    metric = resolve(schema, metric)
    holdout_y = np.asarray(holdout_y, dtype="float64")
    reasons: list[str] = []
    notes: list[str] = []
    cand_out, error = _answers(candidate, schema, holdout_x)
    cand = nan_metrics(schema) if cand_out is None else scores(schema, holdout_y, *cand_out)
    measured = metric
    if cand_out is None:
        reasons.append(f"candidate's holdout metrics cannot be measured: {error}")
    else:
        if metric not in cand:
            measured = FALLBACK_METRIC if schema.is_classifier else "mae"
            notes.append(
                f"{spec(metric).title} is undefined on this holdout (a class is absent from its"
                f" labels): the gate measured {spec(measured).title} instead"
            )
        failure = threshold_failure(
            cand, cfg, schema, measured, who="candidate", configured_for=metric
        )
        if failure is not None:
            reasons.append(failure)

    champ: dict[str, float] | None = None
    champ_out: Answers | None = None
    if champion is not None:
        champ_out, champ_error = _answers(champion, schema, holdout_x)
        if champ_out is None:
            champ = nan_metrics(schema)
            notes.append(
                f"champion could not be measured on the holdout ({champ_error}): the candidate was"
                " held to the absolute threshold only"
            )
        else:
            champ = scores(schema, holdout_y, *champ_out)
            mine = cand.get(measured, math.nan)
            theirs = champ.get(measured, math.nan)
            if cand_out is not None and shortfall(measured, mine, theirs) > cfg.champion_tolerance:
                lower = "; lower is better" if spec(measured).direction == "lower" else ""
                left, right = _distinct(mine, theirs)
                reasons.append(
                    f"candidate {spec(measured).title} {left} is worse than the champion's {right}"
                    f" on the same holdout of {len(holdout_y):,} rows (tolerance"
                    f" {cfg.champion_tolerance:g}{lower})"
                )

    tests = list(
        model_tests(
            candidate, probes, cfg, schema, champion=champion, timer=timer, holdout_x=holdout_x
        )
    )
    if cfg.slices:
        sliced = slice_test(
            schema, metric, cfg, holdout_x, holdout_y, candidate=cand_out, champion=champ_out
        )
        tests.insert(len(tests) - 1, sliced)  # before latency, in TEST_NAMES order
    reasons.extend(f"{t.name} test failed: {t.detail}" for t in tests if not t.passed)
    return GateVerdict(
        promote=not reasons,
        candidate=cand,
        champion=champ,
        tests=tuple(tests),
        reasons=tuple(reasons),
        metric=metric,
        notes=tuple(notes),
    )


def slice_test(
    schema: Schema,
    metric: str,
    cfg: GateConfig,
    x: np.ndarray,
    y: np.ndarray,
    *,
    candidate: Answers | None,
    champion: Answers | None,
) -> TestResult:
    """The ``slices`` test: per-slice champion comparison on the holdout (x, y), from both models'
    answers on it (None: that model has none). On each category of each ``cfg.slices`` column
    (missing and unseen cells are slices of their own) with at least ``slice_min_rows`` rows,
    the candidate may be worse than the champion by at most ``slice_tolerance`` in ``metric``'s
    own direction; where ``metric`` is undefined on a slice (ROC AUC on one class), accuracy is
    compared instead (for a regression, MAE)."""
    if candidate is None:
        return TestResult("slices", False, "the candidate could not be measured on the holdout", 0)
    if champion is None:
        return TestResult("slices", True, "no champion measured to compare slices with", 0.0)
    losses: list[str] = []
    problems: list[str] = []
    compared = skipped = 0
    for column in cfg.slices:
        try:
            codes = slice_values(schema, x, column)
        except DataError as exc:
            problems.append(f"slice column {column!r}: {exc}")
            continue
        names = schema.column(column).categories
        for code, label in _slices(codes, names):
            rows = np.isnan(codes) if math.isnan(code) else codes == code
            if rows.sum() < cfg.slice_min_rows:
                skipped += 1
                continue
            compared += 1
            used, mine, theirs = _slice_scores(schema, metric, y, rows, candidate, champion)
            if shortfall(used, mine, theirs) > cfg.slice_tolerance:
                losses.append(f"{column}={label}: {used} {mine:.3f} vs champion {theirs:.3f}")
    tol = f"{cfg.slice_tolerance:g}"
    if losses:
        problems.append(
            f"worse than the champion by more than {tol} on {len(losses)} of {compared} slices:"
            f" {', '.join(losses)}"
        )
    detail = "; ".join(problems) or (
        f"no slice worse than the champion by more than {tol} ({compared} slices of"
        f" {', '.join(cfg.slices)} with at least {cfg.slice_min_rows} rows compared,"
        f" {skipped} smaller skipped)"
    )
    return TestResult("slices", not problems, detail, float(len(losses)))


# --- helpers -------------------------------------------------------------------------------------


def _answers(model: Predictor, schema: Schema, x: np.ndarray) -> tuple[Answers | None, str]:
    """A model's answers on the holdout, or None and the reason they could not be had."""
    try:
        return answers(model, schema, x), ""
    except TrainingError as exc:
        return None, str(exc)
    except Exception as exc:
        return None, f"predict raised {describe_error(exc)}"


def _slices(codes: np.ndarray, names: tuple[str, ...]) -> list[tuple[float, str]]:
    """Each distinct code of a slice column with its label, missing cells last."""
    out: list[tuple[float, str]] = []
    for code in np.unique(codes[np.isfinite(codes)]).tolist():
        out.append((code, "(unseen)" if code < 0 else names[int(code)]))
    if np.isnan(codes).any():
        out.append((math.nan, "(missing)"))
    return out


def _slice_scores(  # noqa: PLR0917 - a private helper of slice_test
    schema: Schema,
    metric: str,
    y: np.ndarray,
    rows: np.ndarray,
    cand: Answers,
    champ: Answers,
) -> tuple[str, float, float]:
    """(the metric compared, the candidate's, the champion's) on the slice ``rows``."""

    def on(answers: Answers, name: str) -> float | None:
        pred, proba = answers
        return score(schema, name, y[rows], pred[rows], None if proba is None else proba[rows])

    mine, theirs = on(cand, metric), on(champ, metric)
    if mine is None or theirs is None:
        metric = "accuracy" if schema.is_classifier else "mae"
        mine, theirs = on(cand, metric), on(champ, metric)
    return metric, math.nan if mine is None else mine, math.nan if theirs is None else theirs


def _bar(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:.2f}" if round(value, 2) == value else f"{value:.4g}"


def _distinct(a: float, b: float) -> tuple[str, str]:
    """Format two metric values with the fewest decimals (3 to 6) that tell them apart."""
    for places in range(3, 7):
        left, right = f"{a:.{places}f}", f"{b:.{places}f}"
        if left != right:
            return left, right
    return f"{a:.6f}", f"{b:.6f}"
