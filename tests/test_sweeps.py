"""Sweeps: a real Hydra multirun on the micro world, collect, plot, and a relaunch that skips finished jobs."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from capdistill.components import validate
from capdistill.config.hydra_setup import CONF_DIR, setup
from capdistill.errors import CapdistillError
from capdistill.results.collect import collect, variant
from capdistill.results.plot import BASELINES, DRAW, FIGURES, plot, upload_to_wandb
from test_cli import capdistill
from wandb_files import complete_records, read_wandb_run

CAPS = ["math", "code", "safety"]


def sweep(tmp_path: Path, cache: Path, *extra: str):
    return capdistill(
        "distill",
        "-m",
        "experiment=micro",
        "budget.total_tokens=3k,5k",
        "allocator=uniform,read",
        f"paths.cache_dir={cache}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        *extra,
    )


@pytest.mark.slow
def test_multirun_collect_plot_and_relaunch_skips_finished_jobs(tmp_path: Path, micro_cache: Path) -> None:
    first = sweep(tmp_path, micro_cache, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")  # parallel jobs
    assert first.returncode == 0, first.stderr[-2000:]
    records = sorted((tmp_path / "sweep").rglob("record.json"))
    assert len(records) == 4
    stamps = [p.stat().st_mtime_ns for p in records]

    collected = capdistill("collect", str(tmp_path / "sweep"))
    assert collected.returncode == 0, collected.stderr
    table = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert len(table) == 4 and len(pd.read_parquet(tmp_path / "sweep" / "results.parquet")) == 4
    assert sorted(zip(table["variant"], table["budget_tokens"])) == sorted(
        itertools.product(["read", "uniform"], [3000, 5000])
    )
    assert (table["spent_tokens"] <= table["budget_tokens"]).all()
    assert {"task_utility", "lmeval_task_utility", "probe/math", "delta/math", "negative_spillover"} <= set(
        table.columns
    )
    assert (table["lmeval_task_utility"] == table["task_utility"]).all()

    drawn = capdistill("plot", str(tmp_path / "sweep" / "results.csv"), "--figure", "budget_curves")
    assert drawn.returncode == 0, drawn.stderr
    assert "| variant | 3k | 5k |" in drawn.stdout
    for ext in ("png", "pdf", "md"):
        assert (tmp_path / "sweep" / f"budget_curves.{ext}").stat().st_size > 0

    # relaunched where a new job would fail its checks (no cache can be made here): the finished jobs need none
    (tmp_path / "a-file").write_text("")
    again = sweep(tmp_path, tmp_path / "a-file" / "cache")
    assert again.returncode == 0, again.stderr[-2000:]
    said = again.stdout + again.stderr
    assert said.count("already holds this run's complete record: skipping it") == 4
    assert "checked the configs of 0 jobs; 4 more already hold their run's complete record and are skipped" in said
    assert [p.stat().st_mtime_ns for p in records] == stamps  # no finished job was redone
    new_job = sweep(tmp_path, tmp_path / "a-file" / "cache", "seed=1")
    assert new_job.returncode != 0 and "paths.cache_dir" in new_job.stderr  # the unfinished ones are still checked


RECORDS_SH = Path(__file__).resolve().parents[1] / "experiments" / "records.sh"


def test_kept_records_fill_a_sweep_directory_without_replacing_its_own_and_are_kept_back(tmp_path: Path) -> None:
    """`experiments/run`'s record keeping (experiments/records.sh), on job directories named as sweeps name them:
    the kept records go where the sweep has none, never over one it wrote; afterwards every record is kept."""
    kept, out = tmp_path / "kept", tmp_path / "out"
    jobs = ["+preset=vllm_cpu_server,allocator=read,budget.total_tokens=8k,seed=0", "allocator=uniform,seed=1"]
    for job, text in zip(jobs, ["kept read", "kept uniform"]):
        (kept / job).mkdir(parents=True)
        (kept / job / "record.json").write_text(text)
    (out / jobs[1]).mkdir(parents=True)
    (out / jobs[1] / "record.json").write_text("rerun uniform")  # written by a sweep here
    (out / "allocator=new").mkdir()
    (out / "allocator=new" / "record.json").write_text("new")

    def copy(*args: Path | str) -> None:
        script = f'set -euo pipefail; source "{RECORDS_SH}"; copy_records "$@"'
        subprocess.run(["bash", "-c", script, "copy", *map(str, args)], check=True)

    copy(kept, out, "new")  # before the sweeps
    assert (out / jobs[0] / "record.json").read_text() == "kept read"
    assert (out / jobs[1] / "record.json").read_text() == "rerun uniform"
    copy(out, kept)  # when experiments/run ends
    assert {p.parent.name: p.read_text() for p in kept.rglob("record.json")} == {
        jobs[0]: "kept read",
        jobs[1]: "rerun uniform",
        "allocator=new": "new",
    }


def fake_table() -> pd.DataFrame:
    """A collected table as `collect` writes it, for figure tests without training (read = uniform + 5 per seed)."""
    rows = []
    for name, budget, seed, loss in itertools.product(
        ["uniform", "read", "single:math", "single:code"], [3000, 12000], [0, 1], ["sft", "fkl"]
    ):
        utility = 30 + budget / 1000 + seed + (5 if name == "read" else 0)
        row = {
            "run": f"{name}-{budget}-{seed}-{loss}",
            "experiment": "test",
            "allocator": name.split(":")[0],
            "variant": name,
            "loss": loss,
            "seed": seed,
            "budget_tokens": budget,
            "task_utility": utility,
            "dev_task_utility": utility - 1,
            "base_task_utility": 20.0,
            "teacher_task_utility": 80.0,
        }
        for i, c in enumerate(CAPS):
            row[f"probe/{c}"] = 20 + i * 10 + budget / 2000
            row[f"delta/{c}"] = (5.0 if name.endswith(c) else -1.0) * budget / 3000
            row[f"spent/{c}"] = (budget if name.endswith(c) else 0) if ":" in name else budget // len(CAPS)
        row["negative_spillover"] = -budget / 3000
        row["negative_transfer_rate"] = 50.0 if name.startswith("single") else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def one_seed(table: pd.DataFrame) -> pd.DataFrame:
    """One run per variant and budget: no interval anywhere."""
    return table[(table["seed"] == 0) & (table["loss"] == "sft")]


@pytest.mark.parametrize("single", [False, True], ids=["seeds", "one-seed"])
@pytest.mark.parametrize("figure", FIGURES)
def test_every_figure_is_drawn_with_its_table(tmp_path: Path, figure: str, single: bool) -> None:
    files = plot(one_seed(fake_table()) if single else fake_table(), figure, tmp_path)
    for key in ("png", "pdf", "md"):
        assert Path(files[key]).stat().st_size > 0
    assert "3k" in files["markdown"] and "12k" in files["markdown"]


@pytest.mark.parametrize("single", [False, True], ids=["seeds", "one-seed"])
@pytest.mark.parametrize("figure", BASELINES)
def test_allocator_figures_are_drawn_against_a_baseline(tmp_path: Path, figure: str, single: bool) -> None:
    files = plot(one_seed(fake_table()) if single else fake_table(), figure, tmp_path, baseline="uniform")
    for key in ("png", "pdf", "md"):
        assert Path(files[key]).stat().st_size > 0
    text = files["markdown"]
    assert text.startswith("baseline: uniform (paired per-seed differences); cells: mean ± Student-t 95% CI")
    assert "task utility (exact match, %)\n\n| variant | 3k | 12k |" in text
    assert "paired difference vs uniform\n\n| variant | 3k | 12k |" in text
    # read beats uniform by exactly 5 on every seed: the paired interval has no width
    pair = "+5.0 (n=1)" if single else "+5.0 ± 0.0 (n=4)"
    assert f"| read | {pair} | {pair} |" in text
    if single:
        assert "±" not in text.split("\n", 1)[1] and "| read | 38.0 (n=1) | 47.0 (n=1) |" in text


def test_budget_curves_show_reference_levels_and_the_paired_panel() -> None:
    table = fake_table()
    fig, _ = DRAW["budget_curves"](table, "uniform")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    runs = table.groupby(["variant", "budget_tokens"]).size()
    n = f"n={runs.min()}" if runs.min() == runs.max() else f"n={runs.min()}-{runs.max()}"
    assert {"teacher", "student base", f"read ({n})", f"uniform ({n})"} <= set(labels)  # n in the legend
    lines = [line for line in fig.axes[0].get_lines() if not line.get_label().startswith(("teacher", "student"))]
    assert len({(line.get_marker(), line.get_linestyle()) for line in lines}) == len(lines)  # each its own style
    low, high = fig.axes[0].get_ylim()
    assert 0 <= low < high <= 100  # exact match stays on a percentage axis
    assert fig.axes[1].get_title() == "paired difference vs uniform"
    assert fig.axes[2].get_title().startswith("share of spent tokens")  # the allocation panel
    assert [ax.get_title() for ax in fig.axes[3:] if ax.get_visible()] == sorted(CAPS)
    plt.close(fig)


def test_the_baseline_defaults_to_task_static_or_read(tmp_path: Path) -> None:
    table = fake_table()
    assert "no baseline" in plot(table, "budget_curves", tmp_path)["markdown"]
    assert "paired difference vs read" in plot(table, "ablation", tmp_path)["markdown"]
    static = table[table["variant"] == "uniform"].assign(variant="task_static")
    text = plot(pd.concat([table, static]), "schedules", tmp_path)["markdown"]
    assert "paired difference vs task_static" in text and "| uniform | +0.0 ± 0.0 (n=4) |" in text
    only_read = table[table["variant"] == "read"]  # a partial ablation sweep: nothing to pair with read yet
    assert "no baseline" in plot(only_read, "ablation", tmp_path)["markdown"]


@pytest.mark.parametrize("figure", ["losses", "transfer"])
def test_a_baseline_is_only_for_allocator_figures(tmp_path: Path, figure: str) -> None:
    with pytest.raises(CapdistillError, match="--baseline compares allocators"):
        plot(fake_table(), figure, tmp_path, baseline="uniform")


def test_an_unknown_baseline_is_a_one_line_error(tmp_path: Path) -> None:
    fake_table().to_csv(tmp_path / "results.csv", index=False)
    result = capdistill("plot", str(tmp_path / "results.csv"), "--figure", "schedules", "--baseline", "static")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "capdistill plot: error: unknown baseline 'static'; the table's variants: read, single:code" in result.stderr


def test_budget_table_reports_seed_means_and_confidence(tmp_path: Path) -> None:
    text = plot(fake_table(), "schedules", tmp_path)["markdown"]
    # read at 3k: utilities 38 and 39 for each of two losses -> mean 38.5, Student-t half-width
    # t(0.975, 3) * sd / sqrt(4) = 3.182 * 0.577 / 2 = 0.92, 4 runs
    assert "| read | 38.5 ± 0.9 (n=4) |" in text


def with_fixed_splits(table: pd.DataFrame) -> pd.DataFrame:
    """Two fixed splits: math=1 is best on eval (90 vs 10), code=1 is best on dev (80 vs 20)."""
    uniform = table[table["variant"] == "uniform"]
    on_eval = uniform.assign(variant="fixed:math=1", task_utility=90.0, dev_task_utility=20.0)
    on_dev = uniform.assign(variant="fixed:code=1", task_utility=10.0, dev_task_utility=80.0)
    return pd.concat([table, on_eval, on_dev], ignore_index=True)


@pytest.mark.parametrize("figure", ["schedules", "budget_curves"])
def test_grid_is_the_best_fixed_split_on_dev(tmp_path: Path, figure: str) -> None:
    text = plot(with_fixed_splits(fake_table()), figure, tmp_path, baseline="uniform")["markdown"]
    assert "| grid | 10.0 ± 0.0 (n=4) | 10.0 ± 0.0 (n=4) |" in text  # its eval score, chosen on dev
    assert "| grid | -23.5 ± 0.9 (n=4) |" in text  # paired: 10 - (33 or 34) at 3k
    assert "fixed:" not in text


@pytest.mark.parametrize("figure", ["schedules", "budget_curves"])
def test_grid_counts_task_static_and_tilted_splits_as_its_points(tmp_path: Path, figure: str) -> None:
    """The requirement vector is a point of every grid: where task_static is best on dev, grid reports its runs
    (and task_static keeps its own row); a `tilted:` split competes like a `fixed:` one."""
    table = fake_table()
    uniform = table[table["variant"] == "uniform"]
    static = uniform.assign(variant="task_static", task_utility=60.0, dev_task_utility=85.0)
    tilted = uniform.assign(variant="tilted:math", task_utility=70.0, dev_task_utility=30.0)
    grid = with_fixed_splits(pd.concat([table, static, tilted], ignore_index=True))
    text = plot(grid, figure, tmp_path, baseline="uniform")["markdown"]
    assert "| grid | 60.0 ± 0.0 (n=4) | 60.0 ± 0.0 (n=4) |" in text
    assert "| task_static | 60.0 ± 0.0 (n=4) | 60.0 ± 0.0 (n=4) |" in text
    text = plot(pd.concat([table, static.assign(dev_task_utility=5.0), tilted]), figure, tmp_path)["markdown"]
    assert "| grid | 70.0 ± 0.0 (n=4) | 70.0 ± 0.0 (n=4) |" in text and "tilted:" not in text


@pytest.mark.parametrize("figure", ["schedules", "budget_curves"])
def test_several_tasks_report_their_mean_then_each_task(tmp_path: Path, figure: str) -> None:
    """Two tasks: the tables of the mean over tasks (seeds paired, each the mean of its tasks), then each task's
    own; grid picks each task's split on its own dev scores (math=1 on task b, code=1 on task a)."""
    a = with_fixed_splits(fake_table()).assign(task="a")
    b = a.assign(task="b", task_utility=a["task_utility"] + 10 * (a["variant"] == "read"))
    b.loc[b["variant"] == "fixed:math=1", "dev_task_utility"] = 99.0
    text = plot(pd.concat([a, b], ignore_index=True), figure, tmp_path, baseline="uniform")["markdown"]
    mean, task_a, task_b = text.split("\n## task ")
    assert mean.startswith("## mean over 2 tasks (a, b)")
    assert "| read | +10.0 ± 0.0 (n=4) | +10.0 ± 0.0 (n=4) |" in mean  # (+5 on a, +15 on b) / 2, paired by seed
    assert "| grid | 50.0 ± 0.0 (n=4) | 50.0 ± 0.0 (n=4) |" in mean  # (code=1's 10 on a + math=1's 90 on b) / 2
    assert task_a.startswith("a\n") and "| read | +5.0 ± 0.0 (n=4) | +5.0 ± 0.0 (n=4) |" in task_a
    assert task_b.startswith("b\n") and "| read | +15.0 ± 0.0 (n=4) | +15.0 ± 0.0 (n=4) |" in task_b
    assert "| grid | 90.0 ± 0.0 (n=4) | 90.0 ± 0.0 (n=4) |" in task_b


