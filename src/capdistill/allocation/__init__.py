"""Allocators (how each round's budget is split across capabilities) behind one interface."""

from __future__ import annotations

from typing import Any

from capdistill.allocation.bandit import Greedy, ReadBandit
from capdistill.allocation.base import Allocator, RoundContext
from capdistill.allocation.static import Fixed, RandomSplit, Single, TaskStatic, Uniform
from capdistill.errors import CapdistillError

ALLOCATORS: dict[str, type[Allocator]] = {
    cls.name: cls for cls in (Uniform, TaskStatic, Fixed, Single, RandomSplit, Greedy, ReadBandit)
}


def build_allocator(name: str, capabilities: list[str], seed: int = 0, **options: Any) -> Allocator:
    """The allocator for config option `name` with its options (None-valued options are dropped)."""
    if name not in ALLOCATORS:
        raise CapdistillError(f"allocator.name must be one of {sorted(ALLOCATORS)}, got {name!r}")
    cls = ALLOCATORS[name]
    given = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in given if k not in cls.options()]
    if unknown:
        raise CapdistillError(f"allocator {name!r} does not take option {unknown[0]}={given[unknown[0]]!r}")
    return cls(capabilities, seed, **given)


__all__ = ["ALLOCATORS", "Allocator", "RoundContext", "build_allocator"]
