"""``nn.Module`` wrappers of the losses, one per ``loss`` config option (its YAML's ``_target_``).

Every wrapper has the same call signature, so a distillation engine can call any of them::

    loss = module(student_logits, teacher_logits, mask, *, target_ids=None, teacher_mask=None, num_items=None)

* ``student_logits`` ``[B, T, V]``: position-aligned (row ``t`` predicts token ``t + 1``).
* ``teacher_logits``: ``[B, T, V']`` for same-tokenizer losses (``V' != V`` only with
  ``vocab_size``); ``[B, Tt, Vt]`` on the teacher's own tokenization for cross-tokenizer
  losses (``cross_tokenizer = True``); a [`SparseTeacher`][capdistill.losses.sparse.SparseTeacher]
  for ``topk``/``sampled`` (``sparse_teacher = True``); ignored (may be None) by ``sft``
  (``needs_teacher = False``).
* ``mask``: bool ``[B, T]`` of the student positions that count (response tokens).
* ``target_ids``: integer ``[B, T]``, the student's next tokens; needed by ``sft`` and by any
  loss with ``ce_weight > 0`` (``needs_target_ids``), which adds ``ce_weight * sft(...)``.
* ``teacher_mask``: bool ``[B, Tt]``, the teacher positions that count (cross-tokenizer only).
* ``num_items``: optional denominator (global count of counted positions under gradient
  accumulation / data parallelism) used by every term instead of the local count.

Returns a scalar fp32 loss (fp64 for fp64 inputs). Hyper-parameters are validated when the
module is built, so a bad config fails before any model is loaded.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from capdistill.errors import CapdistillError
from capdistill.introspect import init_options
from capdistill.losses.common import check_bool, check_chunk_size, check_int, check_real, check_temperature
from capdistill.losses.cross_tokenizer import OTSettings, multilevel_ot, uld
from capdistill.losses.divergences import forward_kl, generalized_jsd, reverse_kl, total_variation
from capdistill.losses.sft import sft
from capdistill.losses.sparse import CacheSpec, SparseTeacher, sampled_kl, topk_kl

OT_OPTIONS = [f.name for f in fields(OTSettings)]


class DistillLoss(nn.Module):
    """Base class: a KD term plus an optional ``ce_weight * sft`` term on the student's own targets."""

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    cross_tokenizer: ClassVar[bool] = False
    sparse_teacher: ClassVar[bool] = False
    # the student's (and a live teacher's) logits come as `LinearLogits`, never materialised (the options of
    # the losses that take them: same-vocabulary ones and sft)
    fused_linear: bool = False

    def __init__(self, *, temperature: float = 1.0, ce_weight: float = 0.0, chunk_size: int | None = None) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.ce_weight = check_real("ce_weight", ce_weight, low=0.0)
        self.chunk_size = check_chunk_size(chunk_size)

    @property
    def needs_target_ids(self) -> bool:
        return self.ce_weight > 0

    @classmethod
    def options(cls) -> list[str]:
        """The keyword arguments (config fields other than ``name``) this loss accepts."""
        return init_options(cls)

    def kd(
        self,
        student_logits: Tensor,
        teacher_logits: Any,
        mask: Tensor,
        teacher_mask: Tensor | None,
        num_items: Tensor | float | None,
    ) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Any,
        mask: Tensor,
        *,
        target_ids: Tensor | None = None,
        teacher_mask: Tensor | None = None,
        num_items: Tensor | float | None = None,
    ) -> Tensor:
        if self.needs_teacher and teacher_logits is None:
            raise CapdistillError(f"loss {self.name!r} needs teacher_logits, got None")
        if self.cross_tokenizer and teacher_mask is None:
            raise CapdistillError(f"loss {self.name!r} is cross-tokenizer and needs teacher_mask, got None")
        if isinstance(teacher_logits, SparseTeacher) and not self.sparse_teacher:
            raise CapdistillError(f"loss {self.name!r} needs dense teacher_logits, got a SparseTeacher")
        loss = self.kd(student_logits, teacher_logits, mask, teacher_mask, num_items)
        if self.ce_weight > 0:
            if target_ids is None:
                raise CapdistillError(f"loss {self.name!r} with ce_weight={self.ce_weight} needs target_ids, got None")
            ce = sft(student_logits, target_ids, mask, num_items=num_items, chunk_size=self.chunk_size)
            loss = loss + self.ce_weight * ce.to(loss.dtype)
        return loss

    def settings(self) -> dict[str, Any]:
        """Each option's value, as built."""
        return {k: getattr(self, k) for k in self.options()}

    def cache_spec(self) -> CacheSpec | None:
        """What the teacher should keep while it writes the responses, so this loss trains on its cache
        with no teacher forward (None: the loss needs the live teacher, or none)."""
        return None

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings().items())


