"""Where the ranks are when Lightning starts them itself on each node, on one machine or under SLURM.

Lightning starts a node's ranks itself for `trainer=ddp` (`ddp_spawn` spawns them) and `trainer=fsdp`
(it runs the command again per device). Its `SLURMEnvironment` instead expects one SLURM task per GPU,
started by `srun`, and reads each process's rank from its task id: every rank spawned from one task would
claim that task's id, two ranks 0, and the second fails to bind rank 0's port. `NodeRanks` lets the
strategy number the ranks (node rank x devices + local rank) and takes from SLURM only this node's rank
and, across nodes, node 0's address and a port every node derives alike.
"""

from __future__ import annotations

import os

from pytorch_lightning.plugins.environments import LightningEnvironment, SLURMEnvironment

from capdistill.config.checks import ConfigError


def slurm_nodes() -> int:
    """How many nodes the `srun` step running this process spans, one process each (submitit's launcher starts
    its tasks so); 0 outside a step (no SLURM, or a batch script run directly on the allocation's first node)."""
    return int(os.environ.get("SLURM_STEP_NUM_NODES", 0))


def node_rank() -> int:
    """This process's node in a multi-node job: SLURM's node id across several nodes, else Lightning's
    `NODE_RANK` (or `GROUP_RANK`), else 0."""
    if slurm_nodes() > 1:
        return int(os.environ["SLURM_NODEID"])
    return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))


def leading_process() -> bool:
    """Whether this is the one process that logs the run: node 0's, and not a copy of it that Lightning started
    for another device (`trainer=fsdp` re-runs the command once per device, with `LOCAL_RANK` set)."""
    return node_rank() == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def check_nodes(num_nodes: int) -> None:
    """Refuse a layout this job does not run in: each node runs one capdistill process, which spawns the
    node's ranks, so `trainer.num_nodes` must be the nodes SLURM started one task on each (or, by hand,
    `MASTER_ADDR`, `MASTER_PORT` and `NODE_RANK` set on each node). Otherwise the fit would wait for ranks
    that never come, or several processes would each run the whole distillation into the same directory."""
    launched = slurm_nodes()
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", launched))
    if tasks > launched:
        raise ConfigError(
            f"this SLURM step runs {tasks} tasks on {launched} node(s), each a whole distillation: set "
            "hydra.launcher.tasks_per_node=1 (each node's task spawns its own ranks)"
        )
    by_hand = all(name in os.environ for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK"))
    if num_nodes == max(launched, 1) or (launched == 0 and by_hand):
        return
    raise ConfigError(
        f"trainer.num_nodes={num_nodes} but this job runs on {max(launched, 1)} node(s): launch one process per "
        f"node with hydra/launcher=submitit_slurm hydra.launcher.nodes={num_nodes} hydra.launcher.tasks_per_node=1 "
        "(or set MASTER_ADDR, MASTER_PORT and NODE_RANK on each node)"
    )


class NodeRanks(LightningEnvironment):
    """Lightning's own environment for ranks it starts, with SLURM's node layout when a job spans nodes.
    On one node (under SLURM or not) it is `LightningEnvironment`: this host, a free port."""

    @property
    def main_address(self) -> str:
        if slurm_nodes() > 1 and "MASTER_ADDR" not in os.environ:
            nodes = os.environ.get("SLURM_STEP_NODELIST", os.environ.get("SLURM_JOB_NODELIST", ""))
            return SLURMEnvironment.resolve_root_node_address(nodes)  # the step's first node runs node rank 0
        return super().main_address

    @property
    def main_port(self) -> int:
        if self._main_port == -1 and slurm_nodes() > 1 and "MASTER_PORT" not in os.environ:
            self._main_port = 15000 + int(
                os.environ["SLURM_JOB_ID"][-4:]
            )  # SLURMEnvironment's rule: same on every node
        return super().main_port

    def node_rank(self) -> int:
        return node_rank()
