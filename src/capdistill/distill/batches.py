"""Batches of teacher-supervised examples: prompts masked, length-bucketed so padding costs little."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

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


def cached_rows(examples: Sequence[Supervised], lengths: Sequence[int], width: int) -> dict[str, torch.Tensor]:
    """The examples' cached teacher rows laid out as the student's logits are (row t predicts token t + 1,
    `width` - 1 rows): `teacher_ids` `[B, width - 1, K]` and, for top-k, `teacher_logprobs`; rows that
    predict no supervision token hold id 0 and log-prob 0, which no loss reads."""
    first = examples[0].teacher
    k = first.ids.shape[-1]
    ids = torch.zeros((len(examples), width - 1, k), dtype=torch.long)
    logprobs = None if first.logprobs is None else torch.zeros((len(examples), width - 1, k))
    for row, (example, length) in enumerate(zip(examples, lengths)):
        start = length - len(example.ids) - 1  # the row that predicts the first response token
        ids[row, start : start + len(example.ids)] = example.teacher.ids.long()
        if logprobs is not None:
            logprobs[row, start : start + len(example.ids)] = example.teacher.logprobs.float()
    return {"teacher_ids": ids} | ({} if logprobs is None else {"teacher_logprobs": logprobs})


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
    ) -> None:
        student = [encode_supervised(e, student_tokenizer) for e in examples]
        teacher = [encode_for_teacher(e, teacher_tokenizer) for e in examples] if teacher_tokenizer else None
        self.batches, self.cached_batches = [], 0
        for idx in length_batches([len(s["input_ids"]) for s in student], batch_size, seed):
            batch = collate([student[i] for i in idx], student_tokenizer.pad_token_id)
            if teacher is not None:
                t = collate([teacher[i] for i in idx], teacher_tokenizer.pad_token_id)
                batch.update({f"teacher_{k}": v for k, v in t.items()})
            if cached and all(examples[i].teacher is not None for i in idx):
                lengths = [len(student[i]["input_ids"]) for i in idx]
                batch.update(cached_rows([examples[i] for i in idx], lengths, batch["input_ids"].shape[1]))
                self.cached_batches += 1
            self.batches.append(batch)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.batches[index]


class DistillDataModule(pl.LightningDataModule):
    """One round's supervision batches as a DataModule (batch order reshuffled every epoch)."""

    def __init__(self, dataset: SupervisedBatches) -> None:
        super().__init__()
        self.dataset = dataset

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=None, shuffle=True)
