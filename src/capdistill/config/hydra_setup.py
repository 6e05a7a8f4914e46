"""Hydra plumbing shared by the CLI and the tests: the conf/ location, resolvers, schemas."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from capdistill.config.schema import register_configs

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = PROJECT_ROOT / "conf"


def setup() -> None:
    """Register the `capdistill.root` resolver and the config schemas (idempotent)."""
    if not OmegaConf.has_resolver("capdistill.root"):
        OmegaConf.register_new_resolver("capdistill.root", lambda: str(PROJECT_ROOT))
    register_configs()
