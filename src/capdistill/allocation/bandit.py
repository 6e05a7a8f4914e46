"""ReAD's allocator: an uncertainty-aware contextual bandit with a spillover penalty (arXiv 2605.11290).

Each round it scores a small set of candidate splits with an ensemble of MLP regressors
(bootstrap-refit on the logged transitions) and picks argmax mu + kappa * sigma. The
reward of a round is

    R = r^T ds - beta * Spill - lam * cost,   Spill = sum_{c in C_ess} r_c * max(0, -ds_c),

with ds the probe change in fractions of 100 points, r the task's requirement vector,
C_ess its top-k capabilities and cost the round's spend as a fraction of the budget.

Everything the bandit decides is a function of the logged history and the seed (one RNG
per round), so a resumed run that replays `update` over its completed rounds continues
exactly as an uninterrupted one.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import torch
from torch import nn

from capdistill.allocation.base import Allocator, RoundContext
from capdistill.allocation.requirements import Intervention, identify_requirements, pilot_splits
from capdistill.errors import CapdistillError

Split = dict[str, float]


def _check(name: str, value: float, low: float = 0.0) -> float:
    if value < low:
        raise CapdistillError(f"allocator.{name} must be >= {low}, got {value}")
    return float(value)


class ReadBandit(Allocator):
    """`read`: the paper's method; ablations through `use_requirements`, `adapt` and `beta=0`.

    With `identify=learned` the requirement vector comes from `pilots` short pilot runs
    (each `pilot_fraction` of the budget, from the student base) instead of the task card.
    """

    name = "read"

    def __init__(
        self,
        capabilities: list[str],
        seed: int = 0,
        *,
        top_k: int = 3,
        kappa: float = 1.0,
        kappa_decay: float = 0.7,
        beta: float = 0.5,
        lam: float = 0.1,
        ensemble: int = 5,
        hidden: int = 64,
        fit_steps: int = 200,
        fit_lr: float = 1e-3,
        warmup: int = 3,
        max_candidates: int = 50,
        step: float = 0.1,
        use_requirements: bool = True,
        adapt: bool = True,
        identify: str = "card",
        pilots: int = 5,
        pilot_fraction: float = 0.02,
        entropy_weight: float = 0.01,
    ) -> None:
        super().__init__(capabilities, seed)
        if not 1 <= top_k <= len(self.capabilities):
            raise CapdistillError(f"allocator.top_k must be in [1, {len(self.capabilities)}], got {top_k}")
        self.top_k = top_k
        self.kappa = _check("kappa", kappa)
        self.kappa_decay = _check("kappa_decay", kappa_decay)
        self.beta, self.lam = _check("beta", beta), _check("lam", lam)
        self.ensemble, self.hidden = int(_check("ensemble", ensemble, 1)), int(_check("hidden", hidden, 1))
        self.fit_steps, self.fit_lr = int(_check("fit_steps", fit_steps, 1)), _check("fit_lr", fit_lr)
        self.warmup, self.max_candidates = (
            int(_check("warmup", warmup)),
            int(_check("max_candidates", max_candidates, 1)),
        )
        self.step = _check("step", step)
        self.use_requirements, self.adapt = use_requirements, adapt
        if identify not in ("card", "learned"):
            raise CapdistillError(f"allocator.identify must be 'card' or 'learned', got {identify!r}")
        if not 0 < pilot_fraction <= 1:
            raise CapdistillError(f"allocator.pilot_fraction must be in (0, 1], got {pilot_fraction}")
        self.identify_from = identify
        self.pilots = int(_check("pilots", pilots, 1))
        self.pilot_fraction = float(pilot_fraction)
        self.entropy_weight = _check("entropy_weight", entropy_weight)
        self.learned: Split | None = None
        n = len(self.capabilities)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.models = [self._mlp(5 * n + 1) for _ in range(self.ensemble)]  # context 4n+1, action n
        self.features: list[torch.Tensor] = []
        self.rewards: list[float] = []
        self.predicted: list[float] = []  # the ensemble's mean for each logged action before its refit
        self.first: Split | None = None

    # ------------------------------------------------------------------ features

    def _mlp(self, width: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(width, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, self.hidden),
            nn.ReLU(),
            nn.Linear(self.hidden, 1),
        )

    def requirements(self, context: RoundContext) -> Split:
        """r_tau: uniform (the no-identification ablation), learned from pilots, or the task card's."""
        if not self.use_requirements:
            return {c: 1.0 / len(self.capabilities) for c in self.capabilities}
        if self.learned is not None:
            return dict(self.learned)
        return {c: float(context.requirements.get(c, 0.0)) for c in self.capabilities}

    def pilot_splits(self) -> list[Split]:
        if self.identify_from == "card" or not self.use_requirements:
            return []
        return pilot_splits(self.capabilities, self.pilots, self.seed)

    def identify(self, interventions: list[Intervention]) -> Split:
        self.learned = identify_requirements(interventions, self.capabilities, self.entropy_weight)
        return dict(self.learned)

    def essential(self, r: Split) -> list[str]:
        """C_ess: the top-k capabilities by requirement weight (ties by config order)."""
        return sorted(self.capabilities, key=lambda c: -r[c])[: self.top_k]

    def context_vector(self, context: RoundContext) -> list[float]:
        """x_t = [r ; probe profile / 100 ; remaining budget fraction ; previous split ; its probe gains]."""
        r = self.requirements(context)
        prev = context.history[-1] if context.history else None
        last_split = [prev["allocation"].get(c, 0.0) for c in self.capabilities] if prev else [0.0] * len(r)
        gains = self.deltas(context.history[-2]["probe"] if len(context.history) > 1 else None, prev)
        return (
            [r[c] for c in self.capabilities]
            + [context.probe[c] / 100 for c in self.capabilities]
            + [context.budget_left / max(context.total_tokens, 1)]
            + last_split
            + [gains[c] for c in self.capabilities]
        )

    def deltas(self, before: dict[str, float] | None, outcome: dict[str, Any] | None) -> Split:
        if outcome is None or before is None:
            return dict.fromkeys(self.capabilities, 0.0)
        return {c: (outcome["probe"][c] - before[c]) / 100 for c in self.capabilities}

    def row(self, x: list[float], split: Split) -> torch.Tensor:
        return torch.tensor(x + [split[c] for c in self.capabilities], dtype=torch.float32)

    # ------------------------------------------------------------------ candidates and scores

    def candidates(self, r: Split, previous: Split | None, rng: random.Random) -> list[Split]:
        """Sparse actions on C_ess (one-hots first, then pairs at 1/4, 1/2, 3/4) and moves of `step`
        around the previous split."""
        zero = dict.fromkeys(self.capabilities, 0.0)
        ess = self.essential(r)
        out = [{**zero, c: 1.0} for c in ess]
        for a, b in itertools.combinations(ess, 2):
            out += [{**zero, a: w, b: 1.0 - w} for w in (0.25, 0.5, 0.75)]
        local: list[Split] = []
        if previous is not None:
            local.append(dict(previous))
            for a, b in itertools.permutations(self.capabilities, 2):
                if previous[a] >= self.step > 0:
                    local.append({**previous, a: previous[a] - self.step, b: previous[b] + self.step})
        rng.shuffle(local)
        unique: dict[tuple[float, ...], Split] = {}
        for split in out + local:
            unique.setdefault(tuple(round(split[c], 6) for c in self.capabilities), split)
        return list(unique.values())[: self.max_candidates]

    def raw_predict(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The ensemble's mean and standard deviation of the reward of each row, in reward units."""
        with torch.no_grad():
            preds = torch.stack([m(rows).squeeze(-1) for m in self.models])
        scale, shift = self._target_scale()
        return preds.mean(0) * scale + shift, preds.std(0, unbiased=False) * scale

    def predict(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated mean and standard deviation (see `calibration`)."""
        mu, sigma = self.raw_predict(rows)
        a, b = self.calibration()
        return a * mu + b, abs(a) * sigma

    def _target_scale(self) -> tuple[float, float]:
        if len(self.rewards) < 2:
            return 1.0, (self.rewards[0] if self.rewards else 0.0)
        t = torch.tensor(self.rewards)
        return float(t.std(unbiased=False).clamp_min(1e-6)), float(t.mean())

    def calibration(self) -> tuple[float, float]:
        """Affine map from the ensemble's predictions to realised rewards (identity until it is identifiable)."""
        if len(self.predicted) < 4:
            return 1.0, 0.0
        p, y = torch.tensor(self.predicted, dtype=torch.float64), torch.tensor(self.rewards, dtype=torch.float64)
        var = float(((p - p.mean()) ** 2).mean())
        if var < 1e-12:
            return 1.0, 0.0
        a = float(((p - p.mean()) * (y - y.mean())).mean()) / var
        if a <= 0:
            return 1.0, 0.0  # no usable signal yet: do not invert the ranking
        return a, float(y.mean() - a * p.mean())

    # ------------------------------------------------------------------ the interface

    def allocate(self, context: RoundContext) -> Split:
        rng = random.Random(f"read/{self.seed}/{context.round}")
        if not self.adapt and self.first is not None:
            self.decision = {"frozen": True, "chosen": dict(self.first)}
            return dict(self.first)
        r = self.requirements(context)
        previous = dict(context.history[-1]["allocation"]) if context.history else None
        options = self.candidates(r, previous, rng)
        x = self.context_vector(context)
        mu, sigma = self.predict(torch.stack([self.row(x, s) for s in options]))
        explore = len(self.rewards) < self.warmup
        # warm-up: each essential capability alone in turn (the first candidates), for contrasts
        index = (
            len(self.rewards) % min(self.top_k, len(options)) if explore else int(torch.argmax(mu + self.kappa * sigma))
        )
        self.decision = {
            "context": x,
            "essential": self.essential(r),
            "candidates": options,
            "chosen": options[index],
            "mu": float(mu[index]),
            "sigma": float(sigma[index]),
            "kappa": self.kappa,
            "warmup": explore,
        }
        return dict(options[index])

    def update(self, context: RoundContext, allocation: Split, outcome: dict[str, Any]) -> dict[str, Any]:
        if self.first is None:
            self.first = dict(allocation)
        r = self.requirements(context)
        ds = self.deltas(context.probe, outcome)
        gain = sum(r[c] * ds[c] for c in self.capabilities)
        spill = sum(r[c] * max(0.0, -ds[c]) for c in self.essential(r))
        cost = sum(outcome["spent_by_capability"].values()) / max(context.total_tokens, 1)
        reward = gain - self.beta * spill - self.lam * cost
        row = self.row(self.context_vector(context), {c: allocation.get(c, 0.0) for c in self.capabilities})
        self.predicted.append(float(self.raw_predict(row[None])[0][0]))
        self.features.append(row)
        self.rewards.append(reward)
        self.refit(context.round)
        if outcome["task_utility"] <= context.task_utility:  # stagnation: explore less
            self.kappa *= self.kappa_decay
        return {"reward": reward, "gain": gain, "spill": spill, "cost": cost, "delta_probe": ds, "kappa": self.kappa}

    def refit(self, round_index: int) -> None:
        """Refit every ensemble member on its own bootstrap resample of the transitions (warm-started)."""
        x = torch.stack(self.features)
        scale, shift = self._target_scale()
        y = (torch.tensor(self.rewards) - shift) / scale
        g = torch.Generator().manual_seed(self.seed * 100_003 + round_index)
        for model in self.models:
            idx = torch.randint(len(y), (len(y),), generator=g)
            optimizer = torch.optim.Adam(model.parameters(), lr=self.fit_lr)
            for _ in range(self.fit_steps):
                optimizer.zero_grad()
                loss = ((model(x[idx]).squeeze(-1) - y[idx]) ** 2).mean()
                loss.backward()
                optimizer.step()


class Greedy(ReadBandit):
    """`greedy`: the bandit's one-step choice with no exploration (kappa = 0, no warm-up)."""

    name = "greedy"

    def __init__(self, capabilities: list[str], seed: int = 0, **options: Any) -> None:
        if options.get("kappa") or options.get("warmup"):
            raise CapdistillError("allocator=greedy never explores: it takes no kappa or warmup (use allocator=read)")
        super().__init__(capabilities, seed, **{**options, "kappa": 0.0, "warmup": 0})
