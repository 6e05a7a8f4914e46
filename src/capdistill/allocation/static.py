"""Allocators that do not learn: uniform, task-static, tilted, fixed, single-capability and random splits."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

from capdistill.allocation.interface import Allocator, RoundContext
from capdistill.errors import CapdistillError
from capdistill.supervision.budget import normalize_weights


class Uniform(Allocator):
    """The same share of every round's slice for every capability."""

    name = "uniform"
    static = True

    def allocate(self, context: RoundContext) -> dict[str, float]:
        return {c: 1.0 / len(self.capabilities) for c in self.capabilities}


class Fixed(Allocator):
    """User-given proportions (`allocator.weights`), the same every round; missing capabilities get 0."""

    name = "fixed"
    static = True

    def __init__(self, capabilities: list[str], seed: int = 0, weights: Mapping[str, float] | None = None) -> None:
        super().__init__(capabilities, seed)
        if not weights:
            raise CapdistillError(
                "allocator=fixed needs allocator.weights, e.g. allocator.weights='{math:0.5,code:0.5}'"
            )
        if not isinstance(weights, Mapping):
            raise CapdistillError(
                f"allocator.weights must map capabilities to weights, e.g. allocator.weights='{{math:0.5,code:0.5}}', "
                f"got {weights!r}"
            )
        self.weights = normalize_weights(dict(weights), self.capabilities)

    def allocate(self, context: RoundContext) -> dict[str, float]:
        return dict(self.weights)


class TaskStatic(Allocator):
    """`task_static`: the task's requirement vector, every round (the paper's task-static schedule)."""

    name = "task_static"
    static = True

    def allocate(self, context: RoundContext) -> dict[str, float]:
        return {c: float(context.requirements.get(c, 0.0)) for c in self.capabilities}


class Tilted(Allocator):
    """`tilted`: the requirement vector with a `shift` of every round's slice moved onto one capability,
    w = (1 - shift) r + shift e_toward. A split relative to the task, so that one grid of them means the
    same thing for tasks over different capabilities (the weighted tasks' `grid` row)."""

    name = "tilted"
    static = True

    def __init__(self, capabilities: list[str], seed: int = 0, toward: str | None = None, shift: float = 0.5) -> None:
        super().__init__(capabilities, seed)
        if toward not in self.capabilities:
            raise CapdistillError(
                f"allocator=tilted needs allocator.toward, one of {', '.join(self.capabilities)}; got {toward!r}"
            )
        if not 0.0 < shift <= 1.0:
            raise CapdistillError(f"allocator.shift must be in (0, 1], got {shift}")
        self.toward = toward
        self.shift = shift

    def allocate(self, context: RoundContext) -> dict[str, float]:
        return {
            c: (1.0 - self.shift) * float(context.requirements.get(c, 0.0)) + self.shift * float(c == self.toward)
            for c in self.capabilities
        }


class Single(Allocator):
    """`single`: the whole budget on one capability (the cross-capability transfer experiment)."""

    name = "single"
    static = True

    def __init__(self, capabilities: list[str], seed: int = 0, capability: str | None = None) -> None:
        super().__init__(capabilities, seed)
        if capability not in self.capabilities:
            raise CapdistillError(
                f"allocator=single needs allocator.capability, one of {', '.join(self.capabilities)}; got {capability!r}"
            )
        self.capability = capability

    def allocate(self, context: RoundContext) -> dict[str, float]:
        return {c: float(c == self.capability) for c in self.capabilities}


class RandomSplit(Allocator):
    """`random`: a fresh Dirichlet(`alpha`) split every round, reproducible per seed and round."""

    name = "random"

    def __init__(self, capabilities: list[str], seed: int = 0, alpha: float = 1.0) -> None:
        super().__init__(capabilities, seed)
        if not 0 < alpha < math.inf:  # NaN fails too
            raise CapdistillError(f"allocator.alpha must be a finite number > 0, got {alpha}")
        self.alpha = alpha

    def allocate(self, context: RoundContext) -> dict[str, float]:
        rng = random.Random(f"random/{self.seed}/{context.round}")
        draws = [rng.gammavariate(self.alpha, 1.0) for _ in self.capabilities]
        total = sum(draws)
        return {c: d / total for c, d in zip(self.capabilities, draws)}