@pytest.mark.parametrize("figure", ["schedules", "budget_curves"])
def test_grid_needs_dev_scores(tmp_path: Path, figure: str) -> None:
    table = with_fixed_splits(fake_table())
    for unscored in (table.drop(columns="dev_task_utility"), table.assign(dev_task_utility=float("nan"))):
        with pytest.raises(CapdistillError, match="grid picks the best fixed split .* have no dev scores"):
            plot(unscored, figure, tmp_path)


def test_transfer_reports_the_marginal_gain_per_budget_increment(tmp_path: Path) -> None:
    text = plot(fake_table(), "transfer", tmp_path)["markdown"]
    # single:math gains 5 points on math at 3k and 20 at 12k: 5/3k and 15/9k, both 1.67 per 1k tokens
    assert "| distilled | 0→3k | 3k→12k |" in text and "| math | +1.67 | +1.67 |" in text
    # the spillover grows with budget, pooled over every distilled capability (2 x 2 seeds x 2 losses)
    assert "| one capability, pooled | -1.0 ± 0.0 (n=8) | -4.0 ± 0.0 (n=8) |" in text
    assert "negative-transfer rate" in text and "| one capability, pooled | 50.0 ± 0.0 (n=8) |" in text
    # runs with a replay slice (or a curriculum) are read as the capability they distilled
    table = fake_table()
    replayed = table.assign(
        variant=table["variant"].where(table["allocator"] != "single", table["variant"] + "+replay=0.1")
    )
    assert plot(replayed, "transfer", tmp_path)["markdown"] == text


