"""Sparse-teacher KD: top-k KL (the biased baseline) and Sparse Logit Sampling (unbiased).

Both losses compare a sparse teacher *target* ``q`` (a distribution on a few vocabulary
ids per position) with the student's full softmax ``p_S``, and return ``KL(q || p_S)``
per position (>= 0). Their gradient with respect to the student logits (at
``temperature`` 1) is ``p_S - q`` on the full vocabulary, so the target's expectation
decides the bias:

* [`topk_kl`][capdistill.losses.sparse.topk_kl] — ``q`` is the teacher's top-``k`` probabilities renormalised to sum 1.
  ``E[q] = q != p_T``: the gradient is biased (the student is pushed to put all its mass
  on the teacher's top-k and to over-weight it). At ``student == teacher`` the value is
  ``-log(sum of the teacher's top-k probabilities)`` > 0, not 0; it equals
  [`forward_kl`][capdistill.losses.divergences.forward_kl] when ``k = V``.
* [`sampled_kl`][capdistill.losses.sparse.sampled_kl] — Sparse Logit Sampling (Anshumann et al. 2025, "RS-KD"): draw
  ``num_samples`` ids per position from the teacher with replacement; ``q`` is the
  empirical distribution of the draws (importance weights ``p_T / proposal`` are 1 because
  the proposal is the teacher itself). ``E[q] = p_T``, so the gradient is an unbiased
  estimate of forward KL's gradient. The *value* ``KL(q || p_S)`` is not an unbiased
  estimate of ``KL(p_T || p_S)`` (it is biased upward by the sampling noise of ``q``).

Either loss takes the teacher as full logits ``[B, T, V]`` or as a precomputed
[`SparseTeacher`][capdistill.losses.sparse.SparseTeacher] (what a teacher-output cache stores: ``K`` ids per position plus
log-probabilities for top-k, or sample counts for sampling).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor
from typing_extensions import Unpack

from capdistill.errors import CapdistillError
from capdistill.losses.chunking import Rows, chunked_sum, compute_dtype, resolve_chunk_size
from capdistill.losses.common import (
    SameVocabExtras,
    check_chunk_size,
    check_int,
    check_logits,
    check_mask,
    check_temperature,
    denominator,
    flat_rows,
    masked_rows,
    same_vocab_extras,
    shared_vocab,
)
from capdistill.losses.divergences import log_softmax_inplace, log_softmax_t, same_vocab_loss, same_vocab_setup


@dataclass(frozen=True)
class SparseTeacher:
    """A teacher given by ``K`` vocabulary entries per position instead of full logits.

    Attributes:
        ids: integer tensor ``[B, T, K]``, vocabulary ids (the student's vocabulary).
        logprobs: float ``[B, T, K]`` or None — the teacher's log-probabilities of ``ids``
            at temperature 1 (raw logits work too: any per-position shift gives the same
            loss). [`topk_kl`][capdistill.losses.sparse.topk_kl] divides them by its ``temperature`` and renormalises over
            the ``K`` entries, so one cache serves every temperature. ``-inf`` marks padding.
        counts: float or int ``[B, T, K]`` or None — non-negative sample counts of ``ids``
            (or importance-weighted counts; they need not be integers) for
            [`sampled_kl`][capdistill.losses.sparse.sampled_kl], normalised per position. Zero marks padding; an id may repeat
            (its counts add up). The draws must have been made at the loss temperature.

    Build one from full logits with [`from_topk`][capdistill.losses.sparse.SparseTeacher.from_topk] or [`from_samples`][capdistill.losses.sparse.SparseTeacher.from_samples].
    """

    ids: Tensor
    logprobs: Tensor | None = None
    counts: Tensor | None = None

    @property
    def k(self) -> int:
        return self.ids.shape[-1]

    @classmethod
    @torch.no_grad()
    def from_topk(cls, teacher_logits: Tensor, k: int, *, chunk_size: int | None = None) -> SparseTeacher:
        """The top-``k`` ids and temperature-1 log-probabilities of ``teacher_logits [B, T, V]``."""
        check_logits("teacher_logits", teacher_logits)
        check_int("k", k, low=1, high=teacher_logits.shape[-1])
        flat = flat_rows(teacher_logits)
        step = resolve_chunk_size(check_chunk_size(chunk_size), flat.shape[-1])
        ids, lps = [], []
        for start in range(0, flat.shape[0], step):
            lp = torch.log_softmax(flat[start : start + step].to(compute_dtype(flat.dtype)), dim=-1)
            v, i = lp.topk(k, dim=-1)
            ids.append(i)
            lps.append(v)
        shape = (*teacher_logits.shape[:2], k)
        return cls(ids=torch.cat(ids).reshape(shape), logprobs=torch.cat(lps).reshape(shape))

    @classmethod
    @torch.no_grad()
    def from_samples(
        cls,
        teacher_logits: Tensor,
        num_samples: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> SparseTeacher:
        """``num_samples`` draws with replacement per position from ``softmax(teacher_logits / temperature)``.

        Returns ``ids [B, T, num_samples]`` (one slot per draw, repeats allowed) with counts of 1.
        """
        check_logits("teacher_logits", teacher_logits)
        n = check_int("num_samples", num_samples, low=1)
        t = check_temperature(temperature)
        flat = flat_rows(teacher_logits)
        u = torch.rand(flat.shape[0], n, generator=generator, device=flat.device)
        step = resolve_chunk_size(check_chunk_size(chunk_size), flat.shape[-1])
        ids = [
            _draw(flat[start : start + step].to(compute_dtype(flat.dtype)), u[start : start + step], t)
            for start in range(0, flat.shape[0], step)
        ]
        shape = (*teacher_logits.shape[:2], n)
        ids_t = torch.cat(ids).reshape(shape)
        return cls(ids=ids_t, counts=torch.ones(shape, device=flat.device))


@dataclass(frozen=True)
class CacheSpec:
    """What a teacher logit cache keeps per response token for a sparse loss, so training needs no teacher
    forward: the ``size`` top log-probabilities (``kind="topk"``, temperature 1, any loss temperature
    later), or ``size`` draws from ``softmax(logits / temperature)`` (``kind="samples"``), over the
    first ``vocab`` ids (None: all)."""

    kind: str
    size: int
    temperature: float = 1.0
    vocab: int | None = None
    quantized: bool = False  # top-k log-probs in 8 bits (1/16 nat steps below the row's top) instead of fp16

    def __post_init__(self) -> None:
        if self.kind not in ("topk", "samples"):
            raise CapdistillError(f"CacheSpec.kind must be 'topk' or 'samples', got {self.kind!r}")
        check_int("size", self.size, low=1)
        check_temperature(self.temperature)

    @torch.no_grad()
    def rows(self, logits: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """What to keep of next-token ``logits [n, V]``: ids ``[n, size]`` and, for top-k, their fp32
        log-probabilities (None for draws, whose counts are all 1)."""
        logits = logits[:, : self.vocab].float()
        if self.kind == "topk":
            values, ids = torch.log_softmax(logits, dim=-1).topk(min(self.size, logits.shape[-1]), dim=-1)
            return ids, values
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return torch.multinomial(probs, self.size, replacement=True, generator=generator), None


# --------------------------------------------------------------------------- per-row pieces


def _draw(t: Tensor, u: Tensor, temperature: float) -> Tensor:
    """Inverse-CDF sampling: ids ``[n, S]`` from ``softmax(t / temperature)`` given uniforms ``u [n, S]``.

    Deterministic given ``u`` (so chunking does not change the draws); zero-probability
    entries (``-inf`` logits) are never drawn.
    """
    with torch.no_grad():
        cdf = log_softmax_t(t, temperature).exp().cumsum(-1)
        x = u.to(cdf.dtype) * cdf[:, -1:]
        return torch.searchsorted(cdf, x, right=True).clamp_max(t.shape[-1] - 1)


def target_kl_with_grads(
    s: Tensor, ids: Tensor, w: Tensor, log_m: Tensor, *, temperature: float, need_s: bool
) -> tuple[Tensor, Tensor | None, Tensor]:
    """``KL(q || p_S)`` per row for a sparse target ``q`` and its gradient w.r.t. ``s`` (overwrites ``s``).

    ``ids [n, K]``: vocabulary ids; ``w [n, K]``: target mass of each slot (sums to 1 per
    row; an id may fill several slots); ``log_m [n, K]``: log of the total target mass of
    each slot's id (``log w`` when ids are distinct). Slots with ``w = 0`` are padding and
    contribute exactly 0. The gradient is ``(p_S - q) / temperature``. Also returns
    ``c = log q - log p_S`` per slot (0 on padding), for the teacher-side gradient.
    """
    ls = log_softmax_inplace(s, temperature)
    w = w.to(ls.dtype)
    c = (log_m - ls.gather(1, ids)).masked_fill_(w == 0, 0.0)
    loss = (w * c).sum(-1)
    g_s = None
    if need_s:
        g_s = ls.exp_().scatter_add_(1, ids, -w)
        if temperature != 1.0:
            g_s.div_(temperature)
    return loss, g_s, c


def _topk_target(
    s: Tensor, ids: Tensor, logits: Tensor, *, k: int, temperature: float, need_s: bool, need_t: bool
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Top-``k`` of the teacher ``logits [n, K]`` (ids ``[n, K]``) renormalised, as the target.

    Returns the per-row loss, the student gradient, the gradient w.r.t. the ``k`` selected
    teacher logits (``q (c - loss) / tau``, from the softmax over the top-k) and the
    selection ``sel`` into the ``K`` slots (None when ``k = K``).
    """
    sel = None
    if k < logits.shape[-1]:
        logits, sel = logits.topk(k, dim=-1)
        ids = ids.gather(1, sel)
    log_q = log_softmax_inplace(logits, temperature)
    q = log_q.exp()
    loss, g_s, c = target_kl_with_grads(s, ids, q, log_q, temperature=temperature, need_s=need_s)
    g_v = None
    if need_t:
        g_v = c.sub_(loss[:, None]).mul_(q)
        if temperature != 1.0:
            g_v.div_(temperature)
    return loss, g_s, g_v, sel


def _topk_dense_rows(s: Tensor, t: Tensor, *, k: int, temperature: float, needs: tuple[bool, ...]):
    vals, ids = t.topk(k, dim=-1)
    loss, g_s, g_v, _ = _topk_target(s, ids, vals, k=k, temperature=temperature, need_s=needs[0], need_t=needs[1])
    g_t = None if g_v is None else torch.zeros_like(t).scatter_(1, ids, g_v)
    return loss, (g_s, g_t)


def _topk_sparse_rows(s: Tensor, ids: Tensor, logprobs: Tensor, *, k: int, temperature: float, needs: tuple[bool, ...]):
    loss, g_s, g_v, sel = _topk_target(s, ids, logprobs, k=k, temperature=temperature, need_s=needs[0], need_t=needs[2])
    if g_v is not None and sel is not None:
        g_v = torch.zeros_like(logprobs).scatter_(1, sel, g_v)
    return loss, (g_s, None, g_v)


def _empirical_target(
    s: Tensor, ids: Tensor, w: Tensor, *, temperature: float, need_s: bool
) -> tuple[Tensor, Tensor | None]:
    """Target of slot masses ``w`` (normalised here) whose ids may repeat: merge repeats for ``log q``."""
    w = w.to(s.dtype)
    w = w / w.sum(-1, keepdim=True)
    merged = torch.zeros_like(s).scatter_add_(1, ids, w).gather(1, ids)
    loss, g_s, _ = target_kl_with_grads(s, ids, w, merged.log_(), temperature=temperature, need_s=need_s)
    return loss, g_s


def _counts_rows(s: Tensor, ids: Tensor, counts: Tensor, *, temperature: float, needs: tuple[bool, ...]):
    loss, g_s = _empirical_target(s, ids, counts, temperature=temperature, need_s=needs[0])
    return loss, (g_s, None, None)


def _sampled_dense_rows(s: Tensor, t: Tensor, u: Tensor, *, temperature: float, needs: tuple[bool, ...]):
    ids = _draw(t, u, temperature)
    loss, g_s = _empirical_target(s, ids, torch.ones_like(u), temperature=temperature, need_s=needs[0])
    return loss, (g_s, None, None)


# --------------------------------------------------------------------------- validation


def _check_sparse(teacher: SparseTeacher, student_logits: Tensor, mask: Tensor, vocab: int, field: str) -> Tensor:
    ids = teacher.ids
    if not isinstance(ids, Tensor) or ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dim() != 3:
        raise CapdistillError(
            f"teacher_logits.ids must be an integer tensor [B, T, K], got {getattr(ids, 'dtype', type(ids))} "
            f"shape {list(getattr(ids, 'shape', []))}"
        )
    if ids.shape[:2] != student_logits.shape[:2] or ids.shape[-1] < 1:
        raise CapdistillError(
            f"teacher_logits.ids must have shape [B, T, K>=1] with [B, T] = {list(student_logits.shape[:2])}, "
            f"got shape {list(ids.shape)}"
        )
    values = getattr(teacher, field)
    if values is None:
        other = "logprobs (use SparseTeacher.from_topk)" if field == "logprobs" else "counts (use from_samples)"
        raise CapdistillError(f"this loss needs a SparseTeacher with {other}, got {field}=None")
    if not isinstance(values, Tensor) or values.shape != ids.shape:
        raise CapdistillError(
            f"teacher_logits.{field} must be a tensor of the same shape as ids {list(ids.shape)}, "
            f"got {list(getattr(values, 'shape', [])) or type(values).__name__}"
        )
    sel = ids[mask]
    if sel.numel() and (int(sel.min()) < 0 or int(sel.max()) >= vocab):
        raise CapdistillError(
            f"teacher_logits.ids must be in [0, {vocab}) at counted positions, got values in "
            f"[{int(sel.min())}, {int(sel.max())}]"
        )
    if field == "counts":
        c = values[mask]
        if c.numel() and (bool((c < 0).any()) or bool((c.sum(-1) <= 0).any())):
            raise CapdistillError(
                "teacher_logits.counts must be >= 0 with a positive total at every counted position, "
                f"got min {float(c.min())} and min total {float(c.sum(-1).min())}"
            )
    return values


def _sparse_setup(student_logits, teacher, mask, vocab_size, num_items, chunk_size, field):
    check_logits("student_logits", student_logits)
    check_mask("mask", mask, tuple(student_logits.shape[:2]))
    vs = student_logits.shape[-1]
    vocab = vs if vocab_size is None else check_int("vocab_size", vocab_size, low=1, high=vs)
    values = _check_sparse(teacher, student_logits, mask, vocab, field)
    rows = masked_rows(mask)
    scale = denominator(rows[0].numel(), num_items, student_logits.device).reciprocal()
    srcs = [
        Rows(student_logits, rows, vocab),
        Rows(teacher.ids.long(), rows),
        Rows(values if field == "logprobs" else values.detach(), rows),  # counts get no gradient
    ]
    return srcs, scale, check_chunk_size(chunk_size)


# --------------------------------------------------------------------------- public API


def topk_kl(
    student_logits: Tensor,
    teacher_logits: Tensor | SparseTeacher,
    mask: Tensor,
    k: int | None,
    temperature: float = 1.0,
    **extras: Unpack[SameVocabExtras],
) -> Tensor:
    """``KL(q_k || p_S)`` with ``q_k`` the teacher's top-``k`` distribution renormalised (biased).

    Args:
        student_logits: ``[B, T, V]``.
        teacher_logits: ``[B, T, V']`` logits, or a [`SparseTeacher`][capdistill.losses.sparse.SparseTeacher] with ``logprobs``.
        mask: bool ``[B, T]``.
        k: 1 <= k <= V (dense teacher); for a sparse teacher 1 <= k <= K, or None for all K.
        temperature: > 0, applied to the student logits and to the teacher's (log-)probabilities.
        extras: keyword-only ``vocab_size``, ``num_items``, ``chunk_size``, as in [`forward_kl`][capdistill.losses.divergences.forward_kl].
    """
    t = check_temperature(temperature)
    vocab_size, num_items, chunk_size = same_vocab_extras("topk_kl", extras)
    if isinstance(teacher_logits, SparseTeacher):
        kk = teacher_logits.k if k is None else check_int("k", k, low=1, high=teacher_logits.k)
        srcs, scale, chunk = _sparse_setup(
            student_logits, teacher_logits, mask, vocab_size, num_items, chunk_size, "logprobs"
        )
        return chunked_sum(
            partial(_topk_sparse_rows, k=kk, temperature=t), srcs, chunk_size=chunk, scale=scale, analytic=True
        )
    vocab = shared_vocab(
        check_logits("student_logits", student_logits), check_logits("teacher_logits", teacher_logits), vocab_size
    )
    kk = check_int("k", k, low=1, high=vocab)
    return same_vocab_loss(
        "topk_kl", partial(_topk_dense_rows, k=kk, temperature=t), student_logits, teacher_logits, mask, **extras
    )


def sampled_kl(
    student_logits: Tensor,
    teacher_logits: Tensor | SparseTeacher,
    mask: Tensor,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    **extras: Unpack[SameVocabExtras],
) -> Tensor:
    """Sparse Logit Sampling: ``KL(q || p_S)`` with ``q`` the empirical teacher distribution of random draws.

    Args:
        student_logits: ``[B, T, V]``.
        teacher_logits: ``[B, T, V']`` logits (``num_samples`` draws per counted position from
            ``softmax(teacher_logits / temperature)``, with replacement), or a
            [`SparseTeacher`][capdistill.losses.sparse.SparseTeacher] with ``counts`` (then ``num_samples`` and ``generator`` are unused).
        mask: bool ``[B, T]``.
        num_samples: >= 1 draws per position (dense teacher).
        generator: torch.Generator on the logits' device for reproducible draws (default: global RNG).
            The uniforms are drawn once per call, so the draws do not depend on ``chunk_size``.
        temperature: > 0.
        extras: keyword-only ``vocab_size``, ``num_items``, ``chunk_size``, as in [`forward_kl`][capdistill.losses.divergences.forward_kl].

    The gradient with respect to the student logits is an unbiased estimate of
    [`forward_kl`][capdistill.losses.divergences.forward_kl]'s gradient. The teacher receives no gradient.
    """
    t = check_temperature(temperature)
    vocab_size, num_items, chunk_size = same_vocab_extras("sampled_kl", extras)
    if isinstance(teacher_logits, SparseTeacher):
        srcs, scale, chunk = _sparse_setup(
            student_logits, teacher_logits, mask, vocab_size, num_items, chunk_size, "counts"
        )
        return chunked_sum(partial(_counts_rows, temperature=t), srcs, chunk_size=chunk, scale=scale, analytic=True)
    vocab, rows, scale = same_vocab_setup(student_logits, teacher_logits, mask, vocab_size, num_items)
    n = check_int("num_samples", num_samples, low=1)
    u = torch.rand(rows[0].numel(), n, generator=generator, device=student_logits.device)
    return chunked_sum(
        partial(_sampled_dense_rows, temperature=t),
        [
            Rows(student_logits, rows, vocab),
            Rows(teacher_logits.detach(), rows, vocab),  # sampling: no teacher gradient
            Rows(u, torch.arange(rows[0].numel(), device=u.device)),
        ],
        chunk_size=check_chunk_size(chunk_size),
        scale=scale,
        analytic=True,
    )
