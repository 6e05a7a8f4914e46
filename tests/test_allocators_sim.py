"""Allocators on the simulated capability world, and the ReAD bandit's steps one by one."""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch

from capdistill.allocation import RoundContext
from capdistill.allocation.bandit import PAIR_WEIGHTS, Greedy, ReadBandit, total_variation
from capdistill.allocation.requirements import Intervention, identify_requirements, pilot_splits
from capdistill.allocation.simulate import interference_world, simulate, toy_world
from capdistill.allocation.static import Fixed, Single
from capdistill.capabilities.base import TASK
from capdistill.components import shipped_allocators
from capdistill.config.hydra_setup import CONF_DIR
from capdistill.errors import CapdistillError

WORLD = toy_world()
ROUNDS = 12
# every conf/allocator option, built as a run builds it; read_relative needs a log-likelihood proxy,
# which the simulated worlds do not have (their dev signal is a score)
SHIPPED = {k: v for k, v in shipped_allocators(CONF_DIR).items() if k != "read_relative"}
R = {"math": 0.5, "code": 0.3, "tool_use": 0.2, "reasoning": 0.0, "safety": 0.0}


def context(index: int = 0, loglik: dict[str, float] | None = None, task: float = -1.0, spent: int = 0, history=()):
    return RoundContext(
        index, 20, WORLD.names, R, loglik or dict.fromkeys(WORLD.names, -1.0), task, 1000, spent, list(history)
    )


def utilities(name: str, world=WORLD, rounds: int = ROUNDS, seeds: int = 5, **options) -> list[float]:
    """`name`: a conf/allocator option; `options`: ReAD's keyword options instead."""
    make = (lambda names, seed: ReadBandit(names, seed, **options)) if options else SHIPPED[name]
    return [simulate(make(world.names, s), world, rounds, seed=s).utility for s in range(seeds)]


ALLOCATORS = {
    **SHIPPED,
    "fixed": lambda names, seed: Fixed(names, seed, weights={"math": 1.0}),
    "single": lambda names, seed: Single(names, seed, capability="code"),
}


@pytest.mark.parametrize("name", sorted(ALLOCATORS))
def test_every_allocator_returns_a_split_over_known_capabilities(name: str) -> None:
    allocator = ALLOCATORS[name](WORLD.names, 0)
    result = simulate(allocator, WORLD, 4, seed=0)
    for entry in result.history:
        split = entry["allocation"]
        assert set(split) == set(WORLD.names)
        assert all(w >= 0 for w in split.values()) and sum(split.values()) == pytest.approx(1.0)
    zeros = dict.fromkeys(WORLD.names, 0.0)
    raw = allocator.decide(RoundContext(4, 8, WORLD.names, WORLD.requirements, zeros, 0.0, 100, 50)).split
    assert set(raw) <= set(WORLD.names) and min(raw.values()) >= 0 and sum(raw.values()) == pytest.approx(1.0)


# ---------------------------------------------------------------------------- the bandit's steps


def test_candidates_are_r_the_previous_split_sparse_actions_and_local_moves() -> None:
    bandit = ReadBandit(WORLD.names, 0)
    previous = {"math": 0.6, "code": 0.4, "tool_use": 0.0, "reasoning": 0.0, "safety": 0.0}
    options = bandit.candidates(R, previous, random.Random(0))
    keys = {tuple(round(s[c], 6) for c in WORLD.names) for s in options}
    assert len(keys) == len(options) <= 50
    assert options[0] == R and options[1] == previous
    for a, b in (("math", "code"), ("math", "tool_use"), ("code", "tool_use")):  # pairs on C_ess
        for w in PAIR_WEIGHTS:
            assert tuple(round({a: w, b: 1 - w}.get(c, 0.0), 6) for c in WORLD.names) in keys
    tilt = {c: 0.5 * R[c] + 0.5 * (c == "tool_use") for c in WORLD.names}  # towards one essential capability
    assert tuple(round(tilt[c], 6) for c in WORLD.names) in keys
    assert not any(max(s.values()) == 1.0 for s in options)  # no one-hot: the released code has none
    moved = [s for s in options if total_variation(s, previous) == pytest.approx(bandit.step)]
    assert moved, "local moves around the previous split"


