"""LightningModule that trains a causal LM on response tokens (teacher and student-base building)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from transformers import PreTrainedModel, get_cosine_schedule_with_warmup


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
    ) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps, self.min_lr_ratio = warmup_steps, max_steps, min_lr_ratio

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self):
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
            betas=(0.9, 0.98),
        )
        cosine = get_cosine_schedule_with_warmup(optimizer, self.warmup_steps, self.max_steps)
        floor = self.min_lr_ratio
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: floor + (1 - floor) * cosine.lr_lambdas[0](step)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
