"""The `capdistill` command: `capdistill SUBCOMMAND [hydra overrides] [-m]`, or `collect` / `plot` with plain arguments.

Every subcommand is a plain function below, listed in `COMMANDS`. Each imports what it runs
when it runs (a config subcommand's task only once its config is composed), so `capdistill --help`, `--cfg job`, `collect` and `plot` start without torch,
transformers or lm-eval. Config subcommands compose the root config through Hydra (overrides,
`-m` sweeps, `--cfg`, `--help`, `--config-dir`, tab completion) and call their task with it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

USAGE = """usage: capdistill SUBCOMMAND [hydra overrides] [-m]
       capdistill collect SWEEP_DIR [--out DIR]
       capdistill plot TABLE_OR_SWEEP_DIR [--figure FIGURE] [--baseline VARIANT] [--out DIR] [--wandb]
       capdistill simulate [--rounds N] [--seeds N]

subcommands: {names}
`capdistill SUBCOMMAND --help` lists the config groups, their options and the config
(for collect, plot and simulate: their arguments).
Tab completion (bash): eval "$(capdistill -sc install=bash)\""""


# --------------------------------------------------------------------------- config subcommands


def run_with_config(
    name: str, task: Callable[[Any, Any], object], argv: list[str], finished: Callable[[Any], bool] | None = None
) -> int:
    """Compose the root config with the overrides in `argv` through Hydra and run `task` on it and the parts
    `validate` built from it (once per job with `-m`). A job `finished` says is done already is skipped before
    any check: what it would need of this machine it no longer needs. A CapdistillError ends the job with a
    one-line error and exit status 2."""
    from hydra._internal.utils import _run_hydra, get_args_parser

    from capdistill.config.hydra_setup import CONF_DIR, setup
    from capdistill.errors import CapdistillError
    from capdistill.io import interactive

    verbose = any(a.startswith("hydra.verbose=") and a.split("=", 1)[1].lower() not in ("", "false") for a in argv)
    if not verbose and not interactive():  # a log file or a pipe: bars are noise (tqdm reads this when imported)
        os.environ.setdefault("TQDM_DISABLE", "1")

    started: list[bool] = []  # a job began: an OSError after this is the task's own, not Hydra's run directory

    def job(cfg: Any) -> None:
        started.append(True)
        try:
            from capdistill.components import validate

            quiet_libraries()
            job_log_from_the_leader_only()
            if finished is not None and finished(cfg):
                from capdistill.results.identity import SKIPPING

                logging.getLogger(__name__).info(SKIPPING, cfg.paths.output_dir)
                return
            parts = validate(cfg)
            share_cores()
            task(cfg, parts)
        except CapdistillError as err:
            print(f"capdistill {name}: error: {err}", file=sys.stderr)
            sweep_job = sweep_job_name()
            if sweep_job is not None:  # Hydra keeps the failure and runs the sweep's other jobs
                raise JobFailed(f"sweep job {sweep_job} failed: {err}") from None
            sys.exit(2)

    setup()
    parser = get_args_parser()
    args = parser.parse_args(argv)
    args.overrides.append(f"hydra.job.name={name.replace('-', '_')}")  # outputs/<name>/... and the job's log
    with one_line_config_errors(name, started):
        try:
            _run_hydra(args=args, args_parser=parser, task_function=job, config_path=str(CONF_DIR), config_name="train")
        except ValueError as err:  # Hydra's own flag check, made before anything it reports
            if not str(err).startswith("Only one of"):
                raise
            print(f"capdistill {name}: error: {err} (e.g. -m with --cfg)", file=sys.stderr)
            sys.exit(2)
    return 0


class JobFailed(Exception):
    """A sweep job's one-line error. The job stops where a single run would exit with status 2; the sweep runs its
    other jobs, and Hydra raises the first failure once they are done (`one_line_config_errors` says it)."""


