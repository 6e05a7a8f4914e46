"""Packed training: rows of whole examples with positions restarting at each, attention kept within each
example, the same per-token logits and losses as padded batches, and unchanged budget accounting."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from capdistill.components import validate
from capdistill.distill.batches import SupervisedBatches, collate_packed, pack_rows
from capdistill.distill.module import model_inputs
from capdistill.distill.run import distill
from capdistill.errors import CapdistillError
from capdistill.models.packing import check_packing
from capdistill.prompting import IGNORE_INDEX
from capdistill.supervision.slices import Generation, PromptStream, collect_round
from conftest import compose_config


@pytest.mark.parametrize("limit", [1, 5, 9, 100])
def test_rows_keep_order_and_limit(limit: int) -> None:
    lengths = [3, 4, 2, 7, 1, 1, 5]
    rows = pack_rows(lengths, limit)
    assert [i for row in rows for i in row] == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= limit or len(row) == 1 for row in rows)


def test_positions_restart_at_each_sequence_and_padding_is_its_own() -> None:
    encoded = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    encoded.append({"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]})
    batch, placements = collate_packed(encoded, limit=5, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [1, 2, 3, 4, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, -100, 3, 4, -100]]
    assert batch["attention_mask"].sum() == 9 and placements == [(0, 0, 3), (0, 3, 2), (1, 0, 4)]


@pytest.fixture(scope="module")
def examples(micro_world):
    sources, teacher, student = micro_world
    streams = {c: PromptStream(sources.capabilities[c], "p", sources.difficulties) for c in ("math", "code")}
    slices = collect_round(
        {"math": 200, "code": 200},
        streams,
        {},
        teacher.model,
        teacher.tokenizer,
        student.tokenizer,
        Generation(max_new_tokens=24, batch_size=64),
    )
    return [e for s in slices for e in s.examples]


def response_logits(model, batch) -> torch.Tensor:
    """The logits that predict supervision tokens, in batch order."""
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits[:, :-1]
    return logits[batch["labels"][:, 1:] != IGNORE_INDEX]


def test_a_packed_batch_gives_the_padded_batch_logits(micro_world, examples) -> None:
    _, _, student = micro_world
    padded = SupervisedBatches(examples, student.tokenizer, None, 8, seed=0)
    packed = SupervisedBatches(examples, student.tokenizer, None, 8, seed=0, pack_length=128)
    for a, b in zip(padded.batches, packed.batches):
        assert b["input_ids"].shape[0] < a["input_ids"].shape[0]  # several examples per row
        assert int(a["attention_mask"].sum()) == int(b["attention_mask"].sum())
        # the same examples, each alone in its row or packed: the rows' order differs, the multiset does not
        x, y = response_logits(student.model, a), response_logits(student.model, b)
        torch.testing.assert_close(x.sum(0), y.sum(0), rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(x.sort(0).values, y.sort(0).values, rtol=1e-4, atol=1e-4)
    check_packing(student.model, "student")


def test_a_model_that_ignores_the_positions_is_refused() -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    ).eval()
    check_packing(model, "student")
    forward = model.model.forward
    model.model.forward = lambda position_ids=None, **kw: forward(**kw)  # an architecture blind to packing
    with pytest.raises(CapdistillError, match="lets packed examples attend to each other"):
        check_packing(model, "student")


def test_packing_with_a_cross_tokenizer_loss_is_refused(micro_cache: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        ["experiment=micro", "student=synthetic-micro-bpe", "loss=uld", "distill.packing=true"], tmp_path, micro_cache
    )
    with pytest.raises(CapdistillError, match="distill.packing=true needs a same-tokenizer loss"):
        validate(cfg)


@pytest.mark.parametrize("loss", ["fkl", "topk"])
def test_a_packed_run_trains_as_a_padded_one(micro_cache: Path, tmp_path: Path, loss: str) -> None:
    """fkl with the live teacher packed too; topk from the cache, its rows placed inside the packed rows."""
    common = ["experiment=micro", f"loss={loss}", "evaluation.lmeval=false", "budget.rounds=1"]
    padded = distill(compose_config(common, tmp_path / "padded", micro_cache))
    cfg = compose_config([*common, "distill.packing=true", "distill.pack_length=128"], tmp_path / "packed", micro_cache)
    validate(cfg)
    packed = distill(cfg)
    assert packed["budget"] == padded["budget"]
    for a, b in zip(packed["rounds"], padded["rounds"]):
        assert a["student_trained_tokens"] == b["student_trained_tokens"] and a["train_steps"] == b["train_steps"]
        assert a["train_loss"]["first"] == pytest.approx(b["train_loss"]["first"], rel=1e-4)
        assert a["train_loss"]["last"] == pytest.approx(b["train_loss"]["last"], rel=1e-3)
    assert packed["final"]["task_loglik"] == pytest.approx(padded["final"]["task_loglik"], rel=1e-3)


def test_ranks_shard_examples_before_packing(micro_world, examples) -> None:
    """Each rank packs its own share of every batch; together the shards hold the batch's tokens once."""
    _, _, student = micro_world
    whole = SupervisedBatches(examples, student.tokenizer, None, 8, seed=0, pack_length=128)
    ranked = SupervisedBatches(examples, student.tokenizer, None, 8, seed=0, pack_length=128, ranks=2)
    for one, shards in zip(whole.batches, ranked.batches):
        assert len(shards) == 2 and all(s["input_ids"].shape[0] >= 1 for s in shards)
        assert sum(int(s["attention_mask"].sum()) for s in shards) == int(one["attention_mask"].sum())
        counted = sum(int((s["labels"] != IGNORE_INDEX).sum()) for s in shards)
        assert counted == int((one["labels"] != IGNORE_INDEX).sum())
    lonely = SupervisedBatches(examples[:1], student.tokenizer, None, 8, seed=0, ranks=2).batches[0]
    assert int(lonely[1]["counted"].sum()) == 0 and bool((lonely[1]["labels"] == IGNORE_INDEX).all())
