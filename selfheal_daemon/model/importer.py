"""``selfheal models import FILE --data DATA``: a model trained elsewhere, registered like ours.

The file is a skops file (``.skops``), read without running code: every type it holds must be
one of scikit-learn's, NumPy's, SciPy's or Python's own, or the import is refused naming the
others. A joblib or pickle file (``.joblib``, ``.pkl``, ``.pickle``) is unpickled only with
``--trust-pickle``: unpickling runs whatever code the file's author put in it.

Its schema, metrics and drift reference are computed on DATA (the features it was fitted on, when
it records them, are its columns, whatever the ``[model]`` table lists; else the table decides);
it must predict DATA's rows or it is refused with the reason. With a champion it goes through the
gate on DATA's holdout like any candidate, and its schema must not break the champion's clients.
The registry stores it as every version (``model.joblib`` with its sha256 in ``meta.json``), so
the checksum rule applies from then on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd

from selfheal_daemon.config import Config
from selfheal_daemon.errors import DataError, RegistryError, TrainingError
from selfheal_daemon.model import gate
from selfheal_daemon.model.drift import DRIFT_FILE, ReferenceSummary
from selfheal_daemon.model.features import fingerprint
from selfheal_daemon.model.metrics import evaluate
from selfheal_daemon.model.registry import ModelRegistry
from selfheal_daemon.model.schema import Schema
from selfheal_daemon.model.training import feature_importance, split

Progress = Callable[[str], None]
SKOPS_SUFFIXES = (".skops",)
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
SAFE_MODULES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.", "_operator.")


class UntrustedModel(RegistryError):
    """The file would run code (a pickle without --trust-pickle, or unknown skops types)."""


@dataclass
class Imported:
    """What the import did: the new version, its metrics, the gate's verdict (None: no champion)."""

    version: str
    schema: Schema
    metrics: dict[str, float]
    verdict: dict[str, Any] | None = None
    passed: bool = True
    details: dict[str, Any] = field(default_factory=dict)


def load_foreign(path: Path, *, trust_pickle: bool) -> Any:
    """The estimator in ``path``, read by the rule in the module docstring."""
    name = path.name.lower()
    if not path.is_file():
        raise DataError(f"no such model file: {path}")
    if name.endswith(SKOPS_SUFFIXES):
        from skops.io import get_untrusted_types, load

        try:
            unknown = get_untrusted_types(file=path)
        except Exception as exc:
            raise DataError(f"cannot read the skops file {path}: {exc}") from None
        foreign = [t for t in unknown if not t.startswith(SAFE_MODULES)]
        if foreign:
            raise UntrustedModel(
                f"{path.name} holds types that are not scikit-learn's, NumPy's or SciPy's: "
                f"{', '.join(sorted(foreign))}; refusing to load them"
            )
        try:
            return load(path, trusted=list(unknown))
        except Exception as exc:
            raise DataError(f"cannot read the skops file {path}: {exc}") from None
    if name.endswith(PICKLE_SUFFIXES):
        if not trust_pickle:
            raise UntrustedModel(
                f"{path.name} is a pickle: loading it runs any code its author put in it. "
                "Pass --trust-pickle if you trust where it came from, or save it with skops"
            )
        try:
            return joblib.load(path)
        except Exception as exc:
            raise DataError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}") from None
    raise DataError(
        f"{path.name}: not a model file selfheal reads "
        "(.skops; or .joblib/.pkl with --trust-pickle)"
    )


def _schema_for(cfg: Config, model: Any, data: pd.DataFrame) -> Schema:
    from selfheal_daemon.model.infer import infer_schema

    spec = cfg.model_spec
    fitted_on = [str(c) for c in getattr(model, "feature_names_in_", [])]
    if fitted_on:  # the columns the model was fitted on are its features, whatever the config
        lacking = [c for c in fitted_on if c not in data.columns]
        if lacking:
            raise DataError(f"the model was fitted on columns DATA lacks: {', '.join(lacking)}")
        spec = spec.model_copy(
            update={
                "features": fitted_on,
                "categorical": [c for c in spec.categorical if c in fitted_on],
                "ignore": [c for c in spec.ignore if c not in fitted_on],
            }
        )
    if spec.target not in data.columns:
        raise DataError(
            f"DATA has no target column {spec.target!r} (set model.target in the config); "
            f"columns are: {', '.join(map(str, data.columns))}"
        )
    return infer_schema(data, spec).schema