def sweep_job_name() -> str | None:
    """The running job's overrides as its directory names them (`hydra.job.override_dirname`), in a sweep
    (`-m`); None in a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get()
    return (hydra.job.override_dirname or str(hydra.job.num)) if hydra.mode == RunMode.MULTIRUN else None


@contextlib.contextmanager
def one_line_config_errors(name: str, started: list[bool]) -> Iterator[None]:
    """Hydra's composition errors (an unknown option, a typo'd key, a value of the wrong type), a run or sweep
    directory it cannot create before any job has `started`, a sweep refused before its first job (a
    CapdistillError from the `checked` sweeper) and a sweep whose job failed (`JobFailed`, raised once every job
    ran), as one line and exit status 2, like capdistill's own; HYDRA_FULL_ERROR=1 still shows Hydra's full
    report."""
    from hydra._internal import utils as hydra_utils
    from hydra.errors import CompactHydraException

    from capdistill.errors import CapdistillError

    report = hydra_utils.run_and_report

    def compact_first(func: Callable[[], Any]) -> Any:
        def run() -> Any:
            try:
                return func()
            except CompactHydraException as err:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"capdistill {name}: error: {one_line(err)}", file=sys.stderr)
                sys.exit(2)
            except CapdistillError as err:  # before any job: the sweeper refused a job's config
                print(f"capdistill {name}: error: {err}", file=sys.stderr)
                sys.exit(2)
            except JobFailed as err:
                print(
                    f"capdistill {name}: error: {err}; the sweep ran its other jobs: fix it and run the same command "
                    "again (finished jobs are skipped)",
                    file=sys.stderr,
                )
                sys.exit(2)
            except OSError as err:
                if started or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(
                    f"capdistill {name}: error: cannot create or write the run directory {err.filename or ''} "
                    f"({err.strerror or err}): set hydra.run.dir (hydra.sweep.dir with -m) to a writable directory",
                    file=sys.stderr,
                )
                sys.exit(2)

        return report(run)

    hydra_utils.run_and_report = compact_first
    try:
        yield
    finally:
        hydra_utils.run_and_report = report


def one_line(err: BaseException) -> str:
    """A Hydra composition error's message in one line: its sentences and the options it lists, without
    the search path, the key's types or the hint about HYDRA_FULL_ERROR."""
    text = str(err) + ("\n" + str(err.__cause__) if err.__cause__ is not None else "")
    parts: list[str] = []
    options: list[str] = []
    listing = False
    for line in text.splitlines():
        stripped = line.strip()
        if listing and line.startswith("\t"):
            options.append(stripped)
            continue
        listing = stripped.startswith("Available options")
        if stripped and not stripped.startswith(SKIPPED) and stripped not in parts:
            parts.append(stripped)
    return "; ".join(parts) + (" " + ", ".join(options) if options else "")


# lines of Hydra's report that a one-line error leaves out
SKIPPED = (
    "full_key:",
    "object_type=",
    "reference_type=",
    "provider=",
    "Config search path",
    "To append",
    "Set the env",
)


def build_world(argv: list[str]) -> int:
    """`capdistill build-world`: build (or reuse) the teacher and student base; print their table."""

    def task(cfg: Any, parts: Any) -> object:
        from capdistill.world.command import build_world

        return build_world(cfg, parts)

    return run_with_config("build-world", task, argv)


def distill(argv: list[str]) -> int:
    """`capdistill distill`: one distillation run (a sweep with -m), ending in record.json. Ctrl-C or SIGTERM ends
    it in one line saying what it kept, with exit status 130 or 143. A sweep's job whose directory another process
    holds (the same sweep launched again while the first launch runs it) is skipped in one line: that process
    completes it, and the relaunch goes on with the jobs nobody runs, as it skips the finished ones."""

    def task(cfg: Any, parts: Any) -> object:
        from capdistill.distill.run import RunInterrupted, distill
        from capdistill.io import DirectoryHeld

        try:
            return distill(cfg, parts)
        except RunInterrupted as stop:
            print(f"capdistill distill: {stop}", file=sys.stderr)
            sys.exit(128 + stop.signum)
        except DirectoryHeld as held:
            if sweep_job_name() is None:  # a single run: the holder is named in one line
                raise
            print(f"capdistill distill: skipping this job: {held}", file=sys.stderr)
            return None

    def finished(cfg: Any) -> bool:
        from capdistill.results.identity import finished_run

        return finished_run(cfg) is not None

    return run_with_config("distill", task, argv, finished)


