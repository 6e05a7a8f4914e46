"""Batches of teacher-supervised examples: prompts masked, length-bucketed so padding costs little, or
packed into rows with no padding between examples."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, RandomSampler
from transformers import PreTrainedTokenizerBase

from capdistill.errors import CapdistillError
from capdistill.prompting import IGNORE_INDEX, prompt_ids, response_ids
from capdistill.supervision.slices import Supervised
from capdistill.training.streams import collate


def encode_supervised(example: Supervised, tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """The student's sequence: prompt ids (masked) then exactly the example's supervision ids."""
    p = prompt_ids(tokenizer, example.prompt)
    return {"input_ids": p + example.ids, "labels": [IGNORE_INDEX] * len(p) + example.ids}


def encode_for_teacher(example: Supervised, tokenizer: PreTrainedTokenizerBase) -> dict[str, list[int]]:
    """The same text in the teacher's own tokenization (cross-tokenizer losses); EOS only if the student has it."""
    p = prompt_ids(tokenizer, example.prompt)
    r = response_ids(tokenizer, example.response)
    if example.truncated:
        r = r[:-1]
    return {"input_ids": p + r, "labels": [IGNORE_INDEX] * len(p) + r}


def length_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted, cut, batch order shuffled by `seed`)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


Placement = tuple[int, int, int]  # an example's row in the batch, its first token's column, its length


def cached_rows(examples: Sequence[Supervised], placements: Sequence[Placement], shape: tuple[int, int]):
    """The examples' cached teacher rows laid out as the student's logits are (row t predicts token t + 1):
    `teacher_ids` `[rows, width - 1, K]` for a batch of `shape` (rows, width) and, for top-k,
    `teacher_logprobs`; positions that predict no supervision token hold id 0 and log-prob 0, which
    no loss reads."""
    first = examples[0].teacher
    size = (shape[0], shape[1] - 1, first.size)
    ids = torch.zeros(size, dtype=torch.long)
    logprobs = None if first.logprobs is None else torch.zeros(size)
    for example, (row, start, length) in zip(examples, placements):
        at = start + length - len(example.ids) - 1  # the position that predicts the first response token
        ids[row, at : at + len(example.ids)] = example.teacher.token_ids()
        if logprobs is not None:
            logprobs[row, at : at + len(example.ids)] = example.teacher.log_probs()
    return {"teacher_ids": ids} | ({} if logprobs is None else {"teacher_logprobs": logprobs})


def pack_rows(lengths: Sequence[int], limit: int) -> list[list[int]]:
    """Consecutive examples (by index into `lengths`) grouped into rows of at most `limit` tokens; an
    example longer than `limit` gets a row of its own."""
    rows: list[list[int]] = []
    used = limit
    for i, n in enumerate(lengths):
        if used + n > limit:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


