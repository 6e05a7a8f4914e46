"""Spend one capability's slice of the budget: sample train prompts, have the teacher answer them.

Responses are counted in supervision tokens (student tokenizer, response + EOS) and
accepted in draw order until the slice is full. The first response that would overflow
is dropped (default: the slice ends with a recorded shortfall) or truncated to fit, so a
slice is never exceeded.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import Enum

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from capdistill.capabilities.base import Source, split_of
from capdistill.errors import CapdistillError
from capdistill.evaluation.probes import generate_texts
from capdistill.training.data import response_ids


class Overflow(str, Enum):
    drop = "drop"
    truncate = "truncate"


@dataclass
class Generation:
    """How the teacher writes responses (temperature 0: greedy); also the `distill.generation` schema."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 128


@dataclass
class Supervised:
    """One training example: a train-pool prompt, the teacher's response and its supervision ids."""

    capability: str
    prompt: str
    response: str
    ids: list[int]  # the student-tokenizer ids trained on: the response and its EOS (no EOS if truncated)
    truncated: bool = False

    @property
    def tokens(self) -> int:
        return len(self.ids)


@dataclass
class Slice:
    """What spending one slice produced."""

    capability: str
    allotted: int
    examples: list[Supervised] = field(default_factory=list)
    generated_tokens: int = 0  # tokens the teacher wrote (its own tokenizer), dropped ones included

    @property
    def spent(self) -> int:
        return sum(e.tokens for e in self.examples)

    @property
    def shortfall(self) -> int:
        return self.allotted - self.spent


def train_prompts(source: Source, rng: random.Random, n: int, difficulties: tuple[int, ...]) -> list[str]:
    """`n` prompts of the source's train split (never a probe, dev or eval prompt)."""
    out: list[str] = []
    for _ in range(1000 * n):
        if len(out) == n:
            return out
        example = source.generate(rng, rng.choice(difficulties))
        if not source.hash_split or split_of(example.prompt) == "train":
            out.append(example.prompt)
    raise CapdistillError(f"{source.name}: its train prompt pool yielded {len(out)} prompts, {n} needed")


def collect_slice(
    source: Source,
    allotted: int,
    teacher: PreTrainedModel,
    teacher_tokenizer: PreTrainedTokenizerBase,
    student_tokenizer: PreTrainedTokenizerBase,
    generation: Generation,
    difficulties: tuple[int, ...],
    seed: str,
    overflow: Overflow = Overflow.drop,
    max_batches: int = 10_000,
) -> Slice:
    """Fill a slice of `allotted` supervision tokens for `source` with teacher-written examples.

    Prompts are drawn with a RNG seeded by `seed` (e.g. run seed, round and capability), so
    a resumed or repeated run draws the same prompts. Each batch is sized from the mean
    response length so far, to waste little teacher generation past the slice's end.
    """
    rng = random.Random(f"supervision/{seed}/{source.name}")
    out = Slice(source.name, allotted)
    mean_tokens = float(generation.max_new_tokens) / 2
    for _ in range(max_batches):
        left = allotted - out.spent
        if left <= 0:
            return out
        size = min(generation.batch_size, math.ceil(left / max(mean_tokens, 1.0)) + 1)
        prompts = train_prompts(source, rng, size, difficulties)
        responses = generate_texts(
            teacher,
            teacher_tokenizer,
            prompts,
            generation.max_new_tokens,
            generation.batch_size,
            generation.temperature,
            generation.top_p,
            seed=rng.randrange(2**31),
        )
        out.generated_tokens += sum(len(response_ids(teacher_tokenizer, r)) for r in responses)
        for prompt, response in zip(prompts, responses):
            ids = response_ids(student_tokenizer, response)
            left = allotted - out.spent
            if len(ids) <= left:
                out.examples.append(Supervised(source.name, prompt, response, ids))
                continue
            if overflow is Overflow.truncate and left > 0:
                ids = ids[:left]
                text = student_tokenizer.decode(ids, skip_special_tokens=True)
                out.examples.append(Supervised(source.name, prompt, text, ids, truncated=True))
            return out
        mean_tokens = out.spent / max(len(out.examples), 1)
    raise CapdistillError(f"{source.name}: slice of {allotted} tokens not filled after {max_batches} batches")
