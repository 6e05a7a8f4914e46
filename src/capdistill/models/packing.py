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


def check_packing(model: PreTrainedModel, role: str) -> None:
    """Refuse in one line unless the model's logits on two examples packed in one row equal its logits on
    each alone."""
    vocab = model.get_output_embeddings().weight.shape[0]
    device = next(model.parameters()).device
    first, second = torch.arange(1, 6, device=device) % vocab, torch.arange(7, 11, device=device) % vocab
    packed = torch.cat([first, second])[None]
    positions = torch.cat([torch.arange(5), torch.arange(4)]).to(device)[None]
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=positions, use_cache=False).logits[0].float()
        alone = torch.cat(
            [model(input_ids=x[None], attention_mask=torch.ones_like(x)[None]).logits[0] for x in (first, second)]
        ).float()
    tol = 1e-4 if next(model.parameters()).dtype in (torch.float32, torch.float64) else 3e-2
    if not torch.allclose(together, alone, rtol=tol, atol=tol * float(alone.abs().max().clamp_min(1))):
        raise CapdistillError(
            f"distill.packing=true: the {role} ({type(model).__name__}) lets packed examples attend to each "
            "other; use distill.packing=false"
        )
