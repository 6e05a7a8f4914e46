"""The `capdistill` command line: help, unknown subcommands, one-line errors before compute."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def capdistill(
    *args: str, cwd: Path | None = None, timeout: int = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capdistill", *args],
        capture_output=True,
        text=True,
        env=ENV | (env or {}),
        cwd=cwd,
        timeout=timeout,
    )


EACH = """
import contextlib, io, json, sys, traceback

def run(task):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = task()
        except SystemExit as stop:
            code = stop.code
        except BaseException:
            traceback.print_exc()
            code = 1
    return code, out.getvalue(), err.getvalue()

def imports():
    import capdistill.components  # what a config subcommand imports before it validates

_, head_out, head_err = run(imports)
from capdistill.cli import main
results = []
for args in json.loads(sys.argv[1]):
    code, out, err = run(lambda: main(args))
    results.append([args, code, head_out + out, head_err + err])
with open(sys.argv[2], "w") as f:
    json.dump(results, f)
"""


def capdistill_each(commands: list[list[str]], scratch: Path) -> list[subprocess.CompletedProcess[str]]:
    """Several `capdistill` commands run one after another in one process, each with the exit status and output
    its own process gives: what importing the CLI's modules prints comes first in every command's output. The
    imports (torch, Lightning: about 10 s) are paid once, for commands that stop before any compute."""
    done = subprocess.run(
        [sys.executable, "-c", EACH, json.dumps(commands), str(scratch / "each.json")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [subprocess.CompletedProcess(*run) for run in json.loads((scratch / "each.json").read_text())]


def test_usage_lists_subcommands() -> None:
    result = capdistill("--help")
    assert result.returncode == 0
    assert "build-world" in result.stdout


def test_unknown_subcommand_is_one_line_error() -> None:
    result = capdistill("bulid-world")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "bulid-world" in result.stderr and "build-world" in result.stderr


def test_subcommand_help_lists_groups_and_options() -> None:
    result = capdistill("build-world", "--help")
    assert result.returncode == 0
    for group in ("teacher", "student", "capabilities", "task", "budget", "allocator", "loss", "trainer", "logger"):
        assert f"{group}:" in result.stdout
    assert "synthetic-small" in result.stdout and "experiment" in result.stdout


BUILD_WORLD_BAD = [
    ("capabilities.names=[math,telepathy]", "telepathy"),
    ("task=synthetic/tool_math +task.requirements.telepathy=1", "telepathy"),  # a valid override, then a bad one
    ("capabilities.probe_size=0", "capabilities.probe_size"),
    ("paths.cache_dir=/dev/null/cache", "paths.cache_dir"),
]
EXHAUSTED = "capabilities.params.num_entities=2 teacher.train.dev_size=50"  # a knowledge base too small for dev
DISTILL_BAD = [
    ("allocator=uniform budget.total_tokens=0", "budget.total_tokens"),
    ("allocator=fixed allocator.weights={telepathy:1.0}", "telepathy"),
    ("allocator=fixed allocator.weights={math:-1.0,code:1.0}", "negative"),
    ("allocator=fixed allocator.weights={math:0.0}", "sum to 0"),
    ("allocator=uniform teacher=hf", "teacher.path is not set"),
    ("allocator=uniform student=hf student.path=/no/such/model", "student.path /no/such/model does not exist"),
    ("allocator=uniform trainer=fsdp trainer.accelerator=cpu", "fsdp needs GPUs"),
    ("allocator=uniform trainer=ddp trainer.accelerator=cpu trainer.num_nodes=2", "num_nodes=2 but this job runs on 1"),
]


@pytest.fixture(scope="module")
def refused(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str], tuple[subprocess.CompletedProcess, Path]]:
    """The commands below that stop before building, run in one process (`capdistill_each`), each into a run
    directory and cache of its own: (subcommand, overrides) -> (result, run directory)."""
    root = tmp_path_factory.mktemp("refused")
    cases = [("build-world", o) for o, _ in BUILD_WORLD_BAD] + [("build-world", EXHAUSTED)]
    cases += [("distill", o) for o, _ in DISTILL_BAD]
    commands = []
    for i, (command, overrides) in enumerate(cases):
        run, cache = root / str(i), f"paths.cache_dir={root / str(i) / 'cache'}"
        if command == "build-world":  # the bad override after the cache directory (it may replace it)
            commands.append([command, "experiment=micro", cache, *overrides.split(" "), f"hydra.run.dir={run}"])
        else:
            commands.append([command, "experiment=micro", *overrides.split(" "), cache, f"hydra.run.dir={run}"])
    results = capdistill_each(commands, root)
    return {case: (result, root / str(i)) for i, (case, result) in enumerate(zip(cases, results))}


@pytest.mark.parametrize(("override", "needle"), BUILD_WORLD_BAD)
def test_bad_input_fails_in_one_line_before_building(refused, override: str, needle: str) -> None:
    result, _ = refused["build-world", override]
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and needle in lines[0]
    assert "building" not in result.stdout + result.stderr  # stopped before any model was built


def test_build_world_micro_end_to_end(tmp_path: Path) -> None:
    result = capdistill(
        "build-world", "experiment=micro", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| knowledge |" in result.stdout and "task: tool_math" in result.stdout
    assert "teacher: building" in result.stdout + result.stderr
    assert (tmp_path / "run" / "world.json").is_file()
    assert len(list((tmp_path / "cache").glob("teacher-synthetic-*/build.json"))) == 1
    assert len(list((tmp_path / "cache").glob("student-synthetic-small-*/build.json"))) == 1


@pytest.mark.slow
def test_multirun_builds_one_world_per_seed(tmp_path: Path, micro_cache: Path) -> None:
    """A cache holding micro's world (teacher seed 0) gains the teacher of seed 1, and each job writes its world."""
    teachers = len(list(Path(shutil.copytree(micro_cache, tmp_path / "cache")).glob("teacher-synthetic-*/build.json")))
    result = capdistill(
        "build-world",
        "-m",
        "experiment=micro",
        "teacher.seed=0,1",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (result.stdout + result.stderr).count("teacher: building") == 1  # seed 1's; seed 0's is reused
    assert len(list((tmp_path / "cache").glob("teacher-synthetic-*/build.json"))) == teachers + 1
    names = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/world.json"))
    assert names == ["experiment=micro,teacher.seed=0", "experiment=micro,teacher.seed=1"]  # named by overrides


def test_a_failing_sweep_job_is_said_when_it_fails_and_the_other_jobs_still_run(
    tmp_path: Path, micro_cache: Path
) -> None:
    """A job's one-line error ends that job only: the sweep runs the rest, then exits with status 2 naming it. The
    failure is one only the job meets (its directory holds a damaged round), so the sweeper's checks let it start."""
    from capdistill.distill.resume import ROUND_FILE, ROUNDS_DIR

    damaged = tmp_path / "allocator=uniform,budget.total_tokens=3k,evaluation.lmeval=False,experiment=micro"
    (damaged / ROUNDS_DIR / "round-000").mkdir(parents=True)
    (damaged / ROUNDS_DIR / "round-000" / ROUND_FILE).write_text("{not json")
    result = capdistill(
        "distill",
        "-m",
        "experiment=micro",
        "allocator=uniform",
        "evaluation.lmeval=false",
        "budget.total_tokens=3k,5k",
        f"paths.cache_dir={micro_cache}",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    said = f"{ROUND_FILE} is damaged"
    errors = [line for line in result.stderr.splitlines() if line.startswith("capdistill distill: error:")]
    assert len(errors) == 2 and said in errors[0], result.stderr  # when the job failed, then at the sweep's end
    assert errors[1].startswith("capdistill distill: error: sweep job ") and said in errors[1]
    assert "budget.total_tokens=3k" in errors[1] and "run the same command again" in errors[1]
    assert "Traceback" not in result.stderr
    assert [p.parent.name for p in tmp_path.glob("*/record.json")] == [
        "allocator=uniform,budget.total_tokens=5k,evaluation.lmeval=False,experiment=micro"
    ]


def test_a_sweep_whose_job_fails_a_check_starts_no_job(tmp_path: Path) -> None:
    """Every job's config is checked before the first starts: a bad value in the last jobs of a sweep is one line,
    naming the first failing job and how many fail, and no job directory is made."""
    result = capdistill(
        "distill",
        "-m",
        "experiment=micro",
        "allocator=uniform,read",
        "budget.total_tokens=5k,0",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("capdistill distill: error: sweep job allocator=uniform,budget.total_tokens=0,")
    assert "must be a positive whole number of tokens, got 0" in errors[0]
    assert "(2 of the sweep's 4 jobs fail a check); no job was started" in errors[0]
    assert "Traceback" not in result.stderr and "GPU available" not in result.stdout + result.stderr
    assert [p.name for p in (tmp_path / "sweep").iterdir()] == ["multirun.yaml"]


def test_exhausted_prompt_pool_fails_before_building(refused) -> None:
    result, run = refused["build-world", EXHAUSTED]
    assert result.returncode == 2
    assert "knowledge" in result.stderr and "dev" in result.stderr
    assert "building" not in result.stdout + result.stderr
    assert not (run / "cache").exists() or not any((run / "cache").iterdir())


def test_distill_micro_end_to_end(tmp_path: Path, micro_cache: Path) -> None:
    result = capdistill(
        "distill",
        "experiment=micro",
        "allocator=fixed",
        "allocator.weights={math:0.5,code:0.5}",
        "loss=fkl",
        f"paths.cache_dir={micro_cache}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["loss"] == "fkl" and len(record["rounds"]) == 2
    assert record["budget"]["spent_tokens"] <= record["budget"]["total_tokens"] == 5000


def test_tilted_runs_its_split_around_the_requirement_vector(tmp_path: Path, micro_cache: Path) -> None:
    """`allocator=tilted` from the command line: micro's task (math .4, multilingual .4, steerability .2) with half
    of every round moved onto steerability."""
    result = capdistill(
        "distill",
        "experiment=micro",
        "allocator=tilted",
        "allocator.toward=steerability",
        f"paths.cache_dir={micro_cache}",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "record.json").read_text())
    expected = {"math": 0.2, "multilingual": 0.2, "steerability": 0.6}
    for entry in record["rounds"]:
        split = {c: w for c, w in entry["allocation"].items() if w > 0}
        assert split == pytest.approx(expected), entry["allocation"]


def experiments_run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`experiments/run` as the README gives it, in a copy of the repository's layout at `repo` (its scripts, `conf`
    and this interpreter's environment as `.venv`), so its outputs and kept records land there."""
    root = Path(__file__).resolve().parents[1]
    (repo / "experiments").mkdir(parents=True, exist_ok=True)
    for link, target in (
        ("experiments/run", root / "experiments" / "run"),
        ("experiments/records.sh", root / "experiments" / "records.sh"),
        ("conf", root / "conf"),
        (".venv", Path(sys.prefix)),
    ):
        if not (repo / link).exists():
            (repo / link).symlink_to(target)
    return subprocess.run(
        ["bash", str(repo / "experiments" / "run"), *args], capture_output=True, text=True, env=ENV, timeout=900
    )  # 45 s alone; a parallel suite on 2 cores stretches it


@pytest.mark.slow
def test_smoke_shows_learning_and_an_allocator_difference_and_its_records_are_kept(tmp_path: Path) -> None:
    """`experiments/run smoke`: a teacher well above 0, the student learning the task, task_static ahead of
    uniform (measured: base 23.4, task_static 40.6, uniform 28.1 on 128 items), lm-eval equal to the probes. Its
    records are kept in experiments/records/smoke/, and on a machine without its outputs (nor a usable cache) the
    same command skips both jobs and draws the same table from them."""
    repo = tmp_path / "repo"
    result = experiments_run(repo, "smoke", f"paths.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = repo / "outputs" / "sweeps" / "smoke"
    records = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/record.json")}
    assert set(records) == {"allocator=task_static", "allocator=uniform"}  # job directories named by override
    static, uniform = records["allocator=task_static"], records["allocator=uniform"]
    assert min(static["reference"]["teacher"]["probe"].values()) >= 50  # micro's teacher scores 0
    base = static["reference"]["student_base"]["task_utility"]
    assert static["final"]["task_utility"] >= base + 10
    assert static["final"]["task_utility"] >= uniform["final"]["task_utility"] + 5
    for record in records.values():
        assert record["lmeval"]["probe"] == record["final"]["probe"]
    rounds = [line for line in result.stdout.splitlines() if "| split " in line]
    assert len(rounds) == 4 and "task utility (eval)" in rounds[0]  # one line per round, eval at the checkpoint
    kept = repo / "experiments" / "records" / "smoke"
    assert {p.parent.name for p in kept.glob("*/record.json")} == set(records)
    table = (sweep / "budget_curves.md").read_text()

    shutil.rmtree(repo / "outputs")  # another machine: the repository's records only, and no cache to be made
    (tmp_path / "a-file").write_text("")
    again = experiments_run(repo, "smoke", f"paths.cache_dir={tmp_path / 'a-file' / 'cache'}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (again.stdout + again.stderr).count("already holds this run's complete record: skipping it") == 2
    assert (sweep / "budget_curves.md").read_text() == table


def test_profile_micro_scores_teacher_and_student_on_the_eval_sets(tmp_path: Path, micro_cache: Path) -> None:
    result = capdistill("profile", "experiment=micro", f"paths.cache_dir={micro_cache}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert set(profile) >= {"teacher", "student_base", "splits"} and "dev_responses" not in profile
    assert profile["teacher"]["n"]["math"] == 8  # capabilities.probe_size of experiment=micro
    assert "| task utility |" in result.stdout and (tmp_path / "profile.md").is_file()


@pytest.mark.parametrize(("override", "needle"), DISTILL_BAD)
def test_distill_bad_input_fails_in_one_line_before_building(refused, override: str, needle: str) -> None:
    result, _ = refused["distill", override]
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "building" not in result.stdout + result.stderr


def complete(line: str) -> list[str]:
    """What bash completion offers for `line` (the script `capdistill -sc install=bash` installs calls this)."""
    env = {**ENV, "COMP_LINE": line, "COMP_POINT": str(len(line))}
    result = subprocess.run(
        [sys.executable, "-m", "capdistill", "-sc", "query=bash"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


def test_tab_completion_covers_subcommands_overrides_and_table_flags() -> None:
    assert complete("capdistill di") == ["distill"]
    assert set(complete("capdistill ")) == {"build-world", "distill", "profile", "collect", "plot", "simulate"}
    assert "allocator=read_trust" in complete("capdistill distill allocator=read_t")
    assert "experiment=micro" in complete("capdistill build-world experiment=mi")
    assert "allocator.kappa=" in complete("capdistill distill allocator=read allocator.kap")
    assert complete("capdistill plot results.csv --fig") == ["--figure"]
    assert complete("capdistill plot results.csv --figure ab") == ["ablation"]
    assert "--out" in complete("capdistill collect outputs/sweeps/demo --")
    install = subprocess.run(
        [sys.executable, "-m", "capdistill", "-sc", "install=bash"], capture_output=True, text=True, env=ENV
    )
    assert "complete -o nospace" in install.stdout and "-sc query=bash" in install.stdout
