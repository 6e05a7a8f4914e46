"""Per-run metrics through a Lightning logger: `logger=csv` (default), `logger=wandb`, `logger=none`, or any
`_target_` naming a `pytorch_lightning.loggers.Logger`.

One `RunLogger` spans all rounds of a run (each round is its own `Trainer.fit`, so steps are
offset by the steps of earlier rounds). `finish` closes the W&B run, so jobs of a multirun in
one process never share a run. `round_line` is the line each round prints.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning.loggers import Logger, WandbLogger


class RunLogger:
    """Training curves, per-round probe scores and spend, and the final scores of one run.

    Per-round metrics carry two x-axes, `round` and `tokens/cumulative` (supervision tokens spent so far);
    on W&B `define_metric` makes `round` their default axis, so allocators line up round by round (pick
    `tokens/cumulative` in a panel to compare by spend). Round 0 of the history is the student base,
    logged before any training, so every curve starts from the same point.
    """

    def __init__(self, logger: Logger | None, spent: int = 0) -> None:
        self.logger = logger  # built from the `logger` group (capdistill.components.build_logger)
        self.spent = spent  # supervision tokens of the rounds before (a resumed run)
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            run.define_metric("round")
            run.define_metric("tokens/cumulative")
            for group in ROUND_GROUPS:
                run.define_metric(f"{group}/*", step_metric="round")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)

    def log_baseline(self, reference: dict[str, Any]) -> None:
        """The student base's scores as the history's first point (round 0, no tokens spent), and the
        teacher's and base's scores in the summary: the levels every curve is read against."""
        if self.logger is None:
            return
        base = reference["student_base"]
        metrics: dict[str, float] = {"round": 0, "tokens/cumulative": 0}
        metrics.update({f"probe/{c}": v for c, v in base.get("probe", {}).items()})
        metrics.update({f"probe_loglik/{c}": v for c, v in base.get("probe_loglik", {}).items()})
        metrics.update({f"round/{key}": base[key] for key in ("task_loglik", "task_utility") if key in base})
        self.log_metrics(metrics, 0)
        summary = {
            f"reference/{role}/{key}": value
            for role in ("teacher", "student_base")
            for key, value in flatten(reference.get(role, {})).items()
            if isinstance(value, (int, float)) and key != "n" and not key.startswith("n/")
        }
        self.update_summary(summary)

    def log_round(self, entry: dict[str, Any], step: int) -> None:
        """The round's spend and the dev signals it measured; at evaluation checkpoints its eval scores too."""
        self.spent += sum(entry.get("spent_by_capability", {}).values())
        metrics = {"round": entry["round"] + 1, "tokens/cumulative": self.spent}  # 0 is the student base
        for key in ("task_loglik", "task_utility"):
            if key in entry:
                metrics[f"round/{key}"] = entry[key]
        for group in ("probe", "probe_loglik", "allocation", "spent_by_capability"):
            metrics.update({f"{group}/{c}": v for c, v in entry.get(group, {}).items()})
        metrics.update({f"timing/{k}": v for k, v in entry.get("timing", {}).items()})
        self.log_metrics(metrics, step)
        if self.logger is not None:
            self.logger.save()  # CSV rows reach the disk every round: a killed run keeps its step metrics

    def log_final(self, record: dict[str, Any]) -> None:
        if self.logger is None:
            return
        final = {f"final/probe/{c}": v for c, v in record["final"]["probe"].items()}
        final["final/task_utility"] = record["final"]["task_utility"]
        final["budget/spent_tokens"] = record["budget"]["spent_tokens"]
        final["budget/total_tokens"] = record["budget"]["total_tokens"]
        final.update({f"lmeval/{k}": v for k, v in flatten(record.get("lmeval") or {}).items() if is_number(v)})
        final.update({f"timing/{k}": v for k, v in record["timing"].items() if is_number(v)})
        final.update({f"teacher_cache/{k}": v for k, v in (record.get("teacher_cache") or {}).items() if is_number(v)})
        self.update_summary(final)

    def update_summary(self, values: dict[str, float]) -> None:
        if isinstance(self.logger, WandbLogger):
            self.logger.experiment.summary.update(values)
        elif self.logger is not None:
            self.logger.log_metrics(values)

    def finish(self) -> None:
        if self.logger is None:
            return
        self.logger.finalize("success")
        if isinstance(self.logger, WandbLogger):
            import wandb

            wandb.finish()


ROUND_GROUPS = ("round", "probe", "probe_loglik", "allocation", "spent_by_capability", "timing")


def round_line(
    index: int, rounds: int, entry: dict[str, Any], history: list[dict[str, Any]], reference: dict, total: int
) -> str:
    """One line per round: the split chosen, the tokens spent (and so far), and the task's dev proxy and, at
    evaluation checkpoints, its eval utility, each with its change since the last measurement (or the base)."""
    chosen = sorted(((w, c) for c, w in entry["allocation"].items() if w > 0), reverse=True)
    split = " ".join(f"{c} {w:.2f}" for w, c in chosen[:4]) + (f" +{len(chosen) - 4} more" if len(chosen) > 4 else "")
    if len(chosen) > 4 and chosen[0][0] - chosen[-1][0] < 1e-9:
        split = f"even over {len(chosen)}"
    spent = sum(entry["spent_by_capability"].values())
    so_far = sum(sum(e["spent_by_capability"].values()) for e in history)
    parts = [f"round {index + 1}/{rounds}", f"split {split or 'nothing'}", f"spent {spent} ({so_far}/{total})"]
    base = reference["student_base"]
    for key, label, digits in (("task_loglik", "task dev proxy", 4), ("task_utility", "task utility (eval)", 1)):
        if key in entry:
            earlier = [e[key] for e in history[:-1] if key in e] or [base.get(key)]
            change = "" if earlier[-1] is None else f" ({entry[key] - earlier[-1]:+.{digits}f})"
            parts.append(f"{label} {entry[key]:.{digits}f}{change}")
    return " | ".join(parts)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of `a/b` keys."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
