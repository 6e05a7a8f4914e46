"""The LightningModule of a distillation run: student trainable, teacher frozen, loss from config.

One module spans a run: every round is its own `Trainer.fit` on that round's supervision,
and with `scope=run` the same AdamW (its moments and step count) carries over from round to
round while the learning rate follows the run's budget progress (the released ReAD code's
regime). With `scope=round` every fit builds a fresh AdamW and schedule over its own steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from transformers import PreTrainedModel

from capdistill.errors import CapdistillError
from capdistill.losses import DistillLoss, SparseTeacher
from capdistill.losses.chunking import LinearLogits
from capdistill.losses.common import pair_positions
from capdistill.prompting import IGNORE_INDEX
from capdistill.training.heads import linear_logits
from capdistill.training.optim import OptimizerSettings, Scope, adamw


def model_inputs(batch: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor | bool]:
    """A model's keyword inputs for the batch: ids and attention mask, or, for packed rows, ids and
    `position_ids` with no mask and no cache (so the model reads the packing from the positions)."""
    if "position_ids" in batch:
        return {"input_ids": batch[f"{prefix}input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    return {"input_ids": batch[f"{prefix}input_ids"], "attention_mask": batch[f"{prefix}attention_mask"]}


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
        optim: OptimizerSettings,
        run_logger: Any = None,  # anything with log_metrics(metrics, step), e.g. a RunLogger
        log_every: int = 10,
    ) -> None:
        super().__init__()
        if loss.needs_teacher and teacher is None and loss.cache_spec() is None:
            raise ValueError(f"loss {loss.name!r} needs a teacher")
        self.student, self.loss, self.optim = student, loss, optim
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.__dict__["teacher"] = teacher  # bypasses nn.Module registration on purpose
        self.run_logger, self.log_every = run_logger, log_every
        self.optimizer: torch.optim.Optimizer | None = None
        self.pending_state: dict[str, Any] | None = None  # optimizer state to restore at the next fit
        self.steps = 0  # optimizer steps taken in the current scope (the run, or the round)
        self.span = (0.0, 1.0, 1, 0)  # this fit: progress from, progress to, its steps, `steps` at its start
        self.step_offset = 0  # steps of earlier rounds, for the run's logged curves
        self.trained_tokens = 0  # non-pad tokens (prompt + response) the student processed in this fit
        self.losses: list[float] = []  # training loss per step of this fit
        self.step_log: list[tuple[dict[str, float], int]] = []  # the fit's curve, logged after it (`flush_step_log`)
        self.handoff: Path | None = None  # where rank 0 of a spawned fit leaves the state the run keeps

    def begin_fit(self, start: float, end: float, steps: int, step_offset: int) -> None:
        """Prepare the next `Trainer.fit`: it covers budget progress `start` to `end` in `steps` steps."""
        if self.optim.scope is Scope.round:
            self.optimizer, self.steps, start, end = None, 0, 0.0, 1.0
        self.span = (start, end, max(steps, 1), self.steps)
        self.step_offset, self.trained_tokens, self.losses, self.step_log = step_offset, 0, [], []

    def optimizer_state(self) -> dict[str, Any]:
        """What resumes the optimizer exactly (saved with every round; a resumed state not yet rebuilt
        by a fit, e.g. after a round that trained nothing, is passed on as it was loaded)."""
        state = self.optimizer.state_dict() if self.optimizer is not None else self.pending_state
        return {"optimizer": state, "steps": self.steps}

    def load_optimizer_state(self, saved: dict[str, Any]) -> None:
        """Restore `optimizer_state()`; the optimizer is rebuilt at the next fit, on the model's device."""
        self.steps = saved["steps"]
        self.pending_state = saved["optimizer"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self.optimizer = adamw(self.student.named_parameters(), self.optim.lr, self.optim.weight_decay)
            if self.pending_state is not None and self.optim.scope is Scope.run:
                self.optimizer.load_state_dict(self.pending_state)
            self.pending_state = None
        return self.optimizer

    def on_fit_start(self) -> None:
        self.student.train()
        if self.teacher is not None:
            self.teacher.to(self.device)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        start, end, steps, first = self.span
        progress = start + (end - start) * min(self.steps - first + 1, steps) / steps
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = self.optim.lr_at(self.steps, progress)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.steps += 1

    def logits(
        self, model: PreTrainedModel, batch: dict[str, torch.Tensor], prefix: str = ""
    ) -> torch.Tensor | LinearLogits:
        """A model's position-aligned logits on the batch's `{prefix}input_ids`; with `loss.fused_linear`,
        unmaterialised (`LinearLogits`)."""
        inputs = model_inputs(batch, prefix)
        if self.loss.fused_linear:
            return linear_logits(model, **inputs)
        return model(**inputs).logits[:, :-1]

    def teacher_logits(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor | LinearLogits | SparseTeacher | None, torch.Tensor | None]:
        """Teacher logits (and, cross-tokenizer, the mask of its response positions), without grad; a batch
        that carries the teacher's cached rows gives them as a `SparseTeacher`, with no teacher forward."""
        if not self.loss.needs_teacher:
            return None, None
        if "teacher_ids" in batch:
            ids, logprobs = batch["teacher_ids"], batch.get("teacher_logprobs")
            counts = None if logprobs is not None else torch.ones(ids.shape, device=ids.device)
            return SparseTeacher(ids=ids, logprobs=logprobs, counts=counts), None
        if self.teacher is None:  # a served teacher: every example carries its rows (`collect_round`)
            raise CapdistillError(f"loss {self.loss.name!r}: a batch without cached teacher rows and no teacher to run")
        prefix = "teacher_" if self.loss.cross_tokenizer else ""
        with torch.no_grad():
            logits = self.logits(self.teacher, batch, prefix)
        mask = batch["teacher_labels"][:, 1:] != IGNORE_INDEX if self.loss.cross_tokenizer else None
        return logits, mask

    def total(self, value: torch.Tensor) -> torch.Tensor:
        """`value` summed over the data-parallel ranks (itself in one process)."""
        return value if self.trainer.world_size == 1 else self.trainer.strategy.reduce(value, reduce_op="sum")

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        logits = self.logits(self.student, batch)
        teacher_logits, teacher_mask = self.teacher_logits(batch)
        world = self.trainer.world_size
        # over ranks, each rank's share of the batch is divided by the whole batch's count of counted positions,
        # and scaled by the rank count that DDP's gradient average divides by: the step is the one-process step
        count = None
        if world > 1:  # what the loss divides by: counted positions, or paired ones across tokenizers
            counted = pair_positions(mask, teacher_mask)[0] if self.loss.cross_tokenizer else mask
            count = self.total(counted.sum().to(torch.float32))
        loss = self.loss(
            logits, teacher_logits, mask, target_ids=labels.clamp_min(0), teacher_mask=teacher_mask, num_items=count
        )
        tokens = batch["attention_mask"].sum()
        if "counted" in batch:  # a rank's shard with no example of the batch: nothing counted
            tokens = tokens * batch["counted"].sum()
        # the loss and the tokens summed over ranks in one reduction, float64 on every rank (every rank must
        # reduce one dtype; token counts stay exact below 2^53)
        value, tokens = self.total(torch.stack([loss.detach().double(), tokens.double()])).tolist()
        self.trained_tokens += int(tokens)
        self.losses.append(value)
        self.log("train/loss", value, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        if self.global_step % self.log_every == 0:
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.step_log.append(({"train/loss": value, "train/lr": lr}, self.step_offset + self.global_step))
        return loss * world

    def on_train_end(self) -> None:
        """Under `ddp_spawn` the ranks are processes that end with the fit: each node's rank 0 hands what the
        run keeps (optimizer state, step count, losses, tokens, step log; the same on every rank) to the
        process that spawned it."""
        if self.handoff is not None and self.trainer.local_rank == 0:
            state = self.optimizer_state() | {"global_step": self.trainer.global_step}
            state |= {"trained_tokens": self.trained_tokens, "losses": self.losses, "step_log": self.step_log}
            torch.save(state, self.handoff)

    def take_handoff(self) -> int | None:
        """Load what rank 0 handed over after a spawned fit; returns its step count (None: no hand-off)."""
        if self.handoff is None or not self.handoff.is_file():
            return None
        state = torch.load(self.handoff, weights_only=False, map_location="cpu")
        self.handoff.unlink()
        self.optimizer = None  # rebuilt from the handed-over state at the next fit
        self.load_optimizer_state(state)
        self.trained_tokens, self.losses, self.step_log = state["trained_tokens"], state["losses"], state["step_log"]
        return state["global_step"]

    def flush_step_log(self) -> None:
        """Log the fit's buffered training curve (train/loss, train/lr every `log_every` steps)."""
        if self.run_logger is not None:
            for metrics, step in self.step_log:
                self.run_logger.log_metrics(metrics, step=step)
        self.step_log = []
