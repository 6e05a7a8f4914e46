"""Requirement identification: which capabilities a task needs, learned from pilot interventions.

ReAD's g_phi (arXiv 2605.11290): run a few short pilot distillations from the student base,
each on a random sparse split (Dirichlet weights on a 2-capability support), record how
each capability's dev signal moved (ds) and how the task's moved (dU), and fit a requirement
vector r on the simplex so that dU ~ r^T ds. A run measures both on the dev log-likelihood proxy
(the record's `probe_loglik` and `task_loglik`), the simulator on its noisy dev scores.

    min_r  mean_p (dU_p - r^T ds_p)^2 / mean_p dU_p^2 + entropy_weight * H(r),   r = softmax(theta)

(the fit term is divided by the changes' mean square so `entropy_weight` means the same
at any scale of the signals' changes).

The paper's g_phi also encodes the task card's text so one identifier serves many tasks;
a run here distils for one task, so its input is constant and g_phi reduces to the
logits theta.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch

from capdistill.errors import CapdistillError

Split = dict[str, float]


@dataclass
class Intervention:
    """One pilot run: the split it trained on, and the changes it caused in each capability's dev signal and in
    the task's (a run's: the dev log-likelihood proxy, `probe_loglik` and `task_loglik`)."""

    split: Split
    probe_loglik_change: dict[str, float]
    task_loglik_change: float

    def to_json(self) -> dict[str, Any]:
        """The record's `identification.interventions` item; its keys predate these field names and stay."""
        change = dict(self.probe_loglik_change)
        return {"split": dict(self.split), "delta_probe": change, "delta_utility": self.task_loglik_change}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Intervention:
        return cls(item["split"], item["delta_probe"], item["delta_utility"])


def pilot_splits(names: list[str], count: int, seed: int, support: int = 2, alpha: float = 1.0) -> list[Split]:
    """`count` random sparse splits: Dirichlet(`alpha`) weights on `support` random capabilities each."""
    if not 1 <= support <= len(names):
        raise CapdistillError(f"pilot support must be in [1, {len(names)}], got {support}")
    rng = random.Random(f"pilots/{seed}")
    splits = []
    for _ in range(count):
        chosen = rng.sample(names, support)
        draws = [rng.gammavariate(alpha, 1.0) for _ in chosen]
        split = dict.fromkeys(names, 0.0)
        split.update({c: d / sum(draws) for c, d in zip(chosen, draws)})
        splits.append(split)
    return splits


def identify_requirements(
    interventions: list[Intervention],
    names: list[str],
    entropy_weight: float = 0.01,
    steps: int = 500,
    lr: float = 0.05,
) -> Split:
    """The requirement vector (non-negative, sums to 1) that best explains the pilots' utility changes."""
    if not interventions:
        raise CapdistillError("requirement identification needs at least one pilot run")
    ds = torch.tensor([[i.probe_loglik_change[c] for c in names] for i in interventions], dtype=torch.float64)
    du = torch.tensor([i.task_loglik_change for i in interventions], dtype=torch.float64)
    scale = float((du**2).mean().clamp_min(1e-6))  # the fit term relative to the changes' size: scale-free
    theta = torch.zeros(len(names), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        r = torch.softmax(theta, 0)
        entropy = -(r * torch.log(r.clamp_min(1e-12))).sum()
        loss = ((du - ds @ r) ** 2).mean() / scale + entropy_weight * entropy
        loss.backward()
        optimizer.step()
    r = torch.softmax(theta.detach(), 0)
    return {c: float(w) for c, w in zip(names, r)}
