"""A causal LM's next-token logits as its final hidden states and output embedding, never materialised:
what the fused-linear losses take (`LinearLogits`), so no `[B, T, V]` tensor or gradient exists."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from capdistill.errors import CapdistillError
from capdistill.losses.chunking import LinearLogits
from capdistill.models.packing import logits_agree


def linear_logits(model: PreTrainedModel, **inputs: Any) -> LinearLogits:
    """The model's position-aligned logits (row t predicts token t + 1) on `inputs` (its forward's
    keywords) as `LinearLogits`: its decoder's final hidden states and its `lm_head` weight, without
    computing the logits."""
    hidden = model.get_decoder()(**inputs).last_hidden_state
    return LinearLogits(hidden[:, :-1], model.get_output_embeddings().weight)


def check_linear_head(model: PreTrainedModel, role: str, option: str = "loss.fused_linear") -> None:
    """`option` (the fused-linear losses, the teacher cache) needs logits that are exactly `hidden @ lm_head.weight.T`:
    a head with a bias, a logit scale or soft-capping (Gemma 2, Cohere) is refused in one line, checked on
    a short input."""
    head = model.get_output_embeddings()
    off = "loss.fused_linear=false" if option == "loss.fused_linear" else "loss.teacher_source=live"
    if not isinstance(head, nn.Linear) or head.bias is not None:
        raise CapdistillError(f"{option} needs a bias-free linear lm_head; the {role}'s is {head}: use {off}")
    param = next(model.parameters())
    ids = torch.arange(1, 9, device=param.device).remainder(head.weight.shape[0])[None]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        fused = linear_logits(model, input_ids=ids, attention_mask=mask).materialize()
    if not logits_agree(full, fused, param.dtype):
        raise CapdistillError(
            f"{option}: the {role}'s logits are not hidden states @ lm_head.weight (a logit scale or "
            f"soft-capping?); use {off}"
        )
