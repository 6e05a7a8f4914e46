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
from capdistill.prompting import use_chat_template

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


SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")


def checkpoint_shape(path: str | None) -> dict[str, int] | None:
    """Depth and widths of the checkpoint at `path` where known without loading weights (a packaged
    model's or a local directory's); {} for a packaged tokenizer; None for a hub name."""
    name = packaged_name(path)
    if name is not None:
        return dict(PACKAGED[name].shape or {})
    config = Path(path or "").expanduser() / "config.json"
    if not config.is_file():
        return None
    loaded = AutoConfig.from_pretrained(config.parent)
    return {key: getattr(loaded, key) for key in SHAPE_KEYS if isinstance(getattr(loaded, key, None), int)}


def load_tokenizer(spec: Any, what: str, cache_dir: str | Path | None = None) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (EOS when it has none) and its chat-template choice."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(spec.path, what, cache_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if spec.chat_template:
        if not tokenizer.chat_template:
            raise CapdistillError(f"{what}.chat_template=true but the tokenizer of {spec.path} has no chat template")
        use_chat_template(tokenizer)
    return tokenizer


def load_model(
    spec: Any, what: str, cache_dir: str | Path | None = None, tokenizer: PreTrainedTokenizerBase | None = None
) -> PreTrainedModel:
    """The causal LM in eval mode, in `spec.dtype`, with `spec.attn_implementation` if set.

    `init.layers` keeps those layers of the checkpoint, `init.hidden_size` and
    `init.intermediate_size` narrow it; `init.scratch` builds a random Llama shaped by `arch`
    for `tokenizer` instead of loading weights.
    """
    dtype = getattr(spec.dtype, "value", spec.dtype)  # an Enum member from a DictConfig, or a plain str
    kwargs: dict[str, Any] = {"dtype": DTYPES[dtype]}
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    path = resolve_path(spec.path, what, cache_dir)
    if spec.init.scratch:
        if tokenizer is None:
            tokenizer = load_tokenizer(spec, what, cache_dir)
        model = scratch_model(spec.arch, tokenizer, spec.seed, spec.attn_implementation)
        return model.to(kwargs["dtype"] if dtype != "auto" else torch.float32).eval()
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if spec.init.layers is not None:
        keep_layers(model, list(spec.init.layers))
    if spec.init.hidden_size is not None or spec.init.intermediate_size is not None:
        narrow(model, spec.init.hidden_size, spec.init.intermediate_size)
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


