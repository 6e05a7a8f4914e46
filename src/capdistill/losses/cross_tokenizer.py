"""Cross-tokenizer KD: Universal Logit Distillation (ULD) and Multi-Level Optimal Transport (MultiLevelOT).

Neither loss needs a shared tokenizer: both compare *sorted* probability vectors, which
do not depend on which token id carries which probability. Positions are paired row by
row ([`pair_positions`][capdistill.losses.common.pair_positions]): in each sequence the i-th counted
student position is paired with the i-th counted teacher position, and the longer side
is truncated. Both losses return the sum over paired positions divided by the number of
pairs (clamped to >= 1), or by ``num_items``.

**ULD** (Boizard et al. 2024, as in TRL's GOLD trainer): for each pair, sort both
softmax distributions in decreasing order, zero-pad the shorter vocabulary (padding
*probabilities* with zeros, never logits) and take the L1 distance (ULD's closed-form
stand-in for a Wasserstein distance between the two distributions). The
student's cross-entropy on its own tokens, which the ULD paper adds, is the ``ce_weight``
term of the module wrapper ([`ULDLoss`][capdistill.losses.modules.ULDLoss]).

**MultiLevelOT** (Cui et al. 2024). Two published codes compute different things; neither is
what [`multilevel_ot`][capdistill.losses.cross_tokenizer.multilevel_ot] computes (below).

The authors' repository (``2018cx/Multi-Level-OT``, ``models/distillation_model.py`` at
commit ``712cfb4``), ``L = CE + 1.5 * (L1 + 0.1 * H + 1e-4 * sum_b OT_b)``:

1. logits divided by their (unbiased) standard deviation over the vocabulary,
   ``x / (std + 1e-4)``, the mean not subtracted, at every position;
2. ``softmax(.)`` at temperature 1 for student and teacher, on the answer rows only: those
   are moved to the front, prompt rows dropped and the rest zero-filled up to the longest
   answer in the batch (the student's last answer row is dropped, ``skip_student_eos``);
3. one vocabulary permutation per side for the whole batch (by the probability summed
   over sequences and positions; the per-position sort was commented out in ``712cfb4``),
   truncated to 50 columns, the narrower side zero-padded to the wider when a vocabulary
   has fewer than 50 entries;
4. token level: the L1 distance over the first ``min(n_S, n_T)`` answer rows, averaged per
   sequence then over the batch; plus ``0.1 * -sum softmax(p_S) log_softmax(p_T)``: a
   cross-entropy with the *student* as the target (the opposite direction to KL(T || S)),
   a second softmax applied to probabilities, averaged over all rows, zero rows included;
5. sequence level: a third softmax at a hard-coded temperature 2, ``C = cdist(p_T, p_S, p=1)``
   over all rows (zero rows included), a plain-domain Sinkhorn plan from 10 alternating
   row/column normalisations of ``exp(-C / 0.1)`` (mass about ``L``, not 1), and
   ``0.001 * sum(P * C)`` *summed* over the batch and weighted 0.1;
6. computed in the logits' dtype (bf16 in its recipes), no cast.

A DSKD-based re-implementation (``criterions/multi_level_ot.py``) differs again: softmax at
temperature 2 after standardising, columns sorted per batch and cut to 50, the token-level
term ``0.1 * -sum softmax(q_T) log_softmax(q_S)``, per-sequence Sinkhorn on all positions
(padding included, sequences rotated so the response comes first), ``0.001 * sum(P * C)``
weighted 0.1, and the scalar total multiplied by the number of non-padding positions.

What [`multilevel_ot`][capdistill.losses.cross_tokenizer.multilevel_ot] implements (defects fixed, documented choices):

1. optional standardisation (``std_normalize``) over the *finite* entries of each row,
   ``(x - mean) / (std + 1e-4)`` (the mean shift does not change the softmax; ``-inf``
   entries stay ``-inf`` instead of making the std NaN);
2. ``log_softmax(. / temperature)`` in fp32, chunked over positions;
3. each position's distribution sorted on its own, truncated to the top
   ``k = min(top_k, V_S, V_T)`` probabilities (no padding needed): invariant to vocabulary
   permutations and independent of the rest of the batch;
4. token level, on paired positions: ``token_weight * L1(p_S^k, p_T^k)`` plus
   ``kl_weight * KL(q_T || q_S)`` where ``q`` are the top-k vectors renormalised to sum 1
   (a KL between distributions, no second softmax; zero when they agree);
5. sequence level, per sequence: the debiased Sinkhorn divergence
   ``S_eps(A, B) = OT_eps(A, B) - OT_eps(A, A) / 2 - OT_eps(B, B) / 2`` between the uniform
   measures on the student's and the teacher's *counted* positions (padding and prompt
   rows never enter; lengths may differ), ``A``, ``B`` their top-k probability vectors,
   ground cost L1 between vectors, entropic OT solved by log-domain Sinkhorn at
   ``sinkhorn_epsilon`` until the plan's marginals are within ``sinkhorn_tol`` (at most
   ``sinkhorn_iters`` iterations: 50 iterations at eps 0.1, the earlier fixed count, left the
   plan's marginals 1.5e-2 off for 40 sharp rows, softmax(3 randn), which need about 2500 to reach
   1e-6; mlot's standardised top-50 rows converge in about 10); the value is the dual objective and its gradient is
   the transport plan (envelope theorem: no back-propagation through the iterations, so
   memory is one ``n_S x n_T`` cost matrix). ``S_eps >= 0`` and is 0 when the student's and
   teacher's sequences agree (the plain Sinkhorn cost of the reference is not: its
   entropic bias is minimised away from the teacher). Weighted ``seq_weight`` and counted
   once per paired position of that sequence, so the total stays a per-position mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from capdistill.errors import CapdistillError
from capdistill.losses.chunking import Rows, chunked_map, chunked_sum
from capdistill.losses.common import (
    NEG_INF,
    check_chunk_size,
    check_int,
    check_logits,
    check_mask,
    check_real,
    check_temperature,
    denominator,
    masked_rows,
    pair_positions,
    safe_kl_terms,
)
from capdistill.losses.divergences import log_softmax_t

CHECK_EVERY = 10  # Sinkhorn iterations between convergence checks (a check costs half an iteration)
# row sums carry rounding noise of a few units of the dtype's precision: a tolerance below this many
# units (fp32: 6e-5) could never be met, so it is raised to it and the solve stops instead of running on
TOL_ULPS = 512


def _check_cross(student_logits, student_mask, teacher_logits, teacher_mask):
    check_logits("student_logits", student_logits)
    check_logits("teacher_logits", teacher_logits)
    check_mask("student_mask", student_mask, tuple(student_logits.shape[:2]), "student_logits")
    check_mask("teacher_mask", teacher_mask, tuple(teacher_logits.shape[:2]), "teacher_logits")
    if student_logits.shape[0] != teacher_logits.shape[0]:
        raise CapdistillError(
            "teacher_logits must have the same batch size as student_logits, got shapes "
            f"{list(teacher_logits.shape)} and {list(student_logits.shape)}"
        )


# --------------------------------------------------------------------------- ULD


def _uld_rows(s: Tensor, t: Tensor, *, temperature: float) -> Tensor:
    ps = log_softmax_t(s, temperature).exp().sort(dim=-1, descending=True).values
    pt = log_softmax_t(t, temperature).exp().sort(dim=-1, descending=True).values
    m = min(ps.shape[-1], pt.shape[-1])
    # |sorted p_S - sorted p_T| with the shorter vocabulary zero-padded: the tail of the
    # longer one contributes its own mass.
    return (ps[:, :m] - pt[:, :m]).abs().sum(-1) + ps[:, m:].sum(-1) + pt[:, m:].sum(-1)


def uld(
    student_logits: Tensor,
    student_mask: Tensor,
    teacher_logits: Tensor,
    teacher_mask: Tensor,
    temperature: float = 1.0,
    *,
    num_items: Tensor | float | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Universal Logit Distillation distance (see the module docstring), mean over paired positions.

    Args:
        student_logits: ``[B, Ts, Vs]``; student_mask: bool ``[B, Ts]``.
        teacher_logits: ``[B, Tt, Vt]``; teacher_mask: bool ``[B, Tt]`` (any ``Tt``, ``Vt``).
        temperature: > 0, for both softmaxes.
        num_items: denominator replacing the number of pairs.
        chunk_size: pairs per chunk (default: about 2**23 / max(Vs, Vt)).
    """
    t = check_temperature(temperature)
    _check_cross(student_logits, student_mask, teacher_logits, teacher_mask)
    ps, pt = pair_positions(student_mask, teacher_mask)
    rs, rt = masked_rows(ps), masked_rows(pt)
    scale = denominator(rs[0].numel(), num_items, student_logits.device).reciprocal()
    return chunked_sum(
        partial(_uld_rows, temperature=t),
        [Rows(student_logits, rs), Rows(teacher_logits, rt)],
        chunk_size=check_chunk_size(chunk_size),
        scale=scale,
    )


