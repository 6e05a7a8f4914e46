"""Bad input gets one line naming the problem: at config level before compute wherever the config
shows it, and for damaged files (cache entries, rounds, records, tables) with the remedy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from capdistill.components import validate
from capdistill.distill.resume import ROUND_FILE, completed_rounds, round_dir
from capdistill.distill.run import distill
from capdistill.errors import CapdistillError
from capdistill.io import atomic_dir, atomic_write_text, remove_stale_temporaries, temporary_prefix
from capdistill.results.collect import collect
from capdistill.results.identity import finished_record
from capdistill.results.plot import plot
from capdistill.world.build import BUILD_FILE, load_entry
from capdistill.world.command import build_world
from test_cli import capdistill

FIXED = ("allocator=fixed", "allocator.weights={math:0.5,code:0.5}")

# (overrides on experiment=micro, what the one-line error says): each refused by `validate`, before any model
CONFIG_LEVEL = [
    ("allocator=fixed allocator.weights=math", "allocator.weights must map capabilities to weights"),
    ("allocator=fixed allocator.weights=[0.5,0.5]", "allocator.weights must map capabilities to weights"),
    ("seed=-1", r"seed must be in \[0, 4294000\]"),
    ("seed=5000000", r"seed must be in \[0, 4294000\]"),
    ("budget.total_tokens=3", "gives 1 tokens per round; no response fits"),
    ("budget.total_tokens=1000000M", "more than a round can generate"),
    ("budget.total_tokens=8 budget.rounds=1", "gives no capability 2 tokens, the shortest response"),
    ("budget.replay=1", r"budget.replay must be in \[0, 1\), got 1.0"),
    ("budget.replay=nan", r"budget.replay must be in \[0, 1\), got nan"),
    ("allocator=fixed allocator.weights={math:nan}", "allocation weight of 'math' is not a finite number"),
    ("loss=topk loss.k=5000", r"loss.k=5000 exceeds the teacher's vocabulary \(512 entries\)"),
    ("loss=fkl loss.vocab_size=600", "loss.vocab_size=600 exceeds"),
    ("teacher.vocab_size=0", "teacher.vocab_size must be positive"),
    ("+trainer.max_epochs=5", "trainer.max_epochs is set by each round from distill.epochs"),
    ("curriculum=easy_to_hard", "distill.curriculum mixes 3 difficulty levels, but this world has 1"),
    ("distill.curriculum.stages=[{until:0.5,mix:[1]}]", "must rise strictly through \\(0, 1\\] and end at 1"),
    ("distill.curriculum.stages=[{until:1,mix:[-1]}]", "must be non-negative with a positive sum"),
    # issue 28, item 7: each of these got through (a late failure, a silent acceptance or a traceback)
    ("budget.total_tokens=10", "10 over 2 rounds gives 5 tokens a round; .* gives no capability 2 tokens"),
    ("distill.packing=true distill.pack_length=1", "row of distill.pack_length=1 tokens cannot hold .*=24"),
    ("distill.packing=true distill.pack_length=24", "row of distill.pack_length=24 tokens cannot hold"),
    ("distill.grad_clip=-1", r"distill.grad_clip must be a finite number >= 0 \(0: no clipping\), got -1.0"),
    ("distill.grad_clip=nan", "distill.grad_clip must be a finite number >= 0"),
    ("distill.generation.temperature=nan", "need a finite temperature >= 0 and 0 < top_p <= 1, got nan"),
    ("distill.generation.temperature=inf", "need a finite temperature >= 0 and 0 < top_p <= 1, got inf"),
    ("evaluation.limit=0", "evaluation.limit must be positive, got 0"),
    ("experiment_name=", "experiment_name is empty"),
    ("student.train.lr=nan", "student.train.lr must be a finite positive number, got nan"),
    ("distill.lr=inf", "distill.lr is out of range: inf"),
    ("distill.weight_decay=inf", "distill.weight_decay is out of range: inf"),
    ("student.train.grad_clip=-1", r"student.train.grad_clip must be a finite number >= 0 \(0: no clipping\)"),
    ("allocator=read allocator.kappa=inf", r"allocator.kappa must be in \[0.0, inf\), got inf"),
    ("allocator=read allocator.fit_steps=inf", r"allocator.fit_steps must be in \[1, inf\), got inf"),
    ("allocator=read allocator.trust_radius=0", r"allocator.trust_radius must be in \[1e-09, 1\], got 0"),
    ("allocator=random allocator.alpha=nan", "allocator.alpha must be a finite number > 0, got nan"),
    ("allocator=random allocator.alpha=inf", "allocator.alpha must be a finite number > 0, got inf"),
    ("loss=fkl loss.temperature=-1", "^loss.temperature must be > 0"),  # named as the config names it
    # already refused: kept so
    ("distill.lr=-1", "distill.lr is out of range: -1.0"),
    ("distill.epochs=0", "distill.epochs must be positive, got 0"),
    ("distill.generation.max_new_tokens=0", "distill.generation.max_new_tokens must be positive"),
    ("distill.generation.temperature=-1", "need a finite temperature >= 0"),
    ("evaluation.checkpoints=[1.5]", r"evaluation.checkpoints are fractions of the run in \(0, 1\], got 1.5"),
    ("budget.rounds=0", "budget.rounds must be positive, got 0"),
    ("budget.rounds=100000", "over 100000 rounds gives 0 tokens per round; no response fits"),
    ("budget.total_tokens=abc", "expected a token count like 50000"),
    ("loss=topk loss.k=0", "loss.k must be >= 1, got 0"),
    ("loss=jsd loss.beta=2", r"loss.beta must be in \[0.0, 1.0\]"),
    ("allocator=read allocator.trust_radius=2", r"allocator.trust_radius must be in \[1e-09, 1\], got 2"),
    ("allocator=tilted allocator.toward=nope", "allocator=tilted needs allocator.toward"),
    ("task.source=nope", "task.source: unknown source 'nope'"),
    ("trainer.devices=0", r"trainer: `Trainer\(devices=0\)` value is not a valid input"),
]


@pytest.mark.parametrize(("overrides", "needle"), CONFIG_LEVEL, ids=[o for o, _ in CONFIG_LEVEL])
def test_config_level_bad_input_is_refused_in_one_line(make_cfg, overrides: str, needle: str) -> None:
    with pytest.raises(CapdistillError, match=needle) as err:
        validate(make_cfg("experiment=micro", *overrides.split(" ")))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("cache_dir", "", "paths.cache_dir is empty"),  # was: the cache written into the working directory
        ("output_dir", "/proc/capdistill-nope", "paths.output_dir /proc/capdistill-nope is not writable"),
    ],
)
def test_a_bad_path_is_refused_in_one_line(make_cfg, key: str, value: str, needle: str) -> None:
    cfg = make_cfg("experiment=micro")  # which sets the paths: set this one after it
    cfg.paths[key] = value
    with pytest.raises(CapdistillError, match=needle) as err:
        validate(cfg)
    assert "\n" not in str(err.value)


@pytest.fixture
def entry(micro_cache: Path, tmp_path: Path) -> Path:
    """A copy of the micro teacher's cache entry, to damage."""
    source = next(micro_cache.glob("teacher-*"))
    return Path(shutil.copytree(source, tmp_path / source.name))


