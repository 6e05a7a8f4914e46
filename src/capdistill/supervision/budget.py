"""Exact integer token accounting: per-round slices and their split across capabilities.

The budget is the number of supervision tokens the student trains on: teacher-written
response tokens (plus the closing EOS the student learns to emit), counted with the
student's tokenizer; prompts are not counted (the paper's accounting).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from capdistill.errors import CapdistillError


def round_slice(total: int, spent: int, rounds_left: int) -> int:
    """This round's share of what is left: the unspent budget split evenly over the remaining rounds.

    Tokens a round could not use (a dropped overflowing response) flow to later rounds;
    the last round gets everything that is left.
    """
    if rounds_left < 1:
        raise CapdistillError(f"rounds_left must be >= 1, got {rounds_left}")
    return max(total - spent, 0) // rounds_left


def normalize_weights(weights: Mapping[str, float], names: list[str]) -> dict[str, float]:
    """Weights over `names` summing to 1 (missing names weigh 0); bad weights raise naming the problem."""
    unknown = [c for c in weights if c not in names]
    if unknown:
        raise CapdistillError(f"allocation weight for unknown capability {unknown[0]!r}; known: {', '.join(names)}")
    infinite = [c for c, w in weights.items() if not math.isfinite(w)]
    if infinite:
        raise CapdistillError(f"allocation weight of {infinite[0]!r} is not a finite number ({weights[infinite[0]]})")
    negative = [c for c, w in weights.items() if w < 0]
    if negative:
        raise CapdistillError(f"allocation weight of {negative[0]!r} is negative ({weights[negative[0]]})")
    total = sum(weights.values())
    if total <= 0:
        raise CapdistillError("allocation weights sum to 0: give at least one capability a positive weight")
    return {c: float(weights.get(c, 0.0)) / total for c in names}


def split_tokens(tokens: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Integer slices proportional to `weights` that sum exactly to `tokens` (largest remainder).

    Ties in the remainders go to the earlier name, so the split is deterministic.
    """
    if tokens < 0:
        raise CapdistillError(f"tokens must be >= 0, got {tokens}")
    total = sum(weights.values())
    if total <= 0:
        raise CapdistillError("split_tokens: weights must sum to a positive number")
    exact = {c: tokens * w / total for c, w in weights.items()}
    out = {c: int(v) for c, v in exact.items()}
    order = sorted(exact, key=lambda c: out[c] - exact[c])  # largest fractional part first (stable)
    for c in order[: tokens - sum(out.values())]:
        out[c] += 1
    return out


def with_replay(allocation: Mapping[str, float], replay: float) -> dict[str, float]:
    """An allocator's split (summing to 1) with a general replay slice: `replay` of the round spread evenly over
    every capability, the rest split as the allocator decided. Replay 0 returns the split unchanged."""
    if not replay:
        return dict(allocation)
    even = replay / len(allocation)
    return {c: (1.0 - replay) * w + even for c, w in allocation.items()}
