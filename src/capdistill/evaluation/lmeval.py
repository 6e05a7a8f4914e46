"""The synthetic world's probe and evaluation sets as lm-eval tasks, scored by the project's checkers.

`export_tasks` writes, per set, a JSONL of its examples (absolute paths) and a task YAML
whose `process_results` calls `check_doc`, i.e. the same `Source.check` the probes use,
so lm-eval's `exact_match` is the project's exact match. `evaluate_with_lmeval` scores an
in-memory model with lm-eval's `HFLM` through a `TaskManager(include_path=...)`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from capdistill.capabilities import Example, Source, WorldParams
from capdistill.evaluation.probes import max_response_tokens
from capdistill.io import atomic_write_text
from capdistill.training.data import PROMPT_END, uses_chat_template
from capdistill.world.sources import WorldSources, nested_tuples

TASK_PREFIX = "capdistill_"

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

CHECKER = '''"""lm-eval hook: score a completion with capdistill's own checker (written by capdistill)."""

from capdistill.evaluation.lmeval import check_doc


def process_results(doc, results):
    return {"exact_match": float(check_doc(doc, results[0]))}
'''


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


@lru_cache(maxsize=8)
def _sources(params: str) -> dict[str, Source]:
    world = WorldParams(**{k: nested_tuples(v) for k, v in json.loads(params).items()})
    return WorldSources.from_params(world).all_sources


def check_doc(doc: dict[str, Any], prediction: str) -> bool:
    """The project's checker on one exported document and one completion."""
    example = Example(**json.loads(doc["example"]))
    return _sources(doc["params"])[example.source].check(example, prediction)


def export_tasks(
    params: WorldParams,
    sets: dict[str, list[Example]],
    out_dir: Path,
    max_tokens: int | dict[str, int] = 64,
    chat: bool = False,
) -> list[str]:
    """Write one lm-eval task per named example set into `out_dir`; returns the task names.

    `max_tokens` is the generation length (per set name, or one for all); with `chat` the
    prompt goes bare into lm-eval's chat template instead of ending in the answer cue.
    """
    encoded = json.dumps(asdict(params))
    prompt_end = "" if chat else PROMPT_END
    return [
        write_task(
            out_dir,
            f"{TASK_PREFIX}{name}",
            [
                {"prompt": e.prompt, "answer": e.answer, "example": json.dumps(asdict(e)), "params": encoded}
                for e in examples
            ],
            doc_to_text="{{prompt}}" + prompt_end,
            doc_to_target="{{answer}}",
            until=[],
            max_tokens=max_tokens[name] if isinstance(max_tokens, dict) else max_tokens,
            hook="checker",
            hook_source=CHECKER,
            metric="exact_match",
        )
        for name, examples in sets.items()
    ]


def run_tasks(
    lm: Any, task_dir: Path, tasks: list[str], metric: str = "exact_match", chat: bool = False
) -> dict[str, float]:
    """`metric` (0-100) per local task of any lm-eval `LM`, through `simple_evaluate`."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    results = simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=TaskManager(include_path=str(task_dir)),
        apply_chat_template=chat,
        log_samples=False,
        verbosity="ERROR",
    )
    return {t: 100 * results["results"][t][f"{metric},none"] for t in tasks}


def hf_lm(model: Any, tokenizer: Any, batch_size: int = 16, chat: bool = False) -> Any:
    """lm-eval's HFLM around an in-memory model, on the model's device, with BOS as `prompt_ids` adds it."""
    from lm_eval.models.huggingface import HFLM

    device = str(next(model.parameters()).device)
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=not chat, device=device)


def evaluate_with_lmeval(
    model: Any, tokenizer: Any, task_dir: Path, tasks: list[str], batch_size: int = 16, chat: bool = False
) -> dict[str, float]:
    """Exact match (0-100) per task of an in-memory HF model, through lm-eval's HFLM."""
    return run_tasks(hf_lm(model, tokenizer, batch_size, chat), task_dir, tasks, chat=chat)


def lmeval_scores(
    model: Any, tokenizer: Any, sources: WorldSources, task_source: str, out_dir: Path, batch_size: int = 16
) -> dict[str, Any]:
    """A run's final evaluation through lm-eval: `probe` per capability and `task_utility`, as `evaluate` reports.

    The probe sets and the task's evaluation set are exported to `out_dir` (kept with the run,
    so `lm_eval --include_path` can re-score a saved student) and generated with the same
    length budget as the project's probes.
    """
    chat = uses_chat_template(tokenizer)
    task_set = f"task_{task_source}"
    sets = {**sources.probes, task_set: sources.task_eval(task_source)}
    lengths = {name: max_response_tokens(tokenizer, examples) for name, examples in sets.items()}
    tasks = export_tasks(sources.params, sets, out_dir, lengths, chat)
    scores = evaluate_with_lmeval(model, tokenizer, out_dir, tasks, batch_size, chat)
    by_set = dict(zip(sets, scores.values()))
    return {"probe": {n: by_set[n] for n in sources.probes}, "task_utility": by_set[task_set], "tasks": scores}