def test_transfer_reports_its_statistics_beside_the_paper_s_on_eval_and_dev(tmp_path: Path) -> None:
    """On-target change, off-target mean change and negative-transfer rate per budget, pooled over the distilled
    capabilities, on eval and on dev (the proxy's units, with three decimals)."""
    table = fake_table()
    table = table.assign(
        on_target_change=table["budget_tokens"] / 1000,
        dev_on_target_change=0.01 * table["seed"],
        dev_negative_transfer_rate=25.0,
    )
    text = plot(table, "transfer", tmp_path)["markdown"]
    statistics = text.split("transfer statistics")[1]
    assert "| statistic | 3k | 12k |" in statistics
    assert "| on-target change (points) | +3.0 ± 0.0 (n=8) | +12.0 ± 0.0 (n=8) |" in statistics
    assert "| negative-transfer rate (%) | 50.0 ± 0.0 (n=8) |" in statistics  # a rate: unsigned
    assert "| dev: on-target change (log-likelihood per token) | +0.005 ± 0.004 (n=8) |" in statistics
    assert "| dev: negative-transfer rate (%) | 25.0 ± 0.0 (n=8) |" in statistics
    assert "dev: off-target" not in statistics  # a column the table lacks: no row
    older = fake_table().drop(columns=["negative_transfer_rate"])  # collected before any of these columns
    assert "transfer statistics" not in plot(older, "transfer", tmp_path)["markdown"]