class SFTLoss(DistillLoss):
    """``sft``: cross-entropy on teacher-written tokens (sequence-level KD); ignores ``teacher_logits``."""

    name = "sft"
    needs_teacher = False

    def __init__(self, *, temperature: float = 1.0, chunk_size: int | None = None, fused_linear: bool = False) -> None:
        super().__init__(temperature=temperature, chunk_size=chunk_size)
        self.fused_linear = check_bool("fused_linear", fused_linear)

    @property
    def needs_target_ids(self) -> bool:
        return True

    def forward(
        self, student_logits, teacher_logits=None, mask=None, *, target_ids=None, teacher_mask=None, num_items=None
    ):
        if target_ids is None:
            raise CapdistillError("loss 'sft' needs target_ids, got None")
        if mask is None:
            raise CapdistillError("loss 'sft' needs mask, got None")
        return sft(
            student_logits,
            target_ids,
            mask,
            temperature=self.temperature,
            num_items=num_items,
            chunk_size=self.chunk_size,
        )


class _SameVocabLoss(DistillLoss):
    def __init__(
        self,
        *,
        temperature: float = 1.0,
        ce_weight: float = 0.0,
        chunk_size: int | None = None,
        vocab_size: int | None = None,
        fused_linear: bool = False,
    ) -> None:
        super().__init__(temperature=temperature, ce_weight=ce_weight, chunk_size=chunk_size)
        self.vocab_size = None if vocab_size is None else check_int("vocab_size", vocab_size, low=1)
        self.fused_linear = check_bool("fused_linear", fused_linear)

    def _common(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "chunk_size": self.chunk_size}


class ForwardKLLoss(_SameVocabLoss):
    """``fkl``: ``KL(p_T || p_S)``."""

    name = "fkl"

    def kd(self, student_logits, teacher_logits, mask, teacher_mask, num_items):
        return forward_kl(student_logits, teacher_logits, mask, self.temperature, num_items=num_items, **self._common())


class ReverseKLLoss(_SameVocabLoss):
    """``rkl``: ``KL(p_S || p_T)``."""

    name = "rkl"

    def kd(self, student_logits, teacher_logits, mask, teacher_mask, num_items):
        return reverse_kl(student_logits, teacher_logits, mask, self.temperature, num_items=num_items, **self._common())


