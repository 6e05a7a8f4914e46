"""benchmarks/gpu_check.sh, the scale path's one GPU check, runs on a machine without a GPU at small sizes
(so it cannot rot between GPU sessions) and writes every figure to one JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_and_writes_its_figures(tmp_path: Path) -> None:
    env = os.environ | {"PYTHON": sys.executable, "OUT": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    for step in ("fused_linear", "teacher_cache", "packing"):
        assert figures[f"{step}.status"]["status"] == "ok", step
    assert set(figures["fused_linear"]["methods"]) >= {"naive", "unfused", "fused"}
    assert figures["teacher_cache"]["bytes_per_token"] == 128  # k=32: int16 ids and fp16 log-probs
    assert figures["packing"]["packed_over_batch_1"] > 1
    assert figures["real_cache.status"]["status"].startswith("skipped: no GPU")
