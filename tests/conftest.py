"""Shared fixtures: offline environment, composed Hydra configs, a built micro world."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, open_dict

from capdistill.config.hydra_setup import compose_root

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    # `pytest -n N`: share the cores instead of oversubscribing them, in the worker and in every process a test
    # starts (a CLI run, a DDP node). Two 2-thread smoke sweeps side by side on 2 cores took 702 s, two 1-thread
    # ones 87 s: torch's OpenMP threads spin while they wait for a thread the OS has descheduled.
    THREADS = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    torch.set_num_threads(THREADS)
    os.environ["OMP_NUM_THREADS"] = str(THREADS)


def compose_config(overrides: list[str], output_dir: Path, cache_dir: Path) -> DictConfig:
    """The root config as a command line would compose it, with run paths under tmp."""
    cfg = compose_root(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.cache_dir = str(cache_dir)
    return cfg


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny-tensor tests on one thread: intra-op threads only add synchronisation."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def make_cfg(tmp_path: Path):
    def make(*overrides: str, cache_dir: Path | None = None) -> DictConfig:
        return compose_config(list(overrides), tmp_path / "run", cache_dir or tmp_path / "cache")

    return make


@pytest.fixture(scope="session")
def micro_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding the micro world, built once per session."""
    from capdistill.world.command import build_world

    root = tmp_path_factory.mktemp("micro")
    cfg = compose_config(["experiment=micro"], root / "run", root / "cache")
    build_world(cfg)
    return root / "cache"


@pytest.fixture(scope="module")
def micro_world(micro_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """The micro world's sources, teacher and student (loaded from the session's cache)."""
    from capdistill.components import model_requests, world_sources
    from capdistill.world.build import ensure_model

    root = tmp_path_factory.mktemp("world")
    cfg = compose_config(["experiment=micro"], root / "run", micro_cache)
    sources = world_sources(cfg)
    teacher = ensure_model(model_requests(cfg)["teacher"], sources, root / "run")
    student = ensure_model(model_requests(cfg)["student"], sources, root / "run")
    return sources, teacher, student


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache with SmolLM2 converted once per session (about 40 s on 2 cores)."""
    from capdistill.models import packaged

    cache = tmp_path_factory.mktemp("real-cache")
    packaged.materialize("smollm2-135m-instruct", cache)
    return cache


@pytest.fixture
def run_micro(make_cfg, micro_cache: Path):
    """Compose `experiment=micro` plus overrides, validate, distil; returns (record, output dir)."""
    from capdistill.components import validate
    from capdistill.distill.run import distill

    def run(*overrides: str) -> tuple[dict, Path]:
        cfg = make_cfg("experiment=micro", *overrides, cache_dir=micro_cache)
        return distill(cfg, validate(cfg)), Path(cfg.paths.output_dir)

    return run
