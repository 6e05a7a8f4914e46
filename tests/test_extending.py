"""Extending capdistill without editing it: a user's allocator and loss are one Python file plus one
YAML file each, and a user's model one YAML file, found through Hydra's search path; no registry or
schema is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from capdistill.allocation import RoundContext
from capdistill.components import build_allocator, build_loss, validate
from capdistill.config.model_specs import SyntheticModel
from capdistill.config.schema import ConfigError, typed_settings

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


def test_a_user_student_extends_its_model_class_schema_from_the_search_path(make_cfg) -> None:
    cfg = make_cfg(SEARCH, "experiment=demo", "student=tiny-bpe", "loss=uld")
    validate(cfg)
    student = typed_settings(cfg).student
    assert isinstance(student, SyntheticModel) and (student.name, student.tokenizer.value) == ("tiny-bpe", "bpe")
    assert student.arch.num_kv_heads is None  # a field the YAML leaves out comes from the class
    with pytest.raises(ConfigCompositionException, match="vocab_size"):
        make_cfg(SEARCH, "experiment=demo", "student=tiny-bpe", "student.vocab_size=many")
