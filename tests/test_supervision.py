"""Spending a capability's slice: teacher-written responses, exact token counts, drop or truncate."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from capdistill.capabilities.base import Example, split_of
from capdistill.capabilities.pools import PoolSource
from capdistill.errors import CapdistillError
from capdistill.prompting import response_ids
from capdistill.supervision.slices import Generation, Overflow, PromptStream, Slice, collect_round


@pytest.fixture(scope="module")
def world(micro_world):
    return micro_world


GENERATION = Generation(max_new_tokens=12, batch_size=16)


def stream(world, seed: str = "s", name: str = "code") -> PromptStream:
    sources, _, _ = world
    return PromptStream(sources.capabilities[name], seed, sources.difficulties)


def one_slice(world, prompts: PromptStream, cursor: int, allotted: int, overflow: Overflow = Overflow.drop) -> Slice:
    """One capability's slice: `collect_round` with one share."""
    _, teacher, student = world
    name = prompts.source.name
    pieces = collect_round(
        {name: allotted},
        {name: prompts},
        {name: cursor},
        teacher.model,
        teacher.tokenizer,
        student.tokenizer,
        GENERATION,
        overflow,
    )
    return pieces[0] if pieces else Slice(name, allotted)


def spend(world, allotted: int, overflow: Overflow = Overflow.drop, seed: str = "s", name: str = "code") -> Slice:
    return one_slice(world, stream(world, seed, name), 0, allotted, overflow)


@pytest.mark.parametrize("allotted", [1, 13, 100, 257])
def test_drop_never_exceeds_the_slice(world, allotted: int) -> None:
    piece = spend(world, allotted)
    assert piece.spent <= allotted and piece.shortfall == allotted - piece.spent
    assert piece.shortfall <= 13  # less than the longest response (12 new tokens + EOS)
    _, teacher, student = world
    for example in piece.examples:
        assert example.ids == response_ids(student.tokenizer, example.response)  # counted = trained on
        assert split_of(example.prompt) == "train"
    assert piece.generated_tokens >= piece.spent


@pytest.mark.parametrize("allotted", [1, 13, 100, 257])
def test_truncate_fills_the_slice_exactly(world, allotted: int) -> None:
    piece = spend(world, allotted, Overflow.truncate)
    assert piece.spent == allotted
    assert sum(e.truncated for e in piece.examples) <= 1


def test_same_seed_same_supervision(world) -> None:
    a, b, c = spend(world, 120), spend(world, 120), spend(world, 120, seed="other")
    assert [e.prompt for e in a.examples] == [e.prompt for e in b.examples]
    assert [e.prompt for e in a.examples] != [e.prompt for e in c.examples]


def test_prompt_streams_are_common_random_numbers(world) -> None:
    """Spending a capability in two rounds draws the same prompts, in order, as spending it in one:
    allocators with the same seed train on the same prompts as far as both spend."""
    whole = spend(world, 200)
    prompts = stream(world)
    first = one_slice(world, prompts, 0, 90)
    assert first.prompts == len(first.examples) + 1  # the overflowing response's prompt is consumed, not trained
    second = one_slice(world, prompts, first.prompts, 110)
    joined = [e.prompt for e in whole.examples]
    k = len(first.examples)
    assert [e.prompt for e in first.examples] == joined[:k]
    rest = joined[:k] + joined[k + 1 :]  # all but prompt k, the one whose response overflowed the first slice
    common = min(len(rest), k + len(second.examples))
    assert [e.prompt for e in first.examples + second.examples][:common] == rest[:common]


def test_a_round_fills_every_share_from_its_own_stream(world) -> None:
    """All capabilities' prompts go to the teacher together; each slice is what it would be alone."""
    _, teacher, student = world
    shares = {"code": 120, "math": 80, "safety": 0}
    streams = {name: stream(world, name=name) for name in shares}
    pieces = {
        s.capability: s
        for s in collect_round(shares, streams, {}, teacher.model, teacher.tokenizer, student.tokenizer, GENERATION)
    }
    assert set(pieces) == {"code", "math"}  # nothing is generated for an empty share
    for name in ("code", "math"):
        alone = spend(world, shares[name], name=name)
        assert [e.prompt for e in pieces[name].examples] == [e.prompt for e in alone.examples]
        assert pieces[name].spent <= shares[name]


def test_a_fixed_pool_serves_no_more_prompts_than_it_holds(world) -> None:
    """A budget that needs more prompts than a pool holds is refused in one line, not trained on repeats."""
    math = stream(world, name="math")
    train = [Example("math", p, "", "", 1, "t") for p in math.take(0, 3)]
    pool = PromptStream(PoolSource("pool", {"train": train}), "s", (1,))
    assert pool.take(0, 5) == pool.take(0, 3)  # asking past the end gets what is left
    with pytest.raises(CapdistillError, match="more than the 3 prompts of its train pool") as err:
        one_slice(world, pool, 0, 10_000)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------ the difficulty curriculum


