"""Allocators on the simulated capability worlds (no training): final task utility, mean ± std over seeds.

    .venv/bin/python benchmarks/bench_allocators.py --seeds 5 --rounds 20 --world toy
    .venv/bin/python benchmarks/bench_allocators.py --seeds 5 --rounds 20 --world interference

Prints the best split held fixed (brute force, noise-free) as the reference optimum and,
per allocator, the utility reached, its ratio to that optimum and the spillover (points
lost on required capabilities).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from capdistill.allocation import build_allocator
from capdistill.allocation.simulate import best_fixed_split, interference_world, simulate, toy_world

ALLOCATORS = {
    "uniform": {},
    "task_static": {},
    "random": {},
    "greedy": {},
    "read": {},
    "read (beta=0)": {"beta": 0.0},
    "read (no requirements)": {"use_requirements": False},
    "read (no adaptation)": {"adapt": False},
    "read (paper context)": {"context": "paper"},
    "read (no calibration)": {"calibration": "off"},
    "read (learned requirements)": {"identify": "learned", "pilots": 10, "pilot_fraction": 0.05},
    "read (trust region 0.3)": {"trust_radius": 0.3},
}
WORLDS = {"toy": toy_world, "interference": interference_world}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--world", choices=sorted(WORLDS), default="toy")
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = WORLDS[args.world]()
    split, optimum = best_fixed_split(world, args.rounds)
    print(f"best fixed split {split}: utility {optimum:.2f}")
    print(f"{'allocator':<30} {'utility':>16} {'/ optimum':>10} {'spillover':>16} {'s/run':>7}")
    for label, options in ALLOCATORS.items():
        name = label.split(" ")[0]
        utilities, spills, start = [], [], time.perf_counter()
        for seed in range(args.seeds):
            allocator = build_allocator(name, world.names, seed, **options)
            result = simulate(allocator, world, args.rounds, seed=seed)
            utilities.append(result.utility)
            spills.append(result.spillover)
        mean, std = statistics.mean(utilities), statistics.stdev(utilities) if args.seeds > 1 else 0.0
        spill = f"{statistics.mean(spills):.2f} ± {statistics.stdev(spills) if args.seeds > 1 else 0.0:.2f}"
        seconds = (time.perf_counter() - start) / args.seeds
        print(f"{label:<30} {mean:>8.2f} ± {std:<5.2f} {mean / optimum:>10.3f} {spill:>16} {seconds:>7.2f}")


if __name__ == "__main__":
    main()
