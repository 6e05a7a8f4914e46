"""Same-vocabulary divergences: forward KL, reverse KL, generalised JSD, total variation.

All four share one driver ([`same_vocab_loss`][capdistill.losses.divergences.same_vocab_loss]): validate, select the counted
positions, slice to the shared vocabulary, and evaluate a per-row divergence chunk by
chunk in fp32 (:mod:`capdistill.losses.chunking`). ``p_T`` and ``p_S`` are the teacher's
and student's softmax at ``temperature``. The value is not multiplied by
``temperature ** 2`` (Hinton's gradient-scale convention); scale it yourself if wanted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor
from typing_extensions import Unpack

from capdistill.losses.chunking import Rows, chunked_sum
from capdistill.losses.common import (
    SameVocabExtras,
    check_chunk_size,
    check_logits,
    check_mask,
    check_real,
    check_same_positions,
    check_temperature,
    denominator,
    masked_rows,
    same_vocab_extras,
    shared_vocab,
)


def log_softmax_t(logits: Tensor, temperature: float) -> Tensor:
    """``log_softmax(logits / temperature)`` over the last dim (no division at 1)."""
    return torch.log_softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)


# --------------------------------------------------------------------------- per-row divergences
# Each maps fp32 chunks s, t: [n, V] (fresh copies, overwritten) to the per-row losses [n] and
# the closed-form gradients of their sum with respect to s and t (only where needs[i]).
# Zero-probability entries are masked *before* multiplying, so -inf logits never make a NaN
# (0 log 0 = 0) in values or gradients.

Grads = tuple[Tensor | None, Tensor | None]


def log_softmax_inplace(x: Tensor, temperature: float) -> Tensor:
    """``log_softmax(x / temperature)``; may overwrite ``x``."""
    return torch.log_softmax(x if temperature == 1.0 else x.div_(temperature), dim=-1)


def softmax_vjp_(p: Tensor, g: Tensor, temperature: float) -> Tensor:
    """Gradient w.r.t. the logits of ``p = softmax(logits / temperature)`` given ``dL/dp = g`` (overwrites g).

    ``g`` must be finite where ``p = 0``.
    """
    g.sub_((p * g).sum(-1, keepdim=True)).mul_(p)
    return g if temperature == 1.0 else g.div_(temperature)


def kl_with_grads(
    log_p: Tensor, log_q: Tensor, need_p: bool, need_q: bool, temperature: float
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``KL(p || q)`` per row and its gradients w.r.t. the logits of ``p`` and ``q`` (overwrites ``log_q``).

    ``d KL / d z_q = (q - p) / tau`` and ``d KL / d z_p = p (log p - log q - KL) / tau``.
    Where ``q`` is exactly 0 under ``p``'s mass (a ``-inf`` logit, e.g. a masked teacher token in
    reverse KL) the true KL is infinite; ``log q`` is floored at ``log`` of the dtype's smallest
    normal number instead, so the value is large but finite and the gradient finite, pushing
    ``p``'s mass off that entry (TRL, torchtune and DistillKit give NaN there). Finite log-probs,
    however small, are used as they are.
    """
    p = log_p.exp()
    floor = math.log(torch.finfo(log_q.dtype).tiny)
    finite_q = torch.where(torch.isneginf(log_q), floor, log_q)
    d = (log_p - finite_q).masked_fill_(p == 0, 0.0)  # log p - log q on p's support
    loss = (p * d).sum(-1)
    g_p = g_q = None
    if need_q:
        g_q = log_q.exp_().sub_(p)
        if temperature != 1.0:
            g_q.div_(temperature)
    if need_p:
        g_p = d.sub_(loss[:, None]).mul_(p)
        if temperature != 1.0:
            g_p.div_(temperature)
    return loss, g_p, g_q


