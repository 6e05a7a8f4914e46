"""Spend one capability's slice of the budget: sample train prompts, have the teacher answer them.

Prompts come from one stream per capability and seed (`PromptStream`), the same for every
allocator. Responses are counted in supervision tokens (student tokenizer, response + EOS)
and accepted in stream order until the slice is full. The first response that would overflow
is dropped (default: the slice ends with a recorded shortfall) or truncated to fit, so a
slice is never exceeded.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from capdistill.capabilities.base import Source, split_of
from capdistill.config.schema import Generation, Overflow
from capdistill.errors import CapdistillError
from capdistill.losses.sparse import CacheSpec
from capdistill.prompting import Generated, prompt_ids, response_ids
from capdistill.supervision.engines import HFEngine, RowEngine, TeacherEngine
from capdistill.supervision.teacher_cache import CachedTeacher


@dataclass
class Supervised:
    """One training example: a train-pool prompt, the teacher's response and its supervision ids."""

    capability: str
    prompt: str
    response: str
    ids: list[int]  # the student-tokenizer ids trained on: the response and its EOS (no EOS if truncated)
    truncated: bool = False
    teacher: CachedTeacher | None = None  # the teacher's cached rows for `ids` (a teacher logit cache), if kept

    @property
    def tokens(self) -> int:
        return len(self.ids)


MAX_BATCHES = 10_000  # generate calls a round may make before its slices count as unfillable
MIN_RESPONSE_TOKENS = 2  # the shortest response with content: one token and EOS


@dataclass
class Slice:
    """What spending one slice produced."""

    capability: str
    allotted: int
    examples: list[Supervised] = field(default_factory=list)
    generated_tokens: int = 0  # tokens the teacher wrote (its own tokenizer), dropped ones included
    prompts: int = 0  # prompts of the stream it consumed: its examples, and a dropped overflowing response

    @property
    def spent(self) -> int:
        return sum(e.tokens for e in self.examples)

    @property
    def shortfall(self) -> int:
        return self.allotted - self.spent


def slices_state(slices: list[Slice]) -> list[dict[str, Any]]:
    """A round's slices as plain data and tensors (what `torch.save` stores and `weights_only` loads)."""
    return [asdict(piece) for piece in slices]


def slices_from_state(state: list[dict[str, Any]]) -> list[Slice]:
    """The slices `slices_state` stored."""
    out = []
    for piece in state:
        examples = [
            Supervised(**(e | {"teacher": e["teacher"] and CachedTeacher(**e["teacher"])})) for e in piece["examples"]
        ]
        out.append(Slice(**(piece | {"examples": examples})))
    return out


