"""A teacher or student: what a run asks for (its typed config, and what a synthetic-world build
depends on), and what it gets (the loaded model, its tokenizer and where it came from)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from capdistill.config.model_specs import ModelSpec


@dataclass(frozen=True)
class ModelRequest:
    """A teacher or student to load, or for the synthetic world to find or build: the role's typed
    config and what a build depends on (made from the config by `capdistill.components.model_requests`)."""

    role: str
    model: ModelSpec
    world: dict[str, Any]  # capabilities.params: the generators' parameters
    capabilities: list[str]
    cache_dir: Path
    assets_dir: Path
    rebuild: bool = False
    probe_batch_size: int = 256
    accelerator: str = "cpu"  # the build's Trainer (one device)
    precision: str = "32-true"


@dataclass
class LoadedModel:
    """A loaded teacher or student: the model, its tokenizer, its directory, and what identifies it (a
    world build's record, or an HF model's path, initialisation and loading)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: Path
    info: dict[str, Any]
