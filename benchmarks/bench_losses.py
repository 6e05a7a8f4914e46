"""Peak memory and time of each KD loss (forward + backward) against a naive implementation.

The naive implementations materialise full ``[B*T, V]`` fp32 tensors (``log_softmax`` +
``kl_div``, the way most training scripts write it); ``topk``/``sampled``/``uld``/``mlot``
have no one-line naive form and are compared with the naive forward KL. Ratios are
ours / naive from the same run, so they are comparable across machines of one kind.

    python benchmarks/bench_losses.py                      # CPU: V=32000, BT=1024, fp32
    python benchmarks/bench_losses.py --device cuda        # GPU: V=128256, BT=8192, bf16
    python benchmarks/bench_losses.py --bt 64 --vocab 1000 --losses fkl jsd

Peak memory is the peak *extra* memory of one forward+backward (inputs excluded, the
student-logits gradient included): on CUDA from the caching allocator's statistics, on
CPU from the process's peak resident set (``/proc/self/status`` VmHWM, reset through
``/proc/self/clear_refs``; the script re-executes itself with a fixed glibc mmap threshold
so freed large buffers leave the resident set).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from capdistill.losses import (  # noqa: E402
    forward_kl,
    generalized_jsd,
    multilevel_ot,
    reverse_kl,
    sampled_kl,
    sft,
    topk_kl,
    total_variation,
    uld,
)

ALL = ["fkl", "rkl", "jsd", "tvd", "sft", "topk", "sampled", "uld", "mlot"]


# --------------------------------------------------------------------------- naive references


def _naive_logps(s, t, temperature=1.0):
    return F.log_softmax(s.float() / temperature, -1), F.log_softmax(t.float() / temperature, -1)


def _masked_mean(per_pos, mask):
    return (per_pos * mask).sum() / mask.sum().clamp_min(1)


def naive_fkl(s, t, mask, **_):
    ls, lt = _naive_logps(s, t)
    return _masked_mean(F.kl_div(ls, lt, reduction="none", log_target=True).sum(-1), mask)


def naive_rkl(s, t, mask, **_):
    ls, lt = _naive_logps(s, t)
    return _masked_mean(F.kl_div(lt, ls, reduction="none", log_target=True).sum(-1), mask)


def naive_jsd(s, t, mask, beta=0.5, **_):
    ls, lt = _naive_logps(s, t)
    lm = torch.logsumexp(torch.stack([ls + math.log(1 - beta), lt + math.log(beta)]), dim=0)
    kl_t = F.kl_div(lm, lt, reduction="none", log_target=True).sum(-1)
    kl_s = F.kl_div(lm, ls, reduction="none", log_target=True).sum(-1)
    return _masked_mean(beta * kl_t + (1 - beta) * kl_s, mask)


def naive_tvd(s, t, mask, **_):
    ls, lt = _naive_logps(s, t)
    return _masked_mean(0.5 * (lt.exp() - ls.exp()).abs().sum(-1), mask)


def naive_sft(s, t, mask, y=None, **_):
    ce = F.cross_entropy(s.float().flatten(0, 1), y.flatten(), reduction="none").view(mask.shape)
    return _masked_mean(ce, mask)


NAIVE: dict[str, tuple[str, Callable]] = {
    "fkl": ("fkl", naive_fkl),
    "rkl": ("rkl", naive_rkl),
    "jsd": ("jsd", naive_jsd),
    "tvd": ("tvd", naive_tvd),
    "sft": ("cross_entropy", naive_sft),
    "topk": ("fkl", naive_fkl),
    "sampled": ("fkl", naive_fkl),
    "uld": ("fkl", naive_fkl),
    "mlot": ("fkl", naive_fkl),
}


def ours(name: str, args) -> Callable:
    gen = None

    def fn(s, t, mask, y=None):
        nonlocal gen
        c = args.chunk_size
        if name == "fkl":
            return forward_kl(s, t, mask, chunk_size=c)
        if name == "rkl":
            return reverse_kl(s, t, mask, chunk_size=c)
        if name == "jsd":
            return generalized_jsd(s, t, mask, 0.5, chunk_size=c)
        if name == "tvd":
            return total_variation(s, t, mask, chunk_size=c)
        if name == "sft":
            return sft(s, y, mask, chunk_size=c)
        if name == "topk":
            return topk_kl(s, t, mask, args.k, chunk_size=c)
        if name == "sampled":
            gen = gen or torch.Generator(device=s.device).manual_seed(0)
            return sampled_kl(s, t, mask, args.num_samples, gen, chunk_size=c)
        if name == "uld":
            return uld(s, mask, t, mask, chunk_size=c)
        if name == "mlot":
            return multilevel_ot(s, mask, t, mask, chunk_size=c)
        raise ValueError(name)

    return fn


# --------------------------------------------------------------------------- measurement


class CpuMemory:
    """Peak extra resident memory around a call (Linux)."""

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(key)

    def start(self) -> None:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        self.base = self._status("VmRSS")

    def peak(self) -> int:
        return self._status("VmHWM") - self.base


class CudaMemory:
    def start(self) -> None:
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated()

    def peak(self) -> int:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - self.base


def measure(fn, s, t, mask, y, device, repeats) -> tuple[float, float]:
    """(median seconds, peak extra bytes) of fn forward + backward; inf on out-of-memory."""
    meter = CudaMemory() if device.type == "cuda" else CpuMemory()
    times, peaks = [], []
    for i in range(repeats + 1):
        s.grad = None
        meter.start()
        try:
            t0 = time.perf_counter()
            fn(s, t, mask, y=y).backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        except torch.OutOfMemoryError:
            s.grad = None
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return math.inf, math.inf
        peaks.append(meter.peak())
        if i > 0:  # the first run is a warm-up
            times.append(dt)
    s.grad = None
    return statistics.median(times), max(peaks)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--bt", type=int, default=None, help="positions B*T (default 1024 cpu, 8192 cuda)")
    p.add_argument("--vocab", type=int, default=None, help="vocabulary size (default 32000 cpu, 128256 cuda)")
    p.add_argument("--seq-len", type=int, default=512, help="T (B = bt // T; matters for mlot's sequence level)")
    p.add_argument(
        "--dtype", default=None, choices=["float32", "bfloat16", "float16"], help="default fp32 cpu, bf16 cuda"
    )
    p.add_argument("--chunk-size", type=int, default=None, help="positions per chunk (default: auto)")
    p.add_argument("--mask-ratio", type=float, default=0.9, help="fraction of counted positions")
    p.add_argument("--k", type=int, default=64, help="top-k for topk")
    p.add_argument("--num-samples", type=int, default=64, help="draws per position for sampled")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--losses", nargs="+", default=ALL, choices=ALL)
    p.add_argument("--no-naive", action="store_true", help="skip the naive runs")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no GPU is available")
    bt = args.bt or (8192 if device.type == "cuda" else 1024)
    vocab = args.vocab or (128256 if device.type == "cuda" else 32000)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    seq = min(args.seq_len, bt)
    b = max(1, bt // seq)

    g = torch.Generator(device="cpu").manual_seed(0)
    s = (torch.randn(b, seq, vocab, generator=g) * 2).to(device=device, dtype=dtype).requires_grad_()
    t = (torch.randn(b, seq, vocab, generator=g) * 2).to(device=device, dtype=dtype)
    mask = (torch.rand(b, seq, generator=g) < args.mask_ratio).to(device)
    y = torch.randint(0, vocab, (b, seq), generator=g).to(device)

    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(
        f"device={name} torch={torch.__version__} B={b} T={seq} BT={b * seq} V={vocab} dtype={dtype} "
        f"counted={int(mask.sum())} chunk_size={args.chunk_size or 'auto'} repeats={args.repeats}"
    )
    header = (
        f"{'loss':<8} {'ms':>9} {'peak MB':>9} | {'naive':<13} {'ms':>9} {'peak MB':>9} | {'time x':>7} {'mem x':>7}"
    )
    print(header)
    print("-" * len(header))
    naive_cache: dict[str, tuple[float, float]] = {}
    for loss in args.losses:
        t_ours, m_ours = measure(ours(loss, args), s, t, mask, y, device, args.repeats)
        base_name, base_fn = NAIVE[loss]
        if args.no_naive:
            t_naive = m_naive = math.nan
        else:
            if base_name not in naive_cache:
                naive_cache[base_name] = measure(base_fn, s, t, mask, y, device, args.repeats)
            t_naive, m_naive = naive_cache[base_name]

        def fmt(x, scale):
            return "OOM" if math.isinf(x) else ("-" if math.isnan(x) else f"{x * scale:.1f}")

        ratio_t = t_ours / t_naive if math.isfinite(t_naive) and math.isfinite(t_ours) else math.nan
        ratio_m = m_ours / m_naive if math.isfinite(m_naive) and m_naive > 0 and math.isfinite(m_ours) else math.nan
        print(
            f"{loss:<8} {fmt(t_ours, 1e3):>9} {fmt(m_ours, 2**-20):>9} | {base_name:<13} {fmt(t_naive, 1e3):>9} "
            f"{fmt(m_naive, 2**-20):>9} | {ratio_t:>7.2f} {ratio_m:>7.2f}"
        )


if __name__ == "__main__":
    if sys.platform.startswith("linux") and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        # a fixed threshold: large buffers are mmapped and given back on free, so RSS tracks live memory
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"})
    main()
