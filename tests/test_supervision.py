"""Spending a capability's slice: teacher-written responses, exact token counts, drop or truncate."""

from __future__ import annotations

import pytest

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