def test_transfer_needs_single_runs(tmp_path: Path) -> None:
    table = fake_table()
    with pytest.raises(CapdistillError, match="allocator=single"):
        plot(table[table["allocator"] != "single"], "transfer", tmp_path)


def test_collect_of_an_empty_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CapdistillError, match="no record.json"):
        collect(tmp_path)
    result = capdistill("plot", str(tmp_path / "missing.csv"), "--figure", "budget_curves")
    assert result.returncode == 2 and "does not exist" in result.stderr and result.stderr.count("\n") == 1


def test_variant_names_the_ablations() -> None:
    assert variant("read", {"beta": 0.5, "adapt": True, "use_requirements": True}) == "read"
    assert variant("read", {"beta": 0.0, "adapt": False}) == "read-no-adaptation-no-spillover"
    assert variant("read", {"trust_radius": 0.3, "context": "paper"}) == "read-trust-paper-context"
    assert variant("read", {"calibration": "off", "trust_radius": None}) == "read-no-calibration"
    assert variant("read", {"proxy_units": "relative"}) == "read-relative"
    assert variant("read", {"proxy_units": None}) == "read"
    assert variant("single", {"capability": "math"}) == "single:math"
    assert variant("fixed", {"weights": {"math": 0.5, "code": 0.5}}) == "fixed:code=0.5,math=0.5"
    assert variant("tilted", {"toward": "math"}) == "tilted:math"  # the class's shift
    assert variant("tilted", {"toward": "math", "shift": 0.25}) == "tilted:math@0.25"


