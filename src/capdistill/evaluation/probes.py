"""Exact-match probes by batched greedy generation, and the paper's log-likelihood proxy."""

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


@torch.no_grad()
def response_loglik(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    responses: Sequence[str],
    batch_size: int = 128,
) -> float:
    """Mean per-token log-likelihood of `responses` under `model` (the paper's cheap proxy).

    With the teacher's greedy responses this is the released ReAD code's probe score.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        rows = [
            (prompt_ids(tokenizer, p), response_ids(tokenizer, r))
            for p, r in zip(prompts[start : start + batch_size], responses[start : start + batch_size])
        ]
        width = max(len(p) + len(r) for p, r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        target_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (p, r) in enumerate(rows):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            attn[i, : len(p) + len(r)] = 1
            target_mask[i, len(p) : len(p) + len(r)] = True
        ids, attn, target_mask = ids.to(device), attn.to(device), target_mask.to(device)
        logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        mask = target_mask[:, 1:]
        total += logp[mask].sum().item()
        count += int(mask.sum())
    model.train(was_training)
    return total / max(count, 1)
