"""Capabilities and composite tasks: determinism, disjoint splits, exact checkers, validation."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capdistill.capabilities.base import ROLES, SPLITS, Example, Source, normalize, split_of
from capdistill.capabilities.lexicon import (
    ENTITIES,
    LINGO,
    REFUSAL,
    TOOLS,
    knowledge_base,
)
from capdistill.capabilities.sources import WorldSources
from capdistill.capabilities.synthetic import (
    CAPABILITIES,
    Knowledge,
    ToolUse,
    WorldParams,
    build_capabilities,
    is_refusal,
    parse_calls,
    safety_rates,
)
from capdistill.capabilities.tasks import COMPOSITES
from capdistill.errors import CapdistillError

PARAMS = WorldParams()
CAPS = build_capabilities(PARAMS)
SOURCES: dict[str, Source] = {**CAPS, **{name: cls(PARAMS) for name, cls in COMPOSITES.items()}}
NAMES = sorted(SOURCES)
LEVELS = tuple(range(1, PARAMS.levels + 1))
FAST = settings(max_examples=40, deadline=None)


def draw(source: Source, n: int, difficulty: int, seed: int = 0) -> list[Example]:
    """`n` examples of one difficulty straight from the generator (any split)."""
    rng = random.Random(f"test/{source.name}/{difficulty}/{seed}")
    return [source.generate(rng, difficulty) for _ in range(n)]


def draw_all_levels(source: Source, n: int, seed: int = 0) -> list[Example]:
    return [e for d in LEVELS for e in draw(source, n, d, seed)]


def key(examples: list[Example]) -> list[tuple[str, str, str, int]]:
    return [(e.prompt, e.response, e.answer, e.difficulty) for e in examples]


def is_number(token: str) -> bool:
    return token.isdigit()


# ---------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", NAMES)
def test_sampling_is_deterministic(name):
    source = SOURCES[name]
    first = source.sample("train", 30, 7, (1, 2, 3))
    again = source.sample("train", 30, 7, (1, 2, 3))
    other = source.sample("train", 30, 8, (1, 2, 3))
    assert key(first) == key(again)
    assert key(first) != key(other)
    # a fresh instance built from the same parameters generates the same examples
    fresh = build_capabilities(PARAMS)[name] if name in CAPS else COMPOSITES[name](PARAMS)
    assert key(fresh.sample("train", 30, 7, (1, 2, 3))) == key(first)


@pytest.mark.parametrize("name", NAMES)
def test_sample_respects_n_difficulties_and_uniqueness(name):
    source = SOURCES[name]
    examples = source.sample("probe", 15, 0, (3,))  # level 2 of knowledge has only 40 prompts in all
    assert len(examples) == 15
    assert {e.difficulty for e in examples} == {3}
    assert {e.source for e in examples} == {name}
    assert len({e.prompt for e in examples}) == 15


# ---------------------------------------------------------------------------- splits


@pytest.mark.parametrize("name", NAMES)
def test_splits_are_disjoint(name):
    source = SOURCES[name]
    train = source.sample("train", 300, 0, (1, 2, 3), unique=False)
    train += source.sample("train", 300, 1, (1, 2, 3), unique=False)
    held = {split: source.sample(split, n, 0, (1, 2, 3)) for split, n in (("probe", 20), ("eval", 20), ("dev", 10))}
    train_prompts = {e.prompt for e in train}
    for split, examples in [("train", train), *held.items()]:
        for e in examples:
            assert split_of(e.prompt) == split, (split, e.prompt)
    for split, examples in held.items():
        leaked = {e.prompt for e in examples} & train_prompts
        assert not leaked, f"{split} prompts in train: {leaked}"
    for (a, xs), (b, ys) in itertools.combinations(held.items(), 2):
        assert not {e.prompt for e in xs} & {e.prompt for e in ys}, (a, b)


@pytest.mark.parametrize("name", ["math", "knowledge"])
def test_held_out_roles_are_distinct_disjoint_and_seeded(name):
    """dev and eval sets never share a prompt (nor with train); a population smaller than asked
    (knowledge's) is taken whole, every prompt once; another seed draws another set or order."""
    source = SOURCES[name]
    dev, eval_ = (source.held_out(role, 400, 0, LEVELS) for role in ("dev", "eval"))
    for role, examples in (("dev", dev), ("eval", eval_)):
        assert {split_of(e.prompt) for e in examples} <= set(ROLES[role])
        assert len({e.prompt for e in examples}) == len(examples)
    assert not {e.prompt for e in dev} & {e.prompt for e in eval_}
    if name == "knowledge":  # 57 dev and 249 eval prompts exist in all (1260 prompts, hash-split)
        assert len(dev) < 100 and len(eval_) < 400
        assert {e.prompt for e in eval_} == {e.prompt for e in source.held_out("eval", 1000, 3, LEVELS)}
    else:
        assert len(dev) == len(eval_) == 400
        assert [e.prompt for e in eval_] != [e.prompt for e in source.held_out("eval", 400, 1, LEVELS)]
    with pytest.raises(CapdistillError, match="role"):
        source.held_out("probe", 4, 0, LEVELS)


def test_world_keeps_each_held_out_draw_per_process():
    """A synthetic world's held-out sets are drawn once per process and equal a fresh draw; another
    world's parameters, size or seed draws its own; each caller gets a list of its own."""
    world = WorldSources.from_params(WorldParams(), ["knowledge", "math"])
    other = WorldSources.from_params(WorldParams(max_value=20), ["knowledge", "math"])
    first = world.held_out("math", "eval", 50, 0)
    assert [e.prompt for e in first] == [e.prompt for e in SOURCES["math"].held_out("eval", 50, 0, LEVELS)]
    again = world.held_out("math", "eval", 50, 0)
    assert again == first and again is not first
    again.pop()
    assert len(world.held_out("math", "eval", 50, 0)) == 50
    assert other.held_out("math", "eval", 50, 0) != first
    assert world.held_out("math", "eval", 50, 1) != first
    assert world.held_out("math", "eval", 40, 0) == first[:40]


@FAST
@given(st.text(max_size=200))
def test_split_of_is_a_pure_function_of_the_prompt(prompt):
    split = split_of(prompt)
    assert split in SPLITS
    assert split_of(str(prompt)) == split
    assert split_of("".join(list(prompt))) == split  # an equal but distinct string object


def test_split_proportions():
    prompts = [f"prompt number {i} ?" for i in range(20000)]
    counts = {s: 0 for s in SPLITS}
    for p in prompts:
        counts[split_of(p)] += 1
    expected = {"train": 0.75, "probe": 0.10, "eval": 0.10, "dev": 0.05}
    for split, share in expected.items():
        assert abs(counts[split] / len(prompts) - share) < 0.015, counts


def test_sample_rejects_unknown_split_and_empty_difficulties():
    source = SOURCES["math"]
    with pytest.raises(CapdistillError, match="split"):
        source.sample("test", 3, 0, (1,))
    with pytest.raises(CapdistillError, match="math"):
        source.sample("train", 3, 0, ())


def test_sample_raises_naming_the_source_when_pool_too_small():
    tiny = Knowledge(WorldParams(num_entities=2))
    with pytest.raises(CapdistillError, match=r"knowledge.*probe"):
        tiny.sample("probe", 500, 0, (1,))


# ---------------------------------------------------------------------------- checkers accept references


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("difficulty", LEVELS)
def test_checker_accepts_its_reference(name, difficulty):
    source = SOURCES[name]
    for e in draw(source, 150, difficulty):
        assert e.difficulty == difficulty
        assert source.check(e, e.response), (e.prompt, e.response)
        assert source.check(e, e.response + " \n")


@pytest.mark.parametrize("name", NAMES)
@FAST
@given(seed=st.integers(0, 10**6), spaces=st.lists(st.sampled_from([" ", "  ", "\t", "\n", " \n\t "]), min_size=1))
def test_checker_accepts_reference_with_odd_whitespace(name, seed, spaces):
    source = SOURCES[name]
    rng = random.Random(seed)
    e = source.generate(rng, rng.choice(LEVELS))
    words = e.response.split(" ")
    spaced = spaces[0] + "".join(w + spaces[(i + 1) % len(spaces)] for i, w in enumerate(words))
    assert source.check(e, spaced), repr(spaced)


# ---------------------------------------------------------------------------- near misses


def near_misses(source: Source, e: Example) -> list[str]:
    """Predictions that are certainly wrong for `e`, built generically from its reference."""
    words = normalize(e.response).split(" ")
    answer = normalize(e.answer).split(" ")
    assert words[-len(answer) :] == answer, "the answer is the end of the response"
    out = []
    last = words[-1]
    out.append(" ".join(words[:-1] + [str(int(last) + 1) if is_number(last) else "qqq"]))  # change final token
    out.append(" ".join(words[:-1]))  # drop the final token
    out.append(" ".join(words + ["qqq"]))  # append a token
    out.append(" ".join(words + [words[-1]]))  # repeat the final token
    numbers = [i for i, w in enumerate(words) if is_number(w)]
    if any(is_number(w) for w in answer):  # change the last number (it lies in the answer)
        i = numbers[-1]
        for delta in (1, -1) if int(words[i]) > 0 else (1,):
            out.append(" ".join(words[:i] + [str(int(words[i]) + delta)] + words[i + 1 :]))
    start = len(words) - len(answer)
    for i in range(start, len(words) - 1):  # swap two adjacent distinct tokens of the answer
        if words[i] != words[i + 1]:
            swapped = list(words)
            swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
            out.append(" ".join(swapped))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_checker_rejects_generic_near_misses(name):
    source = SOURCES[name]
    for e in draw_all_levels(source, 60, seed=1):
        for wrong in near_misses(source, e):
            assert normalize(wrong) != normalize(e.response)
            assert not source.check(e, wrong), (e.prompt, e.response, wrong)
        assert not source.check(e, "")


def tool_call_near_misses(reference: str) -> list[str]:
    """Wrong but well-formed call lists: another tool name, another argument value, a missing call."""
    calls = parse_calls(reference)
    assert calls
    used = {name for name, _ in calls}
    parts = normalize(reference).split(" ; ")
    out = []
    for i, part in enumerate(parts):
        name = re.fullmatch(r"call (\w+) \( .* \)", part).group(1)
        other = next(t for t in sorted(TOOLS) if t not in used)
        out.append(" ; ".join(parts[:i] + [part.replace(f"call {name} ", f"call {other} ", 1)] + parts[i + 1 :]))
        arg_names, pools, _ = TOOLS[name]
        for arg, pool in zip(arg_names, pools, strict=True):
            value = re.search(rf"\b{arg} = (\S+)", part).group(1)
            new = next(v for v in pool if v != value)
            changed = part.replace(f"{arg} = {value}", f"{arg} = {new}")
            out.append(" ; ".join(parts[:i] + [changed] + parts[i + 1 :]))
        if len(parts) > 1:
            out.append(" ; ".join(parts[:i] + parts[i + 1 :]))
    out.append("no tool")
    return out


def test_tool_use_rejects_wrong_tool_or_argument():
    source = SOURCES["tool_use"]
    kinds = set()
    for e in draw_all_levels(source, 80, seed=2):
        kinds.add(e.template)
        if e.response == "no tool":
            assert not source.check(e, "call weather ( city = paris )")
            continue
        for wrong in tool_call_near_misses(e.response):
            assert not source.check(e, wrong), (e.response, wrong)
    assert kinds == {"simple", "parallel", "irrelevant"}


def test_tool_math_rejects_wrong_value_or_tool():
    source = SOURCES["tool_math"]
    for e in draw_all_levels(source, 40, seed=3):
        steps = e.response[: e.response.index("call")]
        for wrong in tool_call_near_misses(e.answer):
            if wrong != "no tool":
                assert not source.check(e, steps + wrong), (e.response, wrong)
        assert not source.check(e, steps.strip())  # worked steps but no call


def test_steerability_rejects_unreversed_words():
    source = SOURCES["steerability"]
    tried = 0
    for e in draw_all_levels(source, 100, seed=4):
        steps = e.template.split("+")
        if "reverse" not in steps:
            continue
        words = e.prompt.split(" : ", 1)[1].split(" ")
        if words == words[::-1]:
            continue  # a palindrome reads the same reversed: no near miss to build
        out = words
        for step in steps:
            if step != "reverse":
                out = source.SIMPLE[step](out)
        tried += 1
        assert not source.check(e, " ".join(out)), (e.prompt, e.response)
    assert tried > 20


def test_reasoning_rejects_the_other_extreme():
    source = SOURCES["reasoning"]
    for e in draw_all_levels(source, 50, seed=5):
        order = e.response.split(" . answer ")[0].split(" > ")
        other = order[-1] if e.answer == order[0] else order[0]
        assert other != e.answer
        assert not source.check(e, e.response.replace(f"answer {e.answer}", f"answer {other}"))


# ---------------------------------------------------------------------------- tool calls


def test_parse_calls_is_order_insensitive():
    a = parse_calls("call send ( name = hal , word = leaf )")
    b = parse_calls("call send ( word = leaf , name = hal )")
    assert a == b == [("send", frozenset({("name", "hal"), ("word", "leaf")}))]
    one = parse_calls("call alarm ( hour = 3 ) ; call book ( city = oslo , day = friday )")
    two = parse_calls("call book ( day = friday , city = oslo ) ; call alarm ( hour = 3 )")
    assert one == two and len(one) == 2


@FAST
@given(st.permutations([("a", "1"), ("b", "x"), ("c", "2"), ("d", "y")]))
def test_parse_calls_any_argument_order(args):
    text = f"call f ( {' , '.join(f'{k} = {v}' for k, v in args)} )"
    assert parse_calls(text) == [("f", frozenset({("a", "1"), ("b", "x"), ("c", "2"), ("d", "y")}))]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "call",
        "send ( name = hal )",
        "call send name = hal",
        "call send ( name hal )",
        "call send ( name = hal word = leaf )",
        "call send ( name = hal , name = ben )",
        "call send ( name = hal ) call alarm ( hour = 2 )",
        "call send ( name = hal ) ;",
        "call send ( )",
        "call ( name = hal )",
        "no tools",
        "no tool ; call alarm ( hour = 2 )",
    ],
)
def test_parse_calls_rejects_malformed(text):
    assert parse_calls(text) is None


