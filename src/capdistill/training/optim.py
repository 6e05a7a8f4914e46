"""AdamW with linear warmup and a cosine decay to a floor (world builds), and the distillation's
optimizer settings: one AdamW and one schedule over a whole run, or a fresh pair per round."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from transformers import get_cosine_schedule_with_warmup

from capdistill.config.schema import DistillConf, Schedule, Scope
from capdistill.errors import CapdistillError


def adamw(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, with no weight decay on biases and norms."""
    params = [(n, p) for n, p in named_parameters if p.requires_grad]
    return torch.optim.AdamW(
        [
            {"params": [p for _, p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.98),
    )


@dataclass
class OptimizerSettings:
    """The distillation's optimizer: AdamW at `lr`, `warmup_steps` of linear warmup, then `schedule`. Its
    defaults are the `distill` group's (`DistillConf`), so the Python API and the config train alike."""

    lr: float
    weight_decay: float = DistillConf.weight_decay
    warmup_steps: int = DistillConf.warmup_steps
    min_lr_ratio: float = DistillConf.min_lr_ratio
    schedule: Schedule = DistillConf.schedule
    scope: Scope = DistillConf.optimizer_scope

    @classmethod
    def of(cls, distill: DistillConf) -> OptimizerSettings:
        """The run's optimizer, from the `distill` group (its ranges are checked here)."""
        return cls(
            distill.lr,
            distill.weight_decay,
            distill.warmup_steps,
            distill.min_lr_ratio,
            distill.schedule,
            distill.optimizer_scope,
        )

    def __post_init__(self) -> None:
        self.schedule, self.scope = Schedule(self.schedule), Scope(self.scope)
        for name, ok in (
            ("lr", 0 < self.lr < math.inf),  # NaN fails too
            ("weight_decay", 0 <= self.weight_decay < math.inf),
            ("warmup_steps", self.warmup_steps >= 0),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1),
        ):
            if not ok:
                raise CapdistillError(f"distill.{name} is out of range: {getattr(self, name)!r}")

    def lr_at(self, step: int, progress: float) -> float:
        """The learning rate of optimizer step `step` (0-based in the scope) at `progress` (0-1) through it."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.schedule is Schedule.constant:
            return self.lr * warm
        cosine = 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return self.lr * warm * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)


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
    optimizer = adamw(named_parameters, lr, weight_decay)
    stage, ratio = first_stage
    cosine = get_cosine_schedule_with_warmup(optimizer, warmup_steps, max(total_steps - stage, 1)).lr_lambdas[0]

    def factor(step: int) -> float:
        if step < stage:
            return ratio * min(1.0, (step + 1) / max(warmup_steps, 1))
        return min_lr_ratio + (1 - min_lr_ratio) * cosine(step - stage)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
