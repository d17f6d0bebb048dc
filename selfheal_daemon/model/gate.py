"""The promotion gate: whether a candidate model may replace the champion (the serving model).

A candidate is promoted only when all of these hold (SPEC, "Healing"):

- its holdout R2 clears the absolute threshold ``GateConfig.min_r2``;
- its holdout R2 is no worse than the champion's on the same fresh holdout, within
  ``champion_tolerance`` (skipped when there is no champion, or the champion cannot be measured);
- it passes the model tests on a fixed, trusted ``ProbeSet``:

  ``golden``       on trusted labelled rows, enough predictions within a tolerance of the label;
  ``non_finite``   no NaN or infinity out of the model on golden, probe, edge and holdout rows;
  ``directional``  raising one feature (MedInc) raises the prediction for enough probe rows;
  ``latency``      the median 1-row predict and a 1000-row batch stay within their budgets.

Pure apart from calling ``predict`` and reading a timer (injectable, ``time.perf_counter`` by
default): no files, no processes. A candidate that raises, returns the wrong shape or returns
non-finite values fails a test or the metric check with the error in words; the gate never
crashes on it. The repair step after a test failure is ``label_repair.suspect_labels``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from selfheal_daemon.config import GateConfig
from selfheal_daemon.defaults import FEATURES, TARGET
from selfheal_daemon.errors import DataError, TrainingError
from selfheal_daemon.model.metrics import METRIC_NAMES, evaluate

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
    "threshold_failure",
]

Timer = Callable[[], float]
TEST_NAMES: tuple[str, ...] = ("golden", "non_finite", "directional", "latency")
BATCH_ROWS = 1000
# Timed 1-row predicts after one untimed warm-up: the median of 21 shrugs off a few slow ones on a
# busy machine. The 1000-row batch is timed three times for the same reason.
SINGLE_REPEATS = 21
BATCH_REPEATS = 3


class Predictor(Protocol):
    """Anything with scikit-learn's ``predict``: the fitted pipelines, or a test's stand-in."""

    def predict(self, x: np.ndarray, /) -> Any: ...


@dataclass(frozen=True, eq=False)
class ProbeSet:
    """Fixed, trusted inputs for the model tests, drawn once from trusted base data.

    ``golden_x``/``golden_y``: labelled rows with finite features and labels (they may overlap a
    model's training rows: the test asks whether it still knows trusted facts). ``direction_x``:
    rows whose direction feature can be raised by ``direction_step`` and stay inside the base
    data's range (beyond it a tree model is flat by construction, saying nothing of direction).
    ``edge_x``: each feature at the base data's minimum, maximum and missing (NaN), the others at
    the median; plus all-minimum, all-maximum and all-missing rows. Arrays are float64 in
    ``FEATURES`` order and read-only.
    """

    golden_x: np.ndarray
    golden_y: np.ndarray
    direction_x: np.ndarray
    edge_x: np.ndarray

    @classmethod
    def from_frame(cls, base: pd.DataFrame, cfg: GateConfig, seed: int = 0) -> ProbeSet:
        """Draw the probe set from ``base`` (FEATURES + TARGET); equal inputs give equal arrays."""
        missing = [c for c in (*FEATURES, TARGET) if c not in base.columns]
        if missing:
            raise DataError(f"probe base data lacks columns: {', '.join(missing)}")
        x = base[list(FEATURES)].to_numpy(dtype="float64")
        y = base[TARGET].to_numpy(dtype="float64")
        clean = np.isfinite(x).all(axis=1) & np.isfinite(y)
        if not clean.any():
            raise DataError("probe base data has no row with finite features and label")
        golden_rng, direction_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
        )
        golden = _draw(golden_rng, np.flatnonzero(clean), cfg.golden_rows)

        j = FEATURES.index(cfg.direction_feature)
        low, high = np.nanmin(x[clean], axis=0), np.nanmax(x[clean], axis=0)
        raised = x[:, j] + cfg.direction_step
        inside = clean & (raised >= low[j]) & (raised <= high[j])
        if not inside.any():
            raise DataError(
                f"no base row can have {cfg.direction_feature} raised by {cfg.direction_step:g}"
                f" and stay within {low[j]:g}..{high[j]:g}"
            )
        direction = _draw(direction_rng, np.flatnonzero(inside), cfg.direction_rows)
        return cls(
            golden_x=_frozen(x[golden]),
            golden_y=_frozen(y[golden]),
            direction_x=_frozen(x[direction]),
            edge_x=_frozen(_edge_rows(low, high, np.median(x[clean], axis=0))),
        )


@dataclass(frozen=True)
class TestResult:
    """The outcome of one model test; ``detail`` is a sentence a person can check by hand.

    ``value`` is the measured quantity: the share for golden and directional, the count of
    non-finite predictions for non_finite, the median 1-row predict in ms for latency; NaN when the
    model raised before it could be measured.
    """

    __test__ = False  # not a pytest class, despite the name

    name: str
    passed: bool
    detail: str
    value: float


@dataclass(frozen=True)
class GateVerdict:
    """The gate's decision with everything that led to it.

    ``candidate`` and ``champion`` hold r2, mae and rmse on the same holdout; a model whose holdout
    predictions could not be measured has NaN there (None in ``to_details``). ``champion`` is None
    when there is no champion. ``reasons`` names every failure; ``notes`` are remarks that did not
    block promotion (e.g. a champion that could not be measured, so only the threshold applied).
    """

    promote: bool
    candidate: dict[str, float]
    champion: dict[str, float] | None
    tests: tuple[TestResult, ...]
    reasons: tuple[str, ...]
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
            "candidate": _json_metrics(self.candidate),
            "champion": None if self.champion is None else _json_metrics(self.champion),
            "tests": [
                {
                    "name": t.name,
                    "passed": t.passed,
                    "detail": t.detail,
                    "value": _json_float(t.value),
                }
                for t in self.tests
            ],
            "failed_tests": list(self.failed_tests),
            "reasons": list(self.reasons),
            "notes": list(self.notes),
        }


def model_tests(
    model: Predictor,
    probes: ProbeSet,
    cfg: GateConfig,
    *,
    timer: Timer = time.perf_counter,
    holdout_x: np.ndarray | None = None,
) -> tuple[TestResult, ...]:
    """Run golden, non_finite, directional and latency on ``model``, in that order.

    ``holdout_x``, when given, is also checked for non-finite output. Use the ``cfg`` the probes
    were drawn with. ``timer`` returns seconds; only the latency test reads it.
    """
    sets: dict[str, np.ndarray] = {
        "golden": probes.golden_x,
        "directional probe": probes.direction_x,
        "edge": probes.edge_x,
    }
    if holdout_x is not None:
        sets["holdout"] = holdout_x
    return (
        _golden(model, probes, cfg),
        _non_finite(model, sets),
        _directional(model, probes, cfg),
        _latency(model, probes, cfg, timer),
    )


def threshold_failure(metrics: Mapping[str, float], cfg: GateConfig, who: str) -> str | None:
    """The gate's absolute threshold, its one definition: why ``who`` fails it, or None."""
    if metrics["r2"] < cfg.min_r2:
        return f"{who} R2 {metrics['r2']:.3f} is below the gate's minimum {cfg.min_r2:.2f}"
    return None


def check_threshold(metrics: Mapping[str, float], cfg: GateConfig) -> None:
    """``TrainingError`` unless a model's holdout metrics clear the absolute threshold (the first
    model, which has no champion to be judged against, is held to this alone)."""
    failure = threshold_failure(metrics, cfg, "model")
    if failure is not None:
        raise TrainingError(failure)


def judge(  # noqa: PLR0917 - the agreed API passes the six inputs positionally
    candidate: Predictor,
    champion: Predictor | None,
    holdout_x: np.ndarray,
    holdout_y: np.ndarray,
    probes: ProbeSet,
    cfg: GateConfig,
    *,
    timer: Timer = time.perf_counter,
) -> GateVerdict:
    """Decide whether ``candidate`` replaces ``champion``, measuring both on the same holdout."""
    reasons: list[str] = []
    notes: list[str] = []
    rows = f"{len(holdout_y):,}"
    cand, error = _measure(candidate, holdout_x, holdout_y)
    if error is not None:
        reasons.append(f"candidate's holdout metrics cannot be measured: {error}")
    elif (failure := threshold_failure(cand, cfg, "candidate")) is not None:
        reasons.append(failure)

    champ: dict[str, float] | None = None
    if champion is not None:
        champ, champ_error = _measure(champion, holdout_x, holdout_y)
        if champ_error is not None:
            notes.append(
                f"champion could not be measured on the holdout ({champ_error}): the candidate was"
                " held to the absolute threshold only"
            )
        elif error is None and cand["r2"] < champ["r2"] - cfg.champion_tolerance:
            mine, theirs = _distinct(cand["r2"], champ["r2"])
            reasons.append(
                f"candidate R2 {mine} is worse than the champion's {theirs} on the same holdout of"
                f" {rows} rows (tolerance {cfg.champion_tolerance:g})"
            )

    tests = model_tests(candidate, probes, cfg, timer=timer, holdout_x=holdout_x)
    reasons.extend(f"{t.name} test failed: {t.detail}" for t in tests if not t.passed)
    return GateVerdict(
        promote=not reasons,
        candidate=cand,
        champion=champ,
        tests=tests,
        reasons=tuple(reasons),
        notes=tuple(notes),
    )


def _golden(model: Predictor, probes: ProbeSet, cfg: GateConfig) -> TestResult:
    try:
        pred = predict_rows(model, probes.golden_x)
    except Exception as exc:
        return _raised("golden", "golden rows", exc)
    within = int(np.sum(np.abs(pred - probes.golden_y) <= cfg.golden_tolerance))  # NaN: not within
    n = len(probes.golden_y)
    share = within / n if n else 0.0
    return TestResult(
        name="golden",
        passed=share >= cfg.golden_min_share,
        detail=(
            f"{within:,} of {n:,} golden rows within {cfg.golden_tolerance:.2f} of the label"
            f" ({_pct(share)}, need {_pct(cfg.golden_min_share)})"
        ),
        value=share,
    )


def _non_finite(model: Predictor, sets: Mapping[str, np.ndarray]) -> TestResult:
    bad: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for label, x in sets.items():
        try:
            pred = predict_rows(model, x)
        except Exception as exc:
            return _raised("non_finite", f"{label} rows", exc)
        sizes[label] = len(x)
        if (count := int(np.sum(~np.isfinite(pred)))) > 0:
            bad[label] = count
    total = sum(bad.values())
    if total:
        parts = ", ".join(f"{n:,} of {sizes[k]:,} {k} rows" for k, n in bad.items())
        detail = f"{total:,} non-finite predictions: {parts}"
    else:
        parts = ", ".join(f"{n:,} {k}" for k, n in sizes.items())
        detail = f"all {sum(sizes.values()):,} predictions finite ({parts} rows)"
    return TestResult(name="non_finite", passed=total == 0, detail=detail, value=float(total))


def _directional(model: Predictor, probes: ProbeSet, cfg: GateConfig) -> TestResult:
    j = FEATURES.index(cfg.direction_feature)
    raised_x = np.array(probes.direction_x, copy=True)
    raised_x[:, j] += cfg.direction_step
    try:
        before = predict_rows(model, probes.direction_x)
        after = predict_rows(model, raised_x)
    except Exception as exc:
        return _raised("directional", "directional probe rows", exc)
    up = int(np.sum(after > before))  # strictly: flat is not "raises"; NaN counts as not raised
    n = len(before)
    share = up / n if n else 0.0
    return TestResult(
        name="directional",
        passed=share >= cfg.direction_min_share,
        detail=(
            f"raising {cfg.direction_feature} by {cfg.direction_step:g} raised the prediction for"
            f" {up:,} of {n:,} probe rows ({_pct(share)}, need {_pct(cfg.direction_min_share)})"
        ),
        value=share,
    )


def _latency(model: Predictor, probes: ProbeSet, cfg: GateConfig, timer: Timer) -> TestResult:
    pool = np.vstack([probes.golden_x, probes.direction_x])
    batch = np.resize(pool, (BATCH_ROWS, len(FEATURES)))  # repeats the pool to 1000 rows
    try:
        predict_rows(model, pool[:1])  # warm-up: first-call costs are not the steady state
        singles = [
            _timed(model, pool[i % len(pool)][None, :], timer) for i in range(SINGLE_REPEATS)
        ]
        batches = [_timed(model, batch, timer) for _ in range(BATCH_REPEATS)]
    except Exception as exc:
        return _raised("latency", "latency probe rows", exc)
    single, whole = statistics.median(singles), statistics.median(batches)
    passed = single <= cfg.latency_budget_ms and whole <= cfg.batch_latency_budget_ms
    return TestResult(
        name="latency",
        passed=passed,
        detail=(
            f"median 1-row predict {single:.1f} ms (budget {cfg.latency_budget_ms:g} ms), median"
            f" {BATCH_ROWS:,}-row batch {whole:.1f} ms (budget {cfg.batch_latency_budget_ms:g} ms)"
            f" over {SINGLE_REPEATS} and {BATCH_REPEATS} timed runs"
        ),
        value=single,
    )


# --- helpers -------------------------------------------------------------------------------------


def predict_rows(model: Predictor, x: np.ndarray) -> np.ndarray:
    """Predictions as a flat float64 array, one per row; a wrong shape is an error like others."""
    pred = np.asarray(model.predict(x), dtype="float64")
    if pred.ndim == 2 and pred.shape[1] == 1:  # a column vector is still one per row
        pred = pred[:, 0]
    if pred.shape != (len(x),):
        raise ValueError(f"predict returned shape {pred.shape} for {len(x)} rows")
    return pred


def _timed(model: Predictor, x: np.ndarray, timer: Timer) -> float:
    start = timer()
    predict_rows(model, x)
    return (timer() - start) * 1000.0


def _measure(model: Predictor, x: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], str | None]:
    """Holdout metrics, or NaN metrics and the reason they could not be measured."""
    try:
        return evaluate(model, x, y), None
    except TrainingError as exc:
        return dict.fromkeys(METRIC_NAMES, math.nan), str(exc)
    except Exception as exc:
        return dict.fromkeys(METRIC_NAMES, math.nan), f"predict raised {_describe(exc)}"


