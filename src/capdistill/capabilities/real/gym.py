"""Capabilities from reasoning-gym's procedural generators: seeded pools scored by `score_answer`."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable
from typing import Any

from capdistill.capabilities.base import Example
from capdistill.capabilities.pools import PoolSource
from capdistill.capabilities.real.answers import first_line, last_number, yes_no
from capdistill.errors import CapdistillError

# capability -> (dataset, its config, how the final answer is read from a response)
GYM: dict[str, list[tuple[str, dict[str, Any], Callable[[str], str]]]] = {
    "math": [
        ("basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}, last_number),
        ("chain_sum", {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}, last_number),
        ("gsm_symbolic", {}, last_number),
    ],
    "reasoning": [
        ("syllogism", {}, yes_no),
        ("family_relationships", {}, first_line),
        ("knights_knaves", {"n_people": 2}, lambda text: text.strip()),
    ],
}
SPLIT_SEEDS = {"train": 1, "dev": 2, "probe": 3, "eval": 4}
ANSWER_TOKENS = {"math": 96, "reasoning": 64}  # room for a short explanation before the answer


def _gym() -> Any:
    try:
        import reasoning_gym
    except ImportError:
        raise CapdistillError("capabilities=offline_real needs reasoning-gym: pip install 'capdistill[real]'") from None
    return reasoning_gym


def create_dataset(name: str, seed: int, size: int, **config: Any) -> Any:
    """A reasoning-gym dataset, its generators' prints and warnings kept out of the run's output."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _gym().create_dataset(name, seed=seed, size=size, **config)


HELD_OUT_FIRST = ("probe", "eval", "dev", "train")  # a prompt drawn twice stays in the earlier split


def entries(data: Any, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """Up to `limit` (index, entry) pairs; an entry its generator fails on is skipped."""
    out = []
    for i in range(min(len(data), limit)):
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out.append((i, data[i]))
        except Exception:  # noqa: BLE001 - a generator's bug on one seed; the pool just has one item less
            continue
    return out


def gym_source(capability: str, sizes: dict[str, int], seed: int = 0) -> PoolSource:
    """Pools of `capability`'s datasets, each split from its own generator seed, its examples spread
    evenly over the datasets; a prompt already in an earlier split is skipped (small spaces repeat)."""
    datasets, readers, splits, seen = {}, {}, {}, set()
    for split in (s for s in HELD_OUT_FIRST if s in sizes):
        examples = []
        for k, (name, config, read) in enumerate(GYM[capability]):
            n = sizes[split] // len(GYM[capability]) + (k < sizes[split] % len(GYM[capability]))
            data = create_dataset(name, seed * 100 + SPLIT_SEEDS[split], max(4 * n, 1), **config)
            datasets[(name, split)], readers[name] = data, read
            taken = 0
            for i, e in entries(data, 4 * n):
                if taken == n or e["question"] in seen:
                    continue
                seen.add(e["question"])
                answer = str(e["answer"])
                examples.append(Example(capability, e["question"], answer, answer, 1, name, {"split": split, "i": i}))
                taken += 1
        splits[split] = examples

    def check(example: Example, prediction: str) -> bool:
        data = datasets[(example.template, example.meta["split"])]
        entry = data[example.meta["i"]]
        return data.score_answer(readers[example.template](prediction), entry) >= 1.0

    source = PoolSource(capability, splits, check)
    source.max_new_tokens = ANSWER_TOKENS[capability]
    return source
