"""Core types of a capability world: examples, capabilities, deterministic disjoint splits."""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from capdistill.errors import CapdistillError

SPLITS = ("train", "dev", "probe", "eval")
# The held-out splits each role draws from. dev decides (allocator signal, kappa decay, calibration,
# pilots, grid's choice); eval only reports (exact match at checkpoints and at the end of a run).
# The hash split's probe and eval buckets (never trained on by teacher or student base) both report.
ROLES: dict[str, tuple[str, ...]] = {"dev": ("dev",), "eval": ("probe", "eval")}
# Key of a task's own held-out set (a composite task's), beside the capabilities' in a run's sets.
TASK = "task"
# A role's population is exhausted when this many draws in a row bring no new prompt of it.
EXHAUSTED_AFTER = 20_000
# Buckets out of 20 assigned by a hash of the prompt string: the split is a pure
# function of the prompt, so no probe or eval prompt can ever be drawn for training.
_SPLIT_BUCKETS = {"probe": range(0, 2), "eval": range(2, 4), "dev": range(4, 5), "train": range(5, 20)}


def split_of(prompt: str) -> str:
    """The split a prompt belongs to (train 75%, probe 10%, eval 10%, dev 5%)."""
    bucket = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "big") % 20
    for name, buckets in _SPLIT_BUCKETS.items():
        if bucket in buckets:
            return name
    raise AssertionError("unreachable")


def normalize(text: str) -> str:
    """Collapse white space so that checkers compare token sequences, not spacing."""
    return " ".join(text.split())


@dataclass
class Example:
    """One (prompt, reference response) pair with the final answer the checker compares."""

    source: str  # capability or task name
    prompt: str
    response: str
    answer: str
    difficulty: int
    template: str
    meta: dict[str, Any] = field(default_factory=dict)


class Source(ABC):
    """Anything that generates checkable examples: a capability or a downstream task."""

    name: str
    answer_marker: str | None = "answer"
    # splits are assigned by `split_of(prompt)`; pool-backed sources hold explicit splits instead
    hash_split: bool = True
    # tokens a model may generate when probed (None: the longest reference response, plus slack)
    max_new_tokens: int | None = None
    # its checker executes what the model wrote (in `capabilities.real.sandbox`)
    runs_code: bool = False

    @property
    def train_prompts(self) -> int | None:
        """How many distinct train prompts the source holds (None: a generator, unbounded)."""
        return None

    @abstractmethod
    def generate(self, rng: random.Random, difficulty: int) -> Example:
        """Draw one example of the given difficulty (1 = easiest)."""

    def extract(self, text: str) -> str:
        """The final answer in a response: what follows the last answer marker, else all of it."""
        words = normalize(text).split(" ")
        if self.answer_marker and self.answer_marker in words:
            last = len(words) - 1 - words[::-1].index(self.answer_marker)
            return " ".join(words[last + 1 :])
        return " ".join(words)

    def check(self, example: Example, prediction: str) -> bool:
        """Exact match of the extracted final answer."""
        return self.extract(prediction) == normalize(example.answer)

    def sample(
        self,
        split: str,
        n: int,
        seed: int,
        difficulties: tuple[int, ...],
        unique: bool = True,
        max_tries: int = 200,
        at_most: bool = False,
    ) -> list[Example]:
        """Draw `n` examples of one split, each at a difficulty drawn uniformly from `difficulties`.

        With `unique`, prompts are distinct; a pool too small for `n` raises a CapdistillError
        naming the source and split instead of looping forever (`at_most`: gives what it found).
        """
        if split not in SPLITS:
            raise CapdistillError(f"split must be one of {SPLITS}, got {split!r}")
        if not difficulties:
            raise CapdistillError(f"{self.name}: no difficulty levels to sample from")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        out: list[Example] = []
        seen: set[str] = set()
        misses = 0
        while len(out) < n:
            example = self.generate(rng, rng.choice(difficulties))
            if split_of(example.prompt) != split or (unique and example.prompt in seen):
                misses += 1
                if misses > max_tries * max(n, 10):
                    if at_most and out:
                        return out
                    raise CapdistillError(
                        f"{self.name}: only {len(out)} distinct {split} prompts found, {n} requested; "
                        "lower the set size or raise the world's difficulty"
                    )
                continue
            seen.add(example.prompt)
            out.append(example)
        return out

    def held_out(self, role: str, n: int, seed: int, difficulties: tuple[int, ...]) -> list[Example]:
        """`n` distinct examples of a held-out role (`ROLES`), in seeded draw order.

        Where the role's population of distinct prompts is smaller than `n`, all of it: the
        draw stops once `EXHAUSTED_AFTER` draws in a row bring nothing new, so a set's size is
        a measurement (recorded per run), never a repeat of items.
        """
        splits = role_splits(role)
        rng = random.Random(f"{self.name}/{role}/{seed}")
        out: list[Example] = []
        seen: set[str] = set()
        stale = 0
        while len(out) < n and stale < EXHAUSTED_AFTER:
            example = self.generate(rng, rng.choice(difficulties))
            if example.prompt in seen or split_of(example.prompt) not in splits:
                stale += 1
                continue
            stale = 0
            seen.add(example.prompt)
            out.append(example)
        if not out:
            raise CapdistillError(f"{self.name}: no {role} prompts found")
        return out


def role_splits(role: str) -> tuple[str, ...]:
    """The splits a held-out role draws from."""
    if role not in ROLES:
        raise CapdistillError(f"held-out role must be one of {tuple(ROLES)}, got {role!r}")
    return ROLES[role]
