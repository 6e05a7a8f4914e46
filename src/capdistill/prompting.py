"""Prompt formatting and generation: how a prompt becomes the ids a model is conditioned on, how a
response becomes supervision ids, and batched generation from prompts. Supervision (the teacher
writing responses), training (encoded sequences) and evaluation (probes, the proxy, lm-eval) all
format through here, so a model sees the same text in every role.

A tokenizer carries its format: `use_chat_template` marks an instruct model's tokenizer (set
once, where the model is loaded) so every prompt it encodes is wrapped in its chat template.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

IGNORE_INDEX = -100
PROMPT_END = " =>"


_CHAT = "_capdistill_chat_template"


def use_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Make `prompt_ids` wrap prompts in this tokenizer's chat template (instruct models)."""
    setattr(tokenizer, _CHAT, True)


def uses_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return getattr(tokenizer, _CHAT, False)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Token ids the model is conditioned on: BOS, the prompt and the answer cue, or the chat template."""
    if uses_chat_template(tokenizer):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False).input_ids
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    return bos + tokenizer(prompt + PROMPT_END, add_special_tokens=False).input_ids


def response_ids(tokenizer: PreTrainedTokenizerBase, response: str) -> list[int]:
    """Token ids of a response, terminated by EOS (the supervision tokens)."""
    return tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def encode(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str) -> dict[str, list[int]]:
    """One training sequence with labels only on the response."""
    p, r = prompt_ids(tokenizer, prompt), response_ids(tokenizer, response)
    return {"input_ids": p + r, "labels": [IGNORE_INDEX] * len(p) + r}


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
