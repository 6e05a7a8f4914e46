"""A model's scores on a run's held-out sets: exact match (the eval role reports it), and the
log-likelihood proxy (the dev role decides with it, see `evaluation.proxy`)."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from capdistill.capabilities import WEIGHTED, Example
from capdistill.capabilities.base import TASK
from capdistill.capabilities.sources import WorldSources
from capdistill.evaluation.lmeval_tasks import hf_lm
from capdistill.evaluation.probes import generation_length, probe_accuracy
from capdistill.prompting import generate_texts, uses_chat_template


def teacher_responses(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: WorldSources,
    sets: dict[str, list[Example]],
    batch_size: int,
) -> dict[str, list[str]]:
    """The teacher's greedy response to every prompt of `sets` (the proxy's targets)."""
    return {
        name: generate_texts(
            teacher,
            tokenizer,
            [e.prompt for e in examples],
            generation_length(tokenizer, sources.all_sources[examples[0].source], examples),
            batch_size,
        )
        for name, examples in sets.items()
    }


def weighted_utility(probe: dict[str, float], requirements: dict[str, float]) -> float:
    """Requirement-weighted mean of capability scores (weights normalised to sum to 1)."""
    total = sum(requirements.values())
    return sum(w * probe[c] for c, w in requirements.items()) / total


def suite_utility(probe: dict[str, float], sources: WorldSources, task_source: str) -> float:
    """A task's utility from capability scores alone: WEIGHTED, or one capability's score (a benchmark suite)."""
    return weighted_utility(probe, sources.requirements) if task_source == WEIGHTED else probe[task_source]


def task_sets(sources: WorldSources, task_source: str) -> set[str]:
    """The sets a task's score is computed from: its own (`TASK`), its one capability's, or the
    capabilities its requirement-weighted utility weighs."""
    if task_source in sources.composites:
        return {TASK}
    if task_source in sources.capabilities:
        return {task_source}
    return {c for c, w in sources.requirements.items() if w > 0}


def task_score(per_set: dict[str, float], sources: WorldSources, task_source: str) -> float:
    """The task's score from per-set scores: its own set's (`TASK`), else from the capabilities' (`suite_utility`)."""
    return per_set[TASK] if TASK in per_set else suite_utility(per_set, sources, task_source)


def exact_match(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: WorldSources,
    sets: dict[str, list[Example]],
    task_source: str,
    batch_size: int,
    progress: bool = False,
) -> dict[str, Any]:
    """`probe` score (0-100) per capability, `task_utility`, and `n`, the items behind each (`n["task"]`:
    the task's own set, its one capability's, or the weighted capabilities' together).

    Capabilities are scored on their sets with their exact checkers, a composite task on its
    own set (`TASK`); a WEIGHTED task's utility is the requirement-weighted mean of the
    capability scores, a one-capability task's that capability's. A benchmark suite
    (`world=paper`) is scored through lm-eval on `probe_size` items of each benchmark.
    """
    if sources.suite is not None:
        chat = uses_chat_template(tokenizer)
        probe = sources.suite.score(hf_lm(model, tokenizer, batch_size, chat), sources.probe_size, chat)["probe"]
        n = dict.fromkeys(probe, sources.probe_size)
        return {"probe": probe, "task_utility": suite_utility(probe, sources, task_source), "n": n}
    scores, n = {}, {}
    total = sum(map(len, sets.values()))
    with tqdm(total=total, desc="scoring", unit="item", leave=False, disable=not progress) as bar:
        for name, examples in sets.items():
            source = sources.all_sources[examples[0].source]
            scores[name] = probe_accuracy(model, tokenizer, source, examples, batch_size)[0]
            n[name] = len(examples)
            bar.update(len(examples))
    probe = {c: scores[c] for c in sources.capabilities if c in scores}
    if TASK not in n:
        n[TASK] = n[task_source] if task_source in n else sum(n[c] for c, w in sources.requirements.items() if w)
    return {"probe": probe, "task_utility": task_score(scores, sources, task_source), "n": n}
