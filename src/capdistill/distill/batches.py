"""Batches of teacher-supervised examples: prompts masked, length-bucketed so padding costs little, or
packed into rows with no padding between examples."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
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
    size = (shape[0], shape[1] - 1, first.ids.shape[-1])
    ids = torch.zeros(size, dtype=torch.long)
    logprobs = None if first.logprobs is None else torch.zeros(size)
    for example, (row, start, length) in zip(examples, placements):
        at = start + length - len(example.ids) - 1  # the position that predicts the first response token
        ids[row, at : at + len(example.ids)] = example.teacher.ids.long()
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
    """Pre-built batches (a map-style dataset of whole batches, so DDP can shard them by index).

    `teacher_tokenizer` only for cross-tokenizer losses: each batch then also carries the
    teacher's own tokenization of the same text (`teacher_input_ids`, ...). With `cached`, a batch
    whose examples all carry cached teacher rows carries them too (`cached_rows`), and trains with no
    teacher forward; `self.cached_batches` counts those.
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
    ) -> None:
        if pack_length is not None and teacher_tokenizer is not None:
            raise CapdistillError("packing pairs no teacher tokenization: cross-tokenizer losses train unpacked")
        student = [encode_supervised(e, student_tokenizer) for e in examples]
        teacher = [encode_for_teacher(e, teacher_tokenizer) for e in examples] if teacher_tokenizer else None
        self.batches, self.cached_batches = [], 0
        for idx in length_batches([len(s["input_ids"]) for s in student], batch_size, seed):
            if pack_length is not None:
                batch, placements = collate_packed(
                    [student[i] for i in idx], pack_length, student_tokenizer.pad_token_id
                )
            else:
                batch = collate([student[i] for i in idx], student_tokenizer.pad_token_id)
                placements = [(row, 0, len(student[i]["input_ids"])) for row, i in enumerate(idx)]
            if teacher is not None:
                t = collate([teacher[i] for i in idx], teacher_tokenizer.pad_token_id)
                batch.update({f"teacher_{k}": v for k, v in t.items()})
            if cached and all(examples[i].teacher is not None for i in idx):
                batch.update(cached_rows([examples[i] for i in idx], placements, tuple(batch["input_ids"].shape)))
                self.cached_batches += 1
            self.batches.append(batch)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batches[index]


class RankShards(torch.utils.data.Dataset):
    """Rank `rank`'s share of every batch under data parallelism: rows `rank`, `rank + world`, ... So
    each optimizer step covers the same global batch as one process would, in the same order (every
    rank draws the same shuffle). A rank left without a row gets row 0 with nothing counted."""

    def __init__(self, dataset: SupervisedBatches, rank: int, world: int) -> None:
        self.dataset, self.rank, self.world = dataset, rank, world

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.dataset[index]
        rows = torch.arange(self.rank, batch["input_ids"].shape[0], self.world)
        if rows.numel():
            return {k: v[rows] for k, v in batch.items()}
        shard = {k: v[:1].clone() for k, v in batch.items()}
        shard["labels"].fill_(IGNORE_INDEX)
        shard["counted"] = torch.zeros(1, dtype=torch.long)  # its tokens are not trained on
        return shard


class DistillDataModule(pl.LightningDataModule):
    """One round's supervision batches as a DataModule (batch order reshuffled every epoch; under data
    parallelism each rank loads its `RankShards`)."""

    def __init__(self, dataset: SupervisedBatches) -> None:
        super().__init__()
        self.dataset = dataset

    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        data = self.dataset if world == 1 else RankShards(self.dataset, self.trainer.global_rank, world)
        return DataLoader(data, batch_size=None, shuffle=True)
