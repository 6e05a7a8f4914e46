"""ReAD's allocator (arXiv 2605.11290): an uncertainty-aware contextual bandit with a spillover penalty.

One decision per round (T = `budget.rounds`, 20 by default, each round 1/T of the budget):

1. Requirements r over the capabilities (the task card's, or learned from pilot runs with
   `identify=learned`); the essential set C_ess is its top-k.
2. Candidates: r itself; local moves of `step` mass between two capabilities around the
   previous split (r before round 0); sparse actions on C_ess: pairs at 1/4, 1/2, 3/4 and
   tilts (1 - tilt) r + tilt e_c towards one essential capability.
3. Warm-up: the first `warmup` rounds play a uniformly random candidate (the released code's rule).
4. Afterwards every candidate is scored by an ensemble of J two-layer MLPs, each refit on a
   bootstrap resample of the logged transitions, calibrated on the rewards logged so far,
   and the bandit plays argmax mu + kappa * sigma.
5. After the round: R = r . ds - beta * Spill - lam * cost, with ds the change of each
   capability's dev log-likelihood proxy, Spill = sum_{c in C_ess} r_c max(0, -ds_c) and cost
   the round's spend as a fraction of the budget. (x, a, R) is logged and the ensemble refit.
6. Every `kappa_every` of the budget, kappa *= kappa_decay if the task's dev proxy did not
   improve since the previous check (stagnation: explore less).

Where this differs from the paper or the released code, each is an option (default first):

* `context="compact"`: x = [budget left; each essential capability's proxy gain since the
  start], the action as its mass on each of C_ess and on the rest: 2k + 2 inputs (8 for
  |C_ess| = 3), which tens of transitions can fit (r is constant within a run). Splits that
  differ only outside C_ess look alike to it, so of such candidates the first in the round's
  seeded order is played. `"paper"`:
  x = [r; proxy profile; budget left; previous split; its gains] and the full action
  (5n + 1 inputs, 46 for nine capabilities).
* `calibration="affine"`: the predicted mean is mapped affinely onto the realised rewards
  (fitted on predictions made before each transition was learned), the exploration bonus
  kappa * sigma is not. That changes decisions; an affine map of the whole score mu +
  kappa * sigma with a positive slope (the paper's wording read literally) could not.
  `"affine_sigma"` also rescales sigma so the standardised residuals have unit variance:
  that turns the rewards' own noise into exploration (measured: sigma x10, the clip, within
  a few rounds on the synthetic world, and less utility on both simulated worlds).
  `"off"`: none. The released code instead rescales later rewards by a dev-utility slope.
* `lam` is per fraction of the budget (the released code's 1e-5 per raw token made the
  cost a near-constant that dwarfed the gains). Every round spends 1/T of the budget, so
  the cost term is the same for every candidate and decides nothing; it is kept for the
  paper's reward form (it matters when a round falls short of its slice).
* The released code's candidates are only the pairs, built once per run; the paper's local
  moves and this module's tilts and r are added as the paper describes (`one_hots=true` adds
  the pure one-hot actions, off in the released code).
* With no logged transition and no warm-up (`greedy`), r is played: there is nothing to be greedy about.

Ablations of the method: `use_requirements=false` (a uniform r, every capability essential),
`adapt=false` (the split decided right after warm-up is kept to the end of the run: the
bandit learns from its warm-up once instead of online), `beta=0` (no spillover penalty).

Beyond the paper (`allocator=read_relative`): `proxy_units="relative"` measures each ds_c as a
fraction of the capability's dev negative log-likelihood before round 0 (the share of its NLL
removed), instead of the paper's raw nats (`"nats"`, default). Capabilities differ in how many
nats a token of supervision buys, and a raw r . ds favours the one whose likelihood moves
most, whether or not its exact match does.

Beyond the paper (`allocator=read_trust`): with `trust_radius`, candidates stay within that
total-variation distance of r, and the bandit's choice (the argmax above, exploration bonus
included) is played only when the ensemble's predicted advantage over r is confidently
positive (mean - trust_z * sd of the members' paired differences > 0); r is played
otherwise, so an exploratory pick rarely passes and the variant mostly plays r unless the
ensemble agrees a move is better.

Everything decided is a function of the logged history and the seed (one RNG per round), so
a resumed run that replays `update` over its completed rounds continues exactly as an
uninterrupted one.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import torch

from capdistill.allocation.interface import Allocation, Allocator, RoundContext
from capdistill.allocation.requirements import Intervention, identify_requirements, pilot_splits
from capdistill.capabilities.base import TASK
from capdistill.errors import CapdistillError

Split = dict[str, float]
PAIR_WEIGHTS = (0.25, 0.5, 0.75)  # the released code's sparse pair actions
CONTEXTS = ("compact", "paper")
CALIBRATIONS = ("affine", "affine_sigma", "off")
PROXY_UNITS = ("nats", "relative")


def _check(name: str, value: float, low: float = 0.0, high: float = math.inf) -> float:
    """`value` as a float if it is a finite number in [low, high]: NaN and infinity fail too (an infinite
    bonus, penalty or step count means nothing), naming the option."""
    if not (math.isfinite(value) and low <= value <= high):
        top = f"{high}]" if math.isfinite(high) else "inf)"
        raise CapdistillError(f"allocator.{name} must be in [{low}, {top}, got {value}")
    return float(value)


def total_variation(a: Split, b: Split) -> float:
    return 0.5 * sum(abs(a[c] - b[c]) for c in a)


def played(split: Split, decision: dict[str, Any], **notes: Any) -> Allocation:
    """`split` played, with `notes` and the choice added to the round's `decision`."""
    decision.update(**notes, chosen=split)
    return Allocation(dict(split), decision)


