"""Load any Hugging Face causal LM and its tokenizer from a hub name or a local directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from capdistill.errors import CapdistillError
from capdistill.training.data import use_chat_template

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def resolve_path(path: str | None, what: str) -> str:
    """A local directory, or a hub name that can be loaded (offline: only from the local HF cache)."""
    if not path:
        raise CapdistillError(f"{what}.path is not set: give a hub name or a local model directory")
    local = Path(path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise CapdistillError(f"{what}.path {path} has no config.json: not a saved HF model")
        return str(local)
    if path.startswith(("/", ".", "~")) or path.count("/") != 1:
        raise CapdistillError(f"{what}.path {path} does not exist")
    if os.environ.get("HF_HUB_OFFLINE") == "1" and not isinstance(try_to_load_from_cache(path, "config.json"), str):
        raise CapdistillError(f"{what}.path {path} is not in the local HF cache and HF_HUB_OFFLINE=1")
    return path


def load_tokenizer(mcfg: Any, what: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (EOS when it has none) and its chat-template choice."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(mcfg.path, what))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if mcfg.chat_template:
        if not tokenizer.chat_template:
            raise CapdistillError(f"{what}.chat_template=true but the tokenizer of {mcfg.path} has no chat template")
        use_chat_template(tokenizer)
    return tokenizer


def load_model(mcfg: Any, what: str) -> PreTrainedModel:
    """The causal LM in eval mode, in `mcfg.dtype`, with `mcfg.attn_implementation` if set."""
    dtype = getattr(mcfg.dtype, "value", mcfg.dtype)  # an Enum member from a DictConfig, or a plain str
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    if mcfg.attn_implementation:
        kwargs["attn_implementation"] = mcfg.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(resolve_path(mcfg.path, what), **kwargs)
    return model.eval()