def test_a_cache_entry_records_checksums_and_loads(entry: Path) -> None:
    info = json.loads((entry / BUILD_FILE).read_text())
    assert set(info["checksums"]) == {"model.safetensors"}
    assert load_entry(entry).info["hash"] == info["hash"]


def test_garbage_weights_in_a_cache_entry_are_named_with_the_remedy(entry: Path) -> None:
    (entry / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CapdistillError, match="model.safetensors does not match its checksum.*rebuild=true"):
        load_entry(entry)
    info = json.loads((entry / BUILD_FILE).read_text())
    del info["checksums"]  # an entry written before checksums: loading it still fails in one line
    (entry / BUILD_FILE).write_text(json.dumps(info))
    with pytest.raises(CapdistillError, match="is damaged .*rebuild=true"):
        load_entry(entry)


def test_rebuild_replaces_a_damaged_entry(make_cfg, micro_cache: Path, tmp_path: Path) -> None:
    cache = Path(shutil.copytree(micro_cache, tmp_path / "cache"))
    teacher = next(cache.glob("teacher-*"))
    (teacher / "model.safetensors").write_bytes(b"damaged")
    build_world(make_cfg("experiment=micro", "rebuild=true", cache_dir=cache))
    assert load_entry(teacher).model is not None


def test_non_finite_weights_in_a_cache_entry_are_refused(entry: Path) -> None:
    weights = load_file(entry / "model.safetensors")
    weights = {k: torch.full_like(v, float("nan")) for k, v in weights.items()}
    save_file(weights, entry / "model.safetensors", metadata={"format": "pt"})
    info = json.loads((entry / BUILD_FILE).read_text())
    del info["checksums"]  # overwritten along with its checksum: the weights themselves are checked
    (entry / BUILD_FILE).write_text(json.dumps(info))
    with pytest.raises(CapdistillError, match="holds non-finite weights"):
        load_entry(entry)


def test_a_damaged_round_is_named_and_a_damaged_record_is_written_again(tmp_path: Path) -> None:
    identity = {"seed": 0}
    round0 = round_dir(tmp_path, 0)
    round0.mkdir(parents=True)
    (round0 / ROUND_FILE).write_text('{"fingerprint": "ab')
    with pytest.raises(CapdistillError, match=f"{ROUND_FILE} is damaged .*delete .*rounds to run from the start"):
        completed_rounds(tmp_path, identity)
    (tmp_path / "record.json").write_text('{"config": {"se')
    assert finished_record(tmp_path, identity) is None  # the run finishes again and rewrites it


