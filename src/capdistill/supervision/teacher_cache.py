"""A teacher logit cache: the part of the teacher's next-token distribution a sparse loss reads (its top-k
log-probabilities, or draws from it), kept at every response token while the teacher writes the response
and stored compactly with the round's supervision, so training runs no teacher forward.

Storage per token: `K` ids in the smallest integer type that holds the vocabulary (uint8, int16 or
int32) and, for top-k, `K` fp16 log-probabilities or, quantised, `K` bytes plus the top entry's fp16
(draws have counts of 1 and store none).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from capdistill.losses.sparse import CacheSpec
from capdistill.prompting import Keep

VALUE_DTYPE = torch.float16


def id_dtype(vocab: int) -> torch.dtype:
    """The smallest integer type torch indexes with that holds ids below `vocab`."""
    if vocab <= 2**8:
        return torch.uint8
    return torch.int16 if vocab <= 2**15 else torch.int32


STEPS_PER_NAT = 16  # uint8 log-probs: steps of 1/16 nat below the row's top entry, 255 steps (about 16 nats)


def quantize(logprobs: Tensor) -> Tensor:
    """Top-k log-probabilities `[n, K]` (sorted, top first) as uint8 `[n, K + 2]`: each entry's distance below
    the row's top in steps of 1/16 nat (rounded, at most 255), then the top itself as fp16 in two bytes."""
    top = logprobs[:, :1]
    codes = ((top - logprobs) * STEPS_PER_NAT).round().clamp(0, 255).to(torch.uint8)
    return torch.cat([codes, top.to(torch.float16).view(torch.uint8)], dim=1)


def dequantize(values: Tensor) -> Tensor:
    """fp32 log-probabilities from `quantize`'s uint8 rows: within 1/32 nat of the originals (and of the top's
    fp16 rounding), but for entries more than 255/16 nats below the top, which come back at that distance."""
    top = values[:, -2:].contiguous().view(torch.float16).float()
    return top - values[:, :-2].float() / STEPS_PER_NAT


@dataclass
class CachedTeacher:
    """One example's cached teacher rows, one per supervision token: ids `[n, K]` and, for top-k, their
    temperature-1 log-probabilities, fp16 `[n, K]` or `quantize`d uint8 `[n, K + 2]` (None: draws, each
    counted once)."""

    ids: Tensor
    logprobs: Tensor | None = None

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def nbytes(self) -> int:
        values = 0 if self.logprobs is None else self.logprobs.nbytes
        return self.ids.nbytes + values

    def head(self, n: int) -> CachedTeacher:
        """The first `n` rows (a truncated response's)."""
        return CachedTeacher(self.ids[:n], None if self.logprobs is None else self.logprobs[:n])

    def log_probs(self) -> Tensor | None:
        """The log-probabilities as fp32 `[n, K]` (None for draws)."""
        if self.logprobs is None or self.logprobs.dtype != torch.uint8:
            return None if self.logprobs is None else self.logprobs.float()
        return dequantize(self.logprobs)


def keeper(spec: CacheSpec, seed: str, device: torch.device) -> Keep:
    """What the teacher keeps at each generation step for `spec`, compacted for storage; draws come from
    their own generator (seeded by `seed`), so the generated text is the same with the cache or without."""
    generator = torch.Generator(device=device).manual_seed(zlib.crc32(f"teacher-cache/{seed}".encode()))

    def keep(logits: Tensor) -> tuple[Tensor, Tensor | None]:
        ids, values = spec.rows(logits, generator)
        vocab = logits.shape[-1] if spec.vocab is None else min(spec.vocab, logits.shape[-1])
        if values is not None:
            values = quantize(values) if spec.quantized else values.to(VALUE_DTYPE)
        return ids.to(id_dtype(vocab)), values

    return keep


def cache_summary(caches: list[CachedTeacher | None]) -> dict[str, Any]:
    """What a round's cache holds: supervision tokens with cached rows, their bytes, and the examples
    without (a response whose re-tokenization differs from what the teacher wrote, or that hit
    `max_new_tokens` before its EOS); a batch holding one of those trains with the live teacher."""
    kept = [c for c in caches if c is not None]
    return summary(sum(len(c) for c in kept), sum(c.nbytes for c in kept), len(caches) - len(kept))


def merge_summaries(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's cache: its rounds' `cache_summary`s added up."""
    return summary(*(sum(r[key] for r in rounds) for key in ("tokens", "bytes", "examples_without")))


def summary(tokens: int, nbytes: int, without: int) -> dict[str, Any]:
    return {
        "tokens": tokens,
        "bytes": nbytes,
        "bytes_per_token": nbytes / tokens if tokens else None,
        "examples_without": without,
    }