def profile(argv: list[str]) -> int:
    """`capdistill profile`: teacher and student base scored on every capability and the task."""

    def task(cfg: Any, parts: Any) -> object:
        from capdistill.distill.profile import profile

        return profile(cfg, parts)

    return run_with_config("profile", task, argv)


def quiet_libraries() -> None:
    """Keep library chatter (progress bars, INFO lines, tips, upstream deprecations) out of a run's output,
    unless the run asks for it with Hydra's own flag, `hydra.verbose=true`."""
    import logging
    import warnings

    from hydra.core.hydra_config import HydraConfig
    from transformers.utils import logging as hf_logging

    if HydraConfig.initialized() and HydraConfig.get().verbose:
        return
    hf_logging.disable_progress_bar()
    for name in ("pytorch_lightning", "lightning.pytorch", "lm_eval", "lm-eval", "datasets", "wandb"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # lm-eval warns that it was handed a loaded model instead of a name: how capdistill calls it, by design
    logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*treespec.*")  # inside Lightning, not ours


def job_log_from_the_leader_only() -> None:
    """A process that trains along with the leading one (another node's, see `leading_process`) logs to its own
    console only: the job log in the run directory is the leading process's, each line once."""
    import logging

    from capdistill.training.cluster import leading_process

    if leading_process():
        return
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


def share_cores() -> None:
    """Jobs that a parallel launcher (joblib) runs side by side share the cores: each gets its
    part of them, instead of every job spinning one thread per core."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    jobs = HydraConfig.get().launcher.get("n_jobs")
    cores = os.cpu_count() or 1
    if jobs is not None and jobs != 1:
        torch.set_num_threads(max(1, cores // (cores if jobs < 0 else jobs)))


# --------------------------------------------------------------------------- table subcommands


def collect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="capdistill collect", description="records -> results.csv/.parquet")
    parser.add_argument("sweep_dir", type=Path, help="a multirun (or run) directory holding record.json files")
    parser.add_argument("--out", type=Path, default=None, help="where to write the tables (default: sweep_dir)")
    return parser


def plot_parser() -> argparse.ArgumentParser:
    from capdistill.results.figures import FIGURES, baseline_help

    parser = argparse.ArgumentParser(prog="capdistill plot", description="table -> figure + markdown table")
    parser.add_argument("source", type=Path, help="results.csv/.parquet, or a sweep directory (collected first)")
    parser.add_argument(
        "--figure", default=None, choices=FIGURES, help="default: the figure the table's experiment declares"
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="VARIANT",
        help=baseline_help(),
    )
    parser.add_argument("--out", type=Path, default=None, help="where to write the figure (default: beside source)")
    parser.add_argument("--wandb", action="store_true", help="also log the figure and table to an aggregate W&B run")
    parser.add_argument("--project", default="capdistill", help="W&B project for --wandb")
    return parser


def simulate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="capdistill simulate",
        description="every allocator on the simulated worlds (no model): mean utility and the best fixed split",
    )
    parser.add_argument("--rounds", type=int, default=20, help="decision rounds per simulated run")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per allocator")
    return parser


def reporting(name: str, run: Callable[[], int]) -> int:
    """Run a table subcommand; a CapdistillError is a one-line error with exit status 2."""
    from capdistill.errors import CapdistillError

    try:
        return run()
    except CapdistillError as err:
        print(f"capdistill {name}: error: {err}", file=sys.stderr)
        return 2


def collect(argv: list[str]) -> int:
    """`capdistill collect`: every record.json under a sweep directory as one table."""
    args = collect_parser().parse_args(argv)

    def run() -> int:
        from capdistill.results.collect import collect as collect_records

        table = collect_records(args.sweep_dir, args.out)
        where = args.out or args.sweep_dir
        print(f"collected {len(table)} runs -> {where / 'results.csv'}, {where / 'results.parquet'}")
        return 0

    return reporting("collect", run)


def plot(argv: list[str]) -> int:
    """`capdistill plot`: a figure and its markdown table from a collected table."""
    args = plot_parser().parse_args(argv)

    def run() -> int:
        from capdistill.results.collect import load_table
        from capdistill.results.plot import declared_figure, upload_to_wandb
        from capdistill.results.plot import plot as draw

        table = load_table(args.source)
        figure = args.figure or declared_figure(table)
        out_dir = args.out or (args.source if args.source.is_dir() else args.source.parent)
        files = draw(table, figure, out_dir, args.baseline)
        print(files["markdown"])
        print(f"figure: {files['png']} ({files['pdf'].name}); table: {files['md']}")
        if args.wandb:
            upload_to_wandb(table, figure, files, args.project)
        return 0

    return reporting("plot", run)


def simulate(argv: list[str]) -> int:
    """`capdistill simulate`: the allocators on simulated worlds, a benchmark with no model in it."""
    args = simulate_parser().parse_args(argv)

    def run() -> int:
        import torch

        from capdistill.allocation.simulate import report
        from capdistill.components import shipped_allocators
        from capdistill.config.checks import positive
        from capdistill.config.hydra_setup import CONF_DIR, setup

        positive("--", rounds=args.rounds, seeds=args.seeds)  # no rounds or seeds: nothing to average
        setup()
        torch.set_num_threads(1)  # tiny ensembles: threads only add synchronisation
        print(report(shipped_allocators(CONF_DIR), args.rounds, args.seeds))
        return 0

    return reporting("simulate", run)


# --------------------------------------------------------------------------- dispatch

COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "build-world": build_world,
    "distill": distill,
    "profile": profile,
    "collect": collect,
    "plot": plot,
    "simulate": simulate,
}
CONFIG_COMMANDS = ("build-world", "distill", "profile")
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "collect": collect_parser,
    "plot": plot_parser,
    "simulate": simulate_parser,
}


def complete(argv: list[str]) -> int:
    """Shell completion (`-sc install=bash`, then `-sc query=bash` per TAB): the subcommand names first,
    then a config subcommand's groups, options and keys through Hydra, or a table subcommand's flags."""
    query = any(a.startswith("query=") for a in argv)
    words = os.environ.get("COMP_LINE", "").split()
    ends_word = os.environ.get("COMP_LINE", "").endswith(" ")
    if query and (len(words) < 2 or (len(words) == 2 and not ends_word)):  # completing the subcommand
        prefix = words[1] if len(words) == 2 else ""
        print(" ".join(n for n in COMMANDS if n.startswith(prefix)))
        return 0
    if query and words[1] in PARSERS:
        print(" ".join(table_completions(words[1], words[2:], ends_word)))
        return 0
    if query and words[1] in CONFIG_COMMANDS:  # Hydra completes the overrides after the subcommand
        os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]]) + (" " if ends_word else "")
    if query and words[1] not in COMMANDS:
        return 0
    return run_with_config("distill", lambda cfg: None, argv)


def table_completions(name: str, words: list[str], ends_word: bool) -> list[str]:
    """A table subcommand's flags, and a flag's choices (plot's figures) after it."""
    actions = PARSERS[name]()._actions
    previous = words[-1] if ends_word and words else (words[-2] if len(words) > 1 else "")
    current = "" if ends_word or not words else words[-1]
    for action in actions:
        if previous in action.option_strings and action.choices:
            return [c for c in action.choices if c.startswith(current)]
    if current.startswith("-"):
        return [o for a in actions for o in a.option_strings if o.startswith(current)]
    return []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(names=", ".join(COMMANDS)))
        return 0
    if argv[0] in ("-sc", "--shell-completion"):
        return complete(argv)
    if argv[0] not in COMMANDS:
        print(f"capdistill: unknown subcommand {argv[0]!r}; choose from: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
