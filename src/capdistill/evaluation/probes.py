"""Exact-match probes by batched greedy generation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from capdistill.capabilities.base import Example, Source
from capdistill.training.data import prompt_ids, response_ids


@torch.no_grad()
def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[str]:
    """Completions of `prompts` (length-sorted, left-padded batches, KV cache), decoded to text.

    `temperature` 0 is greedy decoding; above 0 samples with `top_p`, reproducibly for a `seed`.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    )
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(encoded[i]) for i in idx)
            ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
                mask[row, width - len(encoded[i]) :] = 1
            generated = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(generated[row, width:], skip_special_tokens=True)
    model.train(was_training)
    return out


def max_response_tokens(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], slack: int = 4) -> int:
    """Generation length that fits every reference response with some slack."""
    return max(len(response_ids(tokenizer, e.response)) for e in examples) + slack


def generation_length(tokenizer: PreTrainedTokenizerBase, source: Source, examples: Sequence[Example]) -> int:
    """How long a probed model may answer: the source's own length, else the reference responses'."""
    return source.max_new_tokens or max_response_tokens(tokenizer, examples)


def accuracy(source: Source, examples: Sequence[Example], predictions: Sequence[str]) -> float:
    """Exact-match accuracy in percent under the source's checker."""
    hits = sum(source.check(e, p) for e, p in zip(examples, predictions))
    return 100.0 * hits / max(len(examples), 1)


def probe_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    source: Source,
    examples: Sequence[Example],
    batch_size: int = 128,
) -> tuple[float, list[str]]:
    """Score `model` on `examples` of `source`: accuracy 0-100 and the predictions."""
    predictions = generate_texts(
        model, tokenizer, [e.prompt for e in examples], generation_length(tokenizer, source, examples), batch_size
    )
    return accuracy(source, examples, predictions), predictions
