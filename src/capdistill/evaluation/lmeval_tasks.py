"""Local lm-eval generation tasks (JSONL + YAML + a `process_results` hook) and running them on any LM.

Paths are written absolute, since lm-eval resolves `data_files` against the working directory
(which Hydra may change).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from capdistill.io import atomic_write_text, interactive

TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: {doc_to_text}
doc_to_target: {doc_to_target}
generation_kwargs:
  until: {until}
  do_sample: false
  max_gen_toks: {max_tokens}
process_results: !function {hook}.process_results
metric_list:
  - metric: {metric}
    aggregation: mean
    higher_is_better: true
"""


def write_task(
    out_dir: Path,
    task: str,
    rows: list[dict[str, Any]],
    *,
    doc_to_text: str,
    doc_to_target: str,
    until: list[str],
    max_tokens: int,
    hook: str,
    hook_source: str,
    metric: str,
) -> str:
    """One local lm-eval generation task: `rows` as JSONL, its YAML, and the `process_results` hook module.

    Strings go into the YAML JSON-quoted (valid YAML), paths are absolute, so the task can
    be registered from anywhere with `TaskManager(include_path=out_dir)`.
    """
    out_dir = Path(out_dir).resolve()
    data = out_dir / f"{task}.jsonl"
    atomic_write_text(data, "".join(json.dumps(r) + "\n" for r in rows))
    yaml = TASK_YAML.format(
        task=task,
        data=data,
        doc_to_text=json.dumps(doc_to_text),
        doc_to_target=json.dumps(doc_to_target),
        until=json.dumps(until),
        max_tokens=max_tokens,
        hook=hook,
        metric=metric,
    )
    atomic_write_text(out_dir / f"{hook}.py", hook_source)
    atomic_write_text(out_dir / f"{task}.yaml", yaml)
    return task


def local_task_manager(task_dir: Path) -> Any:
    """lm-eval's task index over `task_dir` only: the exported tasks are self-contained, and
    indexing lm-eval's own ~10k task YAMLs as well would take seconds per evaluation."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir), include_defaults=False)


def run_tasks(
    lm: Any, task_dir: Path, tasks: list[str], metric: str = "exact_match", chat: bool = False
) -> dict[str, float]:
    """`metric` (0-100) per local task of any lm-eval `LM`, through `simple_evaluate`."""
    from lm_eval import simple_evaluate

    results = simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=local_task_manager(task_dir),
        apply_chat_template=chat,
        log_samples=False,
        verbosity="ERROR",
    )
    return {t: 100 * results["results"][t][f"{metric},none"] for t in tasks}


def hf_lm(model: Any, tokenizer: Any, batch_size: int = 16, chat: bool = False) -> Any:
    """lm-eval's HFLM around an in-memory model, on the model's device (exported contexts carry their own BOS)."""
    from lm_eval.models.huggingface import HFLM

    device = str(next(model.parameters()).device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=not chat, device=device)
    if not interactive():  # its request bars pass `disable` explicitly, so TQDM_DISABLE cannot reach them
        for method in ("generate_until", "loglikelihood", "loglikelihood_rolling"):
            setattr(lm, method, functools.partial(getattr(lm, method), disable_tqdm=True))
    return lm
