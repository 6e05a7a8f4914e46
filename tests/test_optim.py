"""The training schedule: warmup, cosine to a floor, and an optional first (curriculum) stage."""

from __future__ import annotations

import pytest
import torch

from capdistill.training.optim import adamw_cosine


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
