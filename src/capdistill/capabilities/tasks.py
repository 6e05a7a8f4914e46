"""Downstream tasks: one-hot cards over one capability, and composites that need several."""

from __future__ import annotations

import random

from capdistill.capabilities.base import Example, Source
from capdistill.capabilities.lexicon import TOOLS, translate
from capdistill.capabilities.synthetic import (
    Code,
    LongContext,
    Math,
    ToolUse,
    WorldParams,
    _level,
    arithmetic_chain,
    call_text,
    chain_text,
)

# A task card whose `source` is WEIGHTED has as utility its requirement-weighted mean of
# capability probe scores (for suites without a task's own evaluation set, e.g. world=paper).
WEIGHTED = "weighted"


class WordProblemFormatted(Source):
    """A math word problem in the second language whose answer must be wrapped in brackets."""

    name = "word_problem_formatted"
    answer_marker = "respo"

    def __init__(self, params: WorldParams) -> None:
        self.math = Math(params)

    def generate(self, rng: random.Random, difficulty: int) -> Example:
        base = self.math.generate(rng, difficulty)
        prompt = f"{translate(base.prompt)} format : wrap"
        answer = f"[ {base.answer} ]"
        steps = base.response.rsplit(" answer ", 1)[0]
        return Example(self.name, prompt, f"{translate(steps)} respo {answer}", answer, difficulty, "wrapped")


class ToolMath(Source):
    """Compute an arithmetic result, then store it with a tool call."""

    name = "tool_math"
    answer_marker = None
    ASKS = ("compute {} and store it .", "work out {} , then save the result .", "calculate {} and keep the result .")

    def __init__(self, params: WorldParams) -> None:
        self.params = params
        self.tools = ToolUse(params)

    def generate(self, rng: random.Random, difficulty: int) -> Example:
        start = rng.randint(1, min(9, self.params.max_value))
        chain = arithmetic_chain(rng, start, _level(self.params.math_steps, difficulty), self.params.max_value)
        expression = " then ".join([str(start)] + [f"{op} {k}" for op, k, _ in chain])
        others = rng.sample(
            [t for t in sorted(TOOLS) if t != "store"], _level(self.params.tools_listed, difficulty) - 1
        )
        listed = ["store", *others]
        rng.shuffle(listed)
        ask = rng.choice(self.ASKS).format(expression)
        prompt = f"tools : {ToolUse.schema(listed)} . request : {ask}"
        call = call_text("store", (str(chain[-1][2]),))
        return Example(self.name, prompt, f"{chain_text(start, chain)} {call}", call, difficulty, "compute-store")

    def extract(self, text: str) -> str:
        words = text.split()
        return " ".join(words[words.index("call") :]) if "call" in words else ""

    def check(self, example: Example, prediction: str) -> bool:
        return self.tools.check(example, self.extract(prediction))


class ContextCode(Source):
    """Trace a program whose first input must be looked up in a long key-value context."""

    name = "context_code"

    def __init__(self, params: WorldParams) -> None:
        self.params = params
        self.code = Code(params)

    def generate(self, rng: random.Random, difficulty: int) -> Example:
        data = LongContext.context(rng, _level(self.params.context_pairs, difficulty), min(9, self.params.max_value))
        key = rng.choice(sorted(data))
        target = rng.choice(("x", "y", "z"))
        ((op, k, value),) = arithmetic_chain(rng, data[key], 1, self.params.max_value)
        env = {target: value}
        lines, trace, shown = [f"{target} = {key} {op} {k}"], [f"{key} {data[key]}", f"{target} = {value}"], target
        extra = _level(self.params.code_statements, difficulty) - 2
        if extra > 0:
            more_lines, more_trace, shown = self.code.program(rng, extra, env)
            lines, trace = lines + more_lines, trace + more_trace
        prompt = f"data : {LongContext.context_text(data)} . run : {' ; '.join(lines)} ; print {shown}"
        response = f"{' ; '.join(trace)} ; answer {env[shown]}"
        return Example(self.name, prompt, response, str(env[shown]), difficulty, "lookup-trace")


COMPOSITES: dict[str, type[Source]] = {cls.name: cls for cls in (WordProblemFormatted, ToolMath, ContextCode)}
