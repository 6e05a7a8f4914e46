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
doc_to_text: "{{{{prompt}}}}{prompt_end}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: []
  do_sample: false
  max_gen_toks: {max_tokens}
process_results: !function checker.process_results
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""

CHECKER = '''"""lm-eval hook: score a completion with capdistill's own checker (written by capdistill)."""

from capdistill.evaluation.lmeval import check_doc


def process_results(doc, results):
    return {"exact_match": float(check_doc(doc, results[0]))}
'''


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
    out_dir = Path(out_dir).resolve()
    encoded = json.dumps(asdict(params))
    names = []
    for name, examples in sets.items():
        data = out_dir / f"{name}.jsonl"
        rows = [
            json.dumps({"prompt": e.prompt, "answer": e.answer, "example": json.dumps(asdict(e)), "params": encoded})
            for e in examples
        ]
        atomic_write_text(data, "\n".join(rows) + "\n")
        task = f"{TASK_PREFIX}{name}"
        tokens = max_tokens[name] if isinstance(max_tokens, dict) else max_tokens
        yaml = TASK_YAML.format(task=task, data=data, prompt_end="" if chat else PROMPT_END, max_tokens=tokens)
        atomic_write_text(out_dir / f"{task}.yaml", yaml)
        names.append(task)
    atomic_write_text(out_dir / "checker.py", CHECKER)
    return names


def evaluate_with_lmeval(
    model: Any, tokenizer: Any, task_dir: Path, tasks: list[str], batch_size: int = 16, chat: bool = False
) -> dict[str, float]:
    """Exact match (0-100) per task of an in-memory HF model, through lm-eval's HFLM."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    device = str(next(model.parameters()).device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=not chat, device=device)
    results = simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=TaskManager(include_path=str(task_dir)),
        apply_chat_template=chat,
        log_samples=False,
        verbosity="ERROR",
    )
    return {t: 100 * results["results"][t]["exact_match,none"] for t in tasks}


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
