"""Example streams for causal-LM training: prompt tokens masked, responses supervised."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import IterableDataset
from transformers import PreTrainedTokenizerBase

from capdistill.capabilities.base import Source, split_of
from capdistill.errors import CapdistillError

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


def collate(batch: Sequence[Mapping[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch of encoded sequences to its longest member."""
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n] = torch.tensor(b["input_ids"])
        labels[i, :n] = torch.tensor(b["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class BatchStream(IterableDataset):
    """An endless stream of batches of fresh train-split examples, mixed across sources by weight.

    Examples are drawn `bucket` batches at a time, sorted by length and cut into batches
    served in random order, so little compute goes to padding.
    """

    def __init__(
        self,
        sources: Mapping[str, Source],
        weights: Mapping[str, float],
        difficulties: tuple[int, ...],
        tokenizer: PreTrainedTokenizerBase,
        seed: int,
        batch_size: int,
        bucket: int = 1,
    ) -> None:
        super().__init__()
        self.names = [n for n in sources if weights.get(n, 0) > 0]
        if not self.names:
            raise CapdistillError("example stream: no source has a positive weight")
        self.sources, self.weights = sources, [weights[n] for n in self.names]
        self.difficulties, self.tokenizer, self.seed = difficulties, tokenizer, seed
        self.batch_size, self.bucket = batch_size, bucket

    def examples(self, rng: random.Random) -> Iterator[dict[str, list[int]]]:
        """Encoded train-split examples, endlessly."""
        while True:
            source = self.sources[rng.choices(self.names, self.weights)[0]]
            example = source.generate(rng, rng.choice(self.difficulties))
            if split_of(example.prompt) == "train":
                yield encode(self.tokenizer, example.prompt, example.response)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = random.Random(f"stream/{self.seed}")
        examples = self.examples(rng)
        while True:
            pool = sorted(
                (next(examples) for _ in range(self.batch_size * self.bucket)), key=lambda e: len(e["input_ids"])
            )
            batches = [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
            rng.shuffle(batches)
            for batch in batches:
                yield collate(batch, self.tokenizer.pad_token_id)


class StagedStream(IterableDataset):
    """Batches from each stream in turn: `steps` batches of every stage but the last, then the last forever."""

    def __init__(self, stages: Sequence[tuple[IterableDataset, int]]) -> None:
        super().__init__()
        self.stages = list(stages)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        *first, (last, _) = self.stages
        for stream, steps in first:
            batches = iter(stream)
            for _ in range(steps):
                yield next(batches)
        yield from last
