"""Capabilities from reasoning-gym's procedural generators: seeded pools scored by `score_answer`."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from capdistill.capabilities.base import Example
from capdistill.capabilities.pools import PoolSource
from capdistill.capabilities.real.answers import first_line, last_number, yes_no
from capdistill.errors import CapdistillError

ONE_DIGIT = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
# capability -> (dataset, its config, how the final answer is read from a response); the
# arithmetic is sized for a 135M teacher (one-digit sums and differences), gsm_symbolic is the hard end
GYM: dict[str, list[tuple[str, dict[str, Any], Callable[[str], str]]]] = {
    "math": [
        (
            "basic_arithmetic",
            {**ONE_DIGIT, "operators": ("+", "-"), "allow_parentheses": False, "allow_negation": False},
            last_number,
        ),
        ("chain_sum", ONE_DIGIT, last_number),
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
SUFFIX = {"math": " Reply with the final number only.", "reasoning": ""}  # keeps a small model's answer short


def _gym() -> Any:
    try:
        import reasoning_gym
    except ImportError:
        raise CapdistillError("capabilities=offline_real needs reasoning-gym: pip install 'capdistill[real]'") from None
    return reasoning_gym


@contextlib.contextmanager
def contained() -> Iterator[None]:
    """Run reasoning-gym generators (codeio executes its programs) in a scratch directory, quietly:
    files they write, their prints (stderr too: a codeio program's threads can die noisily) and their
    warnings stay out of the run."""
    cwd = os.getcwd()
    with (
        tempfile.TemporaryDirectory(prefix="capdistill-gym-") as tmp,
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(cwd)


def create_dataset(name: str, seed: int, size: int, **config: Any) -> Any:
    with contained():
        return _gym().create_dataset(name, seed=seed, size=size, **config)


HELD_OUT_FIRST = ("probe", "eval", "dev", "train")  # a prompt drawn twice stays in the earlier split


def entries(data: Any, limit: int) -> list[tuple[int, dict[str, Any]]]:
    """Up to `limit` (index, entry) pairs; an entry its generator fails on is skipped."""
    out = []
    with contained():
        for i in range(min(len(data), limit)):
            try:
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
                prompt = e["question"] + SUFFIX[capability]
                examples.append(Example(capability, prompt, answer, answer, 1, name, {"split": split, "i": i}))
                taken += 1
        splits[split] = examples

    def check(example: Example, prediction: str) -> bool:
        data = datasets[(example.template, example.meta["split"])]
        entry = data[example.meta["i"]]
        return data.score_answer(readers[example.template](prediction), entry) >= 1.0

    source = PoolSource(capability, splits, check)
    source.max_new_tokens = ANSWER_TOKENS[capability]
    return source
