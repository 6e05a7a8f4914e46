"""Long context: RULER-style retrieval of one key's value from a haystack of key-value lines and filler."""

from __future__ import annotations

import random
import re

from capdistill.capabilities.base import Example
from capdistill.capabilities.pools import PoolSource

FILLER = (
    "The grass is green and the sky is blue.",
    "The sun rises in the east and sets in the west.",
    "Rivers flow toward the sea over many miles.",
    "A good book can be read more than once.",
    "Trains leave the station every hour on the hour.",
    "Mountains are colder at the top than at the bottom.",
)
WORDS = (
    "amber",
    "birch",
    "cobalt",
    "delta",
    "ember",
    "fjord",
    "garnet",
    "harbor",
    "indigo",
    "juniper",
    "kelvin",
    "lumen",
)
LENGTHS = (8, 24, 64)  # haystack sentences (roughly 80, 250 and 650 tokens)
SPLIT_SEEDS = {"train": 1, "dev": 2, "probe": 3, "eval": 4}


def haystack(rng: random.Random, sentences: int) -> tuple[str, str]:
    """A haystack with 2-4 key-value lines at random depths, and the question about one of them."""
    keys = rng.sample(WORDS, rng.randint(2, 4))
    values = {k: str(rng.randint(1_000_000, 9_999_999)) for k in keys}
    lines = [rng.choice(FILLER) for _ in range(sentences)]
    for key in keys:
        lines.insert(rng.randint(0, len(lines)), f"The special magic number for {key} is {values[key]}.")
    target = rng.choice(keys)
    prompt = " ".join(lines) + f"\n\nWhat is the special magic number for {target}? Answer with the number only."
    return prompt, values[target]


def context_source(sizes: dict[str, int], seed: int = 0) -> PoolSource:
    """Each split from its own seed, its examples spread over the haystack lengths."""
    splits = {}
    for split, size in sizes.items():
        rng = random.Random(f"long_context/{seed}/{SPLIT_SEEDS[split]}")
        examples = []
        for i in range(size):
            level = i % len(LENGTHS)
            prompt, value = haystack(rng, LENGTHS[level])
            examples.append(Example("long_context", prompt, value, value, level + 1, f"needle_{LENGTHS[level]}"))
        splits[split] = examples

    def check(example: Example, prediction: str) -> bool:
        return re.search(rf"(?<!\d){example.answer}(?!\d)", prediction.replace(",", "")) is not None

    source = PoolSource("long_context", splits, check)
    source.max_new_tokens = 24
    return source
