"""The teacher logit cache: rows kept while the teacher writes, the same loss as the live teacher, no teacher
forward in training, unchanged budget accounting, and a resumed round that reuses its saved supervision."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from capdistill.components import validate
from capdistill.distill import run as run_module
from capdistill.distill.batches import SupervisedBatches, cached_rows
from capdistill.distill.run import distill
from capdistill.losses import SparseTeacher, TopKLoss
from capdistill.losses.sparse import CacheSpec
from capdistill.prompting import IGNORE_INDEX, generate
from capdistill.results.identity import config_changes
from capdistill.supervision.slices import Generation, PromptStream, Supervised, collect_round
from capdistill.supervision.teacher_cache import (
    STEPS_PER_NAT,
    CachedTeacher,
    dequantize,
    id_bytes,
    keeper,
    pack_ids,
    quantize,
    unpack_ids,
)
from conftest import compose_config

BUDGET_KEYS = ("allotted_by_capability", "spent_by_capability", "examples_by_capability", "prompts_by_capability")


@pytest.fixture(scope="module")
def world(micro_world):
    return micro_world


def supervision(world, spec: CacheSpec, tokens: int = 300):
    sources, teacher, student = world
    streams = {c: PromptStream(sources.capabilities[c], "t", sources.difficulties) for c in ("math", "code")}
    slices = collect_round(
        {"math": tokens, "code": tokens},
        streams,
        {},
        teacher.model,
        teacher.tokenizer,
        student.tokenizer,
        Generation(max_new_tokens=24, batch_size=64),
        cache=spec,
    )
    return [e for s in slices for e in s.examples]


def live_logits(teacher, batch) -> torch.Tensor:
    with torch.no_grad():
        return teacher.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]


@pytest.mark.parametrize(("vocab", "width"), [(256, 1), (257, 2), (32768, 2), (32769, 3), (152064, 3), (2**25, 4)])
def test_ids_take_the_fewest_bytes_and_come_back_whole(vocab: int, width: int) -> None:
    assert id_bytes(vocab) == width
    ids = torch.randint(0, vocab, (5, 32))
    ids[0, :2] = torch.tensor([0, vocab - 1])  # both ends of the range
    packed = pack_ids(ids, vocab)
    assert packed.nbytes == ids.numel() * width
    assert torch.equal(unpack_ids(packed), ids) and unpack_ids(packed).dtype == torch.long


def test_three_byte_ids_reach_the_batch_as_the_ids_were() -> None:
    """A 152k vocabulary's rows, laid out for a batch, hold the teacher's ids (as int32 storage would)."""
    vocab, rows = 152064, [torch.randint(0, 152064, (n, 8)) for n in (3, 5)]
    logprobs = [torch.randn(n, 8).half() for n in (3, 5)]
    laid_out, stored = [], []
    for pack in (lambda ids: pack_ids(ids, vocab), lambda ids: ids.int()):
        examples = [
            Supervised("math", "p", "r", list(range(len(ids))), teacher=CachedTeacher(pack(ids), values))
            for ids, values in zip(rows, logprobs)
        ]
        laid_out.append(cached_rows(examples, [(0, 0, 4), (1, 0, 6)], (2, 6)))
        stored.append(examples[0].teacher.nbytes)
    assert stored == [3 * 8 * (3 + 2), 3 * 8 * (4 + 2)]  # 3 rows of 8: id bytes and fp16 values
    assert torch.equal(laid_out[0]["teacher_ids"], laid_out[1]["teacher_ids"])
    assert torch.equal(laid_out[0]["teacher_ids"][1, :5], rows[1])  # row t predicts token t + 1


def test_cached_top_k_gives_the_live_loss_and_gradient(world) -> None:
    _, teacher, student = world
    examples = supervision(world, CacheSpec("topk", 8))
    assert examples and all(e.teacher is not None and len(e.teacher) == len(e.ids) for e in examples)
    assert examples[0].teacher.ids.dtype == torch.int16 and examples[0].teacher.logprobs.dtype == torch.float16
    batches = SupervisedBatches(examples, student.tokenizer, None, 16, seed=0, cached=True)
    assert all("teacher_ids" in batches[i] for i in range(len(batches)))
    loss = TopKLoss(k=8, temperature=2.0)
    for batch in (batches[i] for i in range(len(batches))):
        mask = batch["labels"][:, 1:] != IGNORE_INDEX
        logits = student.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        cached = SparseTeacher(ids=batch["teacher_ids"], logprobs=batch["teacher_logprobs"])
        values, grads = [], []
        for teacher_out in (cached, live_logits(teacher, batch)):
            s = logits.detach().clone().requires_grad_(True)
            value = loss(s, teacher_out, mask)
            value.backward()
            values.append(value.detach())
            grads.append(s.grad)
        torch.testing.assert_close(values[0], values[1], rtol=2e-3, atol=1e-4)  # fp16 log-probs
        torch.testing.assert_close(grads[0], grads[1], rtol=2e-3, atol=1e-5)


def test_cached_draws_follow_the_live_teacher(world) -> None:
    """Sparse Logit Sampling from the cache: the draws are the teacher's distribution at each position."""
    _, teacher, student = world
    examples = supervision(world, CacheSpec("samples", 4096), tokens=60)
    batch = SupervisedBatches(examples, student.tokenizer, None, 64, seed=0, cached=True)[0]
    mask = batch["labels"][:, 1:] != IGNORE_INDEX
    probs = torch.softmax(live_logits(teacher, batch), dim=-1)[mask]
    ids = batch["teacher_ids"][mask]
    empirical = torch.zeros_like(probs).scatter_add_(1, ids, torch.ones(ids.shape)) / ids.shape[-1]
    assert (empirical - probs).abs().max() < 0.05  # 4096 draws: 3.5 standard errors at p = 0.5
    assert "teacher_logprobs" not in batch  # draws store ids only; each counts once