class JSDLoss(_SameVocabLoss):
    """``jsd``: generalised JSD with ``beta`` (0: forward KL, 1: reverse KL)."""

    name = "jsd"

    def __init__(self, *, beta: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.beta = check_real("beta", beta, low=0.0, high=1.0)

    def kd(self, student_logits, teacher_logits, mask, teacher_mask, num_items):
        return generalized_jsd(
            student_logits, teacher_logits, mask, self.beta, self.temperature, num_items=num_items, **self._common()
        )


class TVDLoss(_SameVocabLoss):
    """``tvd``: total variation distance."""

    name = "tvd"

    def kd(self, student_logits, teacher_logits, mask, teacher_mask, num_items):
        return total_variation(
            student_logits, teacher_logits, mask, self.temperature, num_items=num_items, **self._common()
        )


TEACHER_SOURCES = ("cache", "live")
CACHE_PRECISIONS = ("float16", "uint8")  # how the cache stores top-k log-probs (uint8: 1/16 nat steps)


class _SparseLoss(_SameVocabLoss):
    """A loss that reads a few entries of the teacher's distribution per position, which the teacher can
    keep while it writes the responses: ``teacher_source="cache"`` trains on them with no teacher
    forward, ``"live"`` runs the teacher on every batch."""

    sparse_teacher = True

    def __init__(self, *, teacher_source: str = "cache", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if teacher_source not in TEACHER_SOURCES:
            raise CapdistillError(f"teacher_source must be one of {', '.join(TEACHER_SOURCES)}, got {teacher_source!r}")
        self.teacher_source = teacher_source


class TopKLoss(_SparseLoss):
    """``topk``: KL to the teacher's renormalised top-``k`` (biased baseline); dense or sparse teacher."""

    name = "topk"

    def __init__(self, *, k: int = 64, cache_precision: str = "float16", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = check_int("k", k, low=1)
        if cache_precision not in CACHE_PRECISIONS:
            raise CapdistillError(
                f"cache_precision must be one of {', '.join(CACHE_PRECISIONS)}, got {cache_precision!r}"
            )
        self.cache_precision = cache_precision

    def cache_spec(self) -> CacheSpec | None:
        if self.teacher_source != "cache":
            return None
        return CacheSpec("topk", self.k, vocab=self.vocab_size, quantized=self.cache_precision == "uint8")

    def kd(self, student_logits, teacher_logits, mask, teacher_mask, num_items):
        return topk_kl(
            student_logits, teacher_logits, mask, self.k, self.temperature, num_items=num_items, **self._common()
        )


class SampledKLLoss(_SparseLoss):
    """``sampled``: Sparse Logit Sampling, ``num_samples`` teacher draws per position (unbiased gradient).

    ``self.generator`` (default None: the global RNG) may be set to a ``torch.Generator`` on the
    logits' device for reproducible draws.
    """

    name = "sampled"

    def __init__(self, *, num_samples: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_samples = check_int("num_samples", num_samples, low=1)
        self.generator: torch.Generator | None = None

    def cache_spec(self) -> CacheSpec | None:
        if self.teacher_source != "cache":
            return None
        return CacheSpec("samples", self.num_samples, self.temperature, vocab=self.vocab_size)

    def kd(self, student_logits, teacher_logits, mask, teacher_mask, num_items):
        return sampled_kl(
            student_logits,
            teacher_logits,
            mask,
            self.num_samples,
            self.generator,
            self.temperature,
            num_items=num_items,
            **self._common(),
        )


class ULDLoss(DistillLoss):
    """``uld``: Universal Logit Distillation (cross-tokenizer) plus ``ce_weight`` x the student's CE."""

    name = "uld"
    cross_tokenizer = True

    def __init__(self, *, temperature: float = 1.0, ce_weight: float = 1.0, chunk_size: int | None = None) -> None:
        super().__init__(temperature=temperature, ce_weight=ce_weight, chunk_size=chunk_size)

    def kd(self, student_logits, teacher_logits, mask, teacher_mask, num_items):
        return uld(
            student_logits,
            mask,
            teacher_logits,
            teacher_mask,
            self.temperature,
            num_items=num_items,
            chunk_size=self.chunk_size,
        )


class MultiLevelOTLoss(DistillLoss):
    """``mlot``: MultiLevelOT (cross-tokenizer, token + sequence level) plus ``ce_weight`` x the student's CE."""

    name = "mlot"
    cross_tokenizer = True

    def __init__(
        self, *, temperature: float = 2.0, ce_weight: float = 1.0, chunk_size: int | None = None, **ot: Any
    ) -> None:
        """`ot`: the fields of [`OTSettings`][capdistill.losses.cross_tokenizer.OTSettings] (`OT_OPTIONS`), checked
        there."""
        super().__init__(temperature=temperature, ce_weight=ce_weight, chunk_size=chunk_size)
        unknown = sorted(set(ot) - set(OT_OPTIONS))
        if unknown:
            raise CapdistillError(f"loss mlot does not take option {unknown[0]!r}; it takes {self.options()}")
        self.ot = OTSettings(**ot)

    @classmethod
    def options(cls) -> list[str]:
        return sorted(init_options(cls) + OT_OPTIONS)

    def settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in init_options(type(self))} | asdict(self.ot)

    def kd(self, student_logits, teacher_logits, mask, teacher_mask, num_items):
        return multilevel_ot(
            student_logits,
            mask,
            teacher_logits,
            teacher_mask,
            temperature=self.temperature,
            num_items=num_items,
            chunk_size=self.chunk_size,
            **asdict(self.ot),
        )
