"""What the round benchmarks share: one round of teacher supervision on a composed config, and timed fits
of the same student (reset before each) under variants of the round settings, side by side."""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from capdistill.components import build_parts, world_sources
from capdistill.config.hydra_setup import compose_root
from capdistill.distill.module import DistillationModule
from capdistill.distill.rounds import RoundSettings, generate_round, train_round
from capdistill.losses import DistillLoss
from capdistill.models.request import LoadedModel
from capdistill.supervision.budget import split_tokens
from capdistill.supervision.engines import HFEngine
from capdistill.supervision.slices import PromptStream, Slice
from capdistill.training.optim import OptimizerSettings
from capdistill.world.build import ensure_model


@dataclass
class Round:
    """One round's supervision, the models, and what a fit needs."""

    cfg: object
    teacher: LoadedModel
    student: LoadedModel
    loss: DistillLoss
    settings: RoundSettings
    slices: list[Slice]
    device: torch.device

    @property
    def spent(self) -> int:
        return sum(s.spent for s in self.slices)

    def time_fits(self, variants: dict[str, RoundSettings], runs: int) -> dict[str, tuple[float, int]]:
        """Median seconds of one fit per variant (alternating, `runs` each) and the tokens it processed."""
        base = copy.deepcopy(self.student.model.state_dict())
        optim = OptimizerSettings.of(self.settings.distill)
        times: dict[str, list[float]] = {name: [] for name in variants}
        tokens: dict[str, int] = {}
        for _ in range(runs):
            for name, settings in variants.items():
                self.student.model.load_state_dict(base)
                module = DistillationModule(self.student.model, self.teacher.model, self.loss, optim)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                _, tokens[name], _ = train_round(
                    settings, 0, self.slices, module, self.teacher, self.student, (0.0, 1.0), 0
                )
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
        self.student.model.load_state_dict(base)
        return {name: (statistics.median(t), tokens[name]) for name, t in times.items()}


@contextmanager
def one_round(overrides: list[str], loss: DistillLoss, tokens: int) -> Iterator[Round]:
    """`tokens` of supervision over every capability, written by the config's teacher (the shipped
    synthetic world unless `overrides` say otherwise), with `loss`'s round settings."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_root(["experiment=smoke", "logger=none", f"paths.output_dir={tmp}", *overrides])
        sources = world_sources(cfg)
        parts = build_parts(cfg)
        teacher = ensure_model(parts.models["teacher"], sources, Path(tmp))
        student = ensure_model(parts.models["student"], sources, Path(tmp))
        device = torch.device("cuda" if cfg.trainer.get("accelerator") in ("gpu", "cuda") else "cpu")
        settings = RoundSettings(
            parts.make_trainer, parts.settings.distill, parts.settings.seed, cache=loss.cache_spec()
        )
        names = list(cfg.capabilities.names)
        streams = {c: PromptStream(sources.capabilities[c], "bench", sources.difficulties) for c in names}
        teacher.model.eval().requires_grad_(False).to(device)
        student.model.to(device)
        shares = split_tokens(tokens, dict.fromkeys(names, 1.0))
        engine = HFEngine(teacher.model, teacher.tokenizer)
        slices = generate_round(settings, shares, streams, {}, engine, student, device)
        yield Round(cfg, teacher, student, loss, settings, slices, device)


def write_json(path: str | None, figures: dict) -> dict:
    """`figures`, also written to `path` when one is given."""
    if path:
        Path(path).write_text(json.dumps(figures, indent=2))
    return figures
