"""The `capdistill` command: `capdistill SUBCOMMAND [hydra overrides] [-m]`."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import hydra
from omegaconf import DictConfig

from capdistill.config.hydra_setup import CONF_DIR, setup
from capdistill.config.schema import validate
from capdistill.errors import CapdistillError

# subcommand -> (module, function taking the composed config)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build-world": ("capdistill.world.command", "build_world"),
    "distill": ("capdistill.distill.run", "distill"),
    "profile": ("capdistill.distill.profile", "profile"),
}

# subcommands over results, with plain arguments (no config to compose)
TABLE_COMMANDS = ("collect", "plot")

USAGE = f"""usage: capdistill SUBCOMMAND [hydra overrides] [-m]
       capdistill collect SWEEP_DIR [--out DIR]
       capdistill plot TABLE_OR_SWEEP_DIR --figure FIGURE [--baseline VARIANT] [--out DIR] [--wandb]

subcommands: {", ".join((*SUBCOMMANDS, *TABLE_COMMANDS))}
`capdistill SUBCOMMAND --help` lists the config groups, their options and the config
(for collect and plot: their arguments)."""


def table_command(name: str, argv: list[str]) -> int:
    """`collect` (records -> results.csv/.parquet) and `plot` (table -> figure + markdown table)."""
    import argparse

    from capdistill.results.collect import collect, load_table
    from capdistill.results.plot import FIGURES, plot, upload_to_wandb

    parser = argparse.ArgumentParser(prog=f"capdistill {name}")
    if name == "collect":
        parser.add_argument("sweep_dir", type=Path, help="a multirun (or run) directory holding record.json files")
        parser.add_argument("--out", type=Path, default=None, help="where to write the tables (default: sweep_dir)")
    else:
        parser.add_argument("source", type=Path, help="results.csv/.parquet, or a sweep directory (collected first)")
        parser.add_argument("--figure", required=True, choices=FIGURES)
        parser.add_argument(
            "--baseline",
            default=None,
            metavar="VARIANT",
            help="compare allocators by paired per-seed differences to this variant (budget_curves, schedules, "
            "ablation; default: task_static, or read for ablation, when the table has it)",
        )
        parser.add_argument("--out", type=Path, default=None, help="where to write the figure (default: beside source)")
        parser.add_argument(
            "--wandb", action="store_true", help="also log the figure and table to an aggregate W&B run"
        )
        parser.add_argument("--project", default="capdistill", help="W&B project for --wandb")
    args = parser.parse_args(argv)
    try:
        if name == "collect":
            table = collect(args.sweep_dir, args.out)
            where = args.out or args.sweep_dir
            print(f"collected {len(table)} runs -> {where / 'results.csv'}, {where / 'results.parquet'}")
            return 0
        table = load_table(args.source)
        out_dir = args.out or (args.source if args.source.is_dir() else args.source.parent)
        files = plot(table, args.figure, out_dir, args.baseline)
        print(files["markdown"])
        print(f"figure: {files['png']} ({files['pdf'].name}); table: {files['md']}")
        if args.wandb:
            upload_to_wandb(table, args.figure, files, args.project)
        return 0
    except CapdistillError as err:
        print(f"capdistill {name}: error: {err}", file=sys.stderr)
        return 2


def quiet_libraries() -> None:
    """Keep library chatter (progress bars, tips, upstream deprecations) out of a run's output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*treespec.*")  # inside Lightning, not ours


def share_cores() -> None:
    """Jobs that a parallel launcher (joblib) runs side by side share the cores: each gets its
    part of them, instead of every job spinning one thread per core."""
    import os

    import torch
    from hydra.core.hydra_config import HydraConfig

    jobs = HydraConfig.get().launcher.get("n_jobs")
    cores = os.cpu_count() or 1
    if jobs is not None and jobs != 1:
        torch.set_num_threads(max(1, cores // (cores if jobs < 0 else jobs)))


def run_subcommand(name: str, overrides: list[str]) -> None:
    """Compose the root config with `overrides` through Hydra and run subcommand `name`."""
    module, attr = SUBCOMMANDS[name]
    task: Callable[[DictConfig], object] = getattr(importlib.import_module(module), attr)

    def job(cfg: DictConfig) -> None:
        try:
            validate(cfg)
            share_cores()
            task(cfg)
        except CapdistillError as err:
            print(f"capdistill {name}: error: {err}", file=sys.stderr)
            sys.exit(2)

    setup()
    quiet_libraries()
    # Hydra's argparse takes overrides as one contiguous run of arguments, so the job name
    # goes right after the last override (or first, if there is none): `-m a=1`, `a=1 --cfg job`
    last = max((i for i, arg in enumerate(overrides) if "=" in arg and not arg.startswith("-")), default=-1)
    args = [*overrides[: last + 1], f"hydra.job.name={name.replace('-', '_')}", *overrides[last + 1 :]]
    sys.argv = [f"capdistill {name}", *args]
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")(job)()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in TABLE_COMMANDS:
        return table_command(argv[0], argv[1:])
    if argv[0] not in SUBCOMMANDS:
        choices = ", ".join((*SUBCOMMANDS, *TABLE_COMMANDS))
        print(f"capdistill: unknown subcommand {argv[0]!r}; choose from: {choices}", file=sys.stderr)
        return 2
    run_subcommand(argv[0], argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
