"""Sparse-teacher losses: top-k KL (biased) and Sparse Logit Sampling (unbiased gradient)."""

from __future__ import annotations

import math

import pytest
import torch

from capdistill.errors import CapdistillError
from capdistill.losses import SparseTeacher, forward_kl, sampled_kl, topk_kl
from kd_reference import assert_chunking_invariant, make, py_softmax

pytestmark = pytest.mark.usefixtures("one_thread")


def py_kl_sparse(q: dict[int, float], ps: list[float]) -> float:
    return sum(w * math.log(w / ps[i]) for i, w in q.items() if w > 0)


def brute_topk(student, teacher, mask, k, temperature=1.0):
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for t in range(student.shape[1]):
            if not mask[b, t]:
                continue
            pt = py_softmax(teacher[b, t].tolist(), temperature)
            top = sorted(range(len(pt)), key=lambda i: -pt[i])[:k]
            z = sum(pt[i] for i in top)
            total += py_kl_sparse({i: pt[i] / z for i in top}, py_softmax(student[b, t].tolist(), temperature))
            count += 1
    return total / max(count, 1)


def brute_counts(student, ids, counts, mask, temperature=1.0):
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for t in range(student.shape[1]):
            if not mask[b, t]:
                continue
            q: dict[int, float] = {}
            for i, c in zip(ids[b, t].tolist(), counts[b, t].tolist()):
                q[i] = q.get(i, 0.0) + c
            z = sum(q.values())
            q = {i: c / z for i, c in q.items()}
            total += py_kl_sparse(q, py_softmax(student[b, t].tolist(), temperature))
            count += 1
    return total / max(count, 1)