class Ensemble:
    """J MLPs (in -> hidden -> hidden -> 1, ReLU) held as batched weights and fit together.

    One Adam spans the run, so every refit is warm-started (the released code's habit).
    """

    def __init__(self, members: int, width: int, hidden: int, lr: float, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)

        def layer(fan_in: int, fan_out: int) -> list[torch.Tensor]:
            bound = 1 / math.sqrt(fan_in)  # nn.Linear's default initialisation
            w = (torch.rand(members, fan_in, fan_out, generator=g) * 2 - 1) * bound
            b = (torch.rand(members, 1, fan_out, generator=g) * 2 - 1) * bound
            return [w.requires_grad_(), b.requires_grad_()]

        self.params = layer(width, hidden) + layer(hidden, hidden) + layer(hidden, 1)
        self.optimizer = torch.optim.Adam(self.params, lr=lr, fused=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions [J, N] for per-member rows `x` [J, N, width] (or shared rows [N, width])."""
        w1, b1, w2, b2, w3, b3 = self.params
        if x.ndim == 2:
            x = x.expand(w1.shape[0], *x.shape)
        h = torch.relu(torch.baddbmm(b1, x, w1))
        h = torch.relu(torch.baddbmm(b2, h, w2))
        return torch.baddbmm(b3, h, w3).squeeze(-1)

    def fit(self, x: torch.Tensor, y: torch.Tensor, steps: int, generator: torch.Generator) -> None:
        """`steps` full-batch Adam steps, each member on its own bootstrap resample of (x, y)."""
        members = self.params[0].shape[0]
        idx = torch.randint(len(y), (members, len(y)), generator=generator)
        xb, yb = x[idx], y[idx]
        for _ in range(steps):
            self.optimizer.zero_grad()
            ((self(xb) - yb) ** 2).mean().backward()
            self.optimizer.step()


class ReadBandit(Allocator):
    """`read`: the paper's method; ablations through `use_requirements`, `adapt` and `beta=0`."""

    name = "read"

    def __init__(
        self,
        capabilities: list[str],
        seed: int = 0,
        *,
        top_k: int = 3,
        kappa: float = 1.0,
        kappa_decay: float = 0.7,
        kappa_every: float = 0.1,
        beta: float = 0.5,
        lam: float = 0.1,
        ensemble: int = 5,
        hidden: int = 64,
        fit_steps: int = 200,
        fit_lr: float = 1e-3,
        warmup: int = 5,
        max_candidates: int = 50,
        step: float = 0.1,
        tilt: float = 0.5,
        one_hots: bool = False,
        context: str = "compact",
        calibration: str = "affine",
        proxy_units: str | None = None,
        trust_radius: float | None = None,
        trust_z: float = 1.0,
        use_requirements: bool = True,
        adapt: bool = True,
        identify: str = "card",
        pilots: int = 5,
        pilot_fraction: float = 0.02,
        entropy_weight: float = 0.01,
    ) -> None:
        super().__init__(capabilities, seed)
        n = len(self.capabilities)
        self.top_k = int(_check("top_k", top_k, 1, n))
        self.kappa, self.kappa_decay = _check("kappa", kappa), _check("kappa_decay", kappa_decay, 0, 1)
        self.kappa_every = _check("kappa_every", kappa_every, 1e-9, 1)
        self.beta, self.lam = _check("beta", beta), _check("lam", lam)
        self.fit_steps, self.warmup = int(_check("fit_steps", fit_steps, 1)), int(_check("warmup", warmup))
        self.max_candidates = int(_check("max_candidates", max_candidates, 2))
        self.step, self.tilt = _check("step", step, 0, 1), _check("tilt", tilt, 0, 1)
        self.one_hots, self.use_requirements, self.adapt = one_hots, use_requirements, adapt
        proxy_units = proxy_units or "nats"  # null: the paper's units (the shipped config's value)
        for option, value, allowed in (
            ("context", context, CONTEXTS),
            ("calibration", calibration, CALIBRATIONS),
            ("proxy_units", proxy_units, PROXY_UNITS),
            ("identify", identify, ("card", "learned")),
        ):
            if value not in allowed:
                raise CapdistillError(f"allocator.{option} must be one of {', '.join(allowed)}; got {value!r}")
        # `identify` names the method that takes the pilots' interventions (the Allocator interface's)
        self.context, self.calibration, self.identify_from = context, calibration, identify
        self.proxy_units = proxy_units
        # a radius of 0 would keep every split at r: allocator=task_static, with a bandit's cost
        self.trust_radius = None if trust_radius is None else _check("trust_radius", trust_radius, 1e-9, 1)
        self.trust_z = _check("trust_z", trust_z)
        self.pilots = int(_check("pilots", pilots, 1))
        self.pilot_fraction = _check("pilot_fraction", pilot_fraction, 1e-9, 1)
        self.entropy_weight = _check("entropy_weight", entropy_weight)
        self.learned: Split | None = None
        self.ensemble, self.hidden = int(_check("ensemble", ensemble, 2)), int(_check("hidden", hidden, 1))
        self.fit_lr = _check("fit_lr", fit_lr, 1e-12)
        self.regressors: Ensemble | None = None  # the `ensemble` MLPs, built at the first row, once r is known
        self.rows: list[torch.Tensor] = []  # logged (context, action) rows
        self.rewards: list[float] = []
        self.predicted: list[tuple[float, float]] = []  # (mu, sigma) of each logged row before it was learned
        self.start: Split | None = None  # the proxy profile before round 0 (compact context's origin)
        self.first: Split | None = None  # the first split decided after warm-up (no-adaptation freezes it)
        self.last_check: float | None = None  # the task's dev proxy at the previous kappa check

    # ------------------------------------------------------------------ 1. requirements

    def requirements(self, context: RoundContext) -> Split:
        """r: uniform (the no-identification ablation), learned from pilots, or the task card's."""
        return self.requirements_from(context.requirements)

    def requirements_from(self, card: Split) -> Split:
        if not self.use_requirements:
            return {c: 1.0 / len(self.capabilities) for c in self.capabilities}
        if self.learned is not None:
            return dict(self.learned)
        return {c: float(card.get(c, 0.0)) for c in self.capabilities}

    def essential(self, r: Split) -> list[str]:
        """C_ess: the top-k capabilities by requirement weight, with every one tied with the k-th
        (a uniform r makes all of them essential rather than the first k in config order), and
        none of weight 0 (a task that needs two capabilities has two essential ones)."""
        ranked = sorted(self.capabilities, key=lambda c: -r[c])
        cut = r[ranked[self.top_k - 1]]
        return [c for c in ranked if r[c] >= cut - 1e-12 and r[c] > 0] or ranked[:1]

    def signals(self, requirements: Split) -> list[str]:
        """The dev proxies a decision reads: the task's (kappa decay) and the capabilities the reward
        weighs and C_ess, or every capability (the paper's context, a uniform or a learned r)."""
        if self.context == "paper" or not self.use_requirements or self.identify_from == "learned":
            return [*self.capabilities, TASK]
        r = self.requirements_from(requirements)
        needed = {c for c in self.capabilities if r[c] > 0} | set(self.essential(r))
        return [*(c for c in self.capabilities if c in needed), TASK]

    def pilot_splits(self) -> list[Split]:
        if self.identify_from == "card" or not self.use_requirements:
            return []
        return pilot_splits(self.capabilities, self.pilots, self.seed)

    def identify(self, interventions: list[Intervention]) -> Split:
        self.learned = identify_requirements(interventions, self.capabilities, self.entropy_weight)
        return dict(self.learned)

    # ------------------------------------------------------------------ 2. candidates

    def candidates(self, r: Split, previous: Split, rng: random.Random) -> list[Split]:
        """r, the previous split, sparse actions on C_ess (pairs, tilts, one-hots if asked), then
        local moves around the previous split in a seeded order; distinct, at most `max_candidates`."""
        zero = dict.fromkeys(self.capabilities, 0.0)
        ess = self.essential(r)
        sparse = [{**zero, a: w, b: 1.0 - w} for a, b in itertools.combinations(ess, 2) for w in PAIR_WEIGHTS]
        sparse += [{c: (1 - self.tilt) * r[c] + self.tilt * (c == e) for c in self.capabilities} for e in ess]
        if self.one_hots:
            sparse += [{**zero, e: 1.0} for e in ess]
        local = [
            {**previous, a: previous[a] - self.step, b: previous[b] + self.step}
            for a, b in itertools.permutations(self.capabilities, 2)
            if previous[a] >= self.step > 0
        ]
        rng.shuffle(sparse)
        rng.shuffle(local)
        unique: dict[tuple[float, ...], Split] = {}
        for split in [r, previous, *sparse, *local]:
            if self.trust_radius is None or total_variation(split, r) <= self.trust_radius + 1e-9:
                unique.setdefault(tuple(round(split[c], 6) for c in self.capabilities), split)
        return list(unique.values())[: self.max_candidates]

    # ------------------------------------------------------------------ 4. scoring

    def row(self, context: RoundContext, split: Split) -> torch.Tensor:
        """The regressors' input for playing `split` in `context` (see the module docstring)."""
        r = self.requirements(context)
        left = [context.budget_left / max(context.total_tokens, 1)]
        if self.context == "compact":
            ess = self.essential(r)
            origin = self.start or context.probe_loglik
            gains = [context.probe_loglik[c] - origin[c] for c in ess]
            action = [split[c] for c in ess] + [1.0 - sum(split[c] for c in ess)]
            return torch.tensor(left + gains + action, dtype=torch.float32)
        last = context.history[-1] if context.history else None
        before = context.history[-2]["probe_loglik"] if len(context.history) > 1 else self.start
        previous = [last["allocation"][c] if last else 0.0 for c in self.capabilities]
        gains = [last["probe_loglik"][c] - before[c] if last and before else 0.0 for c in self.capabilities]
        return torch.tensor(
            [r[c] for c in self.capabilities]
            + [context.probe_loglik[c] for c in self.capabilities]
            + left
            + previous
            + gains
            + [split[c] for c in self.capabilities],
            dtype=torch.float32,
        )

    def members(self, rows: torch.Tensor) -> torch.Tensor:
        """Each member's predicted reward [J, N], in reward units."""
        if self.regressors is None:
            self.regressors = Ensemble(self.ensemble, rows.shape[-1], self.hidden, self.fit_lr, self.seed)
        with torch.no_grad():
            predictions = self.regressors(rows)
        scale, shift = self.target_scale()
        return predictions * scale + shift

    def target_scale(self) -> tuple[float, float]:
        """Rewards are standardised for fitting; this maps predictions back."""
        if len(self.rewards) < 2:
            return 1.0, (self.rewards[0] if self.rewards else 0.0)
        t = torch.tensor(self.rewards, dtype=torch.float64)
        return float(t.std(unbiased=False).clamp_min(1e-9)), float(t.mean())

    def calibrate(self) -> tuple[float, float, float]:
        """(a, b, c): calibrated mean a * mu + b and spread c * sigma (c = 1 but for `affine_sigma`).

        Fitted on each logged transition's prediction made before it was learned; the identity
        until four exist. A fit with no positive slope (no usable signal yet) leaves the mean as
        it is (a = 1, b = 0); `affine_sigma` still rescales sigma then.
        """
        if self.calibration == "off" or len(self.predicted) < 4:
            return 1.0, 0.0, 1.0
        mu = torch.tensor([m for m, _ in self.predicted], dtype=torch.float64)
        sigma = torch.tensor([s for _, s in self.predicted], dtype=torch.float64).clamp_min(1e-9)
        y = torch.tensor(self.rewards, dtype=torch.float64)
        var = float(((mu - mu.mean()) ** 2).mean())
        a = float(((mu - mu.mean()) * (y - y.mean())).mean()) / var if var > 1e-18 else 0.0
        a, b = (a, float(y.mean() - a * mu.mean())) if a > 0 else (1.0, 0.0)
        if self.calibration == "affine":
            return a, b, 1.0
        c = float((((y - (a * mu + b)) / sigma) ** 2).mean().sqrt())
        return a, b, min(max(c, 0.1), 10.0)

    # ------------------------------------------------------------------ the interface

    def allocate(self, context: RoundContext) -> Allocation:
        """Steps 1 to 4 of the module docstring; `update` takes 5 and 6 once the round is measured."""
        self.remember_start(context)
        if self.frozen():
            return Allocation(dict(self.first), {"frozen": True, "chosen": dict(self.first)})
        r = self.requirements(context)  # 1.
        rng = random.Random(f"read/{self.seed}/{context.round}")
        options = self.candidates(r, self.previous(context, r), rng)  # 2.
        decision = {"essential": self.essential(r), "candidates": len(options), "kappa": self.kappa}
        if len(self.rewards) < self.warmup:  # 3. warm-up: a random candidate
            return played(rng.choice(options), decision, warmup=True)
        if self.prior_only():
            return played(r, decision, warmup=False)
        members = self.members(torch.stack([self.row(context, s) for s in options]))  # 4.
        slope, index = self.upper_confidence(options, members, decision)
        if not self.trusted(members, index, slope, decision):
            return played(r, decision, kept_prior=True)
        return Allocation(dict(options[index]), decision)

    def remember_start(self, context: RoundContext) -> None:
        """The proxy profile before round 0: the compact context's origin and the relative units' base."""
        if self.start is None:
            self.start = dict(context.probe_loglik)

    def frozen(self) -> bool:
        """`adapt=false` (an ablation): the split decided right after warm-up is kept to the end of the run."""
        return not self.adapt and self.first is not None

    def prior_only(self) -> bool:
        """Nothing logged and no warm-up (greedy's first round): r is played, there is nothing to be greedy about."""
        return not self.rewards

    def previous(self, context: RoundContext, r: Split) -> Split:
        """The split the local moves start from: the last round's, or r before round 0."""
        return dict(context.history[-1]["allocation"]) if context.history else r

    def upper_confidence(
        self, options: list[Split], members: torch.Tensor, decision: dict[str, Any]
    ) -> tuple[float, int]:
        """4. The candidate maximising the calibrated mean plus kappa times the calibrated spread of the members'
        predictions [J, N]; returns the calibration's slope with its index, and notes the choice in `decision`."""
        a, b, c = self.calibrate()
        mu = a * members.mean(0) + b
        sigma = c * members.std(0)
        index = int(torch.argmax(mu + self.kappa * sigma))
        decision.update(
            warmup=False,
            chosen=options[index],
            mu=float(mu[index]),
            sigma=float(sigma[index]),
            calibration=[a, b, c],
        )
        return a, index

    def trusted(self, members: torch.Tensor, index: int, slope: float, decision: dict[str, Any]) -> bool:
        """Beyond the paper (`trust_radius`): candidate `index` is played only if the members' paired advantage
        over r (options[0]), at the calibration's `slope`, is confidently positive; always without a trust region,
        or when r itself is the choice."""
        if self.trust_radius is None or index == 0:
            return True
        advantage = slope * (members[:, index] - members[:, 0])
        margin = float(advantage.mean() - self.trust_z * advantage.std())
        decision["advantage_margin"] = margin
        return margin > 0

    def update(self, context: RoundContext, allocation: Split, outcome: dict[str, Any]) -> dict[str, Any]:
        """5. The round's reward on the dev proxy, logged with its context and action; then refit;
        6. kappa decays at every `kappa_every` of the budget that left the task's dev proxy no better."""
        self.remember_start(context)
        if self.first is None and len(self.rewards) >= self.warmup:
            self.first = dict(allocation)
        r = self.requirements(context)
        read = self.signals(context.requirements)
        ds = {c: outcome["probe_loglik"][c] - context.probe_loglik[c] for c in self.capabilities if c in read}
        units = self.units(ds)
        gain = sum(r[c] * units[c] for c in ds)
        spill = sum(r[c] * max(0.0, -units[c]) for c in self.essential(r))
        cost = sum(outcome["spent_by_capability"].values()) / max(context.total_tokens, 1)
        reward = gain - self.beta * spill - self.lam * cost
        row = self.row(context, {c: allocation.get(c, 0.0) for c in self.capabilities})
        members = self.members(row[None])[:, 0]
        self.predicted.append((float(members.mean()), float(members.std())))
        self.rows.append(row)
        self.rewards.append(reward)
        if self.adapt or self.first is None:  # a frozen split (no adaptation) needs no more fits
            self.refit(context.round)
        self.decay_kappa(context, outcome)
        measured = {
            "reward": reward,
            "gain": gain,
            "spill": spill,
            "cost": cost,
            "delta_loglik": ds,
            "kappa": self.kappa,
        }
        return measured if units is ds else {**measured, "delta_relative": units}

    def units(self, ds: Split) -> Split:
        """The proxy changes in the reward's units: nats, or shares of each capability's dev NLL
        before round 0 (`proxy_units="relative"`)."""
        if self.proxy_units == "nats":
            return ds
        positive = [c for c in ds if self.start[c] >= 0]
        if positive:
            c = positive[0]
            raise CapdistillError(
                f"allocator.proxy_units=relative needs a log-likelihood proxy (< 0); {c}'s starts at {self.start[c]}"
            )
        return {c: d / -self.start[c] for c, d in ds.items()}

    def refit(self, round_index: int) -> None:
        scale, shift = self.target_scale()
        y = (torch.tensor(self.rewards) - shift) / scale
        generator = torch.Generator().manual_seed(self.seed * 100_003 + round_index)
        self.regressors.fit(torch.stack(self.rows), y, self.fit_steps, generator)

    def decay_kappa(self, context: RoundContext, outcome: dict[str, Any]) -> None:
        before = context.spent_tokens / max(context.total_tokens, 1)
        after = before + sum(outcome["spent_by_capability"].values()) / max(context.total_tokens, 1)
        if self.last_check is None:
            self.last_check = context.task_loglik
        if math.floor(after / self.kappa_every + 1e-9) > math.floor(before / self.kappa_every + 1e-9):
            if outcome["task_loglik"] <= self.last_check:
                self.kappa *= self.kappa_decay
            self.last_check = outcome["task_loglik"]


class Greedy(ReadBandit):
    """`greedy`: the bandit's one-step choice with no exploration (kappa = 0, no warm-up)."""

    name = "greedy"

    def __init__(self, capabilities: list[str], seed: int = 0, **options: Any) -> None:
        if options.get("kappa") or options.get("warmup"):
            raise CapdistillError("allocator=greedy never explores: it takes no kappa or warmup (use allocator=read)")
        super().__init__(capabilities, seed, **{**options, "kappa": 0.0, "warmup": 0})
