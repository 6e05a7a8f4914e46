"""Training data: prompt masking, padding, and the mixed stream of train-split examples."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest
import torch

from capdistill.capabilities.base import Example, Source, split_of
from capdistill.capabilities.lexicon import all_words
from capdistill.capabilities.synthetic import WorldParams, build_capabilities
from capdistill.models.tokenizers import train_tokenizer
from capdistill.prompting import IGNORE_INDEX, PROMPT_END, encode, prompt_ids, response_ids
from capdistill.training.streams import BatchStream, StagedStream, collate

CAPS = build_capabilities(WorldParams())


class Spy(Source):
    """Delegates to a real source and records what it generated."""

    def __init__(self, inner: Source) -> None:
        self.inner, self.name = inner, inner.name
        self.generated: list[Example] = []

    def generate(self, rng: random.Random, difficulty: int) -> Example:
        example = self.inner.generate(rng, difficulty)
        self.generated.append(example)
        return example


@pytest.fixture(scope="module", params=["word", "bpe"])
def tok(request):
    corpus = [
        f"{e.prompt} => {e.response}"
        for name in sorted(CAPS)
        for e in CAPS[name].sample("train", 100, 0, (1, 2, 3), unique=False)
    ]
    return train_tokenizer(request.param, [*corpus, " ".join(all_words())])


def examples(n: int = 40) -> list[Example]:
    return [e for name in sorted(CAPS) for e in CAPS[name].sample("train", n // len(CAPS) + 1, 0, (1, 2, 3))][:n]


def decode_prompt(tok, input_ids: list[int], labels: list[int]) -> str:
    """The prompt of one encoded sequence: everything between BOS and the answer cue."""
    start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    text = tok.decode(input_ids[1:start])
    assert text.endswith(PROMPT_END)
    return text.removesuffix(PROMPT_END)


# ---------------------------------------------------------------------------- encode


def test_encode_masks_prompt_and_supervises_response(tok):
    for e in examples():
        enc = encode(tok, e.prompt, e.response)
        p = [tok.bos_token_id] + tok(e.prompt + PROMPT_END, add_special_tokens=False).input_ids
        r = tok(e.response, add_special_tokens=False).input_ids + [tok.eos_token_id]
        assert enc["input_ids"] == p + r
        assert enc["labels"] == [IGNORE_INDEX] * len(p) + r
        assert enc["input_ids"][0] == tok.bos_token_id and enc["input_ids"][-1] == tok.eos_token_id
        assert enc["input_ids"].count(tok.bos_token_id) == 1
        assert IGNORE_INDEX not in enc["labels"][len(p) :]
        assert tok.decode(enc["labels"][len(p) : -1]) == e.response
        assert decode_prompt(tok, enc["input_ids"], enc["labels"]) == e.prompt
        assert p == prompt_ids(tok, e.prompt) and r == response_ids(tok, e.response)


def test_encode_matches_tokenizing_the_whole_text(tok):
    # prompt and response are tokenized separately; together they must equal the joint text
    for e in examples():
        enc = encode(tok, e.prompt, e.response)
        joint = tok(f"{e.prompt}{PROMPT_END} {e.response}", add_special_tokens=False).input_ids
        assert enc["input_ids"][1:-1] == joint


# ---------------------------------------------------------------------------- collate


def test_collate_right_pads(tok):
    batch = [encode(tok, e.prompt, e.response) for e in examples(9)]
    lengths = [len(b["input_ids"]) for b in batch]
    assert len(set(lengths)) > 1
    out = collate(batch, tok.pad_token_id)
    assert set(out) == {"input_ids", "attention_mask", "labels"}
    assert out["input_ids"].shape == out["labels"].shape == out["attention_mask"].shape == (9, max(lengths))
    assert all(t.dtype == torch.long for t in out.values())
    assert out["attention_mask"].sum(dim=1).tolist() == lengths
    for i, (b, n) in enumerate(zip(batch, lengths, strict=True)):
        assert out["input_ids"][i, :n].tolist() == b["input_ids"]
        assert out["labels"][i, :n].tolist() == b["labels"]
        assert out["attention_mask"][i, :n].tolist() == [1] * n
        assert (out["input_ids"][i, n:] == tok.pad_token_id).all()
        assert (out["labels"][i, n:] == IGNORE_INDEX).all()
        assert (out["attention_mask"][i, n:] == 0).all()


def test_collate_single_and_equal_lengths():
    out = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}], pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7]]
    assert out["attention_mask"].tolist() == [[1, 1, 1]]
    out = collate([{"input_ids": [5, 6], "labels": [-100, 6]}, {"input_ids": [8], "labels": [8]}], pad_id=9)
    assert out["input_ids"].tolist() == [[5, 6], [8, 9]]
    assert out["labels"].tolist() == [[-100, 6], [8, -100]]
    assert out["attention_mask"].tolist() == [[1, 1], [1, 0]]


# ---------------------------------------------------------------------------- BatchStream


def take(stream: BatchStream, n: int) -> list[dict[str, torch.Tensor]]:
    return list(itertools.islice(iter(stream), n))


def rows(batch: dict[str, torch.Tensor]):
    """(input_ids, labels) of each unpadded sequence of a batch."""
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()
        yield ids[:n].tolist(), labels[:n].tolist()


def test_stream_yields_only_train_examples(tok):
    spies = {name: Spy(CAPS[name]) for name in ("math", "code", "knowledge", "safety")}
    stream = BatchStream(spies, dict.fromkeys(spies, 1.0), (1, 2, 3), tok, seed=0, batch_size=4, bucket=4)
    prompts = []
    for batch in take(stream, 12):
        assert batch["input_ids"].shape[0] == 4
        for ids, labels in rows(batch):
            prompts.append(decode_prompt(tok, ids, labels))
    assert len(prompts) == 48
    assert all(split_of(p) == "train" for p in prompts)
    generated = [e for spy in spies.values() for e in spy.generated]
    assert any(split_of(e.prompt) != "train" for e in generated)  # held-out draws happened and were dropped
    train_generated = {e.prompt for e in generated if split_of(e.prompt) == "train"}
    assert set(prompts) <= train_generated


def test_stream_never_draws_a_zero_weight_source(tok):
    spies = {name: Spy(CAPS[name]) for name in ("math", "code", "safety")}
    weights = {"math": 1.0, "code": 0.0}  # safety has no weight at all
    stream = BatchStream(spies, weights, (1, 2, 3), tok, seed=1, batch_size=4, bucket=4)
    prompts = [decode_prompt(tok, ids, labels) for batch in take(stream, 8) for ids, labels in rows(batch)]
    assert spies["code"].generated == [] and spies["safety"].generated == []
    assert spies["math"].generated
    assert not any(p.startswith("run :") for p in prompts)
    assert all(p.endswith(" have ?") for p in prompts)  # every math prompt ends 'how many ... have ?'


def test_stream_mixes_sources_by_weight(tok):
    spies = {name: Spy(CAPS[name]) for name in ("math", "code")}
    stream = BatchStream(spies, {"math": 3.0, "code": 1.0}, (1,), tok, seed=2, batch_size=8, bucket=8)
    take(stream, 64)
    counts = Counter({name: len(spy.generated) for name, spy in spies.items()})
    share = counts["math"] / (counts["math"] + counts["code"])
    assert 0.68 < share < 0.82, counts


def test_stream_is_deterministic_for_a_seed(tok):
    def run(seed: int) -> list[dict[str, torch.Tensor]]:
        sources = {name: CAPS[name] for name in ("math", "tool_use", "reasoning")}
        stream = BatchStream(
            sources, {"math": 1.0, "tool_use": 2.0, "reasoning": 1.0}, (1, 2, 3), tok, seed, 4, bucket=3
        )
        return take(stream, 7)

    first, again, other = run(5), run(5), run(6)
    for a, b in zip(first, again, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(
        a["input_ids"].shape != b["input_ids"].shape or not torch.equal(a["input_ids"], b["input_ids"])
        for a, b in zip(first, other, strict=True)
    )


def test_stream_iterating_twice_restarts(tok):
    stream = BatchStream({"math": CAPS["math"]}, {"math": 1.0}, (1,), tok, seed=3, batch_size=2, bucket=2)
    a, b = take(stream, 3), take(stream, 3)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b, strict=True))


def test_stream_buckets_by_length(tok):
    # one bucket of batches is drawn, sorted by length and cut: each batch spans a narrow length range
    stream = BatchStream({"long_context": CAPS["long_context"]}, {"long_context": 1.0}, (1, 2, 3), tok, 0, 4, bucket=8)
    batches = take(stream, 8)
    spans = sorted((int(b["attention_mask"].sum(1).min()), int(b["attention_mask"].sum(1).max())) for b in batches)
    for (_, hi), (lo, _) in itertools.pairwise(spans):
        assert hi <= lo  # the batches of one bucket do not overlap in length


def test_stream_needs_a_positive_weight(tok):
    with pytest.raises(ValueError, match="positive weight"):
        BatchStream({"math": CAPS["math"]}, {"math": 0.0}, (1,), tok, 0, 2)
    with pytest.raises(ValueError, match="positive weight"):
        BatchStream({"math": CAPS["math"]}, {}, (1,), tok, 0, 2)


def test_staged_stream_runs_the_curriculum_first(tok):
    (data,) = tok("data", add_special_tokens=False).input_ids  # the word every retrieval prompt opens with
    retrieval = BatchStream({"long_context": CAPS["long_context"]}, {"long_context": 1.0}, (1,), tok, 0, 2)
    mixed = BatchStream({"math": CAPS["math"]}, {"math": 1.0}, (1,), tok, 0, 2)
    batches = take(StagedStream([(retrieval, 3), (mixed, 0)]), 6)
    has_context = [bool((b["input_ids"] == data).any()) for b in batches]
    assert has_context == [True, True, True, False, False, False]