def test_collect_skips_and_names_a_damaged_record(
    make_cfg, micro_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg("experiment=micro", *FIXED, "budget.rounds=1", "evaluation.lmeval=false", cache_dir=micro_cache)
    good = distill(cfg)
    tmp_path = tmp_path / "sweep"
    for name in ("a", "b"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "record.json").write_text(json.dumps(good))
    (tmp_path / "b" / "record.json").write_text(json.dumps(good)[:200])
    table = collect(tmp_path)
    assert list(table["run"]) == ["a"] and (tmp_path / "results.csv").is_file()
    assert "skipping" in caplog.text and str(tmp_path / "b" / "record.json") in caplog.text
    (tmp_path / "a" / "record.json").write_text("{")
    with pytest.raises(CapdistillError, match="each one found is corrupt"):
        collect(tmp_path)


@pytest.mark.parametrize("drop", ["variant", "task_utility"])
def test_plot_names_a_missing_column(tmp_path: Path, drop: str) -> None:
    table = pd.DataFrame(
        {"experiment": "e", "variant": "uniform", "allocator": "uniform", "loss": "sft", "seed": [0, 1]}
        | {"budget_tokens": 1000, "task_utility": [1.0, 2.0]}
    )
    with pytest.raises(CapdistillError, match=f"'{drop}' column"):
        plot(table.drop(columns=[drop]), "budget_curves", tmp_path)


def test_a_run_that_would_spend_nothing_writes_no_record(make_cfg, micro_cache: Path) -> None:
    # `validate` refuses this budget (CONFIG_LEVEL); the run's own guard still holds without it
    cfg = make_cfg("experiment=micro", "budget.total_tokens=10", cache_dir=micro_cache)
    with pytest.raises(CapdistillError, match="spent none of its 10 tokens"):
        distill(cfg)
    assert not (Path(cfg.paths.output_dir) / "record.json").exists()


def test_outputs_are_world_readable_under_the_umask(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.json", "{}")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("x")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~_umask()
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_killed_writers_temporaries_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)

    def temporary(target: str, pid: int, suffix: str) -> Path:
        path = tmp_path / (temporary_prefix(tmp_path / target).replace(f"-{os.getpid()}.", f"-{pid}.") + suffix)
        path.mkdir()
        return path

    half = temporary("round-001", int(dead.stdout), "x1")  # killed while writing: removed
    done = temporary("round-002", int(dead.stdout), "x2")  # killed between the two renames: kept as the output
    (done / "student").mkdir()
    old = Path(f"{done}.old")
    old.mkdir()
    live = temporary("round-003", os.getpid(), "x3")  # still being written
    elsewhere = tmp_path / f".round-004.otherhost_1-{int(dead.stdout)}.x4"  # another host's or namespace's
    elsewhere.mkdir()
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([half, old])
    assert (tmp_path / "round-002" / "student").is_dir() and not done.exists()
    assert live.is_dir() and elsewhere.is_dir() and not half.exists()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("seed=abc", "error: Error merging override seed=abc; Value 'abc' of type 'str' could not be converted"),
        ("teacher.arch.hiden_size=3", "error: Could not override 'teacher.arch.hiden_size'.; Key 'hiden_size' not in"),
        ("allocator=nope", "Could not find 'allocator/nope'; Available options in 'allocator': fixed, greedy,"),
    ],
)
def test_a_composition_error_is_one_line_with_exit_status_2(tmp_path: Path, override: str, needle: str) -> None:
    result = capdistill("distill", "experiment=micro", override, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and needle in result.stderr
    assert len([line for line in result.stderr.splitlines() if "error" in line.lower()]) == 1, result.stderr
    assert "HYDRA_FULL_ERROR" not in result.stderr and "full_key" not in result.stderr


def test_an_empty_cache_dir_is_refused_before_compute(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = capdistill("distill", "experiment=micro", "paths.cache_dir=", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 2 and "error: paths.cache_dir is empty" in result.stderr, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no cache written where it was started


def test_a_run_directory_that_cannot_be_created_is_one_line() -> None:
    result = capdistill("distill", "experiment=micro", "hydra.run.dir=/proc/capdistill-nope")
    assert result.returncode == 2 and "cannot create or write the run directory /proc/capdistill-nope" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["simulate", "--rounds", "0"], "capdistill simulate: error: --rounds must be positive, got 0"),
        (["simulate", "--seeds", "0"], "capdistill simulate: error: --seeds must be positive, got 0"),
        (
            ["collect", "/nonexistent/sweep"],
            "capdistill collect: error: collect: /nonexistent/sweep is not a directory",
        ),
        (["plot", "results.csv", "--figure", "bogus"], "argument --figure: invalid choice: 'bogus'"),
    ],
)
def test_a_bad_table_command_argument_is_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    result = capdistill(*args, cwd=tmp_path)
    assert result.returncode == 2 and needle in result.stderr, result.stderr
    assert len([line for line in result.stderr.splitlines() if "error" in line.lower()]) == 1, result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


def test_build_world_refuses_a_hugging_face_model_in_one_line(tmp_path: Path) -> None:
    result = capdistill("build-world", "experiment=micro", "student=smollm2-small-scratch", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2 and "student=smollm2-small-scratch is a Hugging Face model" in result.stderr