def _fkl_rows(s: Tensor, t: Tensor, *, temperature: float, needs: tuple[bool, ...]) -> tuple[Tensor, Grads]:
    ls, lt = log_softmax_inplace(s, temperature), log_softmax_inplace(t, temperature)
    loss, g_t, g_s = kl_with_grads(lt, ls, needs[1], needs[0], temperature)
    return loss, (g_s, g_t)


def _rkl_rows(s: Tensor, t: Tensor, *, temperature: float, needs: tuple[bool, ...]) -> tuple[Tensor, Grads]:
    ls, lt = log_softmax_inplace(s, temperature), log_softmax_inplace(t, temperature)
    loss, g_s, g_t = kl_with_grads(ls, lt, needs[0], needs[1], temperature)
    return loss, (g_s, g_t)


def _jsd_rows(
    s: Tensor, t: Tensor, *, beta: float, temperature: float, needs: tuple[bool, ...]
) -> tuple[Tensor, Grads]:
    if beta == 0.0:
        return _fkl_rows(s, t, temperature=temperature, needs=needs)
    if beta == 1.0:
        return _rkl_rows(s, t, temperature=temperature, needs=needs)
    ls, lt = log_softmax_inplace(s, temperature), log_softmax_inplace(t, temperature)
    ps, pt = ls.exp(), lt.exp()
    # log m = log(beta p_T + (1 - beta) p_S), mixed in log space
    lm = torch.logaddexp(lt + math.log(beta), ls + math.log1p(-beta))
    a = lt.sub_(lm).masked_fill_(pt == 0, 0.0)  # log p_T - log m on p_T's support
    b = ls.sub_(lm).masked_fill_(ps == 0, 0.0)
    del lm
    kl_t, kl_s = (pt * a).sum(-1), (ps * b).sum(-1)
    loss = beta * kl_t + (1.0 - beta) * kl_s
    # dL/dp_S = (1 - beta)(log p_S - log m) (the mixture terms cancel); likewise for p_T
    g_s = b.sub_(kl_s[:, None]).mul_(ps).mul_((1.0 - beta) / temperature) if needs[0] else None
    g_t = a.sub_(kl_t[:, None]).mul_(pt).mul_(beta / temperature) if needs[1] else None
    return loss, (g_s, g_t)


def _tvd_rows(s: Tensor, t: Tensor, *, temperature: float, needs: tuple[bool, ...]) -> tuple[Tensor, Grads]:
    ps, pt = log_softmax_inplace(s, temperature).exp_(), log_softmax_inplace(t, temperature).exp_()
    sign = pt - ps
    loss = 0.5 * sign.abs().sum(-1)
    sign.sign_()  # dL/dp_T = sign / 2, dL/dp_S = -sign / 2
    g_t = softmax_vjp_(pt, sign.mul(0.5), temperature) if needs[1] else None
    g_s = softmax_vjp_(ps, sign.mul_(-0.5), temperature) if needs[0] else None
    return loss, (g_s, g_t)


# --------------------------------------------------------------------------- the shared driver


def same_vocab_setup(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    vocab_size: int | None,
    num_items: Tensor | float | None,
) -> tuple[int, tuple[Tensor, Tensor], Tensor]:
    """Validate a same-vocabulary call; return (shared vocabulary, counted (b, t) rows, 1 / denominator)."""
    check_logits("student_logits", student_logits)
    check_logits("teacher_logits", teacher_logits)
    check_same_positions(student_logits, teacher_logits)
    check_mask("mask", mask, tuple(student_logits.shape[:2]))
    vocab = shared_vocab(student_logits, teacher_logits, vocab_size)
    rows = masked_rows(mask)
    scale = denominator(rows[0].numel(), num_items, student_logits.device).reciprocal()
    return vocab, rows, scale


