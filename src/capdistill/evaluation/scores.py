"""A model's scores in one place: probe accuracy and log-likelihood proxy per capability, task utility."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from capdistill.capabilities import WEIGHTED
from capdistill.evaluation.lmeval_tasks import hf_lm
from capdistill.evaluation.probes import generate_texts, generation_length, probe_accuracy, response_loglik
from capdistill.training.data import uses_chat_template
from capdistill.world.sources import WorldSources


def teacher_responses(
    teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sources: WorldSources, batch_size: int
) -> dict[str, list[str]]:
    """The teacher's greedy response to every probe prompt (the proxy's targets)."""
    return {
        name: generate_texts(
            teacher,
            tokenizer,
            [e.prompt for e in examples],
            generation_length(tokenizer, sources.capabilities[name], examples),
            batch_size,
        )
        for name, examples in sources.probes.items()
    }


def loglik_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: WorldSources,
    responses: dict[str, list[str]],
    batch_size: int,
) -> dict[str, float]:
    """The paper's proxy per capability: mean log-likelihood of the teacher's probe responses under `model`."""
    return {
        name: response_loglik(model, tokenizer, [e.prompt for e in examples], responses[name], batch_size)
        for name, examples in sources.probes.items()
    }


def weighted_utility(probe: dict[str, float], requirements: dict[str, float]) -> float:
    """Requirement-weighted mean of capability scores (weights normalised to sum to 1)."""
    total = sum(requirements.values())
    return sum(w * probe[c] for c, w in requirements.items()) / total


def suite_utility(probe: dict[str, float], sources: WorldSources, task_source: str) -> float:
    """A task's utility from capability scores alone: WEIGHTED, or one capability's score (a benchmark suite)."""
    return weighted_utility(probe, sources.requirements) if task_source == WEIGHTED else probe[task_source]


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: WorldSources,
    task_source: str,
    batch_size: int,
    responses: dict[str, list[str]] | None = None,
    predictions: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """`probe` score (0-100) per capability, `probe_loglik` (if teacher `responses` are given) and
    `task_utility`: accuracy on the held-out evaluation set of the task's source, or with
    source WEIGHTED the requirement-weighted mean of the probe scores.

    Synthetic capabilities are probed with their exact checkers; a benchmark suite
    (`world=paper`) through lm-eval on `probe_size` items of each benchmark. A `predictions`
    dict receives the greedy probe completions (checker-probed worlds).
    """
    if sources.suite is not None:
        lm = hf_lm(model, tokenizer, batch_size, uses_chat_template(tokenizer))
        probe = sources.suite.score(lm, sources.probe_size, uses_chat_template(tokenizer))["probe"]
    else:
        probe = {}
        for name, examples in sources.probes.items():
            probe[name], completions = probe_accuracy(
                model, tokenizer, sources.capabilities[name], examples, batch_size
            )
            if predictions is not None:
                predictions[name] = completions
    if task_source == WEIGHTED or sources.suite is not None:
        utility = suite_utility(probe, sources, task_source)
    else:
        task = sources.all_sources[task_source]
        utility = probe_accuracy(model, tokenizer, task, sources.task_eval(task_source), batch_size)[0]
    out: dict[str, Any] = {"probe": probe, "task_utility": utility}
    if responses is not None:
        out["probe_loglik"] = loglik_scores(model, tokenizer, sources, responses, batch_size)
    return out
