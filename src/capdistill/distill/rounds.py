"""One round's work: the teacher writes the round's supervision, the student trains on it."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from capdistill.distill.data import DistillDataModule, SupervisedBatches
from capdistill.distill.module import DistillationModule
from capdistill.supervision.collect import PromptStream, Slice, collect_round
from capdistill.world.build import WorldModel


def generate_round(
    cfg: DictConfig,
    shares: dict[str, int],
    streams: dict[str, PromptStream],
    cursors: dict[str, int],
    teacher: WorldModel,
    student: WorldModel,
    device: torch.device,
) -> list[Slice]:
    """Each capability's share of the round, written by the teacher from its stream at its cursor."""
    teacher.model.to(device)
    return collect_round(
        shares,
        streams,
        cursors,
        teacher.model,
        teacher.tokenizer,
        student.tokenizer,
        OmegaConf.to_object(cfg.distill.generation),
        overflow=cfg.distill.overflow,
    )


def train_round(
    cfg: DictConfig,
    index: int,
    slices: list[Slice],
    module: DistillationModule,
    teacher: WorldModel,
    student: WorldModel,
    progress: tuple[float, float],
    step_offset: int,
) -> tuple[int, int, list[float]]:
    """Fit the student on the round's examples, covering budget `progress` (from, to);
    returns (optimizer steps, tokens processed, losses)."""
    examples = [e for s in slices for e in s.examples]
    if not examples:
        return 0, 0, []
    dcfg = cfg.distill
    pl.seed_everything(cfg.seed * 1000 + index, workers=True, verbose=False)
    data = DistillDataModule(
        SupervisedBatches(
            examples,
            student.tokenizer,
            teacher.tokenizer if module.loss.cross_tokenizer else None,
            dcfg.batch_size,
            seed=cfg.seed * 1000 + index,
        )
    )
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        num_nodes=cfg.trainer.num_nodes,
        strategy=cfg.trainer.strategy,
        precision=cfg.trainer.precision,
        max_epochs=dcfg.epochs,
        gradient_clip_val=dcfg.grad_clip,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    steps = math.ceil(len(data.dataset) / trainer.world_size) * dcfg.epochs  # each rank's share of the batches
    module.begin_fit(*progress, steps, step_offset)
    trainer.fit(module, datamodule=data)
    module.student.eval()
    return trainer.global_step, module.trained_tokens, module.losses
