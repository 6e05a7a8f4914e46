"""`capdistill profile`: teacher and student (before distillation) scored on every capability and the task.

The scores are the ones a distillation run starts from (same eval sets, same cache), printed
as a markdown table and written to `profile.json` / `profile.md` in the run directory:
where does the teacher lead, by how much, and is the gap larger than probe noise?
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from capdistill.components import RunParts
from capdistill.distill.run import DistillRecipe
from capdistill.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)


def noise(score: float, n: int) -> float:
    """Two standard errors of an accuracy (0-100) measured on `n` probes."""
    p = score / 100
    return 200 * math.sqrt(max(p * (1 - p), 1 / n) / n)


def profile_table(reference: dict[str, Any], teacher: str, student: str) -> str:
    t, s = reference["teacher"], reference["student_base"]
    rows = [
        f"| capability | {teacher} | {student} | gap | 2 s.e. |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in t["probe"]:
        gap = t["probe"][name] - s["probe"][name]
        items = t["n"][name]
        se = max(noise(t["probe"][name], items), noise(s["probe"][name], items))
        rows.append(f"| {name} | {t['probe'][name]:.1f} | {s['probe'][name]:.1f} | {gap:+.1f} | {se:.1f} |")
    rows.append(
        f"| task utility | {t['task_utility']:.1f} | {s['task_utility']:.1f} | "
        f"{t['task_utility'] - s['task_utility']:+.1f} | |"
    )
    return "\n".join(rows)


def profile(cfg: DictConfig, parts: RunParts | None = None) -> dict[str, Any]:
    """Score teacher and student base (cached like a run's reference scores); print and save the table. `parts`:
    what `components.validate(cfg)` returned (built here, unchecked, if not given)."""
    out = Path(cfg.paths.output_dir)
    recipe = DistillRecipe(cfg, out, parts)  # a run's setup, up to its reference scores
    recipe.load_models()
    recipe.score_references()
    reference = recipe.reference
    table = profile_table(reference, cfg.teacher.name, cfg.student.name)
    atomic_write_json(out / "profile.json", reference)
    atomic_write_text(out / "profile.md", table + "\n")
    print(table)
    return reference