def sparse_counts(b, t, v, k, seed=0):
    """Random ids (with repeats) and integer counts (some zero = padding)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, v, (b, t, k), generator=g)
    counts = torch.randint(0, 4, (b, t, k), generator=g).double()
    counts[..., 0] += 1  # a positive total everywhere
    return SparseTeacher(ids=ids, counts=counts)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("temperature", [1.0, 1.8])
def test_topk_matches_brute_force(k, temperature):
    s, t, mask = make(seed=1)
    got = topk_kl(s, t, mask, k, temperature)
    assert got.item() == pytest.approx(brute_topk(s, t, mask, k, temperature), rel=1e-5, abs=1e-8)


def test_topk_with_k_equal_v_is_forward_kl():
    s, t, mask = make(seed=2)
    assert topk_kl(s, t, mask, 7).item() == pytest.approx(forward_kl(s, t, mask).item(), rel=1e-12)


def test_topk_sparse_teacher_equals_dense_teacher():
    s, t, mask = make(seed=3)
    sparse = SparseTeacher.from_topk(t.double(), 5)
    assert t.dtype == sparse.logprobs.dtype == torch.float64  # an fp64 teacher stays fp64 (it was cast to fp32)
    for k, temperature in [(5, 1.0), (3, 1.0), (3, 2.0), (None, 0.5)]:
        a, b = s.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
        dense = topk_kl(a, t, mask, 5 if k is None else k, temperature)
        cached = topk_kl(b, sparse, mask, k, temperature)
        assert cached.item() == pytest.approx(dense.item(), rel=1e-12)
        dense.backward()
        cached.backward()  # scatter() failed on the fp32 log-probs of an fp64 teacher
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-10, atol=1e-12)
    # raw logits instead of log-probs: the renormalisation makes them equivalent
    vals, ids = t.topk(4, dim=-1)
    assert topk_kl(s, SparseTeacher(ids=ids, logprobs=vals), mask, 4, 1.5).item() == pytest.approx(
        topk_kl(s, t, mask, 4, 1.5).item(), rel=1e-12
    )


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampled_counts_match_brute_force(temperature):
    s, _, mask = make(seed=4)
    teacher = sparse_counts(2, 5, 7, 6, seed=4)
    got = sampled_kl(s, teacher, mask, temperature=temperature)
    want = brute_counts(s, teacher.ids, teacher.counts, mask, temperature)
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-8)


def test_sampled_dense_teacher_equals_the_same_draws_as_a_sparse_teacher():
    s, t, _ = make(seed=5)
    mask = torch.ones(2, 5, dtype=torch.bool)
    got = sampled_kl(s, t, mask, 8, torch.Generator().manual_seed(7), 1.3)
    draws = SparseTeacher.from_samples(t, 8, temperature=1.3, generator=torch.Generator().manual_seed(7))
    assert draws.ids.shape == (2, 5, 8) and draws.counts.sum().item() == 80
    assert got.item() == pytest.approx(sampled_kl(s, draws, mask, temperature=1.3).item(), rel=1e-12)
    assert got.item() == pytest.approx(brute_counts(s, draws.ids, draws.counts, mask, 1.3), rel=1e-9)


def test_sampling_never_draws_zero_probability_tokens_and_follows_the_teacher():
    t = torch.tensor([[[0.0, 1.0, -math.inf, 2.0, -math.inf]]]).expand(1, 4000, 5)
    draws = SparseTeacher.from_samples(t, 16, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws.ids.reshape(-1), minlength=5).double() / draws.ids.numel()
    p = torch.softmax(t[0, 0].double(), -1)
    assert freq[2] == 0 and freq[4] == 0
    torch.testing.assert_close(freq, p, atol=0.01, rtol=0)


# --------------------------------------------------------------------------- properties


def test_topk_bias_is_visible_at_student_equal_teacher():
    """At student == teacher the top-k loss is -log(top-k mass) > 0, not 0: the student is pushed away."""
    s, _, mask = make(seed=6)
    got = topk_kl(s, s.clone(), mask, 3)
    p = torch.softmax(s, -1).topk(3, -1).values.sum(-1)
    assert got.item() == pytest.approx((-p.log())[mask].mean().item(), rel=1e-12)
    assert got.item() > 0.01


def test_zero_when_student_equals_the_sparse_target():
    _, t, mask = make(seed=7)
    vals, ids = t.topk(3, -1)
    student = torch.full_like(t, -math.inf).scatter(-1, ids, vals)  # the renormalised top-k teacher
    assert topk_kl(student, t, mask, 3).item() == pytest.approx(0.0, abs=1e-12)
    teacher = sparse_counts(2, 5, 7, 4, seed=7)
    mass = torch.zeros_like(t).scatter_add(-1, teacher.ids, teacher.counts)
    assert sampled_kl(mass.log(), teacher, mask).item() == pytest.approx(0.0, abs=1e-12)


def test_non_negative():
    for seed in range(4):
        s, t, mask = make(seed=seed, scale=4.0)
        assert topk_kl(s, t, mask, 2).item() >= 0
        assert sampled_kl(s, t, mask, 3, torch.Generator().manual_seed(seed)).item() >= 0
        assert sampled_kl(s, sparse_counts(2, 5, 7, 5, seed), mask).item() >= 0


def test_masked_out_positions_are_never_read():
    s, t, mask = make(seed=8)
    teacher = sparse_counts(2, 5, 7, 4, seed=8)
    bad_ids = teacher.ids.clone()
    bad_ids[~mask] = 10**6
    bad = SparseTeacher(ids=bad_ids, counts=teacher.counts, logprobs=torch.zeros(teacher.ids.shape))
    s2, t2 = s.clone(), t.clone()
    s2[~mask], t2[~mask] = float("nan"), float("nan")
    assert topk_kl(s2, t2, mask, 3).item() == topk_kl(s, t, mask, 3).item()
    g = torch.Generator
    assert (
        sampled_kl(s2, t2, mask, 4, g().manual_seed(0)).item() == sampled_kl(s, t, mask, 4, g().manual_seed(0)).item()
    )
    assert sampled_kl(s2, bad, mask).item() == sampled_kl(s, teacher, mask).item()


def test_empty_mask_gives_zero_with_a_valid_gradient():
    s, t, _ = make(seed=9)
    mask = torch.zeros(2, 5, dtype=torch.bool)
    s.requires_grad_()
    for out in (topk_kl(s, t, mask, 2), sampled_kl(s, t, mask, 2), sampled_kl(s, sparse_counts(2, 5, 7, 3), mask)):
        out.backward()
        assert out.item() == 0.0 and torch.equal(s.grad, torch.zeros_like(s))


def test_gradcheck():
    s, t, mask = make(b=2, t=3, v=6, seed=10)
    s.requires_grad_()
    t.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: topk_kl(a, b, mask, 3, 1.4, chunk_size=2), (s, t))
    sparse = SparseTeacher.from_topk(t.detach(), 4)
    assert torch.autograd.gradcheck(lambda a: topk_kl(a, sparse, mask, 3, 0.9), (s,))
    teacher = sparse_counts(2, 3, 6, 5, seed=10)
    assert torch.autograd.gradcheck(lambda a: sampled_kl(a, teacher, mask, temperature=1.2, chunk_size=1), (s,))
    # dense teacher: the draws depend on the teacher only, so a fixed seed fixes them
    assert torch.autograd.gradcheck(lambda a: sampled_kl(a, t, mask, 5, torch.Generator().manual_seed(3)), (s,))


def test_chunked_equals_unchunked():
    s, t, mask = make(b=3, t=6, v=10, seed=11, dtype=torch.float32)
    teacher = sparse_counts(3, 6, 10, 5, seed=11)
    fns = [
        lambda a, c: topk_kl(a, t, mask, 4, chunk_size=c),
        lambda a, c: topk_kl(a, SparseTeacher.from_topk(t, 6), mask, 4, chunk_size=c),
        lambda a, c: sampled_kl(a, teacher, mask, chunk_size=c),
        lambda a, c: sampled_kl(a, t, mask, 7, torch.Generator().manual_seed(1), chunk_size=c),
    ]
    for fn in fns:
        assert_chunking_invariant(fn, s, (1, 4, None))


def test_bf16_and_extreme_logits():
    s, t, mask = make(b=2, t=4, v=40, seed=12, dtype=torch.float32)
    sb = s.bfloat16().requires_grad_()
    out = topk_kl(sb, t.bfloat16(), mask, 5)
    out.backward()
    assert out.dtype == torch.float32 and sb.grad.dtype == torch.bfloat16
    assert out.item() == pytest.approx(topk_kl(s, t, mask, 5).item(), rel=3e-2, abs=1e-3)
    g = torch.Generator().manual_seed(0)
    huge_s = (torch.randn(2, 4, 40, generator=g) * 1e4).clamp(-1e4, 1e4).bfloat16().requires_grad_()
    huge_t = (torch.randn(2, 4, 40, generator=g) * 1e4).clamp(-1e4, 1e4).bfloat16()
    for out in (topk_kl(huge_s, huge_t, mask, 5), sampled_kl(huge_s, huge_t, mask, 8, g)):
        huge_s.grad = None
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(huge_s.grad.float()).all()


def test_neg_inf_logits_stay_finite():
    s, t, mask = make(b=2, t=4, v=9, seed=13)
    s[..., -2:] = -math.inf
    t[..., -3:] = -math.inf  # the teacher also masks one entry the student keeps
    s.requires_grad_()
    for out in (
        topk_kl(s, t, mask, 9),  # k larger than the teacher's finite support
        topk_kl(s, t, mask, 2),
        sampled_kl(s, t, mask, 6, torch.Generator().manual_seed(0)),
    ):
        s.grad = None
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(s.grad).all()
    assert topk_kl(s, t, mask, 9).item() == pytest.approx(forward_kl(s, t, mask).item(), rel=1e-12)


def test_vocab_size_slices():
    s, t, mask = make(v=7, seed=14)
    t_pad = torch.cat([t, torch.zeros(2, 5, 2, dtype=t.dtype)], -1)
    assert topk_kl(s, t_pad, mask, 3, vocab_size=7).item() == pytest.approx(topk_kl(s, t, mask, 3).item(), rel=1e-12)
    with pytest.raises(CapdistillError, match=r"7 vs 9.*vocab_size"):
        sampled_kl(s, t_pad, mask, 3)


# --------------------------------------------------------------------------- bias: the statistical test


def _average_gradient(loss_fn, base_s, base_t, replicas):
    """Gradient w.r.t. one position's logits averaged over ``replicas`` independent copies in one call."""
    v = base_s.shape[-1]
    s = base_s.clone().requires_grad_()
    loss_fn(
        s.expand(1, replicas, v), base_t.expand(1, replicas, v), torch.ones(1, replicas, dtype=torch.bool)
    ).backward()
    return s.grad[0, 0]