def test_round_zero_perturbs_r_and_the_trust_region_stays_near_it() -> None:
    first = ReadBandit(WORLD.names, 0).candidates(R, R, random.Random(0))
    assert first[0] == R and any(total_variation(s, R) == pytest.approx(0.1) for s in first)
    trust = ReadBandit(WORLD.names, 0, trust_radius=0.3).candidates(R, R, random.Random(0))
    assert trust[0] == R and all(total_variation(s, R) <= 0.3 + 1e-9 for s in trust)
    assert len(trust) < len(first)


def test_a_uniform_prior_makes_every_capability_essential() -> None:
    """The no-identification ablation: ties at the k-th weight are all essential, not the first k in config order."""
    bandit = ReadBandit(WORLD.names, 0, use_requirements=False)
    assert bandit.essential(bandit.requirements(context())) == WORLD.names
    assert ReadBandit(WORLD.names, 0).essential(R) == ["math", "code", "tool_use"]
    two = {"math": 0.5, "code": 0.5, "tool_use": 0.0, "reasoning": 0.0, "safety": 0.0}
    assert ReadBandit(WORLD.names, 0).essential(two) == ["math", "code"]  # none of weight 0


def test_warm_up_plays_random_candidates_then_the_ensemble_decides() -> None:
    result = simulate(ReadBandit(WORLD.names, 0, warmup=3, fit_steps=20), WORLD, 6, seed=0)
    flags = [e["decision"]["warmup"] for e in result.history]
    assert flags == [True, True, True, False, False, False]
    assert {"mu", "sigma", "calibration"} <= set(result.history[-1]["decision"])
    assert result.history[-1]["decision"]["essential"] == ["math", "code", "tool_use"]


def test_greedy_never_explores_and_opens_with_r() -> None:
    result = simulate(Greedy(WORLD.names, 0, fit_steps=20), WORLD, 4, seed=0)
    assert all(not e["decision"]["warmup"] and e["decision"]["kappa"] == 0.0 for e in result.history)
    assert result.history[0]["allocation"] == pytest.approx(WORLD.requirements | {"reasoning": 0.0, "safety": 0.0})
    with pytest.raises(CapdistillError, match="never explores"):
        Greedy(WORLD.names, kappa=1.0)


def test_no_adaptation_keeps_the_first_split_decided_after_warm_up() -> None:
    options = {"adapt": False, "warmup": 2, "fit_steps": 20}
    result = simulate(ReadBandit(WORLD.names, 0, **options), WORLD, 6, seed=0)
    flags = [e["decision"].get("warmup") for e in result.history]
    assert flags[:3] == [True, True, False]  # it learns from its warm-up once, then decides
    decided = result.history[2]["allocation"]
    assert all(e["allocation"] == decided and e["decision"]["frozen"] for e in result.history[3:])


def test_the_reward_is_the_papers_on_the_dev_proxy() -> None:
    """R = r.ds - beta * Spill - lam * cost, Spill over C_ess only, by hand."""
    bandit = ReadBandit(WORLD.names, 0, beta=0.5, lam=0.1, fit_steps=1)
    before = dict.fromkeys(WORLD.names, -1.0)
    after = {"math": -0.8, "code": -1.1, "tool_use": -1.0, "reasoning": -1.5, "safety": -0.9}
    outcome = {"allocation": {}, "spent_by_capability": {"math": 50}, "probe_loglik": after, "task_loglik": -0.9}
    got = bandit.update(context(loglik=before), {"math": 1.0}, outcome)
    gain = 0.5 * 0.2 + 0.3 * -0.1 + 0.2 * 0.0
    spill = 0.3 * 0.1  # reasoning fell too, but it is not essential
    assert got["reward"] == pytest.approx(gain - 0.5 * spill - 0.1 * 0.05)
    assert got["gain"] == pytest.approx(gain) and got["spill"] == pytest.approx(spill)
    assert bandit.signals(R) == ["math", "code", "tool_use", TASK]  # all a decision reads of the proxy