# --------------------------------------------------------------------------- MultiLevelOT


def standardize(x: Tensor, eps: float = 1e-4) -> Tensor:
    """``(x - mean) / (std + eps)`` over the finite entries of the last dim; ``-inf`` stays ``-inf``."""
    finite = x > NEG_INF
    n = finite.sum(-1, keepdim=True)
    mean = torch.where(finite, x, 0.0).sum(-1, keepdim=True) / n.clamp_min(1)
    d = torch.where(finite, x - mean, 0.0)
    var = (d * d).sum(-1, keepdim=True) / (n - 1).clamp_min(1)
    return torch.where(finite, d / (var.clamp_min(1e-12).sqrt() + eps), NEG_INF)


def _topk_logprob_rows(x: Tensor, *, k: int, temperature: float, std_normalize: bool) -> Tensor:
    if std_normalize:
        x = standardize(x)
    return log_softmax_t(x, temperature).topk(k, dim=-1).values


def entropic_ot(cost: Tensor, epsilon: float, iters: int, tol: float = 0.0) -> Tensor:
    """Entropic OT ``OT_eps`` between uniform measures, cost ``[n, m]``; log-domain Sinkhorn.

    Iterates until the plan's row sums are within a relative ``tol`` of the row marginal, or within
    ``TOL_ULPS`` units of the dtype's precision if that is larger (checked every ``CHECK_EVERY``
    iterations; ``tol = 0``: always ``iters``), at most ``iters``
    times. Returns the dual objective ``<a, f> + <b, g> - eps <a x b, exp((f + g - C) / eps) - 1>``
    at those potentials (computed without autograd); its gradient with respect to ``cost`` is the
    transport plan, exact at convergence (envelope theorem), so the gradient's error shrinks with
    ``tol``.
    """
    n, m = cost.shape
    log_a, log_b = -math.log(n), -math.log(m)
    tol = tol and max(tol, TOL_ULPS * torch.finfo(cost.dtype).eps)  # the row sums' own rounding noise
    with torch.no_grad():
        c = cost.detach() / epsilon
        f = torch.zeros(n, dtype=cost.dtype, device=cost.device)  # potentials / eps
        g = torch.zeros(m, dtype=cost.dtype, device=cost.device)
        for step in range(1, iters + 1):
            f = -torch.logsumexp(g[None, :] - c, dim=1) - log_b
            g = -torch.logsumexp(f[:, None] - c, dim=0) - log_a  # columns now exact; rows drift
            if tol > 0 and step % CHECK_EVERY == 0:
                rows = (torch.logsumexp(g[None, :] - c, dim=1) + f + log_b).exp()  # n x row sums
                if (rows - 1.0).abs().max() <= tol:
                    break
    plan_log = f[:, None] + g[None, :] - cost / epsilon + (log_a + log_b)
    return epsilon * (f.mean() + g.mean() - (plan_log.exp().sum() - 1.0))