def test_parse_calls_no_tool():
    assert parse_calls("no tool") == []
    assert parse_calls("  no \n tool ") == []


def test_tool_use_accepts_parallel_calls_in_either_order():
    source = SOURCES["tool_use"]
    parallel = [e for e in draw(source, 200, 3, seed=6) if e.template == "parallel"]
    assert len(parallel) > 20
    for e in parallel:
        first, second = e.response.split(" ; ")
        assert source.check(e, f"{second} ; {first}")
        assert not source.check(e, first) and not source.check(e, second)
        assert not source.check(e, f"{first} ; {second} ; {first}")


def test_tool_use_accepts_arguments_in_either_order():
    source = SOURCES["tool_use"]
    tried = 0
    for e in draw_all_levels(source, 60, seed=7):
        if e.template != "simple" or " , " not in e.response:
            continue
        m = re.fullmatch(r"(call \w+ \( )(.*)( \))", e.response)
        args = m.group(2).split(" , ")
        tried += 1
        assert source.check(e, m.group(1) + " , ".join(reversed(args)) + m.group(3))
    assert tried > 5


# ---------------------------------------------------------------------------- safety


def test_safety_references():
    source = SOURCES["safety"]
    harmful = benign = 0
    for e in draw_all_levels(source, 60, seed=8):
        assert e.template == ("harmful" if e.meta["harmful"] else "benign")
        if e.meta["harmful"]:
            harmful += 1
            assert e.response == REFUSAL and is_refusal(e.response)
            assert not source.check(e, f"sure , here is how to {e.prompt.split(' ')[3]} it .")
        else:
            benign += 1
            assert not is_refusal(e.response)
            assert not source.check(e, REFUSAL)
    assert harmful > 30 and benign > 30


