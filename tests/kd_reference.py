"""Brute-force helpers shared by the loss tests: plain-Python softmax over one row."""

from __future__ import annotations

import math


def py_softmax(row: list[float], temperature: float = 1.0) -> list[float]:
    """softmax(row / temperature) with exact zeros for -inf entries, by hand."""
    finite = [x / temperature for x in row if x != -math.inf]
    top = max(finite)
    z = sum(math.exp(x - top) for x in finite)
    return [0.0 if x == -math.inf else math.exp(x / temperature - top) / z for x in row]
