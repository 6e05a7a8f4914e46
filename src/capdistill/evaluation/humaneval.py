"""HumanEval as a local lm-eval task, `capdistill_humaneval`, executed in the sandbox.

lm-eval's own `humaneval` task reads the hub dataset and scores through `evaluate`'s
`code_eval` (also fetched from the hub); `capdistill_humaneval` is the same task (prompt,
stop sequences, greedy pass@1) on the packaged file, whose `process_results` runs each
program through `capdistill.capabilities.real.humaneval_problems.passes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capdistill.capabilities.real.humaneval_problems import TASK, TIMEOUT_S, load_problems
from capdistill.evaluation.lmeval_tasks import write_task

# lm-eval's humaneval generation settings: stop where a new top-level block would begin
UNTIL = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]

HOOK = '''"""lm-eval hook: run a HumanEval completion against the problem's tests (written by capdistill)."""

from capdistill.capabilities.real.humaneval_problems import passes


def process_results(doc, results):
    return {"pass@1": float(passes(doc, results[0], timeout=doc.get("timeout", 10.0)))}
'''


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