def test_relative_units_measure_each_change_as_a_share_of_its_starting_nll() -> None:
    """proxy_units=relative: ds_c / NLL_c before round 0, in the gain and the spillover alike."""
    bandit = ReadBandit(WORLD.names, 0, beta=0.5, lam=0.0, fit_steps=1, proxy_units="relative")
    before = {"math": -2.0, "code": -0.5, "tool_use": -1.0, "reasoning": -1.0, "safety": -1.0}
    after = {"math": -1.0, "code": -0.6, "tool_use": -1.0, "reasoning": -1.5, "safety": -0.9}
    outcome = {"spent_by_capability": {"math": 50}, "probe_loglik": after, "task_loglik": -0.9}
    got = bandit.update(context(loglik=before), {"math": 1.0}, outcome)
    share = {"math": 1.0 / 2.0, "code": -0.1 / 0.5, "tool_use": 0.0}
    assert got["delta_relative"] == pytest.approx(share)
    assert got["delta_loglik"] == pytest.approx({"math": 1.0, "code": -0.1, "tool_use": 0.0})
    spill = 0.3 * 0.2
    assert got["reward"] == pytest.approx(0.5 * 0.5 + 0.3 * -0.2 - 0.5 * spill)
    # in nats the same round is worth a different reward: the units matter
    nats = ReadBandit(WORLD.names, 0, beta=0.5, lam=0.0, fit_steps=1)
    assert nats.update(context(loglik=before), {"math": 1.0}, outcome)["reward"] == pytest.approx(
        0.5 * 1.0 + 0.3 * -0.1 - 0.5 * 0.3 * 0.1
    )
    # a signal that is not a log-likelihood (the simulator's scores are >= 0) has no NLL to share
    scores = ReadBandit(WORLD.names, 0, fit_steps=1, proxy_units="relative")
    with pytest.raises(CapdistillError, match="proxy_units=relative needs a log-likelihood proxy"):
        scores.update(context(loglik={**before, "code": 0.3}), {"math": 1.0}, outcome)


def test_the_spillover_penalty_changes_the_decision() -> None:
    """Two actions with the same task gain; one erodes code. Without beta the bandit cannot tell them apart
    in reward; with beta it learns to avoid the eroding one."""
    eroding = {"math": 1.0, "code": 0.0, "tool_use": 0.0, "reasoning": 0.0, "safety": 0.0}
    safe = {"math": 0.6, "code": 0.4, "tool_use": 0.0, "reasoning": 0.0, "safety": 0.0}

    def outcome(split: dict[str, float]) -> dict[str, float]:
        if split is eroding:
            return {"math": -0.6, "code": -1.1, "tool_use": -1.0, "reasoning": -1.0, "safety": -1.0}
        return {"math": -0.8, "code": -1.0 + 0.2 / 3, "tool_use": -1.0, "reasoning": -1.0, "safety": -1.0}

    chosen = {}
    for beta in (0.0, 2.0):
        bandit = ReadBandit(WORLD.names, 0, beta=beta, warmup=0, kappa=0.0, calibration="off")
        for i in range(8):
            split = (eroding, safe)[i % 2]
            after = outcome(split)
            entry = {"spent_by_capability": {"math": 50}, "probe_loglik": after, "task_loglik": -1.0}
            bandit.update(context(i, spent=50 * i), split, entry)
        rows = torch.stack([bandit.row(context(8, spent=400), s) for s in (eroding, safe)])
        mu = bandit.members(rows).mean(0)
        chosen[beta] = "safe" if mu[1] > mu[0] else "eroding"
    assert chosen == {0.0: "eroding", 2.0: "safe"}


