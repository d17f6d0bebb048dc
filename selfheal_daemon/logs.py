"""Logging through loguru, set up once by the CLI. Logs are for people; the audit is separate."""

from __future__ import annotations

import sys

from loguru import logger

_FORMAT = "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> {message}"


def configure_logging(level: str = "INFO") -> None:
    """Human-readable lines on stderr at ``level`` and above (colour only on a terminal)."""
    logger.remove()
    logger.add(
        sys.stderr,
        level=level,
        format=_FORMAT,
        colorize=sys.stderr.isatty(),
        filter=lambda record: "audit_sink" not in record["extra"],  # audit lines go to their file
    )
