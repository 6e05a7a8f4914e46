"""Same-vocabulary KD losses (fkl, rkl, jsd, tvd) and sft against brute force, plus shared conventions.

Sparse losses: test_losses_sparse.py; cross-tokenizer: test_losses_cross.py; modules and
configs: test_losses_modules.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from capdistill.errors import CapdistillError
from capdistill.losses import forward_kl, generalized_jsd, reverse_kl, sft, total_variation
from kd_reference import make, py_softmax

pytestmark = pytest.mark.usefixtures("one_thread")


DIVERGENCES = {
    "fkl": forward_kl,
    "rkl": reverse_kl,
    "jsd": generalized_jsd,
    "tvd": total_variation,
}


# --------------------------------------------------------------------------- brute force (fp64, loops)


def py_kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def py_divergence(name: str, s_row, t_row, temperature=1.0, beta=0.5) -> float:
    ps, pt = py_softmax(s_row, temperature), py_softmax(t_row, temperature)
    if name == "fkl" or (name == "jsd" and beta == 0):
        return py_kl(pt, ps)
    if name == "rkl" or (name == "jsd" and beta == 1):
        return py_kl(ps, pt)
    if name == "jsd":
        m = [beta * a + (1 - beta) * b for a, b in zip(pt, ps)]
        return beta * py_kl(pt, m) + (1 - beta) * py_kl(ps, m)
    if name == "tvd":
        return 0.5 * sum(abs(a - b) for a, b in zip(pt, ps))
    raise AssertionError(name)


def brute_force(name, student, teacher, mask, **kw) -> float:
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for t in range(student.shape[1]):
            if mask[b, t]:
                total += py_divergence(name, student[b, t].tolist(), teacher[b, t].tolist(), **kw)
                count += 1
    return total / max(count, 1)


def brute_force_ce(student, target, mask, temperature=1.0) -> float:
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for t in range(student.shape[1]):
            if mask[b, t]:
                total -= math.log(py_softmax(student[b, t].tolist(), temperature)[int(target[b, t])])
                count += 1
    return total / max(count, 1)


def call(name, s, t, mask, **kw):
    return DIVERGENCES[name](s, t, mask, **kw)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.5])
def test_matches_brute_force(name, temperature):
    s, t, mask = make(seed=1)
    got = call(name, s, t, mask, temperature=temperature)
    want = brute_force(name, s, t, mask, temperature=temperature)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_jsd_matches_brute_force_for_every_beta(beta):
    s, t, mask = make(seed=2)
    got = generalized_jsd(s, t, mask, beta=beta)
    assert got.item() == pytest.approx(brute_force("jsd", s, t, mask, beta=beta), rel=1e-5, abs=1e-7)


def test_jsd_end_points_are_the_kls():
    s, t, mask = make(seed=3)
    assert generalized_jsd(s, t, mask, beta=0.0).item() == pytest.approx(forward_kl(s, t, mask).item(), rel=1e-12)
    assert generalized_jsd(s, t, mask, beta=1.0).item() == pytest.approx(reverse_kl(s, t, mask).item(), rel=1e-12)


def test_jsd_interior_tends_to_the_scaled_kls():
    """The documented discontinuity: JSD_beta ~ beta*fkl near 0 and (1-beta)*rkl near 1."""
    s, t, mask = make(seed=4)
    b = 1e-5
    assert (generalized_jsd(s, t, mask, beta=b) / b).item() == pytest.approx(forward_kl(s, t, mask).item(), rel=1e-3)
    assert (generalized_jsd(s, t, mask, beta=1 - b) / b).item() == pytest.approx(
        reverse_kl(s, t, mask).item(), rel=1e-3
    )


def test_sft_matches_brute_force_and_cross_entropy():
    s, _, mask = make(seed=5)
    y = torch.randint(0, 7, mask.shape, generator=torch.Generator().manual_seed(0))
    y[~mask] = -100
    for temperature in (1.0, 1.7):
        got = sft(s, y, mask, temperature=temperature)
        assert got.item() == pytest.approx(brute_force_ce(s, y, mask, temperature), rel=1e-9)
    ref = torch.nn.functional.cross_entropy(s[mask], y[mask])
    assert sft(s, y, mask).item() == pytest.approx(ref.item(), rel=1e-12)


# --------------------------------------------------------------------------- basic properties


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_zero_when_student_equals_teacher(name):
    s, _, mask = make(seed=6, dtype=torch.float32)
    assert call(name, s, s.clone(), mask).item() == pytest.approx(0.0, abs=1e-6)


def test_sft_zero_when_student_is_certain():
    _, _, mask = make(seed=6)
    y = torch.randint(0, 7, mask.shape)
    s = torch.full((*mask.shape, 7), -math.inf, dtype=torch.float64).scatter(2, y.unsqueeze(-1), 0.0)
    assert sft(s, y, mask).item() == 0.0


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_non_negative(name):
    for seed in range(5):
        s, t, mask = make(seed=seed, dtype=torch.float32, scale=5.0)
        assert call(name, s, t, mask).item() >= 0


@pytest.mark.parametrize("name", sorted(DIVERGENCES) + ["sft"])
def test_masked_out_positions_are_never_read(name):
    s, t, mask = make(seed=7)
    y = torch.randint(0, 7, mask.shape)

    def loss(a, b):
        return sft(a, y, mask) if name == "sft" else call(name, a, b, mask)

    s1, t1 = s.clone().requires_grad_(), t.clone()
    ref = loss(s1, t1)
    ref.backward()
    s2, t2 = s.clone(), t.clone()
    s2[~mask] = float("nan")
    t2[~mask] = float("inf")
    s2.requires_grad_()
    got = loss(s2, t2)
    got.backward()
    assert got.item() == ref.item()
    assert torch.equal(s2.grad, s1.grad)
    assert (s2.grad[~mask] == 0).all()


@pytest.mark.parametrize("name", sorted(DIVERGENCES) + ["sft"])
def test_empty_mask_gives_zero_with_a_valid_gradient(name):
    s, t, _ = make(seed=8)
    mask = torch.zeros(s.shape[:2], dtype=torch.bool)
    s.requires_grad_()
    out = sft(s, torch.zeros(mask.shape, dtype=torch.long), mask) if name == "sft" else call(name, s, t, mask)
    out.backward()
    assert out.item() == 0.0
    assert torch.equal(s.grad, torch.zeros_like(s))


@pytest.mark.parametrize("name", sorted(DIVERGENCES) + ["sft"])
def test_num_items_replaces_the_denominator(name):
    s, t, mask = make(seed=9)
    y = torch.randint(0, 7, mask.shape)

    def loss(**kw):
        return sft(s, y, mask, **kw) if name == "sft" else call(name, s, t, mask, **kw)

    count = int(mask.sum())
    assert loss(num_items=40).item() == pytest.approx(loss().item() * count / 40, rel=1e-12)
    assert loss(num_items=torch.tensor(40.0)).item() == pytest.approx(loss().item() * count / 40, rel=1e-12)


# --------------------------------------------------------------------------- gradients, chunking, dtypes


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_gradcheck(name):
    s, t, mask = make(b=2, t=3, v=5, seed=10)
    s.requires_grad_()
    t.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: call(name, a, b, mask, temperature=1.3, chunk_size=2), (s, t))


def test_gradcheck_jsd_end_points_and_sft():
    s, t, mask = make(b=2, t=3, v=5, seed=11)
    s.requires_grad_()
    t.requires_grad_()
    for beta in (0.0, 0.3, 1.0):
        assert torch.autograd.gradcheck(lambda a, b, beta=beta: generalized_jsd(a, b, mask, beta=beta), (s, t))
    y = torch.randint(0, 5, mask.shape)
    assert torch.autograd.gradcheck(lambda a: sft(a, y, mask, temperature=0.8, chunk_size=1), (s,))


def test_gradient_matches_naive_autograd():
    s, t, mask = make(seed=12)
    s1 = s.clone().requires_grad_()
    forward_kl(s1, t, mask, chunk_size=2).backward()
    s2 = s.clone().requires_grad_()
    ls, lt = s2.log_softmax(-1), t.log_softmax(-1)
    (lt.exp() * (lt - ls)).sum(-1)[mask].mean().backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(DIVERGENCES) + ["sft"])
def test_chunked_equals_unchunked(name):
    s, t, mask = make(b=3, t=7, v=11, seed=13, dtype=torch.float32)
    y = torch.randint(0, 11, mask.shape)
    results = []
    for chunk in (1, 3, None, 10**6):
        a = s.clone().requires_grad_()
        b = t.clone().requires_grad_()
        out = sft(a, y, mask, chunk_size=chunk) if name == "sft" else call(name, a, b, mask, chunk_size=chunk)
        out.backward()
        results.append((out.detach(), a.grad, b.grad))
    for out, ga, gb in results[1:]:
        torch.testing.assert_close(out, results[0][0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(ga, results[0][1], rtol=1e-5, atol=1e-7)
        if gb is not None:
            torch.testing.assert_close(gb, results[0][2], rtol=1e-5, atol=1e-7)


def test_non_contiguous_logits_slices():
    """The usual alignment ``logits[:, :-1]`` is read in place (and its gradient lands in place)."""
    s, t, mask = make(b=2, t=6, v=7, seed=19)
    full = s.clone().requires_grad_()
    out = forward_kl(full[:, :-1], t[:, :-1], mask[:, :-1], chunk_size=2)
    out.backward()
    ref_s = s[:, :-1].clone().requires_grad_()
    forward_kl(ref_s, t[:, :-1].contiguous(), mask[:, :-1]).backward()
    assert out.item() == pytest.approx(brute_force("fkl", s[:, :-1], t[:, :-1], mask[:, :-1]), rel=1e-9)
    torch.testing.assert_close(full.grad[:, :-1], ref_s.grad)
    assert (full.grad[:, -1] == 0).all()


@pytest.mark.parametrize("name", sorted(DIVERGENCES) + ["sft"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_compute_in_fp32(name, dtype):
    s, t, mask = make(b=2, t=6, v=50, seed=14, dtype=torch.float32)
    y = torch.randint(0, 50, mask.shape, generator=torch.Generator().manual_seed(14))

    def loss(a, b):
        return sft(a, y, mask) if name == "sft" else call(name, a, b, mask)

    s_h, t_h = s.to(dtype).requires_grad_(), t.to(dtype)
    out = loss(s_h, t_h)
    out.backward()
    assert out.dtype == torch.float32 and s_h.grad.dtype == dtype
    # the same (rounded) values in fp32 give the same answer: computation is in fp32
    s32 = s_h.detach().float().requires_grad_()
    ref = loss(s32, t_h.float())
    ref.backward()
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(s_h.grad.float(), s32.grad, rtol=1e-2, atol=1e-4)
    # and the original fp32 inputs give the answer to half-precision tolerance
    assert out.item() == pytest.approx(loss(s, t).item(), rel=3e-2, abs=1e-3)


@pytest.mark.parametrize("name", sorted(DIVERGENCES) + ["sft"])
def test_huge_bf16_logits_stay_finite(name):
    g = torch.Generator().manual_seed(15)
    s = (torch.randn(2, 4, 64, generator=g) * 1e4).clamp(-1e4, 1e4).bfloat16().requires_grad_()
    t = (torch.randn(2, 4, 64, generator=g) * 1e4).clamp(-1e4, 1e4).bfloat16()
    mask = torch.ones(2, 4, dtype=torch.bool)
    y = torch.randint(0, 64, (2, 4), generator=g)
    out = sft(s, y, mask) if name == "sft" else call(name, s, t, mask, temperature=0.5)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(s.grad.float()).all()


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_neg_inf_logits_give_finite_values_and_gradients(name):
    s, t, mask = make(b=2, t=4, v=9, seed=16)
    s[..., -2:] = -math.inf  # masked vocabulary entries on both sides
    t[..., -2:] = -math.inf
    if name != "rkl":  # teacher-only -inf: student mass where the teacher has none is fine except for rkl
        t[..., 0] = -math.inf
    s.requires_grad_()
    t.requires_grad_()
    out = call(name, s, t, mask)
    out.backward()
    assert torch.isfinite(out)
    assert torch.isfinite(s.grad).all() and torch.isfinite(t.grad).all()
    assert out.item() == pytest.approx(brute_force(name, s.detach(), t.detach(), mask), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("rkl", [reverse_kl, lambda s, t, mask: generalized_jsd(s, t, mask, beta=1.0)])
def test_reverse_kl_where_the_teacher_has_no_mass_is_finite_and_pushes_the_mass_off(rkl):
    """The true KL is infinite there; the teacher's log-probs are floored at log(tiny) (the issue's
    reproducer gave a NaN gradient), so value and gradient are finite and descent moves mass away."""
    s, t, mask = make(seed=17)
    t[..., 0] = -math.inf
    s.requires_grad_()
    out = rkl(s, t, mask)
    out.backward()
    log_ps, log_pt = torch.log_softmax(s.detach(), -1), torch.log_softmax(t, -1)
    floored = torch.where(torch.isneginf(log_pt), math.log(torch.finfo(t.dtype).tiny), log_pt)
    brute = (log_ps.exp() * (log_ps - floored)).sum(-1)[mask].sum() / mask.sum()
    assert torch.isfinite(out) and out.item() == pytest.approx(brute.item(), rel=1e-9)
    assert torch.isfinite(s.grad).all() and (s.grad[..., 0][mask] > 0).all()
    s = torch.tensor([[[1.0, 0.5, -0.3, 0.2]]], requires_grad=True)  # the reproducer, fp32
    reverse_kl(s, torch.tensor([[[-math.inf, -1.0, 0.7, 0.1]]]), torch.ones(1, 1, dtype=torch.bool)).backward()
    assert torch.isfinite(s.grad).all()


def test_a_finite_but_tiny_teacher_log_prob_is_not_floored():
    """Only -inf is replaced: a teacher log-prob below fp32's log(tiny) (-87.3) still counts as it is, so
    fp32 and fp64 agree (a floor on every entry made them differ by 16%)."""
    s = torch.tensor([[[2.0, 0.0]]], dtype=torch.float64)
    t = torch.tensor([[[-100.0, 0.0]]], dtype=torch.float64)
    mask = torch.ones(1, 1, dtype=torch.bool)
    exact = reverse_kl(s, t, mask).item()
    assert reverse_kl(s.float(), t.float(), mask).item() == pytest.approx(exact, rel=1e-5)
    assert exact == pytest.approx(brute_force("rkl", s, t, mask), rel=1e-9)


# --------------------------------------------------------------------------- vocabulary mismatch


def test_vocab_size_slices_padding_rows_and_never_pads():
    s, t, mask = make(b=2, t=4, v=9, seed=18)
    t_padded = torch.cat([t, torch.randn(2, 4, 3, dtype=t.dtype)], dim=-1).requires_grad_()
    s_padded = torch.cat([s, torch.randn(2, 4, 1, dtype=s.dtype)], dim=-1).requires_grad_()
    out = forward_kl(s_padded, t_padded, mask, vocab_size=9, chunk_size=3)
    out.backward()
    assert out.item() == pytest.approx(forward_kl(s, t, mask).item(), rel=1e-12)
    assert (s_padded.grad[..., 9:] == 0).all() and (t_padded.grad[..., 9:] == 0).all()
    assert (s_padded.grad[..., :9] != 0).any()


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_vocab_mismatch_without_vocab_size_is_an_error(name):
    s, t, mask = make(v=9)
    with pytest.raises(CapdistillError, match=r"vocab.*9 vs 12.*vocab_size"):
        call(name, s, torch.randn(*t.shape[:2], 12, dtype=t.dtype), mask)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_bad_input_names_the_argument_and_value(name):
    s, t, mask = make(b=2, t=5, v=7)
    cases = [
        (lambda: call(name, s, t[:, :4], mask), r"teacher_logits.*\[2, 4, 7\]"),
        (lambda: call(name, s, t, mask[:, :3]), r"mask.*\[2, 3\]"),
        (lambda: call(name, s, t, mask.long()), r"mask.*torch.int64"),
        (lambda: call(name, s[0], t, mask), r"student_logits.*\(5, 7\)"),
        (lambda: call(name, s, t, mask, temperature=0.0), r"temperature.*0\.0"),
        (lambda: call(name, s, t, mask, temperature=-1), r"temperature.*-1"),
        (lambda: call(name, s, t, mask, temperature=float("nan")), r"temperature.*nan"),
        (lambda: call(name, s, t, mask, chunk_size=0), r"chunk_size.*0"),
        (lambda: call(name, s, t, mask, num_items=0), r"num_items.*0"),
        (lambda: call(name, s, t, mask, vocab_size=8), r"vocab_size.*8"),
    ]
    for fn, pattern in cases:
        with pytest.raises(CapdistillError, match=pattern):
            fn()
    assert issubclass(CapdistillError, ValueError)


@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan"), float("inf")])
def test_beta_outside_unit_interval_is_an_error(beta):
    s, t, mask = make()
    with pytest.raises(ValueError, match=rf"beta.*{beta}"):
        generalized_jsd(s, t, mask, beta=beta)


def test_sft_bad_targets():
    s, _, mask = make(v=7)
    with pytest.raises(CapdistillError, match=r"target_ids.*\[0, 7\).*7"):
        sft(s, torch.full(mask.shape, 7), mask)
    with pytest.raises(CapdistillError, match=r"target_ids.*shape.*\[2, 4\]"):
        sft(s, torch.zeros(2, 4, dtype=torch.long), mask)
    with pytest.raises(CapdistillError, match=r"target_ids.*float"):
        sft(s, torch.zeros(mask.shape), mask)


# --------------------------------------------------------------------------- properties (hypothesis)

shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9))


def _random(shape, seed, scale):
    b, t, v = shape
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, t, v, generator=g, dtype=torch.float64) * scale
    te = torch.randn(b, t, v, generator=g, dtype=torch.float64) * scale
    mask = torch.rand(b, t, generator=g) > 0.2
    return s, te, mask


@settings(max_examples=30, deadline=None)
@given(shapes, st.integers(0, 2**16), st.floats(0.1, 8.0), st.floats(0.25, 4.0), st.floats(0.0, 1.0))
def test_property_bounds_and_symmetries(shape, seed, scale, temperature, beta):
    s, t, mask = _random(shape, seed, scale)
    fkl = forward_kl(s, t, mask, temperature).item()
    rkl = reverse_kl(s, t, mask, temperature).item()
    tvd = total_variation(s, t, mask, temperature).item()
    jsd = generalized_jsd(s, t, mask, beta, temperature).item()
    assert fkl >= -1e-12 and rkl >= -1e-12 and jsd >= -1e-12
    assert 0 <= tvd <= 1 + 1e-12
    assert tvd <= math.sqrt(min(fkl, rkl) / 2) + 1e-9  # Pinsker (the mean of sqrt <= sqrt of the mean)
    if 0 < beta < 1 and 0 < 1 - beta < 1:  # JSD_beta(S, T) = JSD_(1-beta)(T, S)
        swapped = generalized_jsd(t, s, mask, 1 - beta, temperature).item()
        assert swapped == pytest.approx(jsd, rel=1e-9, abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(shapes, st.integers(0, 2**16), st.integers(1, 5))
def test_property_chunking_never_changes_the_result(shape, seed, chunk):
    s, t, mask = _random(shape, seed, 3.0)
    for fn in DIVERGENCES.values():
        assert fn(s, t, mask, chunk_size=chunk).item() == pytest.approx(fn(s, t, mask).item(), rel=1e-12, abs=1e-15)