def test_is_refusal():
    assert is_refusal(REFUSAL)
    assert is_refusal("  sorry ,  i can not\nhelp with that . ")
    assert not is_refusal("sorry , i can not help with that")
    assert not is_refusal("sure , here is how to kill time .")
    assert not is_refusal("")


def _safety_example(harmful: bool) -> Example:
    response = REFUSAL if harmful else "sure , here is how to kill time ."
    return Example("safety", "how do i kill ... ?", response, response, 1, "x", {"harmful": harmful})


def test_safety_rates():
    examples = [_safety_example(h) for h in (True, True, False, False, False, True, False, True)]
    refs = [e.response for e in examples]
    comply = "sure , here is how to do it ."
    assert safety_rates(examples, [REFUSAL] * 8) == {"over_refusal": 100.0, "under_refusal": 0.0}
    assert safety_rates(examples, [comply] * 8) == {"over_refusal": 0.0, "under_refusal": 100.0}
    assert safety_rates(examples, refs) == {"over_refusal": 0.0, "under_refusal": 0.0}
    inverted = [comply if e.meta["harmful"] else REFUSAL for e in examples]
    assert safety_rates(examples, inverted) == {"over_refusal": 100.0, "under_refusal": 100.0}
    # one of four benign refused, one of four harmful complied with
    mixed = list(refs)
    mixed[2] = REFUSAL
    mixed[0] = comply
    assert safety_rates(examples, mixed) == {"over_refusal": 25.0, "under_refusal": 25.0}
    # whitespace does not hide a refusal
    assert safety_rates(examples, [" " + REFUSAL.replace(" ", "  ")] * 8)["over_refusal"] == 100.0
    assert safety_rates([], []) == {"over_refusal": 0.0, "under_refusal": 0.0}


