"""Allocators that do not adapt: the paper's uniform baseline and a user-given fixed split."""

from __future__ import annotations

from collections.abc import Mapping

from capdistill.allocation.base import Allocator, RoundContext
from capdistill.errors import CapdistillError
from capdistill.supervision.budget import normalize_weights


class Uniform(Allocator):
    """The same share of every round's slice for every capability."""

    name = "uniform"

    def allocate(self, context: RoundContext) -> dict[str, float]:
        return {c: 1.0 / len(self.capabilities) for c in self.capabilities}


class Fixed(Allocator):
    """User-given proportions (`allocator.weights`), the same every round; missing capabilities get 0."""

    name = "fixed"

    def __init__(self, capabilities: list[str], seed: int = 0, weights: Mapping[str, float] | None = None) -> None:
        super().__init__(capabilities, seed)
        if not weights:
            raise CapdistillError(
                "allocator=fixed needs allocator.weights, e.g. allocator.weights='{math:0.5,code:0.5}'"
            )
        self.weights = normalize_weights(dict(weights), self.capabilities)

    def allocate(self, context: RoundContext) -> dict[str, float]:
        return dict(self.weights)
