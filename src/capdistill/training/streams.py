"""Batches for causal-LM training (world builds): endless mixed example streams, prompt tokens masked."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch.utils.data import IterableDataset
from transformers import PreTrainedTokenizerBase

from capdistill.capabilities.base import Source, split_of
from capdistill.errors import CapdistillError
from capdistill.prompting import IGNORE_INDEX, encode


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