def test_the_cache_changes_no_generated_text(world) -> None:
    sources, teacher, _ = world
    prompts = [sources.capabilities["math"].generate(random.Random(i), 1).prompt for i in range(8)]
    plain = generate(teacher.model, teacher.tokenizer, prompts, 24, temperature=0.8, seed=3)
    kept = generate(
        teacher.model,
        teacher.tokenizer,
        prompts,
        24,
        temperature=0.8,
        seed=3,
        keep=keeper(CacheSpec("samples", 4), "s", torch.device("cpu")),
    )
    assert [g.text for g in plain] == [g.text for g in kept] and all(g.kept is None for g in plain)


@pytest.mark.parametrize("loss", ["topk", "sampled"])
def test_a_cached_run_trains_with_no_teacher_forward_and_spends_the_same(
    micro_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loss: str
) -> None:
    common = ("experiment=micro", f"loss={loss}", "loss.k=8" if loss == "topk" else "loss.num_samples=8")
    common += ("evaluation.lmeval=false",)
    live = distill(compose_config([*common, "loss.teacher_source=live"], tmp_path / "live", micro_cache))
    assert "teacher_cache" not in live

    real_train = run_module.train_round

    def train_without_teacher(settings, index, slices, module, teacher, *args):
        hook = teacher.model.register_forward_pre_hook(lambda *_: pytest.fail("the teacher ran in training"))
        try:
            return real_train(settings, index, slices, module, teacher, *args)
        finally:
            hook.remove()

    monkeypatch.setattr(run_module, "train_round", train_without_teacher)
    cfg = compose_config(list(common), tmp_path / "cached", micro_cache)
    validate(cfg)
    cached = distill(cfg)
    for a, b in zip(cached["rounds"], live["rounds"]):
        assert {k: a[k] for k in BUDGET_KEYS} == {k: b[k] for k in BUDGET_KEYS}
        if loss == "topk":
            assert a["train_loss"]["first"] == pytest.approx(b["train_loss"]["first"], rel=1e-3)
    assert cached["budget"] == live["budget"]
    summary = cached["teacher_cache"]
    assert summary["tokens"] == cached["budget"]["spent_tokens"] and summary["examples_without"] == 0
    values = 2 if loss == "topk" else 0  # fp16 log-probs; draws store ids only
    assert summary["bytes_per_token"] == 8 * (2 + values)  # int16 ids: the micro vocabulary has 512 entries
    assert summary["bytes"] == sum(r["teacher_cache"]["bytes"] for r in cached["rounds"])


