"""Code: HumanEval problems (probe and eval, executed in the sandbox), reasoning-gym `codeio` train prompts."""

from __future__ import annotations

from capdistill.capabilities.base import Example
from capdistill.capabilities.pools import PoolSource
from capdistill.capabilities.real.answers import code_block
from capdistill.capabilities.real.gym import SPLIT_SEEDS, create_dataset, entries
from capdistill.capabilities.real.humaneval_problems import load_problems, passes

INSTRUCTION = "Complete the following Python function. Reply with the whole function in a ```python block.\n\n"
MAX_TRAIN_PROMPT_CHARS = 2000  # codeio questions can be long; keep the pool to what a probe-sized context holds


def completion_program(prompt: str, response: str) -> str:
    """What follows the HumanEval prompt: the response's function (a redefinition wins) or its body."""
    code = code_block(response)
    return "\n" + code if any(line.startswith(("def ", "import ", "from ")) for line in code.splitlines()) else code


def code_source(sizes: dict[str, int], seed: int = 0) -> PoolSource:
    """HumanEval split into probe (even problems) and eval (odd); codeio questions as train and dev prompts."""
    problems = load_problems()
    by_id = {p["task_id"]: p for p in problems}

    def problem_examples(split: str, parity: int) -> list[Example]:
        chosen = [p for i, p in enumerate(problems) if i % 2 == parity][: sizes.get(split, 0)]
        return [
            Example("code", INSTRUCTION + p["prompt"], p["canonical_solution"], p["task_id"], 1, "humaneval")
            for p in chosen
        ]

    def codeio(split: str) -> list[Example]:
        size = sizes.get(split, 0)
        data = create_dataset("codeio", seed * 100 + SPLIT_SEEDS[split], max(8 * size, 1))
        prompts = [e for _, e in entries(data, 8 * size) if len(e["question"]) <= MAX_TRAIN_PROMPT_CHARS][:size]
        return [Example("code", e["question"], str(e["answer"]), str(e["answer"]), 1, "codeio") for e in prompts]

    def check(example: Example, prediction: str) -> bool:
        problem = by_id[example.answer]
        return passes(problem, completion_program(problem["prompt"], prediction))

    source = PoolSource(
        "code",
        {
            "train": codeio("train"),
            "dev": codeio("dev"),
            "probe": problem_examples("probe", 0),
            "eval": problem_examples("eval", 1),
        },
        check,
    )
    source.max_new_tokens = 256
    source.runs_code = True
    return source
