"""Validation, masking and pairing helpers shared by every loss.

Conventions (all losses):

* logits are position-aligned by the caller: ``logits[b, t]`` scores the token at ``t + 1``;
* ``mask`` is a bool tensor ``[B, T]``, True where a position counts;
* the result is the sum of per-position losses over the counted positions divided by
  ``denominator(...)``: the number of counted positions clamped to >= 1 (an all-False mask
  gives 0 with a valid, all-zero gradient), or ``num_items`` when given (the global token
  count under gradient accumulation / data parallelism).

Bad input raises ``capdistill.errors.CapdistillError`` (a ``ValueError``) naming the
argument and the value received.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import TypedDict

import torch
from torch import Tensor

from capdistill.errors import CapdistillError
from capdistill.losses.chunking import LinearLogits

NEG_INF = float("-inf")


class SameVocabExtras(TypedDict, total=False):
    """The keyword-only extras of every same-vocabulary loss (``forward_kl`` ... ``sampled_kl``).

    * ``vocab_size``: slice both vocabularies to their first ``vocab_size`` entries (same
      tokenizer, padded embedding rows); required when the two ``V`` differ.
    * ``num_items``: denominator replacing the number of counted positions (global token count).
    * ``chunk_size``: positions per chunk (default: about 2**23 / V); bounds the fp32 working set.
    """

    vocab_size: int | None
    num_items: Tensor | float | None
    chunk_size: int | None


def same_vocab_extras(fn: str, extras: SameVocabExtras) -> tuple[int | None, Tensor | float | None, int | None]:
    """(vocab_size, num_items, chunk_size) from a loss's keyword extras; an unknown keyword is a TypeError."""
    unknown = sorted(set(extras) - SameVocabExtras.__optional_keys__)
    if unknown:
        raise TypeError(f"{fn}() got an unexpected keyword argument {unknown[0]!r}")
    return extras.get("vocab_size"), extras.get("num_items"), extras.get("chunk_size")


# --------------------------------------------------------------------------- validation