def test_plot_uploads_to_an_offline_wandb_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    table = fake_table()
    files = plot(table, "budget_curves", tmp_path)
    upload_to_wandb(table, "budget_curves", files, "capdistill-test")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].rglob("media/images/*.png"))  # the figure went into the run
    assert list(runs[0].rglob("media/table/**/*.table.json"))  # and the table of runs
    run_file = next(runs[0].glob("*.wandb"))
    config = read_wandb_run(run_file)["config"]
    assert config["figure"] == "budget_curves" and config["runs"] == len(table) and config["seeds"]
    tags = next(list(r.run.tags) for r in complete_records(run_file) if r.HasField("run"))
    assert "aggregate" in tags and "figure=budget_curves" in tags


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_sweep_composes_and_validates(make_cfg, experiment: str) -> None:
    """Each documented `experiments/run <name>` command: every value of every swept key, validated."""
    setup()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        swept = compose("train", [f"experiment={experiment}"], return_hydra_config=True).hydra.sweeper.params or {}
    parser = OverridesParser.create()
    values = {}
    for key, choices in swept.items():
        override = parser.parse_override(f"{key}={choices}")
        sweep = override.is_sweep_override()
        values[key] = list(override.sweep_string_iterator()) if sweep else [override.get_value_element_as_str()]
    for i in range(max((len(v) for v in values.values()), default=1)):
        job = [f"{key}={v[min(i, len(v) - 1)]}" for key, v in values.items()]
        validate(make_cfg(f"experiment={experiment}", *job))