def _keep(linear: torch.nn.Linear, index: torch.Tensor, dim: int) -> None:
    """Keep `index` of a linear layer's outputs (dim 0) or inputs (dim 1), in place."""
    linear.weight = torch.nn.Parameter(linear.weight.data.index_select(dim, index).clone())
    if dim == 0 and linear.bias is not None:
        linear.bias = torch.nn.Parameter(linear.bias.data[index].clone())
    if dim == 0:
        linear.out_features = len(index)
    else:
        linear.in_features = len(index)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` largest scores, in their original order."""
    return scores.topk(k).indices.sort().values


@torch.no_grad()
def narrow(model: PreTrainedModel, hidden_size: int | None = None, intermediate_size: int | None = None) -> None:
    """Width pruning of a Llama-style model, in place (the weight-magnitude criterion).

    `intermediate_size`: each layer keeps the MLP neurons with the largest squared weight norm
    over their gate, up and down connections. `hidden_size`: the residual stream keeps the
    channels with the largest squared weight norm over every matrix reading or writing them
    (embeddings, attention and MLP projections, LM head) and norm scales; head_dim is unchanged.
    """
    config, decoder = model.config, model.get_decoder()
    layers = getattr(decoder, "layers", [None])
    if not all(hasattr(getattr(layer, "mlp", None), "gate_proj") for layer in layers):
        raise CapdistillError(f"width pruning needs a Llama-style model (gated MLP); got {type(model).__name__}")
    if hidden_size is not None and hidden_size % config.num_attention_heads:
        raise CapdistillError(
            f"hidden_size={hidden_size} must be a multiple of the {config.num_attention_heads} attention heads"
        )
    if intermediate_size is not None:
        for layer in decoder.layers:
            mlp = layer.mlp
            scores = mlp.gate_proj.weight.pow(2).sum(1) + mlp.up_proj.weight.pow(2).sum(1)
            keep = _top(scores + mlp.down_proj.weight.pow(2).sum(0), intermediate_size)
            for linear, dim in ((mlp.gate_proj, 0), (mlp.up_proj, 0), (mlp.down_proj, 1)):
                _keep(linear, keep, dim)
        config.intermediate_size = intermediate_size
    if hidden_size is None:
        return
    readers = [
        m
        for layer in decoder.layers
        for m in (
            layer.self_attn.q_proj,
            layer.self_attn.k_proj,
            layer.self_attn.v_proj,
            layer.mlp.gate_proj,
            layer.mlp.up_proj,
        )
    ]
    writers = [m for layer in decoder.layers for m in (layer.self_attn.o_proj, layer.mlp.down_proj)]
    norms = [n for layer in decoder.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
    norms.append(decoder.norm)
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head.weight is embed.weight
    scores = embed.weight.pow(2).sum(0) + sum(n.weight.pow(2) for n in norms)
    scores += sum(m.weight.pow(2).sum(0) for m in readers) + sum(m.weight.pow(2).sum(1) for m in writers)
    if not tied:
        scores += head.weight.pow(2).sum(0)
    keep = _top(scores, hidden_size)
    config.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    for m in readers:
        _keep(m, keep, 1)
    for m in writers:
        _keep(m, keep, 0)
    for n in norms:
        n.weight = torch.nn.Parameter(n.weight.data[keep].clone())
    embed.weight = torch.nn.Parameter(embed.weight.data[:, keep].clone())
    embed.embedding_dim = hidden_size
    if tied:
        head.weight = embed.weight
    else:
        _keep(head, keep, 1)
    config.hidden_size = hidden_size


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


def check_init(spec: Any, role: str) -> None:
    """An HF model's initialisation: kept layers and widths within the checkpoint's, or a scratch shape."""
    shape = checkpoint_shape(spec.path)
    layers, depth = spec.init.layers, None if shape is None else shape.get("num_hidden_layers", 0)
    if depth == 0 and not spec.init.scratch:
        raise CapdistillError(f"{role}.path {spec.path} is a tokenizer only: set {role}.init.scratch=true")
    if layers is not None:
        if spec.init.scratch:
            raise CapdistillError(f"{role}.init: layers and scratch exclude each other")
        if not layers or len(set(layers)) != len(layers):
            raise CapdistillError(f"{role}.init.layers must be a non-empty list of distinct layer indices")
        bad = [i for i in layers if depth is not None and not 0 <= i < depth]
        if bad:
            raise CapdistillError(
                f"{role}.init.layers: layer {bad[0]} is outside {spec.path}'s depth ({depth} layers, 0-{depth - 1})"
            )
    for key in ("hidden_size", "intermediate_size"):
        width = getattr(spec.init, key)
        if width is None:
            continue
        if spec.init.scratch:
            raise CapdistillError(f"{role}.init: {key} and scratch exclude each other (a scratch shape is arch.{key})")
        full = (shape or {}).get(key)
        if width <= 0 or (full is not None and width > full):
            raise CapdistillError(
                f"{role}.init.{key}={width} must be in 1..{full or 'the checkpoint width'} ({spec.path})"
            )
        heads = (shape or {}).get("num_attention_heads")
        if key == "hidden_size" and heads and width % heads:
            raise CapdistillError(f"{role}.init.hidden_size={width} must be a multiple of {spec.path}'s {heads} heads")
