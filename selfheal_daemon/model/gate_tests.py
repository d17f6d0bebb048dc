"""The model tests the promotion gate runs on a candidate, on a fixed, trusted ``ProbeSet``.

``golden``         trusted labelled rows: for a regression, enough predictions within
                   ``golden_tolerance`` (in the target's units) of the label; for a classifier, the
                   balanced share correct (the mean over classes of the share of each class's rows
                   classified correctly) at least ``golden_min_share`` times the champion's on the
                   same rows (times 1 without a champion). Balanced, so a model that collapsed to
                   the majority class fails it; relative, so a hard task's champion sets the bar.
``non_finite``     no NaN or infinity (for a classifier: no label that is none of the classes) on
                   golden, probe, edge and holdout rows.
``probabilities``  a classifier's probabilities on those rows are finite, in [0, 1] and sum to 1.
``directional``    each declared check (``DirectionalCheck``): raising a numeric feature by its
                   step moves the prediction (a classifier: the probability of the last class) in
                   the expected direction on enough probe rows.
``slices``         per category of each ``gate.slices`` column with enough holdout rows, the
                   candidate is no worse than the champion by more than ``slice_tolerance``
                   (``gate.slice_test``: it compares with the champion on the holdout).
``latency``        the median 1-row predict and a 1000-row batch stay within their budgets.

Models are called only through the schema. A model that raises or answers the wrong shape fails
the test with the error in words; nothing here crashes on it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from selfheal_daemon.config import DirectionalCheck, GateConfig
from selfheal_daemon.errors import DataError
from selfheal_daemon.model.metrics import invalid_proba_rows
from selfheal_daemon.model.schema import UNSEEN, Schema

Timer = Callable[[], float]
Answers = tuple[np.ndarray, np.ndarray | None]
TEST_NAMES: tuple[str, ...] = (
    "golden",
    "non_finite",
    "probabilities",
    "directional",
    "slices",
    "latency",
)
"""Every model test in the order the gate runs them; each runs only where it applies
(``probabilities`` for a classifier, ``directional`` with checks, ``slices`` with gate.slices)."""
BATCH_ROWS = 1000
# Timed 1-row predicts after one untimed warm-up: the median of 21 shrugs off a few slow ones on a
# busy machine. The 1000-row batch is timed three times for the same reason.
SINGLE_REPEATS = 21
BATCH_REPEATS = 3


class Predictor(Protocol):
    """Anything with scikit-learn's ``predict`` on the schema's model input (a DataFrame)."""

    def predict(self, x: Any, /) -> Any: ...


@dataclass(frozen=True, eq=False)
class ProbeSet:
    """Fixed, trusted inputs for the model tests, drawn once from trusted base data.

    Arrays are float64 in schema feature order (``Schema.encode``) and read-only.
    ``golden_x``/``golden_y``: labelled rows, complete where the base data has complete rows
    (they may overlap a model's training rows: the test asks whether it still knows trusted
    facts). ``direction_x[i]``: rows for ``checks[i]`` whose feature can be raised by its step and
    stay inside the base data's range (beyond it a tree model is flat by construction); empty,
    with ``direction_problems[i]`` saying why, for a check that cannot run. ``edge_x``: each
    feature at its extremes (numeric: the base data's minimum and maximum; categorical: the first
    and last category and an unseen one) and missing, the others at the median (numeric) or most
    common category; plus all-minimum, all-maximum, all-missing (and all-unseen) rows.
    """

    golden_x: np.ndarray
    golden_y: np.ndarray
    edge_x: np.ndarray
    checks: tuple[DirectionalCheck, ...] = ()
    direction_x: tuple[np.ndarray, ...] = ()
    direction_problems: tuple[str | None, ...] = ()

    @classmethod
    def from_frame(
        cls,
        base: pd.DataFrame,
        schema: Schema,
        cfg: GateConfig,
        checks: Sequence[DirectionalCheck],
        seed: int = 0,
    ) -> ProbeSet:
        """Draw the probe set from ``base`` (raw feature columns and the target); equal inputs
        give equal arrays. ``DataError`` when a column is missing or no row has a known label."""
        missing = [c for c in (*schema.features, schema.target) if c not in base.columns]
        if missing:
            raise DataError(f"probe base data lacks columns: {', '.join(missing)}")
        x = schema.encode(base)
        y = schema.encode_target(base[schema.target].tolist())
        mask = schema.categorical_mask
        seen = ~(x[:, mask] == UNSEEN).any(axis=1)
        clean = seen & np.isfinite(x).all(axis=1)
        usable = clean if clean.any() else seen  # rows with a gap, when none is complete
        labelled = usable & np.isfinite(y)
        if not labelled.any():
            raise DataError("probe base data has no row with known features and label")
        rngs = [
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(1 + len(checks))
        ]
        golden = _draw(rngs[0], np.flatnonzero(labelled), cfg.golden_rows)
        low, high, middle = _ranges(schema, x[usable])

        arrays: list[np.ndarray] = []
        problems: list[str | None] = []
        for check, rng in zip(checks, rngs[1:], strict=True):
            problem = check_problem(schema, check)
            rows = np.empty((0, len(schema.columns)))
            if problem is None:
                j = schema.position(check.feature)
                raised = x[:, j] + check.step
                inside = usable & np.isfinite(raised) & (raised >= low[j]) & (raised <= high[j])
                if inside.any():
                    rows = x[_draw(rng, np.flatnonzero(inside), cfg.direction_rows)]
                else:
                    problem = (
                        f"no base row can have {check.feature} raised by {check.step:g} and stay"
                        f" within {low[j]:g}..{high[j]:g}"
                    )
            arrays.append(_frozen(rows))
            problems.append(problem)
        return cls(
            golden_x=_frozen(x[golden]),
            golden_y=_frozen(y[golden]),
            edge_x=_frozen(_edge_rows(schema, low, high, middle)),
            checks=tuple(checks),
            direction_x=tuple(arrays),
            direction_problems=tuple(problems),
        )


@dataclass(frozen=True)
class TestResult:
    """The outcome of one model test; ``detail`` is a sentence a person can check by hand.

    ``value`` is the measured quantity: the share for golden and directional (the lowest over the
    checks), the count of bad outputs for non_finite and probabilities, the count of losing slices,
    the median 1-row predict in ms for latency; NaN when the model raised before it was measured.
    """

    __test__ = False  # not a pytest class, despite the name

    name: str
    passed: bool
    detail: str
    value: float


def check_problem(schema: Schema, check: DirectionalCheck) -> str | None:
    """Why a directional check cannot run on this schema (an unknown or non-numeric feature)."""
    if check.feature not in schema.features:
        return f"{check.feature!r} is not a feature of model {schema.name!r}"
    kind = schema.column(check.feature).kind
    if kind != "numeric":
        return f"{check.feature!r} is {kind}: a directional check needs a numeric feature"
    return None


def model_tests(
    model: Predictor,
    probes: ProbeSet,
    cfg: GateConfig,
    schema: Schema,
    *,
    champion: Predictor | None = None,
    timer: Timer = time.perf_counter,
    holdout_x: np.ndarray | None = None,
) -> tuple[TestResult, ...]:
    """Run the tests that apply to ``model`` (all of ``TEST_NAMES`` but ``slices``, which the
    gate runs on the holdout), in order. ``champion`` sets a classifier's golden bar;
    ``holdout_x`` is also checked for non-finite output. ``timer`` returns seconds."""
    sets: dict[str, np.ndarray] = {
        "golden": probes.golden_x,
        "directional probe": _stack(probes.direction_x, len(schema.columns)),
        "edge": probes.edge_x,
    }
    if holdout_x is not None:
        sets["holdout"] = holdout_x
    sets = {k: v for k, v in sets.items() if len(v)}
    results = [_golden(model, probes, cfg, schema, champion), _non_finite(model, schema, sets)]
    if schema.is_classifier:
        results.append(_probabilities(model, schema, sets))
    if probes.checks:
        results.append(_directional(model, probes, schema))
    results.append(_latency(model, probes, cfg, schema, timer))
    return tuple(results)


def _golden(
    model: Predictor, probes: ProbeSet, cfg: GateConfig, schema: Schema, champion: Predictor | None
) -> TestResult:
    try:
        pred = predict_rows(model, schema, probes.golden_x)
    except Exception as exc:
        return _raised("golden", "golden rows", exc)
    n = len(probes.golden_y)
    if not schema.is_classifier:
        within = int(np.sum(np.abs(pred - probes.golden_y) <= cfg.golden_tolerance))  # NaN: not
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
    share = balanced_share(probes.golden_y, pred)
    need, basis = cfg.golden_min_share, ""
    if champion is not None:
        try:
            reference = balanced_share(
                probes.golden_y, predict_rows(champion, schema, probes.golden_x)
            )
        except Exception as exc:
            basis = f" (the champion could not be measured on them: {describe_error(exc)})"
        else:
            need = cfg.golden_min_share * reference
            basis = f": {_pct(cfg.golden_min_share)} of the champion's {reference:.3f}"
    return TestResult(
        name="golden",
        passed=share >= need,
        detail=(
            f"balanced share correct on {n:,} golden rows {share:.3f} (the mean over classes of"
            f" the share of each class's rows classified correctly), need {need:.3f}{basis}"
        ),
        value=share,
    )


def balanced_share(y: np.ndarray, pred: np.ndarray) -> float:
    """The mean over the classes present in ``y`` of the share of their rows predicted right."""
    present = np.unique(y[np.isfinite(y)])
    if not len(present):
        return 0.0
    return float(np.mean([np.mean(pred[y == c] == c) for c in present]))


def _non_finite(model: Predictor, schema: Schema, sets: Mapping[str, np.ndarray]) -> TestResult:
    bad: dict[str, int] = {}
    for label, x in sets.items():
        try:
            pred = predict_rows(model, schema, x)
        except Exception as exc:
            return _raised("non_finite", f"{label} rows", exc)
        if (count := int(np.sum(~np.isfinite(pred)))) > 0:
            bad[label] = count
    what = "labels that are none of the classes" if schema.is_classifier else "non-finite values"
    return _tally("non_finite", bad, sets, f"predictions are {what}", "predictions finite")


def _probabilities(model: Predictor, schema: Schema, sets: Mapping[str, np.ndarray]) -> TestResult:
    bad: dict[str, int] = {}
    for label, x in sets.items():
        try:
            proba = proba_rows(model, schema, x)
        except Exception as exc:
            return _raised("probabilities", f"{label} rows", exc)
        if (count := int(invalid_proba_rows(proba).sum())) > 0:
            bad[label] = count
    return _tally(
        "probabilities",
        bad,
        sets,
        "rows of probabilities are not finite, within [0, 1] and summing to 1",
        "rows of probabilities valid (finite, within [0, 1], summing to 1)",
    )


def _tally(
    name: str, bad: Mapping[str, int], sets: Mapping[str, np.ndarray], fault: str, fine: str
) -> TestResult:
    total = sum(bad.values())
    if total:
        parts = ", ".join(f"{n:,} of {len(sets[k]):,} {k} rows" for k, n in bad.items())
        detail = f"{total:,} {fault}: {parts}"
    else:
        parts = ", ".join(f"{len(x):,} {k}" for k, x in sets.items())
        detail = f"all {sum(len(x) for x in sets.values()):,} {fine} ({parts} rows)"
    return TestResult(name=name, passed=total == 0, detail=detail, value=float(total))


def _directional(model: Predictor, probes: ProbeSet, schema: Schema) -> TestResult:
    sentences: list[str] = []
    shares: list[float] = []
    passed = True
    for check, rows, problem in zip(
        probes.checks, probes.direction_x, probes.direction_problems, strict=True
    ):
        if problem is not None:
            sentences.append(f"check on {check.feature} cannot run: {problem}")
            shares.append(0.0)
            passed = False
            continue
        raised = np.array(rows, copy=True)
        raised[:, schema.position(check.feature)] += check.step
        try:
            before, after = _moved_output(model, schema, rows), _moved_output(model, schema, raised)
        except Exception as exc:
            return _raised("directional", "directional probe rows", exc)
        # Strictly: flat is not a move; NaN counts as not moved.
        moved = after > before if check.expected == "increase" else after < before
        n = len(rows)
        share = int(moved.sum()) / n if n else 0.0
        shares.append(share)
        passed = passed and share >= check.share
        verb = "raised" if check.expected == "increase" else "lowered"
        what = (
            f"the probability of {schema.classes[-1]!r}"
            if schema.is_classifier
            else "the prediction"
        )
        sentences.append(
            f"raising {check.feature} by {check.step:g} {verb} {what} for {int(moved.sum()):,} of"
            f" {n:,} probe rows ({_pct(share)}, need {_pct(check.share)})"
        )
    return TestResult(
        name="directional", passed=passed, detail="; ".join(sentences), value=min(shares)
    )


def _moved_output(model: Predictor, schema: Schema, x: np.ndarray) -> np.ndarray:
    if schema.is_classifier:
        return proba_rows(model, schema, x)[:, -1]
    return predict_rows(model, schema, x)


def _latency(
    model: Predictor, probes: ProbeSet, cfg: GateConfig, schema: Schema, timer: Timer
) -> TestResult:
    pool = np.vstack([probes.golden_x, *probes.direction_x])
    batch = np.resize(pool, (BATCH_ROWS, len(schema.columns)))  # repeats the pool to 1000 rows
    try:
        predict_rows(model, schema, pool[:1])  # warm-up: first-call costs are not the steady state
        singles = [
            _timed(model, schema, pool[i % len(pool)][None, :], timer)
            for i in range(SINGLE_REPEATS)
        ]
        batches = [_timed(model, schema, batch, timer) for _ in range(BATCH_REPEATS)]
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


def predict_rows(model: Predictor, schema: Schema, x: np.ndarray) -> np.ndarray:
    """``schema.predict`` as a flat float64 array, one per row; a wrong shape is an error."""
    pred = schema.predict(model, x)
    if pred.shape != (len(x),):
        raise ValueError(f"predict returned shape {pred.shape} for {len(x)} rows")
    return pred


def proba_rows(model: Any, schema: Schema, x: np.ndarray) -> np.ndarray:
    """``schema.predict_proba``, one row per input row and one column per class, or an error."""
    proba = schema.predict_proba(model, x)
    if proba.shape != (len(x), len(schema.classes)):
        raise ValueError(f"predict_proba returned shape {proba.shape} for {len(x)} rows")
    return proba


def describe_error(exc: BaseException) -> str:
    """An exception in one audit-sized line."""
    text = str(exc)
    if len(text) > 300:  # an audit line, not a traceback
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _timed(model: Predictor, schema: Schema, x: np.ndarray, timer: Timer) -> float:
    start = timer()
    predict_rows(model, schema, x)
    return (timer() - start) * 1000.0


def _raised(name: str, where: str, exc: Exception) -> TestResult:
    return TestResult(
        name=name,
        passed=False,
        detail=f"predict raised {describe_error(exc)} on the {where}",
        value=math.nan,
    )


def _pct(share: float) -> str:
    return f"{share * 100:.0f}%"


def _draw(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` indices from ``pool`` without replacement, in ascending order."""
    return np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))


