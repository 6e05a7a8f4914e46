"""Fused-linear losses: logits given as final hidden states and the output embedding (`LinearLogits`) give
the unfused loss and the gradients of both, exactly (fp64), and never allocate a `[B, T, V]` tensor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

from capdistill.distill.run import distill
from capdistill.errors import CapdistillError
from capdistill.losses import (
    SparseTeacher,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    sampled_kl,
    sft,
    topk_kl,
    total_variation,
)
from capdistill.losses.chunking import LinearLogits
from capdistill.training.heads import check_linear_head, linear_logits
from conftest import compose_config

B, T, H, V = 3, 7, 5, 13
GEN = 42


def sampled(s, t, mask, **kw):
    return sampled_kl(s, t, mask, 16, torch.Generator().manual_seed(GEN), **kw)


LOSSES: dict[str, Callable] = {
    "fkl": lambda s, t, m, **kw: forward_kl(s, t, m, 2.0, **kw),
    "rkl": lambda s, t, m, **kw: reverse_kl(s, t, m, **kw),
    "jsd": lambda s, t, m, **kw: generalized_jsd(s, t, m, 0.3, **kw),
    "tvd": lambda s, t, m, **kw: total_variation(s, t, m, **kw),
    "topk": lambda s, t, m, **kw: topk_kl(s, t, m, 4, 1.5, **kw),
    "sampled": sampled,
}


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, T, H, generator=g, dtype=torch.float64)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64)
    teacher = LinearLogits(
        torch.randn(B, T, H, generator=g, dtype=torch.float64), torch.randn(V + 2, H, generator=g, dtype=torch.float64)
    )
    mask = torch.rand(B, T, generator=g) > 0.3
    return hidden, weight, teacher, mask


def grads(loss: Callable, student: Callable, hidden: torch.Tensor, weight: torch.Tensor):
    h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    value = loss(student(h, w))
    return (value.detach(), *torch.autograd.grad(value, (h, w)))


@pytest.mark.parametrize("name", list(LOSSES))
def test_fused_equals_unfused_with_both_gradients(batch, name: str) -> None:
    """Teacher vocabulary larger by padding rows (`vocab_size` slices both), chunks smaller than the rows."""
    hidden, weight, teacher, mask = batch
    loss = LOSSES[name]
    fused = grads(lambda s: loss(s, teacher, mask, vocab_size=V, chunk_size=4), LinearLogits, hidden, weight)
    plain = grads(
        lambda s: loss(s, teacher.materialize(), mask, vocab_size=V, chunk_size=4), lambda h, w: h @ w.T, hidden, weight
    )
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert fused[2].abs().sum() > 0  # the weight gets a gradient


def test_fused_sft_and_sparse_teacher(batch) -> None:
    hidden, weight, teacher, mask = batch
    targets = torch.randint(0, V, (B, T))
    sparse = SparseTeacher.from_topk(teacher.materialize()[..., :V], 5)
    for loss in (lambda s: sft(s, targets, mask, chunk_size=2), lambda s: topk_kl(s, sparse, mask, None)):
        fused = grads(loss, LinearLogits, hidden, weight)
        plain = grads(loss, lambda h, w: h @ w.T, hidden, weight)
        for a, b in zip(fused, plain):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_bf16_hidden_states_stay_close_to_fp32(batch) -> None:
    hidden, weight, teacher, mask = batch
    loss = LOSSES["jsd"]
    exact = grads(
        lambda s: loss(s, teacher.materialize().float(), mask, vocab_size=V),
        LinearLogits,
        hidden.float(),
        weight.float(),
    )
    low = grads(
        lambda s: loss(s, teacher.materialize().float(), mask, vocab_size=V),
        LinearLogits,
        hidden.bfloat16(),
        weight.bfloat16(),
    )
    assert low[1].dtype == low[2].dtype == torch.bfloat16  # gradients in the parameters' dtype
    for a, b in zip(low, exact):
        torch.testing.assert_close(a.float(), b, rtol=5e-2, atol=5e-2)


def test_no_op_allocates_the_full_logits() -> None:
    """The largest single allocation is about one chunk (or the weight gradient), not `[B, T, V]`."""
    b, t, h, v = 4, 64, 16, 50_000
    hidden, weight = torch.randn(b, t, h, requires_grad=True), torch.randn(v, h, requires_grad=True)
    teacher = LinearLogits(torch.randn(b, t, h), torch.randn(v, h))
    mask = torch.ones(b, t, dtype=torch.bool)
    full = b * t * v * 4
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        generalized_jsd(LinearLogits(hidden, weight), teacher, mask, chunk_size=16).backward()
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert largest < full / 8, f"largest allocation {largest} bytes; [B, T, V] is {full}"


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    return LlamaForCausalLM(config).eval()


def test_linear_logits_are_the_model_logits() -> None:
    model = tiny_llama()
    ids = torch.randint(0, 32, (2, 6))
    mask = torch.ones_like(ids)
    fused = linear_logits(model, input_ids=ids, attention_mask=mask)
    assert fused.shape == (2, 5, 32)
    torch.testing.assert_close(fused.materialize(), model(input_ids=ids, attention_mask=mask).logits[:, :-1])
    check_linear_head(model, "student")


def test_heads_that_are_not_a_plain_linear_map_are_refused() -> None:
    model = tiny_llama()
    model.lm_head = torch.nn.Linear(16, 32, bias=True)
    with pytest.raises(CapdistillError, match="loss.fused_linear needs a bias-free linear lm_head.*use loss.fused_"):
        check_linear_head(model, "student")
    config = Gemma2Config(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        final_logit_softcapping=0.5,
    )
    with pytest.raises(CapdistillError, match="teacher_source=cache: .* not hidden states @ lm_head.weight.*=live"):
        check_linear_head(Gemma2ForCausalLM(config).eval(), "teacher", "loss.teacher_source=cache")


def test_a_fused_run_trains_as_the_unfused_one(micro_cache: Path, tmp_path: Path) -> None:
    common = ["experiment=micro", "loss=jsd", "evaluation.lmeval=false", "budget.rounds=1"]
    plain = distill(compose_config(common, tmp_path / "plain", micro_cache))
    fused = distill(compose_config([*common, "loss.fused_linear=true"], tmp_path / "fused", micro_cache))
    for a, b in zip(fused["rounds"], plain["rounds"]):
        assert a["train_loss"]["last"] == pytest.approx(b["train_loss"]["last"], rel=1e-4)
    assert fused["final"]["task_loglik"] == pytest.approx(plain["final"]["task_loglik"], rel=1e-4)
