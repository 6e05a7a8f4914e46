"""Fused-linear JSD against the same loss on materialised logits and a naive one, side by side in one run:
time and peak extra memory of forward + backward, gradients for the hidden states and the lm_head weight.

    python benchmarks/bench_fused_linear.py                   # CPU: BT=1024, H=256, V=32000, fp32
    python benchmarks/bench_fused_linear.py --device cuda     # GPU: BT=8192, H=4096, V=128256, bf16
    python benchmarks/bench_fused_linear.py --json out.json   # the figures as JSON too

* naive: `logits = hidden @ weight.T` for student and teacher, then `log_softmax` + `kl_div` on them.
* unfused: the same logits, then capdistill's chunked `generalized_jsd`.
* fused: `LinearLogits(hidden, weight)` for both: logits one chunk at a time, never `[BT, V]`.
* liger: Liger-Kernel's `LigerFusedLinearJSD`, when its wheel is installed (GPU only).

Peak memory is measured as in `bench_losses.py` (CUDA allocator statistics; CPU peak RSS).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_losses import CpuMemory, CudaMemory, naive_jsd  # noqa: E402

from capdistill.losses import generalized_jsd  # noqa: E402
from capdistill.losses.chunking import LinearLogits  # noqa: E402


def methods(beta: float, chunk: int | None) -> dict[str, Callable]:
    def naive(h, w, ht, wt, mask):
        return naive_jsd((h @ w.T)[None], (ht @ wt.T)[None], mask, beta=beta)

    def unfused(h, w, ht, wt, mask):
        return generalized_jsd((h @ w.T)[None], (ht @ wt.T)[None], mask, beta, chunk_size=chunk)

    def fused(h, w, ht, wt, mask):
        return generalized_jsd(LinearLogits(h[None], w), LinearLogits(ht[None], wt), mask, beta, chunk_size=chunk)

    out = {"naive": naive, "unfused": unfused, "fused": fused}
    try:
        from liger_kernel.transformers import LigerFusedLinearJSD

        liger = LigerFusedLinearJSD(jsd_beta=beta)
        out["liger"] = lambda h, w, ht, wt, mask: liger(h, w, ht, wt)
    except ImportError:
        pass
    return out


def measure(fn: Callable, inputs: tuple, device: torch.device, repeats: int) -> tuple[float, float]:
    """(median seconds, peak extra bytes) of forward + backward; inf when out of memory."""
    meter = CudaMemory() if device.type == "cuda" else CpuMemory()
    h, w = inputs[0], inputs[1]
    times, peaks = [], []
    for i in range(repeats + 1):
        h.grad = w.grad = None
        meter.start()
        try:
            start = time.perf_counter()
            fn(*inputs).backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
        except torch.OutOfMemoryError:
            h.grad = w.grad = None
            gc.collect()
            torch.cuda.empty_cache()
            return math.inf, math.inf
        peaks.append(meter.peak())
        if i:  # the first run warms up
            times.append(elapsed)
    h.grad = w.grad = None
    return statistics.median(times), max(peaks)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--bt", type=int, default=None, help="positions (default 1024 cpu, 8192 cuda)")
    p.add_argument("--hidden", type=int, default=None, help="H (default 256 cpu, 4096 cuda)")
    p.add_argument("--vocab", type=int, default=None, help="V (default 32000 cpu, 128256 cuda)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="default fp32 cpu, bf16 cuda")
    p.add_argument("--chunk-size", type=int, default=None, help="positions per chunk (default: auto)")
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=None, help="a subset of naive unfused fused liger")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no GPU is available")
    gpu = device.type == "cuda"
    bt, hidden, vocab = (
        args.bt or (8192 if gpu else 1024),
        args.hidden or (4096 if gpu else 256),
        args.vocab or (128256 if gpu else 32000),
    )
    dtype = getattr(torch, args.dtype or ("bfloat16" if gpu else "float32"))
    g = torch.Generator().manual_seed(0)

    def make(*shape: int, grad: bool = False) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) / math.sqrt(shape[-1]) ** 0.5).to(device, dtype).requires_grad_(grad)

    inputs = (make(bt, hidden, grad=True), make(vocab, hidden, grad=True), make(bt, hidden), make(vocab, hidden))
    mask = torch.ones(1, bt, dtype=torch.bool, device=device)
    name = torch.cuda.get_device_name() if gpu else f"cpu x{torch.get_num_threads()} threads"
    print(f"device={name} torch={torch.__version__} BT={bt} H={hidden} V={vocab} dtype={dtype} beta={args.beta}")
    chosen = methods(args.beta, args.chunk_size)
    if args.methods:
        chosen = {k: v for k, v in chosen.items() if k in args.methods}
    figures = {}
    for label, fn in chosen.items():
        seconds, peak = measure(fn, (*inputs, mask), device, args.repeats)
        figures[label] = {"ms": seconds * 1e3, "peak_extra_mib": peak / 2**20}
    base = figures.get("naive")
    print(f"{'method':<9} {'ms':>9} {'peak MiB':>10} {'time / naive':>13} {'mem / naive':>12}")
    for label, f in figures.items():
        rt = f["ms"] / base["ms"] if base and math.isfinite(base["ms"]) else math.nan
        rm = f["peak_extra_mib"] / base["peak_extra_mib"] if base and base["peak_extra_mib"] > 0 else math.nan
        print(f"{label:<9} {f['ms']:>9.1f} {f['peak_extra_mib']:>10.1f} {rt:>13.2f} {rm:>12.3f}")
    result = {"device": name, "bt": bt, "hidden": hidden, "vocab": vocab, "dtype": str(dtype), "methods": figures}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # as bench_losses.py: large buffers are mmapped and returned on free, so RSS tracks live memory
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"})
    main()