@pytest.mark.parametrize(
    ("launcher", "here"), [("basic", True), ("joblib", True), ("submitit_local", True), ("submitit_slurm", False)]
)
def test_the_sweeper_checks_jobs_only_under_a_launcher_that_runs_them_here(launcher: str, here: bool) -> None:
    """The checks see this machine's GPUs, nodes and files: a cluster's jobs check themselves where they run."""
    from hydra_plugins.capdistill_sweeper.checked_sweeper import LOCAL_LAUNCHERS

    shown = capdistill("distill", "experiment=micro", f"hydra/launcher={launcher}", "--cfg", "hydra")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert (OmegaConf.create(shown.stdout).hydra.launcher._target_ in LOCAL_LAUNCHERS) is here


SLURM_2_NODES = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.nodes=2",
    "hydra.launcher.tasks_per_node=1",  # one recipe process per node; it spawns a rank per GPU
    "hydra.launcher.gpus_per_node=8",
    "trainer=ddp",
    "trainer.num_nodes=2",
    "trainer.devices=8",
]


def test_a_two_node_slurm_job_composes() -> None:
    """The 2-node recipe of docs/scaling.md ("Several nodes (SLURM)"), at `--cfg` level (no cluster here):
    submitit asks SLURM for 2 nodes of 8 GPUs, and each node's Trainer runs 8 spawned ranks of a 16-rank DDP
    group."""
    shown = {}
    for part in ("hydra", "job"):
        result = capdistill("distill", "experiment=budget_curves", *SLURM_2_NODES, "--cfg", part)
        assert result.returncode == 0, result.stderr[-2000:]
        shown[part] = OmegaConf.create(result.stdout)
    launcher = shown["hydra"].hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 1, 8)
    trainer = shown["job"].trainer
    assert (trainer.strategy, trainer.num_nodes, trainer.devices, trainer.accelerator) == ("ddp_spawn", 2, 8, "gpu")


def test_multirun_with_cfg_is_one_line() -> None:
    result = capdistill("distill", "-m", "experiment=micro", "--cfg", "job")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("capdistill distill: error: Only one of --run, --multirun, --cfg")