def test_calibration_fits_the_mean_and_can_change_the_decision() -> None:
    predicted = [(0.0, 0.1), (1.0, 0.1), (2.0, 0.2), (3.0, 0.2), (4.0, 0.1)]
    rewards = [1.0, 3.01, 4.99, 7.0, 9.01]  # nearly linear in mu: sigma overstates the error
    calibrations = {}
    for kind in ("affine", "affine_sigma", "off"):
        bandit = ReadBandit(WORLD.names, 0, calibration=kind)
        bandit.predicted, bandit.rewards = predicted, rewards
        calibrations[kind] = bandit.calibrate()
    a, b, c = calibrations["affine"]
    mu = torch.tensor([m for m, _ in predicted], dtype=torch.float64)
    y = torch.tensor(rewards, dtype=torch.float64)
    slope = float(((mu - mu.mean()) * (y - y.mean())).sum() / ((mu - mu.mean()) ** 2).sum())
    assert (a, b, c) == pytest.approx((slope, float(y.mean() - slope * mu.mean()), 1.0))
    residual = [(yi - a * m - b) / s for (m, s), yi in zip(predicted, rewards)]
    spread = max(0.1, math.sqrt(statistics.mean(r * r for r in residual)))  # floored at 0.1
    assert calibrations["affine_sigma"] == pytest.approx((a, b, spread))
    assert calibrations["off"] == (1.0, 0.0, 1.0)
    # the raw score mu + sigma prefers the first candidate, the calibrated a * mu + b + sigma the second
    raw = [(1.0, 0.35), (1.2, 0.1)]
    assert max(raw, key=lambda p: p[0] + p[1]) == raw[0]
    assert max(raw, key=lambda p: a * p[0] + b + c * p[1]) == raw[1]


def test_kappa_decays_when_the_task_dev_proxy_stagnates_at_each_tenth_of_the_budget() -> None:
    bandit = ReadBandit(WORLD.names, 0, kappa=1.0, kappa_decay=0.5, fit_steps=1)
    loglik = dict.fromkeys(WORLD.names, -1.0)
    tasks = [-1.0, -0.9, -0.95, -0.95]  # better, worse, the same: decays at the second and third checks
    kappas = []
    for i, after in enumerate(tasks[1:]):
        outcome = {"spent_by_capability": {"math": 100}, "probe_loglik": loglik, "task_loglik": after}
        kappas.append(bandit.update(context(i, loglik, tasks[i], spent=100 * i), {"math": 1.0}, outcome)["kappa"])
    assert kappas == [1.0, 0.5, 0.25]


def test_the_trust_region_plays_r_unless_confidently_better() -> None:
    result = simulate(ReadBandit(WORLD.names, 1, trust_radius=0.2, warmup=2, fit_steps=20), WORLD, 8, 1)
    later = [e["decision"] for e in result.history[2:]]
    r = {c: WORLD.requirements.get(c, 0.0) for c in WORLD.names}
    # a choice other than r must pass the gate; r itself needs none
    assert all("advantage_margin" in d for d in later if d["chosen"] != r)
    for d, entry in zip(later, result.history[2:]):
        expected = WORLD.requirements if d.get("advantage_margin", 1.0) <= 0 else d["chosen"]
        assert entry["allocation"] == pytest.approx({c: expected.get(c, 0.0) for c in WORLD.names})
        assert total_variation(entry["allocation"], {c: WORLD.requirements.get(c, 0.0) for c in WORLD.names}) <= 0.2
    assert any(d.get("kept_prior") for d in later)