def check_logits(name: str, logits: object) -> Tensor | LinearLogits:
    """A floating tensor ``[B, T, V]`` with ``V >= 1``, or unmaterialised `LinearLogits` of that shape."""
    if not isinstance(logits, Tensor | LinearLogits):
        raise CapdistillError(f"{name} must be a torch.Tensor [B, T, V], got {type(logits).__name__}")
    if logits.dim() != 3:
        raise CapdistillError(f"{name} must have shape [B, T, V], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise CapdistillError(f"{name} must be a floating tensor, got dtype {logits.dtype}")
    if logits.shape[-1] < 1:
        raise CapdistillError(f"{name} has an empty vocabulary: shape {tuple(logits.shape)}")
    return logits


def check_mask(name: str, mask: object, batch_shape: tuple[int, int], what: str = "the logits") -> Tensor:
    """A bool tensor of shape ``batch_shape`` (``[B, T]`` of the logits it belongs to)."""
    if not isinstance(mask, Tensor):
        raise CapdistillError(f"{name} must be a bool torch.Tensor [B, T], got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise CapdistillError(f"{name} must have dtype torch.bool (use `.bool()`), got dtype {mask.dtype}")
    if tuple(mask.shape) != tuple(batch_shape):
        raise CapdistillError(
            f"{name} must have shape [B, T] = {list(batch_shape)} to match {what}, got shape {list(mask.shape)}"
        )
    return mask


def check_same_positions(student_logits: Tensor, teacher_logits: Tensor) -> None:
    if student_logits.shape[:2] != teacher_logits.shape[:2]:
        raise CapdistillError(
            "teacher_logits must have the same [B, T] as student_logits, got teacher_logits shape "
            f"{list(teacher_logits.shape)} and student_logits shape {list(student_logits.shape)}"
        )


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise CapdistillError(f"{name} must be true or false, got {value!r}")
    return value


def check_temperature(temperature: object) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, Real) or not math.isfinite(float(temperature)):
        raise CapdistillError(f"temperature must be a finite number > 0, got {temperature!r}")
    if float(temperature) <= 0:
        raise CapdistillError(f"temperature must be > 0, got {temperature!r}")
    return float(temperature)


def check_int(name: str, value: object, *, low: int = 1, high: int | None = None) -> int:
    """An int in ``[low, high]`` (``high`` None: unbounded)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CapdistillError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise CapdistillError(f"{name} must be {bound}, got {value!r}")
    return value


def check_real(name: str, value: object, *, low: float, high: float | None = None, low_open: bool = False) -> float:
    """A finite real number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise CapdistillError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if v < low or (low_open and v == low) or (high is not None and v > high):
        lo = "(" if low_open else "["
        hi = f"{high}]" if high is not None else "inf)"
        raise CapdistillError(f"{name} must be in {lo}{low}, {hi}, got {value!r}")
    return v


def check_chunk_size(chunk_size: object) -> int | None:
    if chunk_size is None:
        return None
    return check_int("chunk_size", chunk_size, low=1)


def shared_vocab(student_logits: Tensor, teacher_logits: Tensor, vocab_size: int | None) -> int:
    """The vocabulary width both logits are sliced to (the first ``vocab_size`` columns).

    Same-family teachers and students often differ only by padding rows of the output
    embedding (e.g. 152064 vs 151936): pass the real shared size as ``vocab_size``. Logits
    are sliced, never zero-padded (a zero logit is real probability mass).
    """
    vs, vt = student_logits.shape[-1], teacher_logits.shape[-1]
    if vocab_size is None:
        if vs != vt:
            raise CapdistillError(
                f"student and teacher vocabularies differ ({vs} vs {vt}): this loss needs a shared "
                "vocabulary; pass vocab_size=<shared size> to slice both (same tokenizer, padded "
                "embedding rows), or use a cross-tokenizer loss (uld, mlot)"
            )
        return vs
    return check_int("vocab_size", vocab_size, low=1, high=min(vs, vt))


def check_num_items(num_items: object) -> None:
    if num_items is None or isinstance(num_items, Tensor):
        return
    if isinstance(num_items, bool) or not isinstance(num_items, Real) or not float(num_items) > 0:
        raise CapdistillError(f"num_items must be a number > 0 or a tensor, got {num_items!r}")


def denominator(count: Tensor | int, num_items: Tensor | float | int | None, device: torch.device) -> Tensor:
    """The loss denominator (fp64 scalar): ``num_items`` when given, else ``count`` clamped to >= 1.

    A number ``num_items`` must be > 0; a tensor (e.g. an all-reduced token count, left on
    its device to avoid a sync) is clamped to >= 1 like the count, so a globally empty batch
    gives 0, not NaN.
    """
    check_num_items(num_items)
    if num_items is None or isinstance(num_items, Tensor):
        value = count if num_items is None else num_items
        return torch.as_tensor(value, device=device).to(torch.float64).clamp_min(1.0)
    return torch.tensor(float(num_items), dtype=torch.float64, device=device)


# --------------------------------------------------------------------------- masks, rows


def flat_rows(x: Tensor) -> Tensor:
    """``[B, T, ...] -> [B*T, ...]`` (a view for contiguous inputs, a copy otherwise)."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def masked_rows(mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(b, t)`` indices of the counted positions, in row-major order."""
    return mask.nonzero(as_tuple=True)


def pair_positions(student_mask: Tensor, teacher_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-tokenizer pairing of positions, row by row.

    In each row ``b``, the i-th counted student position is paired with the i-th counted
    teacher position, for ``i < min(#student, #teacher)`` (the longer side is truncated).
    Returns boolean masks ``[B, Ts]`` and ``[B, Tt]`` of the paired positions; their
    ``nonzero`` orders (row-major) are aligned pair by pair.
    """
    if student_mask.shape[0] != teacher_mask.shape[0]:
        raise CapdistillError(
            f"teacher_mask must have the same batch size as student_mask, got {teacher_mask.shape[0]} "
            f"and {student_mask.shape[0]}"
        )
    ns = student_mask.sum(1, keepdim=True)
    nt = teacher_mask.sum(1, keepdim=True)
    m = torch.minimum(ns, nt)
    rank_s = student_mask.long().cumsum(1) - 1
    rank_t = teacher_mask.long().cumsum(1) - 1
    return student_mask & (rank_s < m), teacher_mask & (rank_t < m)


def safe_kl_terms(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Elementwise ``p * (log p - log q)`` with ``0 * log 0 = 0`` in value and gradient.

    Entries where ``log_p = -inf`` contribute exactly 0 and receive a zero (not NaN)
    gradient; both log-arguments are replaced by 0 there *before* multiplying, so no
    ``0 * inf`` is ever formed. ``log_q = -inf`` where ``p > 0`` is a genuine +inf.
    """
    support = log_p > NEG_INF
    lp = torch.where(support, log_p, 0.0)
    lq = torch.where(support, log_q, 0.0)
    return lp.exp() * (lp - lq)
