"""Static allocators behind the Allocator interface, and their config errors."""

from __future__ import annotations

import pytest

from capdistill.allocation import ALLOCATORS, RoundContext, build_allocator
from capdistill.errors import CapdistillError

NAMES = ["math", "code", "safety"]


def context() -> RoundContext:
    zeros = dict.fromkeys(NAMES, 0.0)
    return RoundContext(0, 4, NAMES, {"math": 1.0}, zeros, 0.0, 1000, 0)


def test_uniform_splits_equally() -> None:
    assert build_allocator("uniform", NAMES).allocate(context()) == dict.fromkeys(NAMES, 1 / 3)


def test_fixed_normalises_and_zero_fills() -> None:
    allocator = build_allocator("fixed", NAMES, weights={"math": 3, "code": 1})
    assert allocator.allocate(context()) == {"math": 0.75, "code": 0.25, "safety": 0.0}
    allocator.update(context(), {"math": 1.0}, {})  # static: nothing learned
    assert allocator.allocate(context())["math"] == 0.75


@pytest.mark.parametrize(
    ("name", "options", "needle"),
    [
        ("fixed", {}, "needs allocator.weights"),
        ("fixed", {"weights": {"telepathy": 1.0}}, "telepathy"),
        ("fixed", {"weights": {"math": -1.0, "code": 1.0}}, "negative"),
        ("fixed", {"weights": {"math": 0.0}}, "sum to 0"),
        ("uniform", {"weights": {"math": 1.0}}, "does not take option weights"),
        ("bandit", {}, "must be one of"),
    ],
)
def test_bad_allocator_config(name: str, options: dict, needle: str) -> None:
    with pytest.raises(CapdistillError, match=needle):
        build_allocator(name, NAMES, **options)


def test_registry_names_match_config_options() -> None:
    from capdistill.config.hydra_setup import CONF_DIR

    options = {p.stem: p for p in (CONF_DIR / "allocator").glob("*.yaml")}
    assert set(ALLOCATORS) <= set(options)  # every allocator has a config of its own name
    for stem, path in options.items():  # the others are variants (ablations) of one of them
        assert stem in ALLOCATORS or stem.split("_")[0] in ALLOCATORS, path
