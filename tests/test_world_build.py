"""Building the world: caching by config hash, reuse, determinism, atomic cache entries, scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from capdistill.components import model_requests, world_sources
from capdistill.evaluation.probes import accuracy, max_response_tokens, probe_accuracy
from capdistill.prompting import generate_texts
from capdistill.world import build
from capdistill.world.build import ensure_model, entry_name, find_entry, load_entry
from capdistill.world.command import build_world


def test_micro_world_json_has_every_capability_and_task(make_cfg, micro_cache: Path) -> None:
    cfg = make_cfg("experiment=micro", cache_dir=micro_cache)
    world = build_world(cfg)
    written = json.loads((Path(cfg.paths.output_dir) / "world.json").read_text())
    assert written == json.loads(json.dumps(world))
    for role in ("teacher", "student_base"):
        scores = written[role]["scores"]
        assert set(scores["probe"]) == set(cfg.capabilities.names)
        assert set(scores["task"]) == {"word_problem_formatted", "tool_math", "context_code"}
        assert all(0 <= v <= 100 for v in scores["probe"].values())
    assert set(written["student_base"]["proxy"]) == set(cfg.capabilities.names)
    assert all(v < 0 for v in written["student_base"]["proxy"].values())


def test_cached_build_is_reused_without_training(make_cfg, micro_cache: Path, monkeypatch) -> None:
    cfg = make_cfg("experiment=micro", cache_dir=micro_cache)
    monkeypatch.setattr(build, "train_model", lambda *a, **k: pytest.fail("retrained a cached model"))
    model = ensure_model(model_requests(cfg)["teacher"], world_sources(cfg), Path(cfg.paths.output_dir))
    assert model.path == micro_cache / entry_name(model_requests(cfg)["teacher"])


def test_hash_follows_what_changes_the_build(make_cfg) -> None:
    base = entry_name(model_requests(make_cfg("experiment=micro"))["teacher"])
    assert entry_name(model_requests(make_cfg("experiment=micro", "capabilities.probe_size=4"))["teacher"]) == base
    assert entry_name(model_requests(make_cfg("experiment=micro", "teacher.seed=1"))["teacher"]) != base
    assert (
        entry_name(model_requests(make_cfg("experiment=micro", "capabilities.params.max_value=9"))["teacher"]) != base
    )
    assert entry_name(model_requests(make_cfg("experiment=micro", "teacher.arch.num_layers=2"))["teacher"]) != base


def test_teacher_and_student_share_the_tokenizer(make_cfg, micro_cache: Path) -> None:
    cfg = make_cfg("experiment=micro", cache_dir=micro_cache)
    teacher, student = (load_entry(find_entry(model_requests(cfg)[role])) for role in ("teacher", "student"))
    assert teacher.tokenizer.get_vocab() == student.tokenizer.get_vocab()
    assert teacher.model.num_parameters() > student.model.num_parameters()


def test_build_is_deterministic_for_a_seed(make_cfg, tmp_path: Path) -> None:
    weights = []
    for name in ("a", "b"):
        cfg = make_cfg("experiment=micro", "teacher.train.max_steps=5", cache_dir=tmp_path / name)
        model = ensure_model(model_requests(cfg)["teacher"], world_sources(cfg), tmp_path / f"run-{name}")
        weights.append(model.model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_killed_build_leaves_no_loadable_entry(make_cfg, tmp_path: Path, monkeypatch) -> None:
    cfg = make_cfg("experiment=micro", "teacher.train.max_steps=2", cache_dir=tmp_path / "cache")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", crash)  # dies after the weights are written
    with pytest.raises(KeyboardInterrupt):
        ensure_model(model_requests(cfg)["teacher"], world_sources(cfg), tmp_path / "run")
    assert find_entry(model_requests(cfg)["teacher"]) is None
    assert list((tmp_path / "cache").iterdir()) == []  # the temporary directory is gone too


def test_leftover_temporary_directory_is_never_loaded(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("experiment=micro", cache_dir=tmp_path / "cache")
    orphan = (
        tmp_path / "cache" / f".{entry_name(model_requests(cfg)['teacher'])}.x1y2"
    )  # what a SIGKILL mid-write leaves
    orphan.mkdir(parents=True)
    (orphan / "build.json").write_text("{}")
    assert find_entry(model_requests(cfg)["teacher"]) is None


def test_probe_scorer_agrees_with_the_checkers(make_cfg, micro_cache: Path) -> None:
    cfg = make_cfg("experiment=micro", cache_dir=micro_cache)
    teacher = load_entry(find_entry(model_requests(cfg)["teacher"]))
    sources = world_sources(cfg)
    for name, examples in sources.build_probes.items():
        source = sources.capabilities[name]
        score, predictions = probe_accuracy(teacher.model, teacher.tokenizer, source, examples)
        again = generate_texts(
            teacher.model,
            teacher.tokenizer,
            [e.prompt for e in examples],
            max_response_tokens(teacher.tokenizer, examples),
            batch_size=3,
        )
        assert again == predictions  # batching and padding do not change greedy outputs
        assert score == 100.0 * sum(source.check(e, p) for e, p in zip(examples, predictions)) / len(examples)
        assert accuracy(source, examples, [e.response for e in examples]) == 100.0
        assert accuracy(source, examples, ["" for _ in examples]) == 0.0


def test_rebuild_replaces_the_cached_entry(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("experiment=micro", "teacher.train.max_steps=2", cache_dir=tmp_path / "cache")
    sources = world_sources(cfg)
    first = ensure_model(model_requests(cfg)["teacher"], sources, tmp_path / "run")
    (first.path / "stale-marker").write_text("from the first build")
    cfg.rebuild = True
    second = ensure_model(model_requests(cfg)["teacher"], sources, tmp_path / "run")
    assert second.path == first.path
    assert not (second.path / "stale-marker").exists()  # the entry was replaced, not kept
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.path.name]  # nothing left aside