def import_model(
    cfg: Config,
    registry: ModelRegistry,
    path: Path,
    data_path: Path,
    *,
    trust_pickle: bool = False,
    progress: Progress = lambda _m: None,
) -> Imported:
    """Load, measure on DATA, gate against the champion if there is one, and register."""
    from selfheal_daemon.model.infer import read_table

    progress(f"loading {path.name}")
    model = load_foreign(path, trust_pickle=trust_pickle)
    if not callable(getattr(model, "predict", None)):
        raise TrainingError(f"{path.name} holds a {type(model).__name__}, which cannot predict")
    data = read_table(data_path, cfg.model_spec.missing_values)
    schema = _schema_for(cfg, model, data)
    if schema.is_classifier and not callable(getattr(model, "predict_proba", None)):
        raise TrainingError(f"{path.name} is a classifier without predict_proba")
    champion_version = registry.alias("current")
    champion = None
    if champion_version is not None:
        old = registry.info(champion_version).schema
        problems = old.breaks(schema)
        if problems:
            raise TrainingError(
                f"the imported model would break clients of {champion_version}: "
                + "; ".join(problems)
            )
        champion = registry.load(champion_version).model
    progress(f"measuring it on {len(data):,} rows of {data_path.name}")
    x_train, x_test, _y_train, y_test, _a, _b = split(data, cfg.training, schema)
    x_all = np.concatenate([x_train, x_test])
    try:
        metrics = evaluate(model, schema, x_test, y_test)
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(
            f"{path.name} cannot predict DATA's rows: {type(exc).__name__}: {exc}"
        ) from None
    importance = feature_importance(model, schema, x_test, y_test, cfg.training.seed)
    rng = np.random.default_rng(cfg.training.seed)
    take = min(cfg.training.reference_rows, len(x_all))
    reference = x_all[np.sort(rng.choice(len(x_all), size=take, replace=False))]
    verdict: dict[str, Any] | None = None
    passed = True
    if champion is not None:
        progress(f"running the gate against the champion {champion_version}")
        base = data
        probes = gate.ProbeSet.from_frame(base, schema, cfg.gate, cfg.directional_checks)
        judged = gate.judge(
            model,
            champion,
            x_test,
            y_test,
            probes,
            cfg.gate,
            schema,
        )
        verdict, passed = judged.to_details(), judged.promote
        if not passed:
            raise TrainingError(
                f"the gate rejected {path.name} against {champion_version}: "
                + "; ".join(judged.reasons)
            )
    else:
        gate.check_threshold(metrics, cfg.gate, schema)
    summary = ReferenceSummary.build(
        reference,
        schema,
        bins=cfg.drift.bins,
        importance=importance,
        predictions=schema.predict(model, reference),
    )
    version = registry.register(
        model,
        metrics=metrics,
        reference=reference,
        data_fingerprint=fingerprint(data),
        data_rows=len(data),
        parent=champion_version,
        origin=f"import: {path.name} measured on {data_path.name}",
        extra={
            "features": list(schema.features),
            "target": schema.target,
            "schema": schema.to_dict(),
            "holdout_rows": len(x_test),
            "pipeline": f"imported {type(model).__name__}",
            "importance": {
                f: round(float(w), 4) for f, w in zip(schema.features, importance, strict=True)
            },
            **({"gate": verdict} if verdict is not None else {}),
        },
        artifacts={DRIFT_FILE: summary.save},
    )
    return Imported(version, schema, metrics, verdict, passed)