def sinkhorn_divergence(x: Tensor, y: Tensor, epsilon: float, iters: int, tol: float = 0.0) -> Tensor:
    """Debiased ``S_eps(x, y) = OT_eps(x, y) - OT_eps(x, x)/2 - OT_eps(y, y)/2`` with L1 ground cost."""
    ot_xy = entropic_ot(torch.cdist(x, y, p=1), epsilon, iters, tol)
    ot_xx = entropic_ot(torch.cdist(x, x, p=1), epsilon, iters, tol)
    ot_yy = entropic_ot(torch.cdist(y, y, p=1), epsilon, iters, tol)
    return ot_xy - 0.5 * (ot_xx + ot_yy)


@dataclass(frozen=True)
class OTSettings:
    """MultiLevelOT's options besides temperature, range-checked when built: the one list of them and their
    defaults, which [`multilevel_ot`][capdistill.losses.cross_tokenizer.multilevel_ot] and [`MultiLevelOTLoss`][capdistill.losses.modules.MultiLevelOTLoss] share."""

    top_k: int = 50
    std_normalize: bool = True
    token_weight: float = 1.0
    kl_weight: float = 0.1
    seq_weight: float = 0.1
    sinkhorn_epsilon: float = 0.1
    sinkhorn_iters: int = 1000  # at most; it stops once converged to sinkhorn_tol
    sinkhorn_tol: float = 1e-6  # relative error of the plan's marginals (0: always sinkhorn_iters)

    def __post_init__(self) -> None:
        check_int("top_k", self.top_k, low=1)
        if not isinstance(self.std_normalize, bool):
            raise CapdistillError(f"std_normalize must be a bool, got {self.std_normalize!r}")
        for name in ("token_weight", "kl_weight", "seq_weight"):
            check_real(name, getattr(self, name), low=0.0)
        check_real("sinkhorn_epsilon", self.sinkhorn_epsilon, low=0.0, low_open=True)
        check_int("sinkhorn_iters", self.sinkhorn_iters, low=1)
        check_real("sinkhorn_tol", self.sinkhorn_tol, low=0.0)


