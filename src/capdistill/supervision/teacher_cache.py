"""A teacher logit cache: the part of the teacher's next-token distribution a sparse loss reads (its top-k
log-probabilities, or draws from it), kept at every response token while the teacher writes the response
and stored compactly with the round's supervision, so training runs no teacher forward.

Storage per token: `K` ids in 1, 2, 3 or 4 bytes (uint8 up to 256 ids, int16 up to 32,768, three uint8
bytes up to 2^24, else int32) and, for top-k, `K` fp16 log-probabilities or, quantised, `K` bytes plus the
top entry's fp16 (draws have counts of 1 and store none).
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


def id_bytes(vocab: int) -> int:
    """The fewest bytes per id that hold ids below `vocab` (int16 rather than uint16 up to 2**15: torch's
    uint16 lacks the ops; three bytes up to 2**24, which holds every tokenizer's vocabulary in use)."""
    for n, limit in ((1, 2**8), (2, 2**15), (3, 2**24)):
        if vocab <= limit:
            return n
    return 4


def pack_ids(ids: Tensor, vocab: int) -> Tensor:
    """Token ids `[n, K]` in `id_bytes(vocab)` bytes each: uint8, int16 or int32 `[n, K]`, or for three bytes
    uint8 `[n, K, 3]`, least significant byte first."""
    width = id_bytes(vocab)
    if width != 3:
        return ids.to({1: torch.uint8, 2: torch.int16, 4: torch.int32}[width])
    return torch.stack([(ids >> shift) & 0xFF for shift in (0, 8, 16)], dim=-1).to(torch.uint8)


def unpack_ids(stored: Tensor) -> Tensor:
    """`pack_ids`' ids `[n, K]` (or `[n, K, 3]` bytes) back as int64 `[n, K]`."""
    if stored.dim() == 2:
        return stored.long()
    wide = stored.long()
    return wide[..., 0] | (wide[..., 1] << 8) | (wide[..., 2] << 16)


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
    """One example's cached teacher rows, one per supervision token: ids (`pack_ids`: `[n, K]`, or `[n, K, 3]`
    bytes) and, for top-k, their temperature-1 log-probabilities, fp16 `[n, K]` or `quantize`d uint8
    `[n, K + 2]` (None: draws, each counted once)."""

    ids: Tensor
    logprobs: Tensor | None = None

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def size(self) -> int:
        """K: the ids (top-k entries or draws) kept per row."""
        return self.ids.shape[1]

    @property
    def nbytes(self) -> int:
        values = 0 if self.logprobs is None else self.logprobs.nbytes
        return self.ids.nbytes + values

    def head(self, n: int) -> CachedTeacher:
        """The first `n` rows (a truncated response's)."""
        return CachedTeacher(self.ids[:n], None if self.logprobs is None else self.logprobs[:n])

    def token_ids(self) -> Tensor:
        """The ids as int64 `[n, K]`."""
        return unpack_ids(self.ids)

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
        return pack(spec, ids, values, vocab)

    return keep


def pack(spec: CacheSpec, ids: Tensor, values: Tensor | None, vocab: int) -> tuple[Tensor, Tensor | None]:
    """Kept rows in their storage: ids in `id_bytes(vocab)` bytes, log-probs in fp16 or quantized."""
    if values is not None:
        values = quantize(values) if spec.quantized else values.to(VALUE_DTYPE)
    return pack_ids(ids, vocab), values


def compact_rows(spec: CacheSpec, ids: Tensor, logprobs: Tensor, vocab: int) -> tuple[Tensor, Tensor | None]:
    """A top-k cache's rows from an engine's own top-k (ids `[n, k]`, raw log-probs, best first, over a
    teacher's `vocab` logits), as `keeper` stores rows it took from logits. An id past the loss's shared vocabulary (`spec.vocab`: a padded
    vocabulary's unused tail) is dropped to id 0 at -inf, which the loss reads as padding."""
    if spec.vocab is not None:
        outside = ids >= spec.vocab
        ids, logprobs = ids.masked_fill(outside, 0), logprobs.masked_fill(outside, float("-inf"))
    return pack(spec, ids, logprobs.float(), vocab if spec.vocab is None else min(spec.vocab, vocab))


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
