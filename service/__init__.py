"""The model service: a FastAPI app that serves the registry's current model."""

from __future__ import annotations