def test_sampled_gradient_is_unbiased_and_topk_gradient_is_biased():
    g = torch.Generator().manual_seed(0)
    base_s = torch.randn(1, 1, 8, generator=g, dtype=torch.float64)
    base_t = torch.randn(1, 1, 8, generator=g, dtype=torch.float64) * 1.5
    exact = _average_gradient(lambda a, b, m: forward_kl(a, b, m), base_s, base_t, 1)
    gen = torch.Generator().manual_seed(1234)
    # 20000 independent draws of 4 samples: per-entry std of the mean <= 0.5 / sqrt(80000) ~ 0.0018
    sampled = _average_gradient(lambda a, b, m: sampled_kl(a, b, m, 4, gen), base_s, base_t, 20000)
    topk = _average_gradient(lambda a, b, m: topk_kl(a, b, m, 2), base_s, base_t, 1)
    assert (sampled - exact).abs().max().item() < 0.01
    assert (topk - exact).abs().max().item() > 0.1
    # the bias is exactly p_T - q_T (the renormalised top-k) on the full vocabulary
    p = torch.softmax(base_t[0, 0], -1)
    q = torch.zeros_like(p)
    top = p.topk(2).indices
    q[top] = p[top] / p[top].sum()
    torch.testing.assert_close(topk - exact, p - q)