def same_vocab_loss(
    fn: str,
    row_fn: Callable[..., tuple[Tensor, Grads]],
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    **extras: Unpack[SameVocabExtras],
) -> Tensor:
    """Sum of ``row_fn(student_rows, teacher_rows, needs=...)`` over counted positions / denominator.

    The one driver of every same-vocabulary loss with a dense teacher: validates shapes,
    the mask and the vocabularies (sliced to ``vocab_size`` when given), then runs the
    chunked driver with the row function's closed-form gradients.
    """
    vocab_size, num_items, chunk_size = same_vocab_extras(fn, extras)
    chunk = check_chunk_size(chunk_size)
    vocab, rows, scale = same_vocab_setup(student_logits, teacher_logits, mask, vocab_size, num_items)
    return chunked_sum(
        row_fn,
        [Rows(student_logits, rows, vocab), Rows(teacher_logits, rows, vocab)],
        chunk_size=chunk,
        scale=scale,
        analytic=True,
    )


# --------------------------------------------------------------------------- public API


def forward_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    **extras: Unpack[SameVocabExtras],
) -> Tensor:
    """Forward KL ``KL(p_T || p_S)`` (mode-covering), mean over counted positions.

    Args:
        student_logits: ``[B, T, V]`` logits, any float dtype (computed in fp32).
        teacher_logits: ``[B, T, V]``, position-aligned with the student's; a different ``V`` only with
            ``vocab_size``.
        mask: bool ``[B, T]``, True where a position counts.
        temperature: > 0; both distributions are ``softmax(logits / temperature)``.
        extras: keyword-only ``vocab_size``, ``num_items``, ``chunk_size``
            ([`SameVocabExtras`][capdistill.losses.common.SameVocabExtras]).
    """
    t = check_temperature(temperature)
    return same_vocab_loss(
        "forward_kl", partial(_fkl_rows, temperature=t), student_logits, teacher_logits, mask, **extras
    )


def reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    **extras: Unpack[SameVocabExtras],
) -> Tensor:
    """Reverse KL ``KL(p_S || p_T)`` (mode-seeking); arguments as [`forward_kl`][capdistill.losses.divergences.forward_kl].

    A student entry with mass where the teacher logit is ``-inf`` gives ``+inf`` (the true value).
    """
    t = check_temperature(temperature)
    return same_vocab_loss(
        "reverse_kl", partial(_rkl_rows, temperature=t), student_logits, teacher_logits, mask, **extras
    )


def generalized_jsd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
    **extras: Unpack[SameVocabExtras],
) -> Tensor:
    """Generalised Jensen-Shannon divergence (GKD, Agarwal et al. 2024); arguments as [`forward_kl`][capdistill.losses.divergences.forward_kl].

    For ``0 < beta < 1``: ``m = beta p_T + (1 - beta) p_S`` (mixed in log space) and the loss is
    ``beta KL(p_T || m) + (1 - beta) KL(p_S || m)``. At the end points the loss is defined as
    ``forward_kl`` (``beta = 0``) and ``reverse_kl`` (``beta = 1``), the convention of TRL's
    ``generalized_jsd_loss``. Note the formula itself tends to 0 at both ends
    (``~ beta * KL(p_T||p_S)`` and ``~ (1 - beta) * KL(p_S||p_T)``), so the value is discontinuous
    at 0 and 1; ``JSD_beta / (beta (1 - beta))`` is the continuous interpolation if you need one.
    """
    b = check_real("beta", beta, low=0.0, high=1.0)
    t = check_temperature(temperature)
    return same_vocab_loss(
        "generalized_jsd", partial(_jsd_rows, beta=b, temperature=t), student_logits, teacher_logits, mask, **extras
    )


def total_variation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float = 1.0,
    **extras: Unpack[SameVocabExtras],
) -> Tensor:
    """Total variation distance ``0.5 * sum_v |p_T(v) - p_S(v)|`` (in [0, 1]); arguments as [`forward_kl`][capdistill.losses.divergences.forward_kl]."""
    t = check_temperature(temperature)
    return same_vocab_loss(
        "total_variation", partial(_tvd_rows, temperature=t), student_logits, teacher_logits, mask, **extras
    )
