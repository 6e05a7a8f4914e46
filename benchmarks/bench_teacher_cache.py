"""Training wall time of one round, teacher logit cache against the live teacher, side by side in one run.

The teacher writes one round of supervision once, keeping its top-k rows; then the same student (reset
each time) trains on it with `loss=topk`, alternately from the cache (no teacher forward) and with a
teacher forward on every batch. Median of N fits each, and their ratio. Then the bytes per token the cache
stores at the vocabularies of real model families (the keeper on random logits of that width).

    .venv/bin/python benchmarks/bench_teacher_cache.py --tokens 20000 --runs 3
    .venv/bin/python benchmarks/bench_teacher_cache.py -o trainer=gpu   # any config override
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from round_bench import one_round, write_json  # noqa: E402

from capdistill.losses import TopKLoss  # noqa: E402
from capdistill.losses.sparse import CacheSpec  # noqa: E402
from capdistill.supervision.teacher_cache import CachedTeacher, keeper  # noqa: E402

VOCABULARIES = {"SmolLM2": 49_152, "Llama 3": 128_256, "Qwen2.5": 152_064}


def storage(k: int, rows: int = 64) -> dict[str, dict[str, float]]:
    """Bytes per token of the top-k cache at each of `VOCABULARIES`, fp16 and uint8 log-probabilities."""
    table = {}
    for name, vocab in VOCABULARIES.items():
        logits = torch.randn(rows, vocab)
        table[name] = {}
        for precision, quantized in (("float16", False), ("uint8", True)):
            ids, values = keeper(CacheSpec("topk", k, quantized=quantized), name, torch.device("cpu"))(logits)
            table[name][precision] = CachedTeacher(ids, values).nbytes / rows
    return table


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000, help="supervision tokens of the round")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-o", "--override", action="append", default=[], help="a config override (repeatable)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    with one_round(args.override, TopKLoss(k=args.k), args.tokens) as r:
        times = r.time_fits({"live teacher": replace(r.settings, cache=None), "cache": r.settings}, args.runs)
        stored = sum(e.teacher.nbytes for s in r.slices for e in s.examples if e.teacher is not None)
        print(
            f"teacher {r.cfg.teacher.name}, student {r.cfg.student.name}, {r.spent} supervision tokens, topk k={args.k}"
        )
        print(f"cache: {stored / max(r.spent, 1):.1f} bytes per token ({stored} bytes)")
    print(f"{'training one round':<20} {'median s':>9}   (of {args.runs})")
    for mode, (seconds, _) in times.items():
        print(f"{mode:<20} {seconds:>9.2f}")
    ratio = times["live teacher"][0] / times["cache"][0]
    print(f"live / cache: {ratio:.2f}x")
    table = storage(args.k)
    print(f"bytes per token at k={args.k}: " + ", ".join(f"{n} ({VOCABULARIES[n]:,}) {b}" for n, b in table.items()))
    figures = {"live_s": times["live teacher"][0], "cache_s": times["cache"][0], "live_over_cache": ratio}
    figures |= {"bytes_per_token": stored / max(r.spent, 1), "tokens": r.spent, "bytes_per_token_by_vocabulary": table}
    return write_json(args.json, figures)


if __name__ == "__main__":
    main()
