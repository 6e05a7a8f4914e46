"""Extending capdistill without editing it: a user's allocator and loss are one Python file plus one
YAML file each, found through Hydra's search path; no registry or schema is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from capdistill.allocation import RoundContext
from capdistill.components import build_allocator, build_loss, validate
from capdistill.config.schema import ConfigError

USER = Path(__file__).parent / "data" / "user_config"
SEARCH = f"hydra.searchpath=[file://{USER / 'conf'}]"


@pytest.fixture
def user_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(USER))  # the user's PYTHONPATH


def test_a_user_allocator_and_loss_build_from_the_search_path(make_cfg, user_module) -> None:
    cfg = make_cfg(SEARCH, "experiment=mine")
    validate(cfg)
    allocator, loss = build_allocator(cfg), build_loss(cfg)
    assert (allocator.name, loss.name) == ("alternating", "skl")
    names = list(cfg.capabilities.names)
    zeros = dict.fromkeys(names, 0.0)
    first = allocator.allocate(RoundContext(0, 2, names, {}, zeros, 0.0, 100, 0))
    assert first == {c: float(c == "math") for c in names}


def test_a_user_component_option_the_class_does_not_take_is_a_one_line_error(make_cfg, user_module) -> None:
    cfg = make_cfg(SEARCH, "experiment=mine", "+allocator.favorite=code")
    with pytest.raises(ConfigError, match="Alternating\\) does not take option 'favorite'") as err:
        validate(cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="'telepathy' is not a capability"):  # the class's own check
        validate(make_cfg(SEARCH, "experiment=mine", "allocator.favourite=telepathy"))
