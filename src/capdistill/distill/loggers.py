"""Per-run metrics through a Lightning logger: `logger=csv` (default), `logger=wandb`, `logger=none`, or any
`_target_` naming a `pytorch_lightning.loggers.Logger`.

One `RunLogger` spans all rounds of a run (each round is its own `Trainer.fit`, so steps are
offset by the steps of earlier rounds). `finish` closes the W&B run, so jobs of a multirun in
one process never share a run.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning.loggers import Logger, WandbLogger


class RunLogger:
    """Training curves, per-round probe scores and spend, and the final scores of one run."""

    def __init__(self, logger: Logger | None) -> None:
        self.logger = logger  # built from the `logger` group (capdistill.components.build_logger)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)

    def log_round(self, entry: dict[str, Any], step: int) -> None:
        """The round's spend and the dev signals it measured; at evaluation checkpoints its eval scores too."""
        metrics = {"round": entry["round"]}
        for key in ("task_loglik", "task_utility"):
            if key in entry:
                metrics[f"round/{key}"] = entry[key]
        for group in ("probe", "probe_loglik", "allocation", "spent_by_capability"):
            metrics.update({f"{group}/{c}": v for c, v in entry.get(group, {}).items()})
        self.log_metrics(metrics, step)

    def log_final(self, record: dict[str, Any]) -> None:
        if self.logger is None:
            return
        final = {f"final/probe/{c}": v for c, v in record["final"]["probe"].items()}
        final["final/task_utility"] = record["final"]["task_utility"]
        final["budget/spent_tokens"] = record["budget"]["spent_tokens"]
        if isinstance(self.logger, WandbLogger):
            self.logger.experiment.summary.update(final)
        else:
            self.logger.log_metrics(final)

    def finish(self) -> None:
        if self.logger is None:
            return
        self.logger.finalize("success")
        if isinstance(self.logger, WandbLogger):
            import wandb

            wandb.finish()
