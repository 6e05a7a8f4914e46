"""Hydra plumbing shared by the CLI and the tests: where the shipped configs are, resolvers, schemas.

The configs ship inside the package (`capdistill/conf`, also reachable as the checkout's
top-level `conf/`), so a wheel install composes them like a checkout does. A user's own
config directory adds options on top: `--config-dir DIR` or `hydra.searchpath=[file://DIR]`.
Run outputs go under the working directory (`paths.root_dir`), not the package.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from capdistill.config.schema import register_configs

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONF_DIR = PACKAGE_DIR / "conf"
ASSETS_DIR = PACKAGE_DIR / "assets"


def setup() -> None:
    """Register the `capdistill.*` resolvers and the config schemas (idempotent)."""
    resolvers = {"capdistill.root": os.getcwd, "capdistill.assets": lambda: str(ASSETS_DIR)}
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    register_configs()
