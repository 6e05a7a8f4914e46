"""Whether a model keeps attention within each example of a packed row: the check `distill.packing` needs.

Packed rows carry `position_ids` that restart at every example and no attention mask; transformers'
mask utilities then build a block-diagonal causal mask (sdpa, eager, flex) or use varlen kernels
(flash attention). A model that ignores the positions would let examples attend to each other, so it
is checked once, on two short examples, before any training.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from capdistill.errors import CapdistillError


def logits_agree(reference: torch.Tensor, other: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether two computations of a model's logits agree up to the rounding of the model's `dtype` (1e-4 in
    fp32/fp64, 3e-2 in half precision, relative to the largest logit)."""
    reference, other = reference.float(), other.float()
    tol = 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2
    return torch.allclose(other, reference, rtol=tol, atol=tol * float(reference.abs().max().clamp_min(1)))


def check_packing(model: PreTrainedModel, role: str) -> None:
    """Refuse in one line unless the model's logits on two examples packed in one row equal its logits on
    each alone."""
    vocab = model.get_output_embeddings().weight.shape[0]
    device = next(model.parameters()).device
    first, second = torch.arange(1, 6, device=device) % vocab, torch.arange(7, 11, device=device) % vocab
    packed = torch.cat([first, second])[None]
    positions = torch.cat([torch.arange(5), torch.arange(4)]).to(device)[None]
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=positions, use_cache=False).logits[0]
        alone = torch.cat(
            [model(input_ids=x[None], attention_mask=torch.ones_like(x)[None]).logits[0] for x in (first, second)]
        )
    if not logits_agree(alone, together, next(model.parameters()).dtype):
        raise CapdistillError(
            f"distill.packing=true: the {role} ({type(model).__name__}) lets packed examples attend to each "
            "other; use distill.packing=false"
        )
