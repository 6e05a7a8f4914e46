"""A model's scores in one place: probe accuracy and log-likelihood proxy per capability, task utility."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from capdistill.evaluation.probes import generate_texts, max_response_tokens, probe_accuracy, response_loglik
from capdistill.world.sources import WorldSources


def teacher_responses(
    teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sources: WorldSources, batch_size: int
) -> dict[str, list[str]]:
    """The teacher's greedy response to every probe prompt (the proxy's targets)."""
    return {
        name: generate_texts(
            teacher, tokenizer, [e.prompt for e in examples], max_response_tokens(tokenizer, examples), batch_size
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


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sources: WorldSources,
    task_source: str,
    batch_size: int,
    responses: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """`probe` accuracy (0-100) per capability, `probe_loglik` (if teacher `responses` are given) and
    `task_utility`: accuracy on the held-out evaluation set of the task's source."""
    probe = {
        name: probe_accuracy(model, tokenizer, sources.capabilities[name], examples, batch_size)[0]
        for name, examples in sources.probes.items()
    }
    task = sources.all_sources[task_source]
    utility = probe_accuracy(model, tokenizer, task, sources.task_eval(task_source), batch_size)[0]
    out: dict[str, Any] = {"probe": probe, "task_utility": utility}
    if responses is not None:
        out["probe_loglik"] = loglik_scores(model, tokenizer, sources, responses, batch_size)
    return out
