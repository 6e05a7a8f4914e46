"""Capabilities and tasks: seeded example generators with exact checkers and disjoint splits."""

from capdistill.capabilities.base import SPLITS, Example, Source, normalize, split_of
from capdistill.capabilities.synthetic import CAPABILITIES, WorldParams, build_capabilities, is_refusal, safety_rates
from capdistill.capabilities.tasks import COMPOSITES, WEIGHTED

__all__ = [
    "CAPABILITIES",
    "COMPOSITES",
    "SPLITS",
    "Example",
    "Source",
    "WEIGHTED",
    "WorldParams",
    "build_capabilities",
    "is_refusal",
    "normalize",
    "safety_rates",
    "split_of",
]
