"""Make sure there is a valid model to serve before any worker starts.

On an empty state directory this trains the first model from the configured data (the bundled
California housing set by default) and points ``current`` and ``last_good`` at it. On a later start
it reuses ``current``, after re-checking its checksums; a damaged ``current`` falls back to
``last_good``, and with no valid version at all a fresh model is trained, so the service never
serves an artifact that fails its checksum.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger

from selfheal_daemon.config import Config
from selfheal_daemon.model.features import learn_schema, load_base
from selfheal_daemon.model.registry import ModelRegistry

if TYPE_CHECKING:
    from selfheal_daemon.model.training import Progress


def ensure_model(cfg: Config, registry: ModelRegistry, progress: Progress) -> str:
    """Return the version to serve, training and registering one if none is valid."""
    removed = registry.cleanup_staging()
    if removed:
        logger.warning("removed {} half-written model version(s) left by a crash", len(removed))
    problems: list[str] = []
    for alias in ("current", "last_good"):
        version = registry.alias(alias)
        if version is None:
            continue
        check = registry.verify_version(version)
        if check.ok:
            if alias == "last_good":
                logger.error(
                    "current model failed verification; falling back to last_good {}", version
                )
                registry.set_alias("current", version)
            elif registry.alias("last_good") is None:
                registry.set_alias("last_good", version)
            return version
        problems.append(f"{alias} {version}: {check.problem}")
        logger.error("model {} ({}) failed verification: {}", version, alias, check.problem)

    from selfheal_daemon.model.training import train_and_register  # scikit-learn: only to train

    source = str(cfg.training_data) if cfg.training_data else "bundled California housing data"
    origin = f"bootstrap: {source}"
    if problems:
        origin += f" (no valid version: {'; '.join(problems)})"
    progress(f"no model registered yet: training the first one on {source}")
    frame = load_base(cfg)
    schema = learn_schema(cfg, frame)
    kinds = ", ".join(
        f"{sum(c.kind == k for c in schema.columns)} {k}"
        for k in ("numeric", "categorical", "boolean")
        if any(c.kind == k for c in schema.columns)
    )
    progress(
        f"loaded {len(frame):,} rows: {schema.task} of {schema.target!r} on "
        f"{len(schema.columns)} features ({kinds}); metric {schema.metric}"
    )
    parent = registry.alias("current")
    version, result = train_and_register(
        registry,
        frame,
        cfg.training,
        cfg.gate,
        schema=schema,
        factory=cfg.model_spec.pipeline,
        origin=origin,
        parent=parent,
        progress=progress,
        bins=cfg.drift.bins,
    )
    registry.set_alias("current", version)
    registry.set_alias("last_good", version)
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
    progress(f"registered {version} ({metrics}) in {result.seconds:.1f} s")
    return version
