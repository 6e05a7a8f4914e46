"""Data parallel on CPU: `trainer=ddp` (`ddp_spawn`, gloo) in 2 processes gives the one-process record up to
rounding, inside a SLURM job too. Each rank takes its share of every batch, the loss is normalised over the
whole batch, the teacher reaches every rank, and only the main process writes rounds and the record.
Across nodes, the spawned ranks are numbered by node, and a layout the job does not run in is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE, STDOUT

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities import rank_zero as fabric_rank_zero
from pytorch_lightning.utilities import rank_zero
from torch.utils.data import DataLoader, RandomSampler

from capdistill.components import build_logger
from capdistill.config.checks import ConfigError
from capdistill.distill.batches import EpochShuffle
from capdistill.distill.run import distill
from capdistill.training.cluster import NodeRanks, check_nodes
from conftest import compose_config
from test_cli import ENV

COMMON = ["experiment=micro", "loss=fkl", "evaluation.lmeval=false", "budget.rounds=2"]
SAME = ("allotted_by_capability", "spent_by_capability", "examples_by_capability", "train_steps")


def slurm_step(nodes: int, node: int, tasks: int | None = None) -> dict[str, str]:
    """What `srun` sets for the task on `node` of a step over `nodes` nodes of this host, one task per node
    (submitit's launcher). Under Lightning's own SLURM environment, both ranks spawned from a one-node step's
    task took that task's rank 0, and the second failed to bind its port (measured)."""
    tasks = nodes if tasks is None else tasks
    return {
        "SLURM_JOB_ID": "31337",
        "SLURM_JOB_NAME": "distill",
        "SLURM_JOB_NODELIST": ",".join(["localhost"] * nodes),
        "SLURM_STEP_NODELIST": ",".join(["localhost"] * nodes),
        "SLURM_NTASKS": str(tasks),
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_STEP_NUM_NODES": str(nodes),
        "SLURM_STEP_NUM_TASKS": str(tasks),
        "SLURM_NODEID": str(node),
        "SLURM_PROCID": str(node),
        "SLURM_LOCALID": "0",
    }


@pytest.mark.slow
def test_ddp_on_two_nodes_of_two_cpu_processes_gives_the_one_process_record(micro_cache: Path, tmp_path: Path) -> None:
    """Two capdistill processes inside a 2-node SLURM step on this host, each spawning 2 ranks: 4 ranks, so some
    batches leave a rank without an example."""
    nodes, devices = 2, 2
    one_dir = tmp_path / "one"
    one = distill(compose_config(COMMON, one_dir, micro_cache))
    args = [*COMMON, "trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={devices}"]
    args += [f"trainer.num_nodes={nodes}", "trainer.precision=32-true", f"paths.cache_dir={micro_cache}"]
    command = [sys.executable, "-m", "capdistill", "distill", *args, f"hydra.run.dir={tmp_path / 'ddp'}"]
    processes = [
        subprocess.Popen(command, env=ENV | slurm_step(nodes, node), stdout=PIPE, stderr=STDOUT, text=True)
        for node in range(nodes)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * nodes, outputs[-1][-3000:]
    assert "All distributed processes registered. Starting with 4 processes" in outputs[0]
    ddp = json.loads((tmp_path / "ddp" / "record.json").read_text())
    for a, b in zip(ddp["rounds"], one["rounds"]):
        assert {k: a[k] for k in SAME} == {k: b[k] for k in SAME}
        assert a["student_trained_tokens"] == b["student_trained_tokens"]  # every rank's tokens, counted once
        # the live teacher's logits on each rank (fkl needs them); the ranks sum gradients in another order,
        # and Adam carries the rounding on: measured 1e-7 on a round's first step, 1.5e-3 after its 7 steps
        assert a["train_loss"]["first"] == pytest.approx(b["train_loss"]["first"], rel=1e-4)
        assert a["train_loss"]["last"] == pytest.approx(b["train_loss"]["last"], rel=1e-2)
    assert ddp["budget"] == one["budget"]
    for name, value in one["final"]["probe_loglik"].items():  # the optimizer state carried over between rounds
        assert ddp["final"]["probe_loglik"][name] == pytest.approx(value, rel=1e-3)
    assert [output.count("record: ") for output in outputs] == [1, 0]  # node 0's process writes, node 1's not
    written = sorted(p.name for p in (tmp_path / "ddp" / "rounds").iterdir())
    assert written == ["round-000", "round-001"]  # each round's supervision dropped once the round is saved
    curves = [train_curve(run / "logs" / "version_0" / "metrics.csv") for run in (tmp_path / "ddp", one_dir)]
    assert curves[0] and curves[0] == pytest.approx(curves[1], rel=1e-2)  # logged once, by the main process
    assert (tmp_path / "ddp" / "distill.log").read_text().count("round 2/2") == 1  # the job log: node 0's process's


def train_curve(path: Path) -> list[float]:
    table = pd.read_csv(path)
    return table["train/loss"].dropna().tolist()


def test_ranks_draw_the_same_order_every_epoch_whatever_training_drew() -> None:
    orders = []
    for draws in (1, 7):  # two ranks seeded alike whose training (dropout) draws differently between epochs
        torch.manual_seed(3)
        sampler = EpochShuffle(range(20))
        epochs = []
        for _ in range(3):
            epochs.append(list(sampler))
            torch.rand(draws)
        orders.append(epochs)
    assert orders[0] == orders[1]
    assert len({tuple(order) for order in orders[0]}) == 3  # a fresh order every epoch
    first = []
    for sampler in (EpochShuffle(range(20)), RandomSampler(range(20))):  # the DataLoader draws in between
        torch.manual_seed(3)
        first.append([int(i) for i in DataLoader(range(20), batch_size=None, sampler=sampler)])
    assert first[0] == first[1]  # so the first epoch is `DataLoader(shuffle=True)`'s, as before


def two_node_step(monkeypatch: pytest.MonkeyPatch, node: int, tasks: int = 2) -> None:
    """This process as the task on `node` of a 2-node step."""
    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    step = slurm_step(2, node, tasks) | {"SLURM_JOB_ID": "784242", "SLURM_JOB_NODELIST": "gpu[03-08]"}
    step |= {"SLURM_STEP_NODELIST": "gpu[07-08]"}  # a step on 2 of the allocation's 6 nodes
    for name, value in step.items():
        monkeypatch.setenv(name, value)


def spawned_rank(trainer: pl.Trainer, local_rank: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """The global rank the `ddp_spawn` worker `local_rank` takes (what the launcher and its set-up do before it
    joins the group)."""
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    trainer.strategy.set_world_ranks()
    return trainer.global_rank


def test_spawned_ranks_are_numbered_by_node_under_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    two_node_step(monkeypatch, node=1)
    for module in (rank_zero, fabric_rank_zero):  # a worker's set-up sets the process-wide rank
        monkeypatch.setattr(module.rank_zero_only, "rank", module.rank_zero_only.rank)
    settings = {"accelerator": "cpu", "devices": 2, "num_nodes": 2, "strategy": "ddp_spawn", "logger": False}
    ours = pl.Trainer(plugins=[NodeRanks()], **settings)  # built in the node's process: no LOCAL_RANK yet
    assert [spawned_rank(ours, local, monkeypatch) for local in (0, 1)] == [2, 3] and ours.world_size == 4
    environment = ours.strategy.cluster_environment
    assert (environment.main_address, environment.main_port, environment.node_rank()) == ("gpu07", 19242, 1)
    lightning = pl.Trainer(**settings)  # Lightning's SLURM environment: every spawned rank is the task's
    assert [spawned_rank(lightning, local, monkeypatch) for local in (0, 1)] == [1, 1]


def test_a_node_layout_the_job_does_not_run_in_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "SLURM_STEP_NUM_NODES", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    check_nodes(1)
    with pytest.raises(ConfigError, match="num_nodes=2 but this job runs on 1 node"):
        check_nodes(2)  # nobody starts the second node: the fit would wait for it forever
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.7")
    with pytest.raises(ConfigError, match="MASTER_PORT and NODE_RANK"):
        check_nodes(2)  # each node would pick its own free port, and every node would count as node 0
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("NODE_RANK", "1")
    check_nodes(2)  # launched by hand, one process per node
    two_node_step(monkeypatch, node=0)
    check_nodes(2)
    with pytest.raises(ConfigError, match="num_nodes=1 but this job runs on 2 node"):
        check_nodes(1)  # two whole distillations into one directory
    two_node_step(monkeypatch, node=0, tasks=16)
    with pytest.raises(ConfigError, match="tasks_per_node=1"):
        check_nodes(2)  # a task per GPU: each would run the whole distillation


def test_only_the_leading_process_logs_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = compose_config(["experiment=micro", "logger=csv"], tmp_path, tmp_path / "cache")
    two_node_step(monkeypatch, node=1)
    assert build_logger(cfg) is None  # node 1 runs the same recipe: one run in the dashboard, not two
    two_node_step(monkeypatch, node=0)
    assert build_logger(cfg) is not None
    monkeypatch.setenv("LOCAL_RANK", "1")  # a copy of the command Lightning started for another device
    assert build_logger(cfg) is None