# --------------------------------------------------------------------------- bad input


def test_bad_input_names_the_argument_and_value():
    s, t, mask = make(v=7)
    sparse = SparseTeacher.from_topk(t, 4)
    cases = [
        (lambda: topk_kl(s, t, mask, 0), r"k.*0"),
        (lambda: topk_kl(s, t, mask, 8), r"k.*\[1, 7\].*8"),
        (lambda: topk_kl(s, t, mask, -2), r"k.*-2"),
        (lambda: topk_kl(s, sparse, mask, 5), r"k.*\[1, 4\].*5"),
        (lambda: topk_kl(s, t, mask, 2.5), r"k.*int.*2\.5"),
        (lambda: topk_kl(s, t, mask, 2, temperature=0), r"temperature.*0"),
        (lambda: topk_kl(s, t[:, :3], mask, 2), r"teacher_logits.*\[2, 3, 7\]"),
        (lambda: topk_kl(s, t, mask[:1], 2), r"mask.*\[1, 5\]"),
        (lambda: sampled_kl(s, t, mask, 0), r"num_samples.*0"),
        (lambda: sampled_kl(s, t, mask, None), r"num_samples.*None"),
        (lambda: sampled_kl(s, t, mask, 2, temperature=-0.5), r"temperature.*-0\.5"),
        (lambda: sampled_kl(s, sparse, mask), r"counts.*None"),
        (lambda: topk_kl(s, SparseTeacher(ids=sparse.ids, counts=torch.ones(2, 5, 4)), mask, 2), r"logprobs.*None"),
        (lambda: topk_kl(s, SparseTeacher(ids=sparse.ids + 7, logprobs=sparse.logprobs), mask, 2), r"ids.*\[0, 7\)"),
        (lambda: topk_kl(s, SparseTeacher(ids=sparse.ids[:1], logprobs=sparse.logprobs[:1]), mask, 2), r"ids.*shape"),
        (lambda: topk_kl(s, SparseTeacher(ids=sparse.ids, logprobs=sparse.logprobs[..., :2]), mask, 2), r"logprobs"),
        (lambda: topk_kl(s, SparseTeacher(ids=sparse.ids.float(), logprobs=sparse.logprobs), mask, 2), r"ids.*integer"),
        (lambda: sampled_kl(s, SparseTeacher(ids=sparse.ids, counts=-torch.ones(2, 5, 4)), mask), r"counts.*>= 0"),
        (lambda: sampled_kl(s, SparseTeacher(ids=sparse.ids, counts=torch.zeros(2, 5, 4)), mask), r"counts.*total"),
    ]
    for fn, pattern in cases:
        with pytest.raises(CapdistillError, match=pattern):
            fn()