def collate_packed(
    encoded: Sequence[dict[str, list[int]]], limit: int, pad_id: int
) -> tuple[dict[str, torch.Tensor], list[Placement]]:
    """Sequences packed into rows (`pack_rows`): `position_ids` restart at each sequence, and the padding
    that evens the rows is one more sequence of its own, so a model that reads packed positions keeps
    attention within each sequence. `attention_mask` marks the real tokens (counting only: the model
    is given none, or it would not read the packing)."""
    rows = pack_rows([len(e["input_ids"]) for e in encoded], limit)
    width = max(sum(len(encoded[i]["input_ids"]) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    placements: list[Placement] = [(0, 0, 0)] * len(encoded)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = len(encoded[i]["input_ids"])
            ids[r, at : at + n] = torch.tensor(encoded[i]["input_ids"])
            labels[r, at : at + n] = torch.tensor(encoded[i]["labels"])
            positions[r, at : at + n] = torch.arange(n)
            mask[r, at : at + n] = 1
            placements[i] = (r, at, n)
            at += n
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "position_ids": positions}, placements


class SupervisedBatches(torch.utils.data.Dataset):
    """Pre-built batches: a map-style dataset of whole batches, length-bucketed and in a seeded order.

    `teacher_tokenizer` only for cross-tokenizer losses: each batch then also carries the
    teacher's own tokenization of the same text (`teacher_input_ids`, ...). With `cached`, a batch
    whose examples all carry cached teacher rows carries them too (`cached_rows`), and trains with no
    teacher forward. With `pack_length`, a batch's examples are packed into rows (`collate_packed`).

    Under data parallelism over `ranks` processes every batch is `ranks` shards, examples `r`, `r + ranks`,
    ... each collated (or packed) on its own, and rank `r` trains on shard `r` of every batch (`RankView`):
    so each optimizer step covers the same examples as one process would. A rank left without an
    example gets the batch's first one with nothing counted (`counted` 0, no labels).
    """

    def __init__(
        self,
        examples: Sequence[Supervised],
        student_tokenizer: PreTrainedTokenizerBase,
        teacher_tokenizer: PreTrainedTokenizerBase | None,
        batch_size: int,
        seed: int,
        cached: bool = False,
        pack_length: int | None = None,
        ranks: int = 1,
    ) -> None:
        if pack_length is not None and teacher_tokenizer is not None:
            raise CapdistillError("packing pairs no teacher tokenization: cross-tokenizer losses train unpacked")
        self.examples, self.cached, self.pack_length = examples, cached, pack_length
        self.student_pad, self.teacher_pad = (
            student_tokenizer.pad_token_id,
            getattr(teacher_tokenizer, "pad_token_id", None),
        )
        self.student = [encode_supervised(e, student_tokenizer) for e in examples]
        self.teacher = [encode_for_teacher(e, teacher_tokenizer) for e in examples] if teacher_tokenizer else None
        self.ranks = ranks
        # the cached teacher rows of each (batch, rank) shard, compact: laid out when the shard is loaded
        self.plans: dict[tuple[int, int], tuple[list[Supervised], list[Placement]]] = {}
        self.batches = []
        for b, idx in enumerate(length_batches([len(s["input_ids"]) for s in self.student], batch_size, seed)):
            shards = []
            for r in range(ranks):
                part = idx[r::ranks]
                shards.append(self.collate(part, (b, r)) if part else self.nothing(idx[0], (b, r)))
            self.batches.append(shards[0] if ranks == 1 else shards)

    def collate(self, idx: Sequence[int], key: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Examples `idx` as one batch: padded or packed, with the teacher's tokenization; its cached rows, if
        every example has them, are planned under `key` (batch, rank)."""
        if self.pack_length is not None:
            batch, placements = collate_packed([self.student[i] for i in idx], self.pack_length, self.student_pad)
        else:
            batch = collate([self.student[i] for i in idx], self.student_pad)
            placements = [(row, 0, len(self.student[i]["input_ids"])) for row, i in enumerate(idx)]
        if self.teacher is not None:
            t = collate([self.teacher[i] for i in idx], self.teacher_pad)
            batch.update({f"teacher_{k}": v for k, v in t.items()})
        if key is not None and self.cached and all(self.examples[i].teacher is not None for i in idx):
            self.plans[key] = ([self.examples[i] for i in idx], placements)
        return batch

    def nothing(self, index: int, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        """A shard for a rank that the batch has no example for: one example, nothing counted or trained on."""
        batch = self.collate([index], key)
        batch["labels"].fill_(IGNORE_INDEX)
        if "teacher_labels" in batch:
            batch["teacher_labels"].fill_(IGNORE_INDEX)
        batch["counted"] = torch.zeros(1, dtype=torch.long)
        return batch

    def __len__(self) -> int:
        return len(self.batches)

    def shard(self, index: int, rank: int = 0) -> dict[str, torch.Tensor]:
        """Rank `rank`'s shard of batch `index` (the batch itself in one process), with its cached teacher
        rows laid out (`cached_rows`) if it has them."""
        batch = self.batches[index] if self.ranks == 1 else self.batches[index][rank]
        plan = self.plans.get((index, rank))
        if plan is None:
            return batch
        return batch | cached_rows(*plan, tuple(batch["input_ids"].shape))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        if self.ranks == 1:
            return self.shard(index)
        return [self.shard(index, rank) for rank in range(self.ranks)]


class RankView(torch.utils.data.Dataset):
    """Rank `rank`'s shard of every batch of a `SupervisedBatches` built for several ranks."""

    def __init__(self, dataset: SupervisedBatches, rank: int) -> None:
        self.dataset, self.rank = dataset, rank

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.dataset.shard(index, self.rank)


class EpochShuffle(RandomSampler):
    """A fresh order every epoch, all drawn from one generator seeded from the global random state when the
    first epoch starts. The first epoch's order is `DataLoader(shuffle=True)`'s; later ones do not depend on
    what training drew in between (dropout), so data-parallel ranks, seeded alike, keep drawing the same order."""

    def __iter__(self) -> Iterator[int]:  # lazy, as `RandomSampler`'s: the seed is drawn at the first batch
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        yield from super().__iter__()


class DistillDataModule(pl.LightningDataModule):
    """One round's supervision batches as a DataModule (batch order reshuffled every epoch, `EpochShuffle`;
    under data parallelism each rank loads its `RankView`)."""

    def __init__(self, dataset: SupervisedBatches) -> None:
        super().__init__()
        self.dataset = dataset

    def train_dataloader(self) -> DataLoader:
        data = self.dataset if self.dataset.ranks == 1 else RankView(self.dataset, self.trainer.global_rank)
        return DataLoader(data, batch_size=None, sampler=EpochShuffle(data))
