"""Static allocators behind the Allocator interface, and their config errors."""

from __future__ import annotations

import pytest

from capdistill.allocation import Allocation, Allocator, RoundContext
from capdistill.allocation.static import Fixed, Tilted, Uniform
from capdistill.components import build_allocator
from capdistill.config.hydra_setup import CONF_DIR
from capdistill.config.schema import ConfigError

NAMES = ["math", "code", "safety"]


def context() -> RoundContext:
    zeros = dict.fromkeys(NAMES, 0.0)
    return RoundContext(0, 4, NAMES, {"math": 1.0}, zeros, 0.0, 1000, 0)


def test_uniform_splits_equally() -> None:
    assert Uniform(NAMES).allocate(context()) == dict.fromkeys(NAMES, 1 / 3)


def test_fixed_normalises_and_zero_fills() -> None:
    allocator = Fixed(NAMES, weights={"math": 3, "code": 1})
    assert allocator.allocate(context()) == {"math": 0.75, "code": 0.25, "safety": 0.0}
    allocator.update(context(), {"math": 1.0}, {})  # static: nothing learned
    assert allocator.allocate(context())["math"] == 0.75


def test_tilted_moves_its_shift_onto_one_capability() -> None:
    """w = (1 - shift) r + shift e_toward: a split relative to the task's requirement vector."""
    requirements = {"math": 0.6, "code": 0.4}
    ctx = RoundContext(0, 4, NAMES, requirements, dict.fromkeys(NAMES, 0.0), 0.0, 1000, 0)
    assert Tilted(NAMES, toward="code").allocate(ctx) == pytest.approx({"math": 0.3, "code": 0.7, "safety": 0.0})
    assert Tilted(NAMES, toward="safety", shift=0.25).allocate(ctx) == pytest.approx(
        {"math": 0.45, "code": 0.3, "safety": 0.25}
    )
    assert Tilted(NAMES, toward="math", shift=1.0).allocate(ctx) == {"math": 1.0, "code": 0.0, "safety": 0.0}
    assert sum(Tilted(NAMES, toward="math").allocate(ctx).values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["allocator=fixed"], "needs allocator.weights"),
        (["allocator=fixed", "allocator.weights={telepathy:1.0}"], "telepathy"),
        (["allocator=fixed", "allocator.weights={math:-1.0,code:1.0}"], "negative"),
        (["allocator=fixed", "allocator.weights={math:0.0}"], "sum to 0"),
        (["allocator=tilted"], "needs allocator.toward"),
        (["allocator=tilted", "allocator.toward=telepathy"], "needs allocator.toward"),
        (["allocator=tilted", "allocator.toward=math", "allocator.shift=0"], "allocator.shift must be in"),
        (["allocator=uniform", "+allocator.weights={math:1.0}"], "does not take option 'weights'"),
        (["allocator=read", "allocator.beta=-1"], "allocator.beta must be in"),
        (["allocator=read", "+allocator.betta=0.5"], "does not take option 'betta'"),
        (["allocator=read", "allocator._target_=capdistill.allocation.Bandit"], "cannot import"),
        (["allocator=read", "allocator._target_=capdistill.losses.modules.SFTLoss"], "does not take option"),
    ],
)
def test_bad_allocator_config_is_one_line_naming_it(make_cfg, overrides: list[str], needle: str) -> None:
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError, match=needle) as err:
        build_allocator(cfg)
    assert "\n" not in str(err.value)


def test_every_allocator_option_builds_from_its_yaml(make_cfg) -> None:
    """Every conf/allocator option instantiates its `_target_` (the class signature is the schema)."""
    options = sorted(p.stem for p in (CONF_DIR / "allocator").glob("*.yaml"))
    assert {"uniform", "task_static", "fixed", "single", "random", "greedy", "read"} <= set(options)
    for option in options:
        extra = {
            "fixed": ["allocator.weights={math:1}"],
            "tilted": ["allocator.toward=math"],
            "single": ["allocator.capability=math"],
        }.get(option, [])
        allocator = build_allocator(make_cfg(f"allocator={option}", *extra))
        assert isinstance(allocator, Allocator) and allocator.name, option


def test_decide_wraps_a_plain_split_and_keeps_a_bandits_decision() -> None:
    """`allocate` may return a split (static allocators, users' own) or an Allocation with what it considered."""
    from capdistill.allocation.bandit import ReadBandit

    assert Uniform(NAMES).decide(context()) == Allocation(dict.fromkeys(NAMES, 1 / 3), {})
    decided = ReadBandit(NAMES, 0, warmup=1).decide(context())
    assert isinstance(decided, Allocation) and decided.decision["warmup"] is True
    assert decided.decision["chosen"] == decided.split