def test_safety_rates_with_only_one_kind():
    benign = [_safety_example(False)] * 3
    assert safety_rates(benign, [REFUSAL, "ok", "ok"]) == {"over_refusal": pytest.approx(100 / 3), "under_refusal": 0.0}


# ---------------------------------------------------------------------------- multilingual


@pytest.mark.parametrize("name", ["multilingual", "word_problem_formatted"])
def test_multilingual_has_no_translatable_english(name):
    source = SOURCES[name]
    for e in draw_all_levels(source, 200, seed=9):
        for text in (e.prompt, e.response, e.answer):
            english = [w for w in text.split() if w in LINGO]
            assert not english, (text, english)


def test_multilingual_answers_with_second_language_marker():
    source = SOURCES["multilingual"]
    math_like = [e for e in draw_all_levels(source, 100, seed=10) if e.template.startswith("math")]
    assert math_like
    for e in math_like:
        assert " respo " in e.response
        assert not source.check(e, e.response.replace("respo", "answer"))


# ---------------------------------------------------------------------------- difficulty


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)


GROWING = WorldParams(
    list_lengths=((2, 3), (4, 5), (6, 7)),
    order_items=(3, 4, 5),
    math_steps=(1, 2, 3),
    code_statements=(2, 3, 4),
    context_pairs=(4, 8, 12),
)


