"""AdamW with linear warmup and a cosine decay to a floor: the optimizer of every training loop here."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import get_cosine_schedule_with_warmup


def adamw_cosine(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.1,
    first_stage: tuple[int, float] = (0, 1.0),
) -> dict:
    """A Lightning `configure_optimizers` result: no decay on biases and norms, per-step schedule.

    `first_stage = (steps, ratio)`: the first `steps` steps warm up to and hold `ratio * lr`
    (a curriculum stage); warmup and cosine then run over the remaining steps.
    """
    params = [(n, p) for n, p in named_parameters if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for _, p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.98),
    )
    stage, ratio = first_stage
    cosine = get_cosine_schedule_with_warmup(optimizer, warmup_steps, max(total_steps - stage, 1)).lr_lambdas[0]

    def factor(step: int) -> float:
        if step < stage:
            return ratio * min(1.0, (step + 1) / max(warmup_steps, 1))
        return min_lr_ratio + (1 - min_lr_ratio) * cosine(step - stage)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
