"""Per-run metrics through Lightning's loggers: `logger=csv` (default), `logger=wandb`, `logger=none`.

One `RunLogger` spans all rounds of a run (each round is its own `Trainer.fit`, so steps are
offset by the steps of earlier rounds). `finish` closes the W&B run, so jobs of a multirun in
one process never share a run.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.allocator.name}-{cfg.budget.total_tokens}-{cfg.loss.name}-{cfg.task.name}-s{cfg.seed}"


def make_logger(cfg: DictConfig) -> Logger | None:
    if cfg.logger.name == "csv":
        return CSVLogger(cfg.paths.output_dir, name="logs")  # logs/version_N: a resumed run adds one
    if cfg.logger.name == "wandb":
        return WandbLogger(
            name=run_name(cfg),
            project=cfg.logger.project,
            entity=cfg.logger.entity,
            group=cfg.logger.group or cfg.experiment_name,
            job_type=cfg.allocator.name,
            tags=[
                f"allocator={cfg.allocator.name}",
                f"budget={cfg.budget.total_tokens}",
                f"loss={cfg.loss.name}",
                f"task={cfg.task.name}",
                f"seed={cfg.seed}",
            ],
            save_dir=cfg.paths.output_dir,
            offline=cfg.logger.offline,
            config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        )
    return None


class RunLogger:
    """Training curves, per-round probe scores and spend, and the final scores of one run."""

    def __init__(self, cfg: DictConfig) -> None:
        self.logger = make_logger(cfg)

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