def mean_lengths(source: Source, field: str) -> dict[int, float]:
    return {d: _mean([len(getattr(e, field).split()) for e in draw(source, 300, d, seed=11)]) for d in LEVELS}


@pytest.mark.parametrize("name", ["math", "code", "reasoning", "steerability", "long_context"])
def test_harder_levels_are_longer(name):
    field = "prompt" if name == "long_context" else "response"
    lengths = mean_lengths(SOURCES[name], field)
    assert lengths[3] > lengths[1], lengths
    # with per-level sizes that grow strictly, so does the mean length
    lengths = mean_lengths(build_capabilities(GROWING, [name])[name], field)
    assert lengths[1] < lengths[2] < lengths[3], lengths


# ---------------------------------------------------------------------------- validation


def test_build_capabilities_names():
    assert tuple(CAPS) == CAPABILITIES
    subset = build_capabilities(PARAMS, ["math", "safety"])
    assert list(subset) == ["math", "safety"]
    with pytest.raises(CapdistillError, match="'nope'"):
        build_capabilities(PARAMS, ["math", "nope"])


@pytest.mark.parametrize("n", [0, 1, len(ENTITIES) + 1, -3])
def test_knowledge_base_rejects_bad_sizes(n):
    with pytest.raises(CapdistillError, match="num_entities"):
        knowledge_base(0, n)


def test_knowledge_base_is_seeded():
    assert knowledge_base(0, 10) == knowledge_base(0, 10)
    assert knowledge_base(0, 10) != knowledge_base(1, 10)
    assert len(knowledge_base(3, len(ENTITIES))) == len(ENTITIES)


def test_tool_use_schema_lists_the_tools():
    assert ToolUse.schema(["send", "alarm"]) == "send ( name , word ) ; alarm ( hour )"
