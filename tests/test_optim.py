"""The training schedule: warmup, cosine to a floor, and an optional first (curriculum) stage."""

from __future__ import annotations

import pytest
import torch

from capdistill.config.schema import DistillConf
from capdistill.errors import CapdistillError
from capdistill.training.optim import OptimizerSettings, adamw_cosine


def lrs(steps: int, **kwargs) -> list[float]:
    model = torch.nn.Linear(2, 2)
    out = adamw_cosine(model.named_parameters(), 1e-2, 0.0, total_steps=steps, **kwargs)
    optimizer, scheduler = out["optimizer"], out["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_warmup_then_cosine_to_the_floor() -> None:
    seen = lrs(100, warmup_steps=10, min_lr_ratio=0.1)
    assert seen[0] == pytest.approx(1e-3) and max(seen) == pytest.approx(1e-2)
    assert seen[-1] == pytest.approx(1e-3, rel=0.05)
    assert all(a >= b for a, b in zip(seen[10:], seen[11:]))


def test_first_stage_holds_its_rate_then_the_schedule_restarts() -> None:
    seen = lrs(100, warmup_steps=10, min_lr_ratio=0.1, first_stage=(30, 0.25))
    assert seen[:10] == pytest.approx([0.25e-2 * (i + 1) / 10 for i in range(10)])
    assert seen[10:30] == pytest.approx([0.25e-2] * 20)
    assert seen[30:40] == pytest.approx(lrs(70, warmup_steps=10, min_lr_ratio=0.1)[:10])
    assert max(seen[30:]) == pytest.approx(1e-2)


def test_distillation_schedule_follows_progress_after_warmup() -> None:
    """The run's learning rate: linear warmup over steps, then constant or cosine in budget progress."""
    cosine = OptimizerSettings(1e-3, warmup_steps=4, min_lr_ratio=0.1, schedule="cosine")
    assert [cosine.lr_at(step, 0.0) for step in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert cosine.lr_at(100, 0.5) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert cosine.lr_at(100, 1.0) == pytest.approx(1e-4) and cosine.lr_at(100, 1.7) == pytest.approx(1e-4)
    constant = OptimizerSettings(1e-3, warmup_steps=0, schedule="constant")
    assert {constant.lr_at(step, p) for step, p in ((0, 0.0), (50, 0.3), (99, 1.0))} == {1e-3}
    with pytest.raises(CapdistillError, match="distill.min_lr_ratio"):
        OptimizerSettings(1e-3, min_lr_ratio=1.5)
    with pytest.raises(ValueError):
        OptimizerSettings(1e-3, schedule="linear")


def test_the_optimizer_defaults_are_the_distill_group_defaults() -> None:
    """The Python API's optimizer and a run's from the default config train alike."""
    assert OptimizerSettings(DistillConf.lr) == OptimizerSettings.of(DistillConf())
    settings = OptimizerSettings.of(DistillConf(lr=1e-3, weight_decay=0.0, warmup_steps=0, schedule="constant"))
    assert (settings.lr, settings.weight_decay, settings.warmup_steps, settings.schedule) == (1e-3, 0.0, 0, "constant")
