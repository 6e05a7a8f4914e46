"""Shared fixtures: offline environment, composed Hydra configs, a built micro world."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from capdistill.config.hydra_setup import CONF_DIR, setup

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # `pytest -n N`: share the cores instead of oversubscribing them
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def compose_config(overrides: list[str], output_dir: Path, cache_dir: Path) -> DictConfig:
    """The root config as a command line would compose it, with run paths under tmp."""
    setup()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.cache_dir = str(cache_dir)
        del cfg.hydra
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