class PromptStream:
    """One capability's train prompts for one seed, in a fixed order.

    A common random number across allocators: whatever the split, a run that spends on a
    capability consumes its stream from the start, so two allocators with the same seed
    train on the same prompts, in the same order, as far as both spend (but for the one
    prompt whose response overflows a slice and is dropped). A slice takes the prompts after a
    cursor (the prompts earlier slices consumed, recorded per round), so resuming needs no state.

    With a difficulty `mix` (a curriculum's, `mixed`), prompt i is a function of i and the mix alone: its own RNG
    draws a uniform number that picks its level from the mix, then the prompt at that level. The same number
    picks the level under every mix, so runs whose rounds reach position i under the same mix share prompt i.
    """

    def __init__(self, source: Source, seed: str, difficulties: tuple[int, ...]) -> None:
        self.source, self.difficulties = source, difficulties
        self.mix: tuple[float, ...] | None = None
        self.key = f"supervision/{seed}/{source.name}"  # names the stream: its RNG and its sampling seeds
        self.rng = random.Random(self.key)
        self.prompts: list[str] = []
        self.drawn: dict[tuple[int, int], str] = {}  # under a mix: the prompts drawn so far, by (position, level)

    def mixed(self, mix: tuple[float, ...] | None) -> PromptStream:
        """This stream with its levels drawn from `mix` (None: uniformly). What it caches depends on the stream's
        key alone, so the views of one stream share it."""
        if mix == self.mix:
            return self
        if mix is not None and len(mix) != len(self.difficulties):
            raise CapdistillError(
                f"{self.source.name}: a difficulty mix of {len(mix)} levels for a world of {len(self.difficulties)}"
            )
        stream = copy.copy(self)
        stream.mix = mix
        return stream

    def take(self, start: int, n: int) -> list[str]:
        """Prompts `start` to `start + n` of the stream (train split only: never a dev, probe or eval prompt).

        A fixed pool (drawn with replacement, as its generator) serves at most as many prompts as it holds:
        a budget that needs more is mostly training on repeats, so the round stops there with a one-line
        error (the rounds already finished are kept)."""
        pool = self.source.train_prompts
        if pool is not None:
            if start >= pool:
                raise CapdistillError(
                    f"{self.source.name}: the budget needs more than the {pool} prompts of its train pool: "
                    f"lower budget.total_tokens or give {self.source.name} a smaller share"
                )
            n = min(n, pool - start)
        if self.mix is not None:
            return [self.at(i) for i in range(start, start + n)]
        misses = 0
        while len(self.prompts) < start + n:
            example = self.source.generate(self.rng, self.rng.choice(self.difficulties))
            if not self.source.hash_split or split_of(example.prompt) == "train":
                self.prompts.append(example.prompt)
                continue
            misses += 1
            if misses > 1000 * n:
                raise CapdistillError(f"{self.source.name}: its train prompt pool yielded too few prompts")
        return self.prompts[start : start + n]

    def at(self, position: int) -> str:
        """Prompt `position` under the stream's mix: its level drawn from the mix by its own RNG, then a train prompt."""
        rng = random.Random(f"{self.key}/{position}")
        level = rng.choices(self.difficulties, weights=self.mix)[0]
        if (position, level) not in self.drawn:
            for _ in range(1000):
                example = self.source.generate(rng, level)
                if not self.source.hash_split or split_of(example.prompt) == "train":
                    self.drawn[position, level] = example.prompt
                    break
            else:
                raise CapdistillError(f"{self.source.name}: its train prompt pool yielded too few prompts")
        return self.drawn[position, level]


