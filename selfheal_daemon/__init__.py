"""selfheal: a supervisor daemon that keeps a scikit-learn model service healthy."""

from __future__ import annotations

__version__ = "0.1.0"
