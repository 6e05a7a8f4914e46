"""Exact-match probes by batched greedy generation."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from capdistill.capabilities.base import Example, Source
from capdistill.prompting import generate_texts, response_ids


def max_response_tokens(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], slack: int = 4) -> int:
    """Generation length that fits every reference response with some slack."""
    return max(len(response_ids(tokenizer, e.response)) for e in examples) + slack


def generation_length(tokenizer: PreTrainedTokenizerBase, source: Source, examples: Sequence[Example]) -> int:
    """How long a probed model may answer: the source's own length, else the reference responses'."""
    return source.max_new_tokens or max_response_tokens(tokenizer, examples)


def accuracy(source: Source, examples: Sequence[Example], predictions: Sequence[str]) -> float:
    """Exact-match accuracy in percent under the source's checker."""
    hits = sum(source.check(e, p) for e, p in zip(examples, predictions))
    return 100.0 * hits / max(len(examples), 1)


def probe_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    source: Source,
    examples: Sequence[Example],
    batch_size: int = 128,
) -> tuple[float, list[str]]:
    """Score `model` on `examples` of `source`: accuracy 0-100 and the predictions."""
    predictions = generate_texts(
        model, tokenizer, [e.prompt for e in examples], generation_length(tokenizer, source, examples), batch_size
    )
    return accuracy(source, examples, predictions), predictions
