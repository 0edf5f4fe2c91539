"""Trainers: supervised, consistency, and the online SSL trainers (FixMatch, UniMatch,
Mean Teacher), registered in ``TRAINERS`` (docs/architecture.md, "Recipes of parts")."""

from imseg.training.trainers import online as _online  # noqa: F401  (registers its trainers)
from imseg.training.trainers.base import TRAINERS, TrainerPart, TrainingSetup

__all__ = ["TRAINERS", "TrainerPart", "TrainingSetup"]
