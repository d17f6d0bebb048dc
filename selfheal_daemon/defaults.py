"""The bundled default model's own configuration: the California housing features and target.

The kernel's one piece of model knowledge, kept here so that ``config`` can check a setting that
names a feature (``gate.direction_feature``) at start without importing the model layer;
``model.features`` builds on these names.
"""

from __future__ import annotations

FEATURES: tuple[str, ...] = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)
TARGET = "MedHouseVal"
MODEL_NAME = "california-housing"
TARGET_UNIT = "$100,000"
