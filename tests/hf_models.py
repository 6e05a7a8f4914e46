"""Tiny randomly initialised Hugging Face models, saved to disk, for the real-model code path.

A Llama-architecture pair sharing a word-level tokenizer and a GPT-2-architecture model with
a BPE tokenizer, all trained locally on the micro world's text: nothing touches the Hub.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedTokenizerBase

from capdistill.capabilities.sources import WorldSources
from capdistill.world.build import world_tokenizer


def tiny_config(
    arch: str, tokenizer: PreTrainedTokenizerBase, hidden: int, positions: int = 256
) -> LlamaConfig | GPT2Config:
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if arch == "llama":
        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=positions,
            pad_token_id=tokenizer.pad_token_id,
            **ids,
        )
    return GPT2Config(vocab_size=len(tokenizer), n_embd=hidden, n_layer=1, n_head=2, n_positions=positions, **ids)


def save_tiny(
    path: Path, arch: str, tokenizer: PreTrainedTokenizerBase, hidden: int, seed: int = 0, positions: int = 256
) -> Path:
    """A random `arch` ('llama' or 'gpt2') model with `tokenizer`, saved as an HF model directory."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer, hidden, positions))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_tiny_models(root: Path, sources: WorldSources) -> dict[str, Path]:
    """llama-teacher and llama-student (same word tokenizer), gpt2-student (BPE tokenizer)."""
    word, bpe = world_tokenizer(sources, "word", 512), world_tokenizer(sources, "bpe", 512)
    return {
        "llama-teacher": save_tiny(root / "llama-teacher", "llama", word, 32, seed=1),
        "llama-student": save_tiny(root / "llama-student", "llama", word, 16, seed=2),
        "gpt2-student": save_tiny(root / "gpt2-student", "gpt2", bpe, 16, seed=3),
    }
