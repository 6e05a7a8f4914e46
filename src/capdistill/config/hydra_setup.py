"""Hydra plumbing shared by the CLI and the tests: where the shipped configs are, resolvers, schemas.

The configs ship inside the package (`capdistill/conf`, also reachable as the checkout's
top-level `conf/`), so a wheel install composes them like a checkout does. A user's own
config directory adds options on top: `--config-dir DIR` or `hydra.searchpath=[file://DIR]`.
Run outputs go under the working directory (`paths.root_dir`), not the package.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from capdistill.config.schema import register_configs
from capdistill.config.store import register_components

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONF_DIR = PACKAGE_DIR / "conf"
ASSETS_DIR = PACKAGE_DIR / "assets"


def setup() -> None:
    """Register the `capdistill.*` resolvers, the config schemas and the shipped components' signatures
    (`capdistill.config.store`) before anything composes (idempotent)."""
    resolvers = {"capdistill.root": os.getcwd, "capdistill.assets": lambda: str(ASSETS_DIR)}
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    register_configs()
    register_components()


def compose_root(overrides: list[str]) -> DictConfig:
    """The root config as a `capdistill` command line composes it, outside a Hydra app (tests,
    benchmarks); Hydra's own node is dropped after the run-time `HydraConfig` is set from it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    setup()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return cfg
