"""The `capdistill` command: `capdistill SUBCOMMAND [hydra overrides] [-m]`."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from collections.abc import Callable

import hydra
from omegaconf import DictConfig

from capdistill.config.hydra_setup import CONF_DIR, setup
from capdistill.config.schema import validate
from capdistill.errors import CapdistillError

# subcommand -> (module, function taking the composed config)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build-world": ("capdistill.world.command", "build_world"),
    "distill": ("capdistill.distill.run", "distill"),
}

USAGE = f"""usage: capdistill SUBCOMMAND [hydra overrides] [-m]

subcommands: {", ".join(SUBCOMMANDS)}
`capdistill SUBCOMMAND --help` lists the config groups, their options and the config."""


def quiet_libraries() -> None:
    """Keep library chatter (progress bars, tips, upstream deprecations) out of a run's output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*treespec.*")  # inside Lightning, not ours


def run_subcommand(name: str, overrides: list[str]) -> None:
    """Compose the root config with `overrides` through Hydra and run subcommand `name`."""
    module, attr = SUBCOMMANDS[name]
    task: Callable[[DictConfig], object] = getattr(importlib.import_module(module), attr)

    def job(cfg: DictConfig) -> None:
        try:
            validate(cfg)
            task(cfg)
        except CapdistillError as err:
            print(f"capdistill {name}: error: {err}", file=sys.stderr)
            sys.exit(2)

    setup()
    quiet_libraries()
    # the job name goes last: Hydra's argparse cannot split overrides around a flag such as -m
    sys.argv = [f"capdistill {name}", *overrides, f"hydra.job.name={name.replace('-', '_')}"]
    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")(job)()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] not in SUBCOMMANDS:
        print(f"capdistill: unknown subcommand {argv[0]!r}; choose from: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    run_subcommand(argv[0], argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
