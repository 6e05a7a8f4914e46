"""Sequence-level KD: cross-entropy of the student on teacher-written tokens."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from capdistill.errors import CapdistillError
from capdistill.losses.chunking import Rows, chunked_sum
from capdistill.losses.common import (
    check_chunk_size,
    check_logits,
    check_mask,
    check_temperature,
    denominator,
    masked_rows,
)
from capdistill.losses.sparse import target_kl_with_grads


def _ce_rows(s: Tensor, y: Tensor, *, temperature: float, needs: tuple[bool, ...]):
    """Cross-entropy = KL(one-hot(y) || p_S): the sparse-target loss with one slot of mass 1."""
    ids = y.unsqueeze(1)
    one = torch.ones(ids.shape, dtype=s.dtype, device=s.device)
    loss, g_s, _ = target_kl_with_grads(s, ids, one, torch.zeros_like(one), temperature=temperature, need_s=needs[0])
    return loss, (g_s, None)


def sft(
    student_logits: Tensor,
    target_ids: Tensor,
    mask: Tensor,
    *,
    temperature: float = 1.0,
    num_items: Tensor | float | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Cross-entropy ``-log p_S(target)`` on the counted positions (mean, or sum / ``num_items``).

    Args:
        student_logits: ``[B, T, V]``, position-aligned: ``student_logits[b, t]`` predicts
            ``target_ids[b, t]``.
        target_ids: integer ``[B, T]``; values at counted positions must be in ``[0, V)``
            (anything, e.g. -100, elsewhere).
        mask: bool ``[B, T]``.
        temperature: > 0 (1 is plain cross-entropy).
        num_items: as in [`forward_kl`][capdistill.losses.divergences.forward_kl].
        chunk_size: as in [`forward_kl`][capdistill.losses.divergences.forward_kl].
    """
    t = check_temperature(temperature)
    check_logits("student_logits", student_logits)
    check_mask("mask", mask, tuple(student_logits.shape[:2]))
    if not isinstance(target_ids, Tensor) or target_ids.dtype.is_floating_point or target_ids.dtype.is_complex:
        raise CapdistillError(
            f"target_ids must be an integer tensor [B, T], got {getattr(target_ids, 'dtype', type(target_ids))}"
        )
    if tuple(target_ids.shape) != tuple(student_logits.shape[:2]):
        raise CapdistillError(
            f"target_ids must have shape [B, T] = {list(student_logits.shape[:2])}, got shape {list(target_ids.shape)}"
        )
    vocab = student_logits.shape[-1]
    counted = target_ids[mask]
    if counted.numel() and (int(counted.min()) < 0 or int(counted.max()) >= vocab):
        raise CapdistillError(
            f"target_ids must be in [0, {vocab}) at counted positions, got values in "
            f"[{int(counted.min())}, {int(counted.max())}]"
        )
    rows = masked_rows(mask)
    scale = denominator(rows[0].numel(), num_items, student_logits.device).reciprocal()
    return chunked_sum(
        partial(_ce_rows, temperature=t),
        [Rows(student_logits, rows), Rows(target_ids.long(), rows)],
        chunk_size=check_chunk_size(chunk_size),
        scale=scale,
        analytic=True,
    )
