"""selfheal: a supervisor daemon that keeps a scikit-learn model service healthy."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """``__version__``: the installed distribution's version, read once it is asked for (so a
    release that bumps only pyproject.toml reports itself truly, and no import pays for it)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("selfheal")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