def multilevel_ot(
    student_logits: Tensor,
    student_mask: Tensor,
    teacher_logits: Tensor,
    teacher_mask: Tensor,
    top_k: int = OTSettings.top_k,
    *,
    temperature: float = 1.0,
    std_normalize: bool = OTSettings.std_normalize,
    token_weight: float = OTSettings.token_weight,
    kl_weight: float = OTSettings.kl_weight,
    seq_weight: float = OTSettings.seq_weight,
    sinkhorn_epsilon: float = OTSettings.sinkhorn_epsilon,
    sinkhorn_iters: int = OTSettings.sinkhorn_iters,
    sinkhorn_tol: float = OTSettings.sinkhorn_tol,
    num_items: Tensor | float | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Multi-level OT distillation (token level + sequence level; see the module docstring).

    Args:
        student_logits: as in [`uld`][capdistill.losses.cross_tokenizer.uld].
        student_mask: as in [`uld`][capdistill.losses.cross_tokenizer.uld].
        teacher_logits: as in [`uld`][capdistill.losses.cross_tokenizer.uld].
        teacher_mask: as in [`uld`][capdistill.losses.cross_tokenizer.uld].
        top_k: >= 1, probabilities kept per position (capped at both vocabulary sizes).
        temperature: > 0 (the DSKD-based code uses 2 after standardising, the authors' repository 1).
        std_normalize: standardise logits over the vocabulary first (the reference does).
        token_weight: >= 0 weight of the token-level L1.
        kl_weight: >= 0 weight of the token-level KL.
        seq_weight: >= 0 weight of the sequence-level Sinkhorn divergence.
        sinkhorn_epsilon: > 0 entropic regularisation (costs are L1 distances in [0, 2]).
        sinkhorn_iters: >= 1, the most log-domain Sinkhorn iterations.
        sinkhorn_tol: >= 0, stop once the plan's marginals are this close (relative; 0: run them all).
        num_items: denominator replacing the number of paired positions.
        chunk_size: positions per chunk for the full-vocabulary part.
    """
    t = check_temperature(temperature)
    _check_cross(student_logits, student_mask, teacher_logits, teacher_mask)
    ot = OTSettings(
        top_k, std_normalize, token_weight, kl_weight, seq_weight, sinkhorn_epsilon, sinkhorn_iters, sinkhorn_tol
    )
    k = min(ot.top_k, student_logits.shape[-1], teacher_logits.shape[-1])
    w_tok, w_kl, w_seq = float(ot.token_weight), float(ot.kl_weight), float(ot.seq_weight)
    eps, iters = float(ot.sinkhorn_epsilon), ot.sinkhorn_iters
    chunk = check_chunk_size(chunk_size)

    rows_s, rows_t = masked_rows(student_mask), masked_rows(teacher_mask)
    fn = partial(_topk_logprob_rows, k=k, temperature=t, std_normalize=std_normalize)
    lp_s = chunked_map(fn, [Rows(student_logits, rows_s)], chunk_size=chunk)  # [Ns, k]
    lp_t = chunked_map(fn, [Rows(teacher_logits, rows_t)], chunk_size=chunk)  # [Nt, k]

    paired_s, paired_t = pair_positions(student_mask, teacher_mask)
    sel_s = paired_s[rows_s]  # which counted positions are paired, in counted order
    sel_t = paired_t[rows_t]
    a, b = lp_s[sel_s], lp_t[sel_t]  # paired, aligned
    n_pairs = a.shape[0]

    # token level
    l1 = (a.exp() - b.exp()).abs().sum(-1)
    log_qs = (a - torch.logsumexp(a, -1, keepdim=True)).clamp_min(math.log(torch.finfo(a.dtype).tiny))
    log_qt = b - torch.logsumexp(b, -1, keepdim=True)
    kl = safe_kl_terms(log_qt, log_qs).sum(-1)
    total = w_tok * l1.sum() + w_kl * kl.sum()

    # sequence level
    if w_seq > 0 and n_pairs > 0:
        ps_all, pt_all = lp_s.exp(), lp_t.exp()
        counts_s = student_mask.sum(1).tolist()
        counts_t = teacher_mask.sum(1).tolist()
        pairs = paired_s.sum(1).tolist()
        seq = total.new_zeros(())
        for xs, ys, m in zip(ps_all.split(counts_s), pt_all.split(counts_t), pairs):
            if m > 0:
                seq = seq + m * sinkhorn_divergence(xs, ys, eps, iters, float(ot.sinkhorn_tol))
        total = total + w_seq * seq
    return total / denominator(n_pairs, num_items, student_logits.device).to(total.dtype)
