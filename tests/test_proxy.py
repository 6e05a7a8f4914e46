"""The dev proxy: batched, padded, output layer on the targets only, equal to a per-item brute force."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from capdistill.capabilities import WorldParams
from capdistill.capabilities.base import TASK
from capdistill.capabilities.sources import WorldSources
from capdistill.evaluation.proxy import Proxy
from capdistill.prompting import prompt_ids, response_ids
from capdistill.world.build import load_entry

ASSETS = Path(__file__).resolve().parents[1] / "src" / "capdistill" / "assets" / "worlds"


@pytest.fixture(scope="module")
def setup():
    sources = WorldSources.from_params(WorldParams(), probe_size=8, eval_size=8)
    sources.dev_size = 12
    sets = {
        k: v
        for k, v in sources.held_out_sets("dev", "word_problem_formatted", 0).items()
        if k in ("math", "code", TASK)
    }
    responses = {name: [e.response for e in examples] for name, examples in sets.items()}
    return load_entry(next(ASSETS.glob("student-*"))), sets, responses


@torch.no_grad()
def brute_force(model, tokenizer, prompts: list[str], responses: list[str]) -> float:
    """Each item alone, no padding: mean log-probability per response token."""
    total, count = 0.0, 0
    for prompt, response in zip(prompts, responses):
        p, r = prompt_ids(tokenizer, prompt), response_ids(tokenizer, response)
        logp = torch.log_softmax(model(input_ids=torch.tensor([p + r])).logits[0, :-1].double(), -1)
        total += sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(r))
        count += len(r)
    return total / count


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_proxy_equals_a_per_item_brute_force(setup, batch_size: int) -> None:
    student, sets, responses = setup
    got = Proxy(student.tokenizer, sets, responses, batch_size)(student.model)
    for name, examples in sets.items():
        expected = brute_force(student.model, student.tokenizer, [e.prompt for e in examples], responses[name])
        assert got[name] == pytest.approx(expected, abs=1e-5), name


def test_a_model_whose_logits_are_not_its_output_layer_uses_the_full_path(setup, monkeypatch) -> None:
    student, sets, responses = setup
    proxy = Proxy(student.tokenizer, sets, responses, 8)
    expected = proxy(student.model)
    assert proxy.head_only is True
    scaled = Proxy(student.tokenizer, sets, responses, 8)
    head = student.model.get_output_embeddings()
    monkeypatch.setattr(student.model, "get_output_embeddings", lambda: lambda h: 2 * head(h))  # e.g. a logit scale
    assert scaled(student.model) == pytest.approx(expected) and scaled.head_only is False
