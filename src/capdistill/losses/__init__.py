"""Knowledge-distillation losses: plain torch, exact, numerically safe, memory-bounded.

Functional API (scalar losses; sum over counted positions / their count, see
:mod:`capdistill.losses.common` for the shared conventions)::

    forward_kl(student_logits, teacher_logits, mask, temperature=1.0)        # KL(p_T || p_S)
    reverse_kl(student_logits, teacher_logits, mask, temperature=1.0)        # KL(p_S || p_T)
    generalized_jsd(student_logits, teacher_logits, mask, beta=0.5, temperature=1.0)
    total_variation(student_logits, teacher_logits, mask, temperature=1.0)
    topk_kl(student_logits, teacher_logits, mask, k, temperature=1.0)        # biased baseline
    sampled_kl(student_logits, teacher_logits, mask, num_samples, generator=None, temperature=1.0)
    uld(student_logits, student_mask, teacher_logits, teacher_mask, temperature=1.0)
    multilevel_ot(student_logits, student_mask, teacher_logits, teacher_mask, top_k=50, ...)
    sft(student_logits, target_ids, mask)

Keyword-only extras: ``num_items`` (denominator), ``chunk_size`` (positions per chunk),
``vocab_size`` (same-vocabulary losses: slice both vocabularies to a shared size).
``topk_kl``/``sampled_kl`` also accept a [`SparseTeacher`][capdistill.losses.sparse.SparseTeacher]. Module wrappers, one per
``conf/loss`` option (its ``_target_``), are in :mod:`capdistill.losses.modules`.
"""

from capdistill.losses.cross_tokenizer import multilevel_ot, uld
from capdistill.losses.divergences import forward_kl, generalized_jsd, reverse_kl, total_variation
from capdistill.losses.modules import (
    DistillLoss,
    ForwardKLLoss,
    JSDLoss,
    MultiLevelOTLoss,
    ReverseKLLoss,
    SampledKLLoss,
    SFTLoss,
    TopKLoss,
    TVDLoss,
    ULDLoss,
)
from capdistill.losses.sft import sft
from capdistill.losses.sparse import SparseTeacher, sampled_kl, topk_kl

__all__ = [
    "DistillLoss",
    "ForwardKLLoss",
    "JSDLoss",
    "MultiLevelOTLoss",
    "ReverseKLLoss",
    "SFTLoss",
    "SampledKLLoss",
    "SparseTeacher",
    "TVDLoss",
    "TopKLoss",
    "ULDLoss",
    "forward_kl",
    "generalized_jsd",
    "multilevel_ot",
    "reverse_kl",
    "sampled_kl",
    "sft",
    "topk_kl",
    "total_variation",
    "uld",
]
