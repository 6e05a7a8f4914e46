"""One round's work: the teacher writes the round's supervision, the student trains on it."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from capdistill.distill.data import DistillDataModule, SupervisedBatches
from capdistill.distill.loggers import RunLogger
from capdistill.distill.module import DistillationModule
from capdistill.losses import DistillLoss
from capdistill.supervision.collect import Slice, collect_slice
from capdistill.world.build import WorldModel
from capdistill.world.sources import WorldSources


def generate_round(
    cfg: DictConfig,
    index: int,
    shares: dict[str, int],
    teacher: WorldModel,
    student: WorldModel,
    sources: WorldSources,
    device: torch.device,
) -> list[Slice]:
    generation = OmegaConf.to_object(cfg.distill.generation)
    teacher.model.to(device)
    return [
        collect_slice(
            sources.capabilities[name],
            tokens,
            teacher.model,
            teacher.tokenizer,
            student.tokenizer,
            generation,
            sources.difficulties,
            seed=f"{cfg.seed}/{index}",
            overflow=cfg.distill.overflow,
        )
        for name, tokens in shares.items()
        if tokens > 0
    ]


def train_round(
    cfg: DictConfig,
    index: int,
    slices: list[Slice],
    teacher: WorldModel,
    student: WorldModel,
    loss: DistillLoss,
    logger: RunLogger | None,
    step_offset: int,
) -> tuple[int, int, list[float]]:
    """Fit the student on the round's examples; returns (optimizer steps, tokens processed, losses)."""
    examples = [e for s in slices for e in s.examples]
    if not examples:
        return 0, 0, []
    dcfg = cfg.distill
    pl.seed_everything(cfg.seed * 1000 + index, workers=True, verbose=False)
    data = DistillDataModule(
        SupervisedBatches(
            examples,
            student.tokenizer,
            teacher.tokenizer if loss.cross_tokenizer else None,
            dcfg.batch_size,
            seed=cfg.seed * 1000 + index,
        )
    )
    steps = len(data.dataset) * dcfg.epochs
    module = DistillationModule(
        student.model,
        teacher.model if loss.needs_teacher else None,
        loss,
        dcfg.lr,
        dcfg.weight_decay,
        dcfg.warmup_steps,
        steps,
        dcfg.min_lr_ratio,
        logger,
        step_offset,
        dcfg.log_every,
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
    trainer.fit(module, datamodule=data)
    student.model.eval()
    return trainer.global_step, module.trained_tokens, module.losses
