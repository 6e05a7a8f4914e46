"""Spending a capability's slice: teacher-written responses, exact token counts, drop or truncate."""

from __future__ import annotations

from pathlib import Path

import pytest

from capdistill.capabilities.base import split_of
from capdistill.supervision.collect import Generation, Overflow, collect_slice
from capdistill.training.data import response_ids
from capdistill.world.build import ensure_model
from capdistill.world.sources import WorldSources


@pytest.fixture(scope="module")
def world(micro_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    from conftest import compose_config

    root = tmp_path_factory.mktemp("supervision")
    cfg = compose_config(["experiment=micro"], root / "run", micro_cache)
    sources = WorldSources.from_config(cfg)
    teacher = ensure_model(cfg, "teacher", sources, root / "run")
    student = ensure_model(cfg, "student", sources, root / "run")
    return sources, teacher, student


def spend(world, allotted: int, overflow: Overflow = Overflow.drop, seed: str = "s", name: str = "code"):
    sources, teacher, student = world
    return collect_slice(
        sources.capabilities[name],
        allotted,
        teacher.model,
        teacher.tokenizer,
        student.tokenizer,
        Generation(max_new_tokens=12, batch_size=16),
        sources.difficulties,
        seed=seed,
        overflow=overflow,
    )


@pytest.mark.parametrize("allotted", [1, 13, 100, 257])
def test_drop_never_exceeds_the_slice(world, allotted: int) -> None:
    piece = spend(world, allotted)
    assert piece.spent <= allotted and piece.shortfall == allotted - piece.spent
    assert piece.shortfall <= 13  # less than the longest response (12 new tokens + EOS)
    _, teacher, student = world
    for example in piece.examples:
        assert example.ids == response_ids(student.tokenizer, example.response)  # counted = trained on
        assert split_of(example.prompt) == "train"
    assert piece.generated_tokens >= piece.spent


@pytest.mark.parametrize("allotted", [1, 13, 100, 257])
def test_truncate_fills_the_slice_exactly(world, allotted: int) -> None:
    piece = spend(world, allotted, Overflow.truncate)
    assert piece.spent == allotted
    assert sum(e.truncated for e in piece.examples) <= 1


def test_same_seed_same_supervision(world) -> None:
    a, b, c = spend(world, 120), spend(world, 120), spend(world, 120, seed="other")
    assert [e.prompt for e in a.examples] == [e.prompt for e in b.examples]
    assert [e.prompt for e in a.examples] != [e.prompt for e in c.examples]
