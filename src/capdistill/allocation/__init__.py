"""Allocators (how each round's budget is split across capabilities) behind one interface.

Each is chosen by the `_target_` of its `conf/allocator/*.yaml` option; a new allocator is a
subclass of `Allocator` in any importable module plus a YAML file naming it.
"""

from capdistill.allocation.interface import Allocation, Allocator, RoundContext

__all__ = ["Allocation", "Allocator", "RoundContext"]
