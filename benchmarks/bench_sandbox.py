"""The sandbox's cost: HumanEval programs per second run isolated (bubblewrap) and unisolated (the runner
before isolation, which `evaluation.allow_unsafe_code=true` still gives where isolation is missing), side by
side in one run, interleaved so that load on the machine falls on both alike.

    .venv/bin/python benchmarks/bench_sandbox.py --problems 40 --repeats 3

Each program is a problem's prompt, canonical solution and unit tests, as the `code` capability runs them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

from capdistill.capabilities.real import sandbox
from capdistill.capabilities.real.humaneval_problems import load_problems, program


def rate(programs: list[str], isolated: bool) -> float:
    """Programs per second, one after another, as a scorer runs them."""
    with (
        mock.patch.object(sandbox, "isolation", sandbox.isolation if isolated else lambda: None),
        mock.patch.dict("os.environ", {sandbox.UNSAFE_ENV: "1"}),
    ):
        start = time.perf_counter()
        passed = [sandbox.run_python(p).passed for p in programs]
    assert all(passed), "a canonical solution failed"
    return len(programs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tool = sandbox.isolation()
    if tool is None:
        raise SystemExit("bubblewrap cannot isolate programs on this machine: nothing to compare")
    programs = [program(p, p["canonical_solution"]) for p in load_problems()[: args.problems]]
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for isolated in (False, True):
            rates[isolated].append(rate(programs, isolated))
    unsafe, isolated = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"{len(programs)} HumanEval programs x {args.repeats} repeats, median programs/s")
    print(
        f"unisolated: {unsafe:.2f}/s   isolated ({tool}, {sandbox.process_limit() or 'no'} process limit): "
        f"{isolated:.2f}/s   ratio isolated/unisolated: {isolated / unsafe:.2f}"
    )


if __name__ == "__main__":
    main()