class Levels:
    """A source that remembers the level it last generated a prompt at (a synthetic one, delegated to)."""

    def __init__(self, source) -> None:
        self.source, self.last = source, 0

    def __getattr__(self, name: str):
        return getattr(self.source, name)

    def generate(self, rng, difficulty: int) -> Example:
        self.last = difficulty
        return self.source.generate(rng, difficulty)


@pytest.fixture(scope="module")
def three_levels():
    """The default synthetic world's math source, at its three difficulty levels."""
    from capdistill.capabilities.sources import WorldSources
    from capdistill.capabilities.synthetic import WorldParams

    sources = WorldSources.from_params(WorldParams(), ["math"])
    assert sources.difficulties == (1, 2, 3)
    return sources


EARLY, LATE = (0.1, 0.8, 0.1), (0.05, 0.2, 0.75)  # the released ReAD code's first and last stages


def drawn(world, mix: tuple[float, ...], n: int) -> tuple[list[str], list[int]]:
    """The first `n` prompts of seed "s"'s math stream under `mix`, and the level of each."""
    source = Levels(world.capabilities["math"])
    stream = PromptStream(source, "s", world.difficulties).mixed(mix)
    prompts, levels = [], []
    for i in range(n):
        prompts += stream.take(i, 1)
        levels.append(source.last)
    return prompts, levels


def test_a_curriculum_draws_each_prompt_s_level_from_its_mix(three_levels) -> None:
    """Under a mix, the prompts' levels follow it; the same uniform number picks prompt i's level under every
    mix, so where two mixes give it the same level they give the same prompt; the stream itself is unchanged."""
    n = 3000
    (early, early_levels), (late, late_levels) = drawn(three_levels, EARLY, n), drawn(three_levels, LATE, n)
    for levels, mix in ((early_levels, EARLY), (late_levels, LATE)):
        assert [levels.count(level) / n for level in (1, 2, 3)] == pytest.approx(mix, abs=0.03)  # 3 s.e. at n=3000
    same_level = [i for i in range(n) if early_levels[i] == late_levels[i]]
    # one uniform number u: level 1 under both if u < .05, 2 if .1 <= u < .25 (.15), 3 if u >= .9 (.1)
    assert len(same_level) / n == pytest.approx(0.05 + 0.15 + 0.1, abs=0.03)
    assert all(early[i] == late[i] for i in same_level)
    stream = PromptStream(three_levels.capabilities["math"], "s", three_levels.difficulties)
    plain = stream.take(0, 50)
    assert stream.mixed(EARLY).take(100, 5) == early[100:105]  # a view of any stream of the seed: the same prompts
    assert stream.mixed(None) is stream and stream.take(0, 50) == plain  # views leave the stream as it was
    assert set(drawn(three_levels, (1.0, 0.0, 0.0), 200)[1]) == {1}


def test_the_released_curriculum_follows_budget_progress(make_cfg) -> None:
    from capdistill.config.schema import typed_settings

    curriculum = typed_settings(make_cfg("curriculum=easy_to_hard")).distill.curriculum
    mixes = [curriculum.mix(p) for p in (0.0, 0.29, 0.3, 0.69, 0.7, 0.95, 1.0)]
    assert mixes == [EARLY, EARLY, (0.1, 0.5, 0.4), (0.1, 0.5, 0.4), LATE, LATE, LATE]
    assert typed_settings(make_cfg()).distill.curriculum.mix(0.5) is None  # the default: no curriculum


def test_a_curriculum_run_records_each_round_s_mix_and_keeps_its_fingerprint_apart(run_micro, make_cfg) -> None:
    """End to end on the micro world (one level): each round records the mix its prompts were drawn from, by the
    budget spent before it; a run without a curriculum keeps the fingerprint it had before curricula existed."""
    from capdistill.results.identity import run_identity

    stages = "distill.curriculum.stages=[{until:0.5,mix:[1.0]},{until:1.0,mix:[2.0]}]"
    record, _ = run_micro("budget.rounds=3", stages)
    spent, total = 0, record["budget"]["total_tokens"]
    for entry in record["rounds"]:
        assert entry["difficulty_mix"] == ([1.0] if spent / total < 0.5 else [2.0])
        spent += sum(entry["spent_by_capability"].values())
    assert [e["difficulty_mix"] for e in record["rounds"]] == [[1.0], [1.0], [2.0]]
    assert "curriculum" in run_identity(record["config"])["distill"]
    plain = OmegaConf.to_container(make_cfg("experiment=micro"), resolve=True, enum_to_str=True)
    assert "curriculum" not in run_identity(plain)["distill"]
