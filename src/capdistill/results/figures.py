"""The figures `capdistill plot` draws (kept free of plotting imports, so the CLI can list them)."""

from __future__ import annotations

FIGURES = ("budget_curves", "losses", "schedules", "ablation", "transfer")
