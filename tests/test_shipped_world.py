"""The default world shipped in the repository: it loads, matches the current config, and reproduces its scores."""

from __future__ import annotations

from pathlib import Path

import pytest

from capdistill.components import model_requests, world_sources
from capdistill.evaluation.probes import probe_accuracy
from capdistill.world.build import CHECK_SIZE, build_spec, find_entry, load_entry, spec_hash

MAX_SHIPPED_BYTES = 20 * 2**20


@pytest.fixture(scope="module")
def default_cfg(tmp_path_factory):
    from conftest import compose_config

    root = tmp_path_factory.mktemp("shipped")
    return compose_config([], root / "run", root / "empty-cache")


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_shipped_model_matches_the_current_config(default_cfg, role: str) -> None:
    path = find_entry(model_requests(default_cfg)[role])
    assert path is not None, f"no shipped {role} for the current default config: run `make world`"
    assert path.parent == Path(default_cfg.paths.assets_dir)
    model = load_entry(path)
    assert model.info["hash"] == spec_hash(build_spec(model_requests(default_cfg)[role]))
    assert model.info["spec"] == build_spec(model_requests(default_cfg)[role])


def test_shipped_world_fits_the_size_limit(default_cfg) -> None:
    total = sum(f.stat().st_size for f in Path(default_cfg.paths.assets_dir).rglob("*") if f.is_file())
    assert 0 < total <= MAX_SHIPPED_BYTES


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_shipped_model_reproduces_its_recorded_scores(default_cfg, role: str) -> None:
    model = load_entry(find_entry(model_requests(default_cfg)[role]))
    sources = world_sources(default_cfg)
    recorded = model.info["scores"]
    for name, examples in sources.build_probes.items():
        score, predictions = probe_accuracy(
            model.model,
            model.tokenizer,
            sources.capabilities[name],
            examples,
            default_cfg.capabilities.probe_batch_size,
        )
        assert score == pytest.approx(recorded["probe"][name]), name
        source = sources.capabilities[name]
        subset = 100.0 * sum(source.check(e, p) for e, p in zip(examples[:CHECK_SIZE], predictions)) / CHECK_SIZE
        assert subset == pytest.approx(recorded["check"][name]), name


def test_student_base_is_clearly_below_the_teacher(default_cfg) -> None:
    teacher = load_entry(find_entry(model_requests(default_cfg)["teacher"])).info["scores"]
    student = load_entry(find_entry(model_requests(default_cfg)["student"])).info["scores"]
    teacher_all = {**teacher["probe"], **teacher["task"]}
    student_all = {**student["probe"], **student["task"]}
    clearly_below = [n for n in teacher_all if student_all[n] <= teacher_all[n] - 20]
    assert len(clearly_below) >= len(teacher_all) * 2 // 3, (teacher_all, student_all)
