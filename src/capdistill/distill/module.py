"""The LightningModule of one distillation round: student trainable, teacher frozen, loss from config."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from transformers import PreTrainedModel

from capdistill.losses import DistillLoss
from capdistill.training.data import IGNORE_INDEX
from capdistill.training.optim import adamw_cosine


class DistillationModule(pl.LightningModule):
    """Trains `student` on teacher supervision with a `DistillLoss`.

    The teacher is kept out of the module tree (a plain attribute, not a child module): it
    is frozen, never in the optimizer, and not part of `state_dict()` or any checkpoint; it
    follows the student to its device at the start of fit. Logits are position-aligned
    (row t predicts token t + 1) and only response positions count.
    """

    def __init__(
        self,
        student: PreTrainedModel,
        teacher: PreTrainedModel | None,
        loss: DistillLoss,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float = 0.1,
        run_logger: Any = None,  # anything with log_metrics(metrics, step), e.g. a RunLogger
        step_offset: int = 0,
        log_every: int = 10,
    ) -> None:
        super().__init__()
        if loss.needs_teacher and teacher is None:
            raise ValueError(f"loss {loss.name!r} needs a teacher")
        self.student, self.loss = student, loss
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.__dict__["teacher"] = teacher  # bypasses nn.Module registration on purpose
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.total_steps, self.min_lr_ratio = total_steps, min_lr_ratio
        self.run_logger, self.step_offset, self.log_every = run_logger, step_offset, log_every
        self.trained_tokens = 0  # non-pad tokens (prompt + response) the student processed
        self.losses: list[float] = []  # training loss per step

    def on_fit_start(self) -> None:
        self.student.train()
        if self.teacher is not None:
            self.teacher.to(self.device)

    def teacher_logits(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Teacher logits (and, cross-tokenizer, the mask of its response positions), without grad."""
        if not self.loss.needs_teacher:
            return None, None
        prefix = "teacher_" if self.loss.cross_tokenizer else ""
        with torch.no_grad():
            logits = self.teacher(
                input_ids=batch[f"{prefix}input_ids"], attention_mask=batch[f"{prefix}attention_mask"]
            ).logits[:, :-1]
        mask = batch["teacher_labels"][:, 1:] != IGNORE_INDEX if self.loss.cross_tokenizer else None
        return logits, mask

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        logits = self.student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        teacher_logits, teacher_mask = self.teacher_logits(batch)
        loss = self.loss(logits, teacher_logits, mask, target_ids=labels.clamp_min(0), teacher_mask=teacher_mask)
        self.trained_tokens += int(batch["attention_mask"].sum())
        self.losses.append(float(loss.detach()))
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        if self.run_logger is not None and self.global_step % self.log_every == 0:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.run_logger.log_metrics(
                {"train/loss": self.losses[-1], "train/lr": lr}, step=self.step_offset + self.global_step
            )
        return loss

    def configure_optimizers(self) -> Any:
        return adamw_cosine(
            self.student.named_parameters(),
            self.lr,
            self.weight_decay,
            self.warmup_steps,
            self.total_steps,
            self.min_lr_ratio,
        )
