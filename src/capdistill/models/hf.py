"""Load any Hugging Face causal LM and its tokenizer from a hub name or a local directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from capdistill.errors import CapdistillError
from capdistill.models.packaged import PACKAGED, materialize, package_files, packaged_name
from capdistill.training.data import use_chat_template

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def resolve_path(path: str | None, what: str, cache_dir: str | Path | None = None) -> str:
    """A local directory, or a hub name that can be loaded (offline: only from the local HF cache).

    A `packaged:<name>` path is checked (its package installed); with a `cache_dir` it is
    converted there on first use and its directory returned.
    """
    if not path:
        raise CapdistillError(f"{what}.path is not set: give a hub name or a local model directory")
    name = packaged_name(path)
    if name is not None:
        if cache_dir is None:
            package_files(name)
            return path
        return str(materialize(name, cache_dir))
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


def checkpoint_depth(path: str | None) -> int | None:
    """Decoder layers of the checkpoint at `path` where known without loading weights: a packaged
    model's or a local directory's; 0 for a packaged tokenizer; None for a hub name."""
    name = packaged_name(path)
    if name is not None:
        return PACKAGED[name].num_layers or 0
    config = Path(path or "").expanduser() / "config.json"
    return AutoConfig.from_pretrained(config.parent).num_hidden_layers if config.is_file() else None


def load_tokenizer(mcfg: Any, what: str, cache_dir: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (EOS when it has none) and its chat-template choice."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(mcfg.path, what, cache_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if mcfg.chat_template:
        if not tokenizer.chat_template:
            raise CapdistillError(f"{what}.chat_template=true but the tokenizer of {mcfg.path} has no chat template")
        use_chat_template(tokenizer)
    return tokenizer


def load_model(
    mcfg: Any, what: str, cache_dir: str | Path | None = None, tokenizer: PreTrainedTokenizerBase | None = None
) -> PreTrainedModel:
    """The causal LM in eval mode, in `mcfg.dtype`, with `mcfg.attn_implementation` if set.

    `init.layers` keeps those layers of the checkpoint; `init.scratch` builds a random Llama
    shaped by `arch` for `tokenizer` instead of loading weights.
    """
    dtype = getattr(mcfg.dtype, "value", mcfg.dtype)  # an Enum member from a DictConfig, or a plain str
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    if mcfg.attn_implementation:
        kwargs["attn_implementation"] = mcfg.attn_implementation
    path = resolve_path(mcfg.path, what, cache_dir)
    if mcfg.init.scratch:
        if tokenizer is None:
            tokenizer = load_tokenizer(mcfg, what, cache_dir)
        model = scratch_model(mcfg.arch, tokenizer, mcfg.seed, mcfg.attn_implementation)
        return model.to(kwargs["dtype"] if dtype != "auto" else torch.float32).eval()
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if mcfg.init.layers is not None:
        keep_layers(model, list(mcfg.init.layers))
    return model.eval()


def keep_layers(model: PreTrainedModel, layers: list[int]) -> None:
    """Drop every decoder layer not in `layers` (in place), renumbering the kept ones for the KV cache."""
    decoder = model.get_decoder()
    kept = torch.nn.ModuleList([decoder.layers[i] for i in layers])
    for index, layer in enumerate(kept):
        if hasattr(layer, "self_attn") and hasattr(layer.self_attn, "layer_idx"):
            layer.self_attn.layer_idx = index
    decoder.layers = kept
    config = model.config
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layers]
    config.num_hidden_layers = len(layers)


def scratch_model(
    arch: Any, tokenizer: PreTrainedTokenizerBase, seed: int, attn_implementation: str | None = None
) -> PreTrainedModel:
    """A randomly initialised Llama of shape `arch` for `tokenizer` (same special-token ids)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads or arch.num_heads,
        max_position_embeddings=arch.max_positions,
        tie_word_embeddings=arch.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if attn_implementation:
        config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
