"""Where a user's own code is found: the directory of the config file.

``model.pipeline = "mypipeline:build"`` names a module beside ``config.toml`` (or any installed
one). ``activate`` puts that directory first on ``sys.path`` and on ``PYTHONPATH``, so the retrain
job and the service workers (children of the daemon, which inherit its environment) import the
factory, and unpickle the estimators it returns, exactly as the daemon does.
"""

from __future__ import annotations

import os
import sys

from selfheal_daemon.config import Config


def activate(cfg: Config) -> str | None:
    """Make the config file's directory importable here and in every child; returns it."""
    if cfg.source is None:
        return None
    where = str(cfg.source.parent)
    if where not in sys.path:
        sys.path.insert(0, where)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if where not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([where, *paths])
    return where