def test_replaying_updates_reproduces_the_next_decision() -> None:
    """What resume relies on: a fresh bandit fed the logged rounds decides as the original did."""
    options = {"warmup": 2, "fit_steps": 30}
    result = simulate(ReadBandit(WORLD.names, 3, **options), WORLD, 6, seed=3)
    replayed = ReadBandit(WORLD.names, 3, **options)
    for ctx, entry in zip(result.contexts[:5], result.history[:5]):
        replayed.decide(ctx)
        replayed.update(ctx, entry["allocation"], entry)
    decided = replayed.decide(result.contexts[5])
    assert decided.split == pytest.approx(result.history[5]["allocation"])
    assert decided.decision["mu"] == pytest.approx(result.history[5]["decision"]["mu"])
    fresh = ReadBandit(WORLD.names, 3, **options).decide(result.contexts[5])  # fed nothing: must differ
    assert fresh.decision["warmup"] and "mu" not in fresh.decision


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"top_k": 9}, "top_k"),
        ({"beta": -1.0}, "beta"),
        ({"kappa": -0.1}, "kappa"),
        ({"lam": -1}, "lam"),
        ({"identify": "guess"}, "identify"),
        ({"pilot_fraction": 0.0}, "pilot_fraction"),
        ({"context": "full"}, "context"),
        ({"calibration": "isotonic"}, "calibration"),
        ({"proxy_units": "bits"}, "proxy_units"),
        ({"trust_radius": 2.0}, "trust_radius"),
    ],
)
def test_bad_bandit_options(options: dict, needle: str) -> None:
    with pytest.raises(CapdistillError, match=needle):
        ReadBandit(WORLD.names, **options)


# ---------------------------------------------------------------------------- requirement identification


def test_identify_requirements_recovers_a_linear_utility() -> None:
    """Brute-force check: utility changes generated by a known r are explained by that r."""
    names = ["a", "b", "c", "d"]
    truth = {"a": 0.6, "b": 0.3, "c": 0.1, "d": 0.0}
    rng = random.Random(0)
    interventions = []
    for _ in range(12):
        ds = {c: rng.uniform(-5, 10) for c in names}
        interventions.append(Intervention({}, ds, sum(truth[c] * ds[c] for c in names)))
    found = identify_requirements(interventions, names, entropy_weight=0.0, steps=2000)
    assert found == pytest.approx(truth, abs=0.03)


def test_pilot_splits_are_sparse_seeded_splits() -> None:
    splits = pilot_splits(WORLD.names, 6, seed=1)
    assert splits == pilot_splits(WORLD.names, 6, seed=1) and splits != pilot_splits(WORLD.names, 6, seed=2)
    for split in splits:
        assert sum(w > 0 for w in split.values()) == 2 and sum(split.values()) == pytest.approx(1.0)
    with pytest.raises(CapdistillError, match="support"):
        pilot_splits(WORLD.names, 1, seed=0, support=9)


def test_learned_requirements_find_what_the_task_needs() -> None:
    """From 10 noisy pilots, identification puts most weight on the task's real requirements."""
    mass = []
    for seed in range(4):
        allocator = ReadBandit(WORLD.names, seed, identify="learned", pilots=10, pilot_fraction=0.05)
        result = simulate(allocator, WORLD, 1, seed=seed)
        assert len(result.interventions) == 10
        assert allocator.requirements(result.contexts[0]) == result.requirements
        mass.append(sum(result.requirements[c] for c in WORLD.requirements))
    assert statistics.mean(mass) >= 0.85


# ---------------------------------------------------------------------------- against the baselines


@pytest.mark.slow
def test_read_beats_uniform_and_the_trust_region_keeps_task_static_s_floor() -> None:
    """On both simulated worlds, over the default 20 rounds: read clearly beats uniform; the trust-region
    variant, which falls back to r, is never clearly worse than task_static (whose split r is): its
    warm-up explores inside the region, which costs it about a point where r is optimal."""
    for world in (WORLD, interference_world()):
        uniform = statistics.mean(utilities("uniform", world, 20))
        static = statistics.mean(utilities("task_static", world, 20))
        assert statistics.mean(utilities("read", world, 20, fit_steps=100)) > uniform + 5
        assert statistics.mean(utilities("read", world, 20, fit_steps=100, trust_radius=0.3)) >= static - 1.5
