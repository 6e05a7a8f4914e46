"""vLLM's offline engine in the run's process as the teacher's engine (`teacher.engine=vllm`): the teacher's
checkpoint on the run's GPUs (`tensor_parallel_size` of them), written with vLLM's continuous batching.

vLLM is imported only here and only when this engine is chosen: it is no dependency of capdistill (it pins
its own torch and transformers; install it beside capdistill where its wheels match). The engine runs with
raw log-probabilities (the teacher's own distribution, before temperature and top-p) and ignores the
model's generation config, as the server engine asks of a server.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import GenerationConfig, PreTrainedTokenizerBase

from capdistill.errors import CapdistillError
from capdistill.supervision.engines import Answer, Request, Row, RowEngine

DEFAULT_MAX_LOGPROBS = 20  # vLLM's own default


def rows_of(positions: Sequence[dict[int, Any] | None] | None) -> list[Row | None] | None:
    """vLLM's per-position `{token id: Logprob}` as rows."""
    if positions is None:
        return None
    return [None if p is None else {int(t): float(lp.logprob) for t, lp in p.items()} for p in positions]


class VllmEngine(RowEngine):
    """The teacher at `path`, loaded by vLLM in this process."""

    label = "vllm"

    def __init__(
        self,
        path: str,
        tokenizer: PreTrainedTokenizerBase,
        vocab: int,
        *,
        dtype: str,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.85,
        max_logprobs: int | None = None,
        max_model_len: int | None = None,
        seed: int = 0,
        generation_config: GenerationConfig | None = None,
        **engine_args: Any,
    ) -> None:
        super().__init__(tokenizer, vocab, generation_config)
        try:
            from vllm import LLM
        except ImportError:
            raise CapdistillError(
                "teacher.engine=vllm needs vLLM in this environment (pip install vllm on a GPU machine); "
                "or serve the teacher and use teacher.engine=server"
            ) from None
        self.llm = LLM(
            model=path,
            tokenizer=path,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_logprobs=max(max_logprobs or 0, DEFAULT_MAX_LOGPROBS),
            max_model_len=max_model_len,
            seed=seed,
            logprobs_mode="raw_logprobs",
            generation_config="vllm",
            **engine_args,
        )

    def answer(self, requests: Sequence[Request], what: str) -> list[Answer]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                n=1,
                max_tokens=r.max_tokens,
                temperature=r.temperature,
                top_p=r.top_p,
                top_k=r.top_k,
                min_p=r.min_p,
                repetition_penalty=r.repetition_penalty,
                seed=r.seed,
                logprobs=r.logprobs,
                prompt_logprobs=r.prompt_logprobs,
                stop_token_ids=[self.tokenizer.eos_token_id],
                skip_special_tokens=True,
            )
            for r in requests
        ]
        prompts = [TokensPrompt(prompt_token_ids=r.prompt) for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        answers = []
        for request, output in zip(requests, outputs):
            written = output.outputs[0]
            answers.append(
                Answer(
                    ids=list(written.token_ids),
                    finish="length" if written.finish_reason == "length" else "stop",
                    rows=rows_of(written.logprobs) if request.logprobs else None,
                    prompt_rows=rows_of(output.prompt_logprobs) if request.prompt_logprobs else None,
                )
            )
        return answers
