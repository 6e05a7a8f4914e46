"""LightningModule that trains a causal LM on response tokens (teacher and student-base building)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from transformers import PreTrainedModel

from capdistill.training.optim import adamw_cosine


class CausalLMModule(pl.LightningModule):
    """Next-token cross-entropy on the labelled (response) positions, AdamW + warmup/cosine."""

    def __init__(
        self,
        model: PreTrainedModel,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        max_steps: int,
        min_lr_ratio: float = 0.1,
        first_stage: tuple[int, float] = (0, 1.0),
    ) -> None:
        super().__init__()
        self.first_stage = first_stage
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps, self.min_lr_ratio = warmup_steps, max_steps, min_lr_ratio

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self):
        return adamw_cosine(
            self.model.named_parameters(),
            self.lr,
            self.weight_decay,
            self.warmup_steps,
            self.max_steps,
            self.min_lr_ratio,
            self.first_stage,
        )
