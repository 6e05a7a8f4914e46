"""Prompt formatting and generation: how a prompt becomes the ids a model is conditioned on, how a
response becomes supervision ids, and batched generation from prompts. Supervision (the teacher
writing responses), training (encoded sequences) and evaluation (probes, the proxy, lm-eval) all
format through here, so a model sees the same text in every role.

A tokenizer carries its format: `use_chat_template` marks an instruct model's tokenizer (set
once, where the model is loaded) so every prompt it encodes is wrapped in its chat template.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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


Keep = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class Generated:
    """One completion: its text, the token ids the model wrote (through its first EOS), and what `keep`
    took of the model's next-token logits at each of those tokens (`[n, K]` rows, or None), plus one
    row past the last when no EOS came before `max_new_tokens` (where supervision appends its EOS)."""

    text: str
    ids: list[int]
    kept: tuple[torch.Tensor, torch.Tensor | None] | None = None


class _KeepSteps:
    """Applies `keep` to the model's next-token logits at every generation step, read at its output embedding:
    the model's own logits, before any of `generate`'s processors (a repetition penalty from its generation
    config) or sampling, so what is kept is the model's distribution and what is generated does not
    depend on it. The model's logits must be its output embedding's (`check_linear_head`)."""

    def __init__(self, model: PreTrainedModel, keep: Keep) -> None:
        self.keep, self.steps = keep, []
        self.handle = model.get_output_embeddings().register_forward_hook(self.hook)

    def hook(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.steps.append(self.cpu(self.keep(output[:, -1])))

    @staticmethod
    def cpu(kept: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
        return kept[0].cpu(), None if kept[1] is None else kept[1].cpu()

    def row(self, row: int, n: int, extra: tuple[torch.Tensor, torch.Tensor | None] | None):
        """Sequence `row`'s first `n` kept rows, then `extra`'s row `row` when given."""
        picked = [(ids[row], None if values is None else values[row]) for ids, values in self.steps[:n]]
        if extra is not None:
            picked.append((extra[0][row], None if extra[1] is None else extra[1][row]))
        ids = torch.stack([ids for ids, _ in picked])
        return ids, None if picked[0][1] is None else torch.stack([values for _, values in picked])


@runtime_checkable
class Writer(Protocol):
    """A model that writes through an engine of its own rather than in-process `generate` (a teacher served
    by vLLM or another server): it gives greedy completions as text, formatted with its own tokenizer."""

    def texts(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]: ...


def generate_texts(
    model: PreTrainedModel | Writer,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 128,
    **sampling: Any,
) -> list[str]:
    """Completions of `prompts` decoded to text: `generate`'s texts (`sampling`: its temperature, top_p, seed),
    or a `Writer`'s greedy ones."""
    if isinstance(model, Writer):
        if sampling:
            raise TypeError(f"a Writer's texts are greedy; got sampling options {sorted(sampling)}")
        return model.texts(prompts, max_new_tokens, batch_size)
    return [g.text for g in generate(model, tokenizer, prompts, max_new_tokens, batch_size, **sampling)]


@torch.no_grad()
def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    keep: Keep | None = None,
) -> list[Generated]:
    """Completions of `prompts` (length-sorted, left-padded batches, KV cache).

    `temperature` 0 is greedy decoding; above 0 samples with `top_p`, reproducibly for a `seed`.
    `keep` maps the model's next-token logits `[B, V]` at each step (`_KeepSteps`) to rows to keep per
    sequence: a teacher logit cache filled while the teacher writes. A response cut at `max_new_tokens`
    gets one more row, after its last token (where supervision appends its EOS), from one forward pass
    over the cut sequences, so generation itself, and its random draws, are those of a run without `keep`.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    )
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[Generated] = [Generated("", [])] * len(prompts)
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
            steps = _KeepSteps(model, keep) if keep is not None else None
            try:
                generated = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **sampling,
                )
            finally:
                if steps is not None:
                    steps.handle.remove()
            tokens = generated[:, width:]
            ended = (tokens == tokenizer.eos_token_id).any(dim=1)
            extra = None
            if steps is not None and not bool(ended.all()):  # the rows after responses cut at max_new_tokens
                full = torch.cat([mask.to(device), torch.ones_like(tokens)], dim=1)
                positions = (full.cumsum(-1) - 1).clamp_min(0)  # as generate places left-padded rows
                logits = model(input_ids=generated, attention_mask=full, position_ids=positions).logits[:, -1]
                extra = steps.cpu(keep(logits))
            for row, i in enumerate(idx):
                written = tokens[row].tolist()
                if ended[row]:
                    written = written[: written.index(tokenizer.eos_token_id) + 1]
                text = tokenizer.decode(tokens[row], skip_special_tokens=True)
                kept = None
                if steps is not None:
                    kept = steps.row(row, len(written), None if ended[row] else extra)
                out[i] = Generated(text, written, kept)
    model.train(was_training)
    return out