def collect_round(
    shares: dict[str, int],
    streams: dict[str, PromptStream],
    cursors: dict[str, int],
    teacher: PreTrainedModel | TeacherEngine,
    teacher_tokenizer: PreTrainedTokenizerBase,
    student_tokenizer: PreTrainedTokenizerBase,
    generation: Generation,
    overflow: Overflow = Overflow.drop,
    max_batches: int = MAX_BATCHES,
    progress: bool = False,
    cache: CacheSpec | None = None,
) -> list[Slice]:
    """Fill every capability's share (`shares`: supervision tokens) with teacher-written responses to
    its stream's prompts from its cursor on; a slice consumes the prompts of its examples and of
    the overflowing response that ends it (`Slice.prompts`), so the next slice starts after them.

    The teacher writes through its engine (`teacher`: a `TeacherEngine`, or a model, which writes with
    in-process generate). The prompts of all unfilled slices go to the teacher together, so a round costs a few
    engine calls rather than one per capability; each slice asks for as many prompts as its
    mean response length so far says it still needs, to waste little generation past its end.
    Greedy responses (the default) depend on the batch only through floating-point rounding;
    sampled ones (temperature > 0) are seeded per call from the run's seed, the call's first
    capability and its position in that stream, so with sampling the prompts are common to
    allocators but the teacher's samples are not.

    With a `cache` spec the teacher keeps, at every token it writes, what a sparse loss reads of its
    distribution, and each example whose prompt encodes alike for both models and whose supervision ids
    are exactly the tokens the teacher wrote carries them (`Supervised.teacher`); what is generated and
    counted does not change. An engine that returns only top-k rows (`RowEngine`: no live teacher to fall
    back on) scores the examples it did not write token for token, so every example carries rows.
    """
    engine = teacher if isinstance(teacher, TeacherEngine) else HFEngine(teacher, teacher_tokenizer)
    slices = {name: Slice(name, tokens) for name, tokens in shares.items() if tokens > 0}
    mean_tokens = dict.fromkeys(slices, float(generation.max_new_tokens) / 2)
    open_ = set(slices)
    with tqdm(total=sum(shares.values()), desc="teacher writes", unit="tok", leave=False, disable=not progress) as bar:
        for _ in range(max_batches):
            bar.update(sum(s.spent for s in slices.values()) - bar.n)
            if not open_:
                return list(slices.values())
            asked: list[tuple[str, str]] = []
            for name in sorted(open_, key=list(slices).index):
                piece = slices[name]
                size = min(
                    generation.batch_size, math.ceil((piece.allotted - piece.spent) / max(mean_tokens[name], 1.0)) + 1
                )
                position = cursors.get(name, 0) + piece.prompts
                asked += [(name, prompt) for prompt in streams[name].take(position, size)]
            first = asked[0][0]
            call = f"{streams[first].key}/{cursors.get(first, 0) + slices[first].prompts}"
            responses = engine.write([prompt for _, prompt in asked], generation, call, cache)
            unscored: list[Supervised] = []
            for (name, prompt), written in zip(asked, responses):
                piece = slices[name]
                response = written.text
                if written.kept is not None and prompt_ids(teacher_tokenizer, prompt) != prompt_ids(
                    student_tokenizer, prompt
                ):  # rows conditioned on another prompt encoding (a chat template on one side only)
                    written.kept = None
                piece.generated_tokens += len(response_ids(teacher_tokenizer, response))
                if name not in open_:
                    continue
                piece.prompts += 1
                ids = response_ids(student_tokenizer, response)
                left = piece.allotted - piece.spent
                if len(ids) <= left:
                    piece.examples.append(Supervised(name, prompt, response, ids, teacher=cached(written, ids)))
                    unscored.append(piece.examples[-1])
                    if len(ids) == left:
                        open_.discard(name)
                    continue
                if overflow is Overflow.truncate and left > 0:
                    ids = ids[:left]
                    text = student_tokenizer.decode(ids, skip_special_tokens=True)
                    piece.examples.append(Supervised(name, prompt, text, ids, True, cached(written, ids)))
                    unscored.append(piece.examples[-1])
                open_.discard(name)
            if cache is not None and isinstance(engine, RowEngine):
                score_missing(engine, [e for e in unscored if e.teacher is None], cache)
            for name in open_:
                mean_tokens[name] = slices[name].spent / max(len(slices[name].examples), 1)
    raise CapdistillError(f"slices of {sorted(open_)} not filled after {max_batches} batches")


def score_missing(engine: RowEngine, examples: list[Supervised], cache: CacheSpec) -> None:
    """Rows for the examples whose supervision ids the teacher did not write token for token (a response cut at
    `max_new_tokens`, whose EOS row it never wrote, or one the student's tokenizer splits otherwise)."""
    if examples:
        rows = engine.score([(e.prompt, e.ids) for e in examples], cache)
        for example, (ids, values) in zip(examples, rows):
            example.teacher = CachedTeacher(ids, values)


def cached(written: Generated, ids: list[int]) -> CachedTeacher | None:
    """The teacher's kept rows for supervision `ids`: row j is its distribution after the tokens it wrote
    before j, so it serves when those are `ids[:j]` (None otherwise: the student's tokenization of the
    text differs from the teacher's tokens)."""
    if written.kept is None or written.kept[0].shape[0] < len(ids) or written.ids[: len(ids) - 1] != ids[:-1]:
        return None
    return CachedTeacher(*written.kept).head(len(ids))
