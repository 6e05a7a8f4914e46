"""Helpers shared by the loss tests: random inputs, a plain-Python softmax, the chunking check."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def py_softmax(row: list[float], temperature: float = 1.0) -> list[float]:
    """softmax(row / temperature) with exact zeros for -inf entries, by hand."""
    finite = [x / temperature for x in row if x != -math.inf]
    top = max(finite)
    z = sum(math.exp(x - top) for x in finite)
    return [0.0 if x == -math.inf else math.exp(x / temperature - top) / z for x in row]


def make(b=2, t=5, v=7, *, seed=0, dtype=torch.float64, scale=2.0):
    """Random student and teacher logits [b, t, v] and a mask with one counted and one ignored position."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, t, v, generator=g, dtype=torch.float64) * scale
    te = torch.randn(b, t, v, generator=g, dtype=torch.float64) * scale
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[0, 0] = True
    mask[-1, -1] = False
    return s.to(dtype), te.to(dtype), mask


def assert_chunking_invariant(loss: Callable, logits: torch.Tensor, chunks: tuple) -> None:
    """`loss(logits, chunk_size)` has the same value and gradient for every chunk size."""
    outs = []
    for chunk in chunks:
        a = logits.clone().requires_grad_()
        out = loss(a, chunk)
        out.backward()
        outs.append((out.detach(), a.grad))
    for out, grad in outs[1:]:
        torch.testing.assert_close(out, outs[0][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grad, outs[0][1], rtol=1e-5, atol=1e-7)