def _ranges(schema: Schema, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per feature: the low, high and middle values the edge rows use (NaN where unknown)."""
    k = len(schema.columns)
    low, high, middle = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    for j, col in enumerate(schema.columns):
        values = x[:, j][np.isfinite(x[:, j])]
        if col.is_numeric:
            if len(values):
                low[j], high[j], middle[j] = values.min(), values.max(), np.median(values)
            continue
        codes, counts = np.unique(values[values >= 0], return_counts=True)
        last = len(col.categories) - 1
        low[j], high[j] = (0.0, float(last)) if last >= 0 else (UNSEEN, UNSEEN)
        middle[j] = codes[np.argmax(counts)] if len(codes) else low[j]
    return low, high, middle


def _edge_rows(schema: Schema, low: np.ndarray, high: np.ndarray, middle: np.ndarray) -> np.ndarray:
    mask = schema.categorical_mask
    rows = [low, high, np.full_like(middle, np.nan)]
    if mask.any():
        rows.append(np.where(mask, UNSEEN, middle))
    for j, col in enumerate(schema.columns):
        extra = () if col.is_numeric else (UNSEEN,)
        for value in (low[j], high[j], np.nan, *extra):
            row = middle.copy()
            row[j] = value
            rows.append(row)
    return np.vstack(rows)


def _stack(arrays: Sequence[np.ndarray], width: int) -> np.ndarray:
    return np.vstack([np.empty((0, width)), *arrays])


def _frozen(a: np.ndarray) -> np.ndarray:
    out = np.array(a, dtype="float64", copy=True)
    out.setflags(write=False)
    return out
