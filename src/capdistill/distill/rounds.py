"""One round's work: the teacher writes the round's supervision, the student trains on it."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher

from capdistill.components import round_trainer
from capdistill.config.schema import DistillConf
from capdistill.distill.batches import DistillDataModule, SupervisedBatches
from capdistill.distill.module import DistillationModule
from capdistill.losses.sparse import CacheSpec
from capdistill.models.request import LoadedModel
from capdistill.supervision.engines import HFEngine, TeacherEngine
from capdistill.supervision.slices import PromptStream, Slice, collect_round


@dataclass(frozen=True)
class RoundSettings:
    """What every round's generation and fit take, built once by the recipe: the `distill` group as it is, and
    what the run adds to it."""

    make_trainer: Callable[..., pl.Trainer]  # the `trainer` group, partial: each fit adds its own settings
    distill: DistillConf  # generation, overflow, batch size, epochs, clipping, packing and curriculum
    seed: int
    progress: bool = False  # progress bars for generation and training (a terminal: `capdistill.io.interactive`)
    cache: CacheSpec | None = None  # what the teacher keeps while it writes, for the loss (a teacher logit cache)

    @property
    def pack_length(self) -> int | None:
        """Pack each batch into rows of up to this many tokens (None: padded batches)."""
        return self.distill.pack_length if self.distill.packing else None


def generate_round(
    settings: RoundSettings,
    shares: dict[str, int],
    streams: dict[str, PromptStream],
    cursors: dict[str, int],
    engine: TeacherEngine,
    student: LoadedModel,
    device: torch.device,
) -> list[Slice]:
    """Each capability's share of the round, written by the teacher's engine from its stream at its cursor."""
    if isinstance(engine, HFEngine):
        engine.model.to(device)
    return collect_round(
        shares,
        streams,
        cursors,
        engine,
        engine.tokenizer,
        student.tokenizer,
        settings.distill.generation,
        overflow=settings.distill.overflow,
        progress=settings.progress,
        cache=settings.cache,
    )


def spawns(trainer: pl.Trainer) -> bool:
    """Whether the fit runs in spawned processes (`ddp_spawn`, any number of devices), whose state ends with it."""
    return isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher)


def train_round(
    settings: RoundSettings,
    index: int,
    slices: list[Slice],
    module: DistillationModule,
    teacher: LoadedModel,
    student: LoadedModel,
    progress: tuple[float, float],
    step_offset: int,
) -> tuple[int, int, list[float]]:
    """Fit the student on the round's examples, covering budget `progress` (from, to);
    returns (optimizer steps, tokens processed, losses)."""
    examples = [e for s in slices for e in s.examples]
    if not examples:
        return 0, 0, []
    seed = settings.seed
    pl.seed_everything(seed * 1000 + index, workers=True, verbose=False)
    trainer = round_trainer(settings.make_trainer, settings.distill, settings.progress)
    data = DistillDataModule(
        SupervisedBatches(
            examples,
            student.tokenizer,
            teacher.tokenizer if module.loss.cross_tokenizer else None,
            settings.distill.batch_size,
            seed=seed * 1000 + index,
            cached=settings.cache is not None,
            pack_length=settings.pack_length,
            ranks=trainer.world_size,
        )
    )
    module.begin_fit(*progress, len(data.dataset) * settings.distill.epochs, step_offset)
    logger, module.run_logger = module.run_logger, None  # a logger does not travel to spawned ranks
    with tempfile.TemporaryDirectory() as handoff:
        module.handoff = Path(handoff) / "rank0.pt" if spawns(trainer) else None
        try:
            trainer.fit(module, datamodule=data)
            steps = module.take_handoff()
        finally:
            module.run_logger, module.handoff = logger, None
    module.flush_step_log()
    module.student.eval()
    return trainer.global_step if steps is None else steps, module.trained_tokens, module.losses
