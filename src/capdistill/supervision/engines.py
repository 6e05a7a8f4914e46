"""How the teacher writes: one interface over in-process `transformers` generate (`hf`), vLLM's offline
engine in the run's process (`vllm`) and any OpenAI-compatible server (`server`).

Every engine takes prompts as text and formats them once, here, with the teacher's tokenizer and chat
template (`prompt_ids`): an engine receives token ids, so no second template and no second BOS can creep
in. Every sampling parameter goes with every request, so a server's defaults never apply: capdistill's
(`distill.generation`) and what in-process generate takes from the teacher's `generation_config.json` (its
top-k and min-p when sampling, its repetition penalty), and each request carries its own seed, derived from the call as
the `hf` engine seeds its call, so prompts stay common to allocators. An engine returns each completion's
token ids through its EOS and, for a teacher logit cache, the top-k raw log-probabilities at each of them.

`hf` sees the teacher's whole next-token distribution, so it keeps whatever a loss reads (top-k rows or
draws) and a batch without cached rows can run the live teacher. The other engines (`RowEngine`) see only
the top-k rows an engine returns, so they fill a top-k cache alone, and an example whose supervision ids
are not exactly the tokens the teacher wrote (a re-tokenization that differs, or a response cut at
`max_new_tokens`, whose EOS row the teacher never wrote) gets its rows from a scoring request instead.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from capdistill.config.schema import Generation
from capdistill.errors import CapdistillError
from capdistill.losses.sparse import CacheSpec
from capdistill.prompting import Generated, generate, generate_texts, prompt_ids
from capdistill.supervision.teacher_cache import compact_rows, keeper


class TeacherEngine(ABC):
    """The teacher's writer for a run: the round's supervision, its greedy dev responses, its reference scores."""

    label: ClassVar[str]

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    @abstractmethod
    def write(
        self, prompts: Sequence[str], generation: Generation, seed: str, cache: CacheSpec | None
    ) -> list[Generated]:
        """Completions of `prompts` as `generation` says, seeded from `seed` (the call's name), keeping what
        `cache` asks of the teacher at each written token (`Generated.kept`, compact)."""

    @abstractmethod
    def texts(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]:
        """Greedy completions as text (the `prompting.Writer` protocol: probes and dev responses)."""

    def close(self) -> None:  # noqa: B027 (most engines hold nothing to release)
        """Release what the engine holds (its connections)."""


class HFEngine(TeacherEngine):
    """In-process `transformers` generate: the default, as capdistill has always written."""

    label = "hf"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(tokenizer)
        self.model = model

    def write(
        self, prompts: Sequence[str], generation: Generation, seed: str, cache: CacheSpec | None
    ) -> list[Generated]:
        device = next(self.model.parameters()).device
        return generate(
            self.model,
            self.tokenizer,
            prompts,
            generation.max_new_tokens,
            generation.batch_size,
            generation.temperature,
            generation.top_p,
            seed=zlib.crc32(seed.encode()),
            keep=keeper(cache, seed, device) if cache is not None else None,
        )

    def texts(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]:
        return generate_texts(self.model, self.tokenizer, prompts, max_new_tokens, batch_size)


@dataclass(frozen=True)
class Request:
    """One completion request, in token ids, with every sampling parameter it is written under."""

    prompt: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    logprobs: int | None = None  # top-k raw log-probs at each written token
    prompt_logprobs: int | None = None  # and at each prompt token (a scoring request)
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0


Row = dict[int, float]  # one position's top entries: token id -> raw log-probability


@dataclass
class Answer:
    """What an engine wrote for one `Request`."""

    ids: list[int]  # through the EOS, when it wrote one
    finish: str  # "stop" (EOS) or "length" (cut at max_tokens)
    rows: list[Row] | None = None  # one per written token
    prompt_rows: list[Row | None] | None = None  # one per prompt token (the first is None)


class RowEngine(TeacherEngine):
    """An engine that returns top-k rows rather than logits: vLLM in-process, or a server (`vocab`: the
    width of the teacher's logits, which sizes the cache's ids as the `hf` engine's)."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, vocab: int, generation_config: GenerationConfig | None = None
    ) -> None:
        super().__init__(tokenizer)
        self.vocab = vocab
        self.model_defaults = model_defaults(generation_config or GenerationConfig())

    @abstractmethod
    def answer(self, requests: Sequence[Request], what: str) -> list[Answer]:
        """The engine's answers to `requests`, in order (`what`: the work, for an error message)."""

    def check_cache(self, cache: CacheSpec | None) -> None:
        """Only a top-k cache can be filled from rows."""
        if cache is not None and cache.kind != "topk":
            raise CapdistillError(f"teacher.engine={self.label} returns top-k rows; a {cache.kind} cache needs logits")

    def write(
        self, prompts: Sequence[str], generation: Generation, seed: str, cache: CacheSpec | None
    ) -> list[Generated]:
        self.check_cache(cache)
        defaults = self.model_defaults | ({} if generation.temperature > 0 else {"top_k": 0, "min_p": 0.0})
        requests = [
            Request(
                prompt_ids(self.tokenizer, prompt),
                generation.max_new_tokens,
                generation.temperature,
                generation.top_p,
                seed=zlib.crc32(f"{seed}/{i}".encode()),
                logprobs=None if cache is None else cache.size,
                **defaults,
            )
            for i, prompt in enumerate(prompts)
        ]
        out = []
        for answer in self.answer(requests, "writing supervision"):
            kept = None if cache is None else compact_rows(cache, *top_rows(answer.rows or [], cache.size), self.vocab)
            out.append(Generated(self.decode(answer.ids), answer.ids, kept))
        return out

    def score(self, pairs: Sequence[tuple[str, list[int]]], cache: CacheSpec) -> list[tuple[torch.Tensor, ...]]:
        """The teacher's cached rows for supervision `ids` it did not write token for token: row j is its
        top-k after the prompt and `ids[:j]`, read from one prefill of the prompt and `ids[:-1]` (vLLM's
        `prompt_logprobs`) and the one token it then writes."""
        self.check_cache(cache)
        requests, starts = [], []
        for prompt, ids in pairs:
            encoded = prompt_ids(self.tokenizer, prompt)
            starts.append(len(encoded))
            requests.append(Request(encoded + ids[:-1], 1, 0.0, 1.0, 0, cache.size, prompt_logprobs=cache.size))
        out = []
        for answer, start, (_, ids) in zip(self.answer(requests, "scoring supervision"), starts, pairs):
            rows = (answer.prompt_rows or [])[start : start + len(ids) - 1] + (answer.rows or [])[:1]
            if len(rows) != len(ids) or any(r is None for r in rows):
                raise CapdistillError(f"teacher.engine={self.label} returned {len(rows)} rows for {len(ids)} tokens")
            out.append(compact_rows(cache, *top_rows(rows, cache.size), self.vocab))
        return out

    def texts(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]:
        penalty = self.model_defaults["repetition_penalty"]
        requests = [
            Request(prompt_ids(self.tokenizer, p), max_new_tokens, 0.0, 1.0, 0, repetition_penalty=penalty)
            for p in prompts
        ]
        return [self.decode(a.ids) for a in self.answer(requests, "writing greedy responses")]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def model_defaults(config: GenerationConfig) -> dict[str, float]:
    """What in-process generate takes from the teacher's generation config beyond capdistill's own settings (its
    top-k and min-p when sampling, its repetition penalty always), so that every engine writes as `hf` does."""
    return {
        "top_k": config.top_k or 0,
        "min_p": config.min_p or 0.0,
        "repetition_penalty": config.repetition_penalty or 1.0,
    }


def top_rows(rows: Sequence[Row], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions' top entries as ids `[n, k]` and log-probs `[n, k]`, best first. An engine returns the top
    k and the written token (k + 1 entries where it ranks below k): the k best are kept; a row with
    fewer than k (a vocabulary smaller than k) is padded with id 0 at -inf."""
    ids = torch.zeros((len(rows), k), dtype=torch.long)
    values = torch.full((len(rows), k), float("-inf"))
    for n, row in enumerate(rows):
        best = sorted(row.items(), key=lambda item: -item[1])[:k]
        ids[n, : len(best)] = torch.tensor([i for i, _ in best], dtype=torch.long)
        values[n, : len(best)] = torch.tensor([v for _, v in best])
    return ids, values
