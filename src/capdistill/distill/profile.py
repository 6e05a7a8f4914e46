"""`capdistill profile`: teacher and student (before distillation) scored on every capability and the task.

The scores are the ones a distillation run starts from (same probes, same cache), printed
as a markdown table and written to `profile.json` / `profile.md` in the run directory:
where does the teacher lead, by how much, and is the gap larger than probe noise?
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from capdistill.distill.run import load_role, reference_scores
from capdistill.io import atomic_write_json, atomic_write_text
from capdistill.world.sources import WorldSources

log = logging.getLogger(__name__)


def noise(score: float, n: int) -> float:
    """Two standard errors of an accuracy (0-100) measured on `n` probes."""
    p = score / 100
    return 200 * math.sqrt(max(p * (1 - p), 1 / n) / n)


def profile_table(reference: dict[str, Any], probe_size: int, teacher: str, student: str) -> str:
    t, s = reference["teacher"], reference["student_base"]
    rows = [
        f"| capability | {teacher} | {student} | gap | 2 s.e. |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in t["probe"]:
        gap = t["probe"][name] - s["probe"][name]
        se = max(noise(t["probe"][name], probe_size), noise(s["probe"][name], probe_size))
        rows.append(f"| {name} | {t['probe'][name]:.1f} | {s['probe'][name]:.1f} | {gap:+.1f} | {se:.1f} |")
    rows.append(
        f"| task utility | {t['task_utility']:.1f} | {s['task_utility']:.1f} | "
        f"{t['task_utility'] - s['task_utility']:+.1f} | |"
    )
    return "\n".join(rows)


def profile(cfg: DictConfig) -> dict[str, Any]:
    """Score teacher and student base (cached like a run's reference scores); print and save the table."""
    out = Path(cfg.paths.output_dir)
    sources = WorldSources.from_config(cfg)
    sources.check_pools(max(cfg.teacher.train.dev_size, cfg.student.train.dev_size))
    teacher = load_role(cfg, "teacher", sources, out)
    student = load_role(cfg, "student", sources, out)
    teacher.model.eval().requires_grad_(False)
    reference = reference_scores(cfg, teacher, student, sources)
    reference.pop("responses")
    table = profile_table(reference, cfg.capabilities.probe_size, cfg.teacher.name, cfg.student.name)
    atomic_write_json(out / "profile.json", reference)
    atomic_write_text(out / "profile.md", table + "\n")
    print(table)
    return reference
