"""Student training throughput on one round's supervision: packed batches against padded batches and a
batch-1 loop, on the same model and the same examples, side by side in one run (tokens per second
of real, non-pad tokens; median of N fits each).

    .venv/bin/python benchmarks/bench_packing.py --tokens 20000 --runs 3
    .venv/bin/python benchmarks/bench_packing.py -o trainer=gpu
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from round_bench import one_round, write_json  # noqa: E402

from capdistill.losses import SFTLoss  # noqa: E402


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000, help="supervision tokens of the round")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per batch (padded and packed)")
    parser.add_argument("--pack-length", type=int, default=4096, help="tokens per packed row")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-o", "--override", action="append", default=[], help="a config override (repeatable)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    with one_round(args.override, SFTLoss(), args.tokens) as r:
        padded = replace(r.settings.distill, batch_size=args.batch_size, packing=False)
        variants = {
            "batch 1": replace(r.settings, distill=replace(padded, batch_size=1)),
            "padded": replace(r.settings, distill=padded),
            "packed": replace(r.settings, distill=replace(padded, packing=True, pack_length=args.pack_length)),
        }
        times = r.time_fits(variants, args.runs)
        print(
            f"student {r.cfg.student.name}, {r.spent} supervision tokens, batch {args.batch_size}, rows of {args.pack_length}"
        )
    rates = {name: tokens / seconds for name, (seconds, tokens) in times.items()}
    print(f"{'training one round':<20} {'median s':>9} {'tokens/s':>10} {'/ batch 1':>10}   (of {args.runs})")
    for name, (seconds, _) in times.items():
        print(f"{name:<20} {seconds:>9.2f} {rates[name]:>10.0f} {rates[name] / rates['batch 1']:>10.2f}")
    figures = {name: {"seconds": t[0], "tokens_per_s": rates[name]} for name, t in times.items()}
    return write_json(args.json, figures | {"packed_over_batch_1": rates["packed"] / rates["batch 1"]})


if __name__ == "__main__":
    main()
