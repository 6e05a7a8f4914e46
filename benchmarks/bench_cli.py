"""CLI start-up: wall time of `capdistill` subcommands that compose or parse but run nothing, side by side
with a bare `python -c pass` and with importing torch (what they must not pay for), median of N runs.

    .venv/bin/python benchmarks/bench_cli.py --runs 5

The target (issue 16): `capdistill --help` under 2 s on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("capdistill"))
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "capdistill --help": [CLI, "--help"],
    "capdistill plot --help": [CLI, "plot", "--help"],
    "capdistill distill --cfg job": [CLI, "distill", "experiment=micro", "--cfg", "job"],
    "capdistill distill --help": [CLI, "distill", "--help"],
}


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = {label: statistics.median(wall(argv) for _ in range(args.runs)) for label, argv in COMMANDS.items()}
    base = times["python -c pass"]
    print(f"median of {args.runs} runs")
    print(f"{'command':<32} {'seconds':>8} {'/ python':>9}")
    for label, seconds in times.items():
        print(f"{label:<32} {seconds:>8.3f} {seconds / base:>9.1f}")


if __name__ == "__main__":
    main()
