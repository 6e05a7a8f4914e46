"""Training wall time of one round, teacher logit cache against the live teacher, side by side in one run.

The teacher writes one round of supervision once, keeping its top-k rows; then the same student (reset
each time) trains on it with `loss=topk`, alternately from the cache (no teacher forward) and with a
teacher forward on every batch. Median of N fits each, and their ratio.

    .venv/bin/python benchmarks/bench_teacher_cache.py --tokens 20000 --runs 3
    .venv/bin/python benchmarks/bench_teacher_cache.py -o trainer=gpu   # any config override
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from capdistill.components import model_requests, optimizer_settings, round_settings, world_sources
from capdistill.config.hydra_setup import compose_root
from capdistill.distill.module import DistillationModule
from capdistill.distill.rounds import generate_round, train_round
from capdistill.losses import TopKLoss
from capdistill.supervision.budget import split_tokens
from capdistill.supervision.slices import PromptStream
from capdistill.world.build import ensure_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=20_000, help="supervision tokens of the round")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-o", "--override", action="append", default=[], help="a config override (repeatable)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_root(["experiment=smoke", "logger=none", f"paths.output_dir={tmp}", *args.override])
        sources = world_sources(cfg)
        models = model_requests(cfg)
        teacher = ensure_model(models["teacher"], sources, Path(tmp))
        student = ensure_model(models["student"], sources, Path(tmp))
        device = torch.device("cuda" if cfg.trainer.get("accelerator") in ("gpu", "cuda") else "cpu")
        loss, optim = TopKLoss(k=args.k), optimizer_settings(cfg)
        settings = round_settings(cfg, loss)
        names = list(cfg.capabilities.names)
        streams = {c: PromptStream(sources.capabilities[c], "bench", sources.difficulties) for c in names}
        shares = split_tokens(args.tokens, dict.fromkeys(names, 1.0))
        teacher.model.eval().requires_grad_(False).to(device)
        student.model.to(device)
        slices = generate_round(settings, shares, streams, {}, teacher, student, device)
        base = copy.deepcopy(student.model.state_dict())
        times: dict[str, list[float]] = {"live teacher": [], "cache": []}
        for _ in range(args.runs):
            for mode in times:
                student.model.load_state_dict(base)
                module = DistillationModule(student.model, teacher.model, loss, optim)
                fit = replace(settings, cache=settings.cache if mode == "cache" else None)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                train_round(fit, 0, slices, module, teacher, student, (0.0, 1.0), 0)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[mode].append(time.perf_counter() - start)
        kept = [e.teacher for s in slices for e in s.examples]
        spent = sum(s.spent for s in slices)
        stored = sum(c.nbytes for c in kept if c is not None)
    median = {mode: statistics.median(t) for mode, t in times.items()}
    print(f"teacher {cfg.teacher.name}, student {cfg.student.name}, {spent} supervision tokens, topk k={args.k}")
    print(f"cache: {stored / max(spent, 1):.1f} bytes per token ({stored} bytes)")
    print(f"{'training one round':<20} {'median s':>9}   (of {args.runs})")
    for mode, seconds in median.items():
        print(f"{mode:<20} {seconds:>9.2f}")
    print(f"live / cache: {median['live teacher'] / median['cache']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
