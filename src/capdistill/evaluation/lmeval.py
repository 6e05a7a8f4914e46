"""A world's probe and evaluation sets as lm-eval tasks, scored by the project's checkers.

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

from capdistill.capabilities import Example, Source
from capdistill.capabilities.base import TASK
from capdistill.capabilities.sources import WorldSources
from capdistill.evaluation.lmeval_tasks import hf_lm, run_tasks, write_task
from capdistill.evaluation.probes import generation_length
from capdistill.evaluation.scores import task_score
from capdistill.prompting import PROMPT_END, uses_chat_template

TASK_PREFIX = "capdistill_"

CHECKER = '''"""lm-eval hook: score a completion with capdistill's own checker (written by capdistill)."""

from capdistill.evaluation.lmeval import check_doc


def process_results(doc, results):
    return {"exact_match": float(check_doc(doc, results[0]))}
'''


@lru_cache(maxsize=8)
def _sources(spec: str) -> dict[str, Source]:
    return WorldSources.from_spec(json.loads(spec)).all_sources


def check_doc(doc: dict[str, Any], prediction: str) -> bool:
    """The project's checker on one exported document and one completion."""
    example = Example(**json.loads(doc["example"]))
    return _sources(doc["world"])[example.source].check(example, prediction)


def export_tasks(
    spec: dict[str, Any],
    sets: dict[str, list[Example]],
    out_dir: Path,
    max_tokens: int | dict[str, int] = 64,
    chat: bool = False,
    bos: str | None = None,
) -> list[str]:
    """Write one lm-eval task per named example set into `out_dir`; returns the task names.

    `max_tokens` is the generation length (per set name, or one for all). The context is the
    one `prompt_ids` gives the model: `bos` (the tokenizer's BOS text, which lm-eval would not
    add for a tokenizer whose post-processor adds none), the prompt and the answer cue; with
    `chat` the prompt goes bare into lm-eval's chat template instead.
    """
    encoded = json.dumps(spec, sort_keys=True)
    prompt_end = "" if chat else PROMPT_END
    prefix = "" if chat or bos is None else bos
    return [
        write_task(
            out_dir,
            f"{TASK_PREFIX}{name}",
            [
                {"prompt": e.prompt, "answer": e.answer, "example": json.dumps(asdict(e)), "world": encoded}
                for e in examples
            ],
            doc_to_text=prefix + "{{prompt}}" + prompt_end,
            doc_to_target="{{answer}}",
            until=[],
            max_tokens=max_tokens[name] if isinstance(max_tokens, dict) else max_tokens,
            hook="checker",
            hook_source=CHECKER,
            metric="exact_match",
        )
        for name, examples in sets.items()
    ]


def evaluate_with_lmeval(
    model: Any, tokenizer: Any, task_dir: Path, tasks: list[str], batch_size: int = 16, chat: bool = False
) -> dict[str, float]:
    """Exact match (0-100) per task of an in-memory HF model, through lm-eval's HFLM."""
    return run_tasks(hf_lm(model, tokenizer, batch_size, chat), task_dir, tasks, chat=chat)


def lmeval_scores(
    model: Any,
    tokenizer: Any,
    sources: WorldSources,
    sets: dict[str, list[Example]],
    task_source: str,
    out_dir: Path,
    batch_size: int = 16,
) -> dict[str, Any]:
    """A run's final evaluation through lm-eval: `probe` per capability and `task_utility`, as
    `exact_match` reports them on the same eval `sets`.

    The sets are exported to `out_dir` (kept with the run, so `lm_eval --include_path` can
    re-score a saved student) and generated with the same length budget as the project's
    probes. A task without a set of its own takes its utility from the capability scores.
    """
    chat = uses_chat_template(tokenizer)
    names = {name: f"task_{task_source}" if name == TASK else name for name in sets}
    exported = {names[name]: examples for name, examples in sets.items()}
    lengths = {
        name: generation_length(tokenizer, sources.all_sources[examples[0].source], examples)
        for name, examples in exported.items()
    }
    tasks = export_tasks(sources.spec, exported, out_dir, lengths, chat, tokenizer.bos_token)
    scores = evaluate_with_lmeval(model, tokenizer, out_dir, tasks, batch_size, chat)
    by_set = {name: scores[f"{TASK_PREFIX}{names[name]}"] for name in sets}
    probe = {c: by_set[c] for c in sources.capabilities}
    return {"probe": probe, "task_utility": task_score(by_set, sources, task_source), "tasks": scores}
