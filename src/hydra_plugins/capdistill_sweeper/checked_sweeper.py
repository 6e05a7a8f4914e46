"""The sweeper of every capdistill sweep: a bad value anywhere in a sweep fails before its first job.

Hydra's basic sweeper composes every job's config before it launches any, but only to see that it
composes. `CheckedSweeper` runs capdistill's own checks (`capdistill.components.checked_parts`: the schema, the
world's names, the task, the budget against the rounds, the curriculum, the components) on each of
those configs too, as the job itself would at its start. So `budget.total_tokens=1k` in a sweep's
last job, or a task that names a capability the world lacks, is one line before the first of many
hours of jobs starts, not when its own job comes. What only a running job can meet (a server that
does not start, a full disk) still ends that job alone. A job whose directory already holds its run's complete
record is not checked: it will skip itself, and a finished sweep relaunched to be collected on a machine without
its teacher server, GPUs or caches goes through. With `max_batch_size` set (null by default:
one batch), Hydra checks and launches batch by batch, and so does this.

The checks look at this machine too (GPUs, nodes, files, writable directories), so they run only under a
launcher that runs the jobs here: Hydra's basic launcher and joblib's. Under any other (submitit on a
cluster) the jobs' machines differ from the submitting one, and each job checks itself at its start.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterator, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

from capdistill.errors import CapdistillError

log = logging.getLogger(__name__)
# the launchers that run a sweep's jobs on this machine, where the checks' view of GPUs and files holds
LOCAL_LAUNCHERS = (
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
)


class CheckedSweeper(BasicSweeper):
    """Hydra's basic sweeper, checking each job's config as the job would before launching any job."""

    checked = 0  # jobs checked so far: the next job's number (`hydra.job.num`), as the launcher numbers it

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Compose each job of `batch` (as Hydra's own check does) and run capdistill's checks on it; the first
        failing job is named in one line, with how many of the batch fail."""
        from capdistill.components import checked_parts
        from capdistill.results.identity import finished_run

        assert self.hydra_context is not None and self.config is not None
        if str(self.config.hydra.launcher.get("_target_")) not in LOCAL_LAUNCHERS:
            super().validate_batch_is_legal(batch)  # each job checks itself where it runs
            return
        if not self.config.hydra.verbose:  # building each job's Trainer would print Lightning's hardware lines
            for name in ("pytorch_lightning", "lightning.pytorch"):
                logging.getLogger(name).setLevel(logging.WARNING)
        loader = self.hydra_context.config_loader
        failed: list[tuple[str, CapdistillError]] = []
        finished = 0
        for overrides in batch:
            config = loader.load_sweep_config(master_config=self.config, sweep_overrides=list(overrides))
            with open_dict(config):  # what the launcher sets before it runs the job (a subdir may name it)
                config.hydra.job.id = config.hydra.job.num = self.checked
            self.checked += 1
            with as_job(config) as task_cfg:
                if finished_run(task_cfg) is not None:  # the job skips itself before its own checks, as here
                    finished += 1
                    continue
                try:
                    checked_parts(task_cfg)
                except CapdistillError as err:
                    failed.append((config.hydra.job.override_dirname or ",".join(overrides), err))
        if failed:
            name, err = failed[0]
            ran = self.checked - len(batch)  # jobs of earlier batches (max_batch_size), launched already
            jobs = f"the sweep's {len(batch)} jobs" if not ran else f"this batch's {len(batch)} jobs"
            others = f" ({len(failed)} of {jobs} fail a check)" if len(failed) > 1 else ""
            started = (
                "no job was started" if not ran else f"no job of this batch was started ({ran} jobs ran before it)"
            )
            raise CapdistillError(f"sweep job {name}: {err}{others}; {started}")
        log.info(
            "checked the configs of %d jobs; %d more already hold their run's complete record and are skipped",
            len(batch) - finished,
            finished,
        )


@contextlib.contextmanager
def as_job(config: DictConfig) -> Iterator[DictConfig]:
    """The task's config as Hydra's `run_job` makes it (its output directory set, the `hydra` node removed and
    `HydraConfig` pointing at it), without creating the directory; `HydraConfig` is restored afterwards."""
    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    try:
        hydra_config.set_config(config)
        output_dir = os.path.join(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(output_dir)
        hydra_config.set_config(config)
        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        yield task_cfg
    finally:
        hydra_config.cfg = before
