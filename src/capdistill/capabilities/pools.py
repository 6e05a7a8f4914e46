"""Capabilities backed by fixed example pools (real benchmark data) instead of generators.

A `PoolSource` holds its splits explicitly: train prompts from a benchmark's train split
(or a generator's training data), probe and eval items from held-out data. Train prompts
that also occur in a held-out split are dropped (decontamination), so no probe or eval
prompt is ever used for training. The checker is the pool's own (exact match by default).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from capdistill.capabilities.base import SPLITS, Example, Source, role_splits
from capdistill.errors import CapdistillError

Checker = Callable[[Example, str], bool]


class PoolSource(Source):
    """A capability (or task) whose examples are drawn from fixed per-split pools."""

    hash_split = False
    answer_marker = None

    def __init__(self, name: str, splits: dict[str, list[Example]], checker: Checker | None = None) -> None:
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise CapdistillError(f"{name}: unknown split {sorted(unknown)[0]!r}; splits are {SPLITS}")
        held_out = {e.prompt for split, items in splits.items() if split != "train" for e in items}
        self.name = name
        self.splits = {s: list(splits.get(s, [])) for s in SPLITS}
        self.splits["train"] = [e for e in self.splits["train"] if e.prompt not in held_out]
        self.checker = checker

    @property
    def train_prompts(self) -> int:
        return len(self.splits["train"])

    def generate(self, rng: random.Random, difficulty: int) -> Example:
        """A train example (pools have one difficulty level)."""
        if not self.splits["train"]:
            raise CapdistillError(f"{self.name}: its train prompt pool is empty")
        return rng.choice(self.splits["train"])

    def sample(
        self, split: str, n: int, seed: int, difficulties: tuple[int, ...], unique: bool = True, **_: object
    ) -> list[Example]:
        """`n` examples of a split in a seeded order (all of a held-out split when it is smaller). A pool is
        drawn from directly, so `max_tries` and `at_most` (of generated sources) do not apply."""
        if split not in SPLITS:
            raise CapdistillError(f"split must be one of {SPLITS}, got {split!r}")
        pool = self.splits[split]
        if not pool:
            raise CapdistillError(f"{self.name}: no {split} examples")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        if unique:
            if split == "train" and n > len(pool):
                raise CapdistillError(f"{self.name}: only {len(pool)} train prompts, {n} requested")
            return rng.sample(pool, min(n, len(pool)))
        return [rng.choice(pool) for _ in range(n)]

    def held_out(self, role: str, n: int, seed: int, difficulties: tuple[int, ...]) -> list[Example]:
        """`n` examples of a held-out role's splits, in a seeded order (all of them when fewer)."""
        pool = [e for split in role_splits(role) for e in self.splits[split]]
        if not pool:
            raise CapdistillError(f"{self.name}: no {role} examples")
        return random.Random(f"{self.name}/{role}/{seed}").sample(pool, min(n, len(pool)))

    def check(self, example: Example, prediction: str) -> bool:
        return self.checker(example, prediction) if self.checker else super().check(example, prediction)