def test_a_resumed_round_reuses_its_saved_supervision(
    micro_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = ("experiment=micro", "loss=topk", "loss.k=8", "evaluation.lmeval=false")
    whole = distill(compose_config(list(overrides), tmp_path / "whole", micro_cache))
    real_train = run_module.train_round

    def killed_in_round_two(settings, index, *args):
        if index == 1:
            raise RuntimeError("killed")
        return real_train(settings, index, *args)

    monkeypatch.setattr(run_module, "train_round", killed_in_round_two)
    with pytest.raises(RuntimeError, match="killed"):
        distill(compose_config(list(overrides), tmp_path / "resumed", micro_cache))
    assert (tmp_path / "resumed" / "rounds" / "supervision-001.pt").is_file()
    monkeypatch.setattr(run_module, "train_round", real_train)
    monkeypatch.setattr(run_module, "generate_round", lambda *a: pytest.fail("the teacher wrote round 2 again"))
    resumed = distill(compose_config(list(overrides), tmp_path / "resumed", micro_cache))
    strip = [{k: v for k, v in e.items() if k != "timing"} for e in resumed["rounds"]]
    assert strip == [{k: v for k, v in e.items() if k != "timing"} for e in whole["rounds"]]
    assert resumed["teacher_cache"] == whole["teacher_cache"] and resumed["final"] == whole["final"]


def test_a_topk_run_saved_before_the_cache_resumes_only_with_the_live_teacher() -> None:
    """Its rounds trained with a teacher forward: the cache (the new default) would train differently."""
    saved = {"loss": {"name": "topk", "k": 8}, "distill": {"lr": 1e-3}}
    now = {"loss": {"name": "topk", "k": 8, "fused_linear": False}, "distill": {"lr": 1e-3, "packing": False}}
    assert config_changes(saved, now | {"loss": now["loss"] | {"teacher_source": "live"}}) == []
    assert config_changes(saved, now | {"loss": now["loss"] | {"teacher_source": "cache"}}) == ["loss.teacher_source"]


def test_uint8_log_probs_are_within_a_32nd_of_a_nat() -> None:
    logprobs = torch.log_softmax(torch.randn(64, 1000) * 3, dim=-1).topk(32, dim=-1).values
    back = dequantize(quantize(logprobs))
    near = logprobs >= logprobs[:, :1] - 255 / STEPS_PER_NAT  # farther entries clamp at 255 steps
    top_error = (logprobs[:, 0] - logprobs[:, 0].half().float()).abs().max()  # the top is kept in fp16
    assert (back - logprobs)[near].abs().max() <= 1 / (2 * STEPS_PER_NAT) + top_error + 1e-6
    assert quantize(logprobs).shape == (64, 34) and quantize(logprobs).dtype == torch.uint8


def test_a_uint8_cache_trains_close_to_the_live_teacher(micro_cache: Path, tmp_path: Path) -> None:
    common = ["experiment=micro", "loss=topk", "loss.k=32", "evaluation.lmeval=false", "budget.rounds=1"]
    live = distill(compose_config([*common, "loss.teacher_source=live"], tmp_path / "live", micro_cache))
    small = distill(compose_config([*common, "loss.cache_precision=uint8"], tmp_path / "uint8", micro_cache))
    assert small["teacher_cache"]["bytes_per_token"] == 32 * (2 + 1) + 2  # int16 ids, a byte each, the top's fp16
    assert small["budget"] == live["budget"]
    first, last = small["rounds"][0]["train_loss"], live["rounds"][0]["train_loss"]
    assert first["first"] == pytest.approx(last["first"], rel=2e-2)