def _raised(name: str, where: str, exc: Exception) -> TestResult:
    return TestResult(
        name=name,
        passed=False,
        detail=f"predict raised {_describe(exc)} on the {where}",
        value=math.nan,
    )


def _describe(exc: Exception) -> str:
    text = str(exc)
    if len(text) > 300:  # an audit line, not a traceback
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _distinct(a: float, b: float) -> tuple[str, str]:
    """Format two R2 values with the fewest decimals (3 to 6) that tell them apart."""
    for places in range(3, 7):
        left, right = f"{a:.{places}f}", f"{b:.{places}f}"
        if left != right:
            return left, right
    return f"{a:.6f}", f"{b:.6f}"


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def _draw(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` indices from ``pool`` without replacement, in ascending order."""
    return np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))


def _edge_rows(low: np.ndarray, high: np.ndarray, middle: np.ndarray) -> np.ndarray:
    rows = [low, high, np.full_like(middle, np.nan)]
    for j in range(len(middle)):
        for value in (low[j], high[j], np.nan):
            row = middle.copy()
            row[j] = value
            rows.append(row)
    return np.vstack(rows)


def _frozen(a: np.ndarray) -> np.ndarray:
    out = np.array(a, dtype="float64", copy=True)
    out.setflags(write=False)
    return out


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _json_metrics(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {k: _json_float(v) for k, v in metrics.items()}
