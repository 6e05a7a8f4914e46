"""The figures `capdistill plot` draws: the one registry that `plot`, its `--figure` and `--baseline` flags and
an experiment's `report.figure` read (kept free of plotting imports, so the CLI can list them)."""

from __future__ import annotations

# each figure, and the variant it compares allocators to by paired per-seed differences when the table has
# it (None: the figure does not compare allocators and takes no --baseline)
FIGURES: dict[str, str | None] = {
    "budget_curves": "task_static",
    "losses": None,
    "schedules": "task_static",
    "ablation": "read",
    "transfer": None,
}
BASELINES = {figure: variant for figure, variant in FIGURES.items() if variant is not None}


def baseline_help() -> str:
    """`plot --baseline`'s help: the figures that compare allocators and the variant each compares to."""
    by_variant: dict[str, list[str]] = {}
    for figure, variant in BASELINES.items():
        by_variant.setdefault(variant, []).append(figure)
    defaults = ", ".join(f"{variant} for {' and '.join(figures)}" for variant, figures in by_variant.items())
    return (
        f"compare allocators by paired per-seed differences to this variant ({', '.join(BASELINES)}; "
        f"default: {defaults}, when the table has it)"
    )
