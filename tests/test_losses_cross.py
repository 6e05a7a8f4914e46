"""Cross-tokenizer losses: ULD and MultiLevelOT against brute force, invariances, safety."""

from __future__ import annotations

import math

import pytest
import torch

from capdistill.errors import CapdistillError
from capdistill.losses import multilevel_ot, uld
from capdistill.losses.cross_tokenizer import OTSettings, sinkhorn_divergence
from kd_reference import assert_chunking_invariant, py_softmax

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- brute force


def pairs(ms, mt):
    """Per row: the counted positions of each side, and the pairs (truncated to the shorter side)."""
    out = []
    for b in range(ms.shape[0]):
        s_pos = [i for i in range(ms.shape[1]) if ms[b, i]]
        t_pos = [j for j in range(mt.shape[1]) if mt[b, j]]
        out.append((s_pos, t_pos, list(zip(s_pos, t_pos))))
    return out


def brute_uld(s, ms, t, mt, temperature=1.0):
    total, count = 0.0, 0
    for b, (_, _, prs) in enumerate(pairs(ms, mt)):
        for i, j in prs:
            ps = sorted(py_softmax(s[b, i].tolist(), temperature), reverse=True)
            pt = sorted(py_softmax(t[b, j].tolist(), temperature), reverse=True)
            n = max(len(ps), len(pt))
            ps, pt = ps + [0.0] * (n - len(ps)), pt + [0.0] * (n - len(pt))
            total += sum(abs(x - y) for x, y in zip(ps, pt))
            count += 1
    return total / max(count, 1)


def py_topk_probs(row, k, temperature, std_normalize):
    if std_normalize:
        finite = [x for x in row if x != -math.inf]
        mean = sum(finite) / len(finite)
        std = math.sqrt(sum((x - mean) ** 2 for x in finite) / max(len(finite) - 1, 1))
        row = [x if x == -math.inf else (x - mean) / (std + 1e-4) for x in row]
    return sorted(py_softmax(row, temperature), reverse=True)[:k]


def ref_entropic_ot(x, y, eps, iters=3000):
    """Primal value <P, C> + eps KL(P | a x b), kernel-domain Sinkhorn (a different algorithm)."""
    x, y = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    c = (x[:, None, :] - y[None, :, :]).abs().sum(-1)
    a = torch.full((len(x),), 1 / len(x), dtype=torch.float64)
    b = torch.full((len(y),), 1 / len(y), dtype=torch.float64)
    k = torch.exp(-c / eps)
    u, v = torch.ones_like(a), torch.ones_like(b)
    for _ in range(iters):
        u = a / (k @ v)
        v = b / (k.T @ u)
    p = u[:, None] * k * v[None, :]
    return float((p * c).sum() + eps * (p * (p / (a[:, None] * b[None, :])).log()).sum())


def brute_mlot(s, ms, t, mt, *, top_k, temperature, std_normalize, token_weight, kl_weight, seq_weight, eps):
    total, count = 0.0, 0
    k = min(top_k, s.shape[-1], t.shape[-1])
    for b, (s_pos, t_pos, prs) in enumerate(pairs(ms, mt)):
        vs = {i: py_topk_probs(s[b, i].tolist(), k, temperature, std_normalize) for i in s_pos}
        vt = {j: py_topk_probs(t[b, j].tolist(), k, temperature, std_normalize) for j in t_pos}
        for i, j in prs:
            l1 = sum(abs(x - y) for x, y in zip(vs[i], vt[j]))
            qs = [x / sum(vs[i]) for x in vs[i]]
            qt = [y / sum(vt[j]) for y in vt[j]]
            kl = sum(y * math.log(y / x) for x, y in zip(qs, qt) if y > 0)
            total += token_weight * l1 + kl_weight * kl
            count += 1
        if prs and seq_weight:
            xs, ys = [vs[i] for i in s_pos], [vt[j] for j in t_pos]
            div = ref_entropic_ot(xs, ys, eps) - 0.5 * (ref_entropic_ot(xs, xs, eps) + ref_entropic_ot(ys, ys, eps))
            total += seq_weight * len(prs) * div
    return total / max(count, 1)


def make(b=2, ts=6, vs=9, tt=5, vt=7, *, seed=0, dtype=torch.float64, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(b, ts, vs, generator=g, dtype=torch.float64) * scale).to(dtype)
    t = (torch.randn(b, tt, vt, generator=g, dtype=torch.float64) * scale).to(dtype)
    ms = torch.rand(b, ts, generator=g) > 0.3
    mt = torch.rand(b, tt, generator=g) > 0.2
    ms[0, 1] = mt[0, 0] = True
    return s, ms, t, mt


MLOT_EXACT = {"sinkhorn_epsilon": 0.5, "sinkhorn_iters": 100}


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_uld_matches_brute_force(temperature):
    s, ms, t, mt = make(seed=1)
    got = uld(s, ms, t, mt, temperature)
    assert got.item() == pytest.approx(brute_uld(s, ms, t, mt, temperature), rel=1e-5, abs=1e-8)
    # teacher vocabulary larger than the student's
    got = uld(t, mt, s, ms, temperature)
    assert got.item() == pytest.approx(brute_uld(t, mt, s, ms, temperature), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize(
    "options",
    [
        {"top_k": 4, "temperature": 1.0, "std_normalize": True},
        {"top_k": 50, "temperature": 2.0, "std_normalize": True},
        {"top_k": 3, "temperature": 0.7, "std_normalize": False, "kl_weight": 0.5, "seq_weight": 1.0},
        {"top_k": 5, "temperature": 1.0, "std_normalize": False, "seq_weight": 0.0},
    ],
)
def test_mlot_matches_brute_force(options):
    s, ms, t, mt = make(seed=2)
    full = {"token_weight": 1.0, "kl_weight": 0.1, "seq_weight": 0.1, **options}
    got = multilevel_ot(s, ms, t, mt, **full, **MLOT_EXACT)
    want = brute_mlot(s, ms, t, mt, eps=MLOT_EXACT["sinkhorn_epsilon"], **full)
    assert got.item() == pytest.approx(want, rel=1e-5, abs=1e-8)


def test_pairing_truncates_to_the_shorter_side_row_by_row():
    s, ms, t, mt = make(seed=3)
    ms[:] = False
    mt[:] = False
    ms[0, [1, 3, 4]] = True  # row 0: 3 student, 2 teacher positions -> 2 pairs
    mt[0, [0, 2]] = True
    ms[1, [5]] = True  # row 1: 1 student, 0 teacher -> none

    def sorted_probs(x):  # vocabulary 9 (student) or 7 + 2 zeros (teacher)
        p = sorted(torch.softmax(x, -1).tolist(), reverse=True)
        return p + [0.0] * (9 - len(p))

    by_hand = sum(
        sum(abs(x - y) for x, y in zip(sorted_probs(s[0, i]), sorted_probs(t[0, j]))) for i, j in [(1, 0), (3, 2)]
    )
    assert uld(s, ms, t, mt).item() == pytest.approx(by_hand / 2, rel=1e-9)


# --------------------------------------------------------------------------- properties


def test_zero_when_student_equals_teacher():
    s, ms, _, _ = make(seed=4)
    assert uld(s, ms, s.clone(), ms.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert multilevel_ot(s, ms, s.clone(), ms.clone()).item() == pytest.approx(0.0, abs=1e-9)
    # the sequence level uses the counted positions only: a padded teacher copy is still zero
    t_padded = torch.cat([s, torch.randn(2, 3, 9, dtype=s.dtype)], 1)
    mt_padded = torch.cat([ms, torch.zeros(2, 3, dtype=torch.bool)], 1)
    assert multilevel_ot(s, ms, t_padded, mt_padded).item() == pytest.approx(0.0, abs=1e-9)


def test_non_negative():
    for seed in range(4):
        s, ms, t, mt = make(seed=seed, scale=3.0)
        assert uld(s, ms, t, mt).item() >= 0
        assert multilevel_ot(s, ms, t, mt, top_k=4, seq_weight=1.0, kl_weight=0.0, token_weight=0.0).item() >= -1e-9
        assert multilevel_ot(s, ms, t, mt).item() >= 0


def test_invariant_to_permuting_either_vocabulary():
    s, ms, t, mt = make(seed=5)
    ps, pt = torch.randperm(9), torch.randperm(7)
    for fn in (uld, lambda *a: multilevel_ot(*a, top_k=4)):
        ref = fn(s, ms, t, mt).item()
        assert fn(s[..., ps], ms, t, mt).item() == pytest.approx(ref, rel=1e-12)
        assert fn(s, ms, t[..., pt], mt).item() == pytest.approx(ref, rel=1e-12)


def test_masked_out_positions_are_never_read():
    s, ms, t, mt = make(seed=6)
    s2, t2 = s.clone(), t.clone()
    s2[~ms], t2[~mt] = float("nan"), float("inf")
    s2.requires_grad_()
    for fn in (uld, multilevel_ot):
        s2.grad = None
        out = fn(s2, ms, t2, mt)
        out.backward()
        assert out.item() == pytest.approx(fn(s, ms, t, mt).item(), rel=1e-12)
        assert (s2.grad[~ms] == 0).all() and torch.isfinite(s2.grad).all()


def test_empty_masks_give_zero_with_a_valid_gradient():
    s, _, t, mt = make(seed=7)
    ms = torch.zeros(2, 6, dtype=torch.bool)
    s.requires_grad_()
    for fn in (uld, multilevel_ot):
        s.grad = None
        out = fn(s, ms, t, mt)
        out.backward()
        assert out.item() == 0.0 and torch.equal(s.grad, torch.zeros_like(s))


def test_num_items_replaces_the_denominator():
    s, ms, t, mt = make(seed=8)
    n_pairs = sum(len(p) for _, _, p in pairs(ms, mt))
    for fn in (uld, multilevel_ot):
        assert fn(s, ms, t, mt, num_items=50).item() == pytest.approx(fn(s, ms, t, mt).item() * n_pairs / 50, rel=1e-9)


def test_gradcheck():
    s, ms, t, mt = make(b=2, ts=4, vs=5, tt=3, vt=4, seed=9)
    s.requires_grad_()
    t.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: uld(a, ms, b, mt, 1.5, chunk_size=2), (s, t))
    for std_normalize in (True, False):
        assert torch.autograd.gradcheck(
            lambda a, b, sn=std_normalize: multilevel_ot(
                a, ms, b, mt, top_k=3, std_normalize=sn, seq_weight=1.0, chunk_size=2, **MLOT_EXACT
            ),
            (s, t),
            fast_mode=not std_normalize,  # one full check; the Sinkhorn solves make each call slow
        )


def test_chunked_equals_unchunked():
    s, ms, t, mt = make(b=3, ts=7, vs=11, tt=6, vt=8, seed=10, dtype=torch.float32)
    for fn in (uld, lambda *a, **kw: multilevel_ot(*a, top_k=5, **kw)):
        assert_chunking_invariant(lambda a, chunk, fn=fn: fn(a, ms, t, mt, chunk_size=chunk), s, (1, 3, None))


def test_bf16_inputs_and_extreme_logits():
    s, ms, t, mt = make(seed=11, vs=40, vt=30, dtype=torch.float32)
    for fn in (uld, multilevel_ot):
        sb = s.bfloat16().requires_grad_()
        out = fn(sb, ms, t.bfloat16(), mt)
        out.backward()
        assert out.dtype == torch.float32 and sb.grad.dtype == torch.bfloat16
        assert out.item() == pytest.approx(fn(s, ms, t, mt).item(), rel=3e-2, abs=1e-3)
        assert out.item() == pytest.approx(fn(sb.detach().float(), ms, t.bfloat16().float(), mt).item(), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    huge_s = (torch.randn(2, 6, 40, generator=g) * 1e4).clamp(-1e4, 1e4).bfloat16().requires_grad_()
    huge_t = (torch.randn(2, 5, 30, generator=g) * 1e4).clamp(-1e4, 1e4).bfloat16()
    for fn in (uld, multilevel_ot, lambda *a: multilevel_ot(*a, std_normalize=False)):
        huge_s.grad = None
        out = fn(huge_s, ms, huge_t, mt)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(huge_s.grad.float()).all()


def test_neg_inf_logits_stay_finite():
    s, ms, t, mt = make(seed=12)
    s[..., :3] = -math.inf
    t[..., -2:] = -math.inf
    s.requires_grad_()
    t.requires_grad_()
    for fn in (uld, lambda *a: multilevel_ot(*a, top_k=8, **MLOT_EXACT)):
        s.grad = t.grad = None
        out = fn(s, ms, t, mt)
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(s.grad).all() and torch.isfinite(t.grad).all()
    assert uld(s, ms, t, mt).item() == pytest.approx(brute_uld(s.detach(), ms, t.detach(), mt), rel=1e-9)


# --------------------------------------------------------------------------- bad input


def test_bad_input_names_the_argument_and_value():
    s, ms, t, mt = make()
    cases = [
        (lambda: uld(s, ms[:, :4], t, mt), r"student_mask.*\[2, 6\].*\[2, 4\]"),
        (lambda: uld(s, ms, t, mt[:, :2]), r"teacher_mask.*\[2, 5\].*\[2, 2\]"),
        (lambda: uld(s, ms, t, mt.int()), r"teacher_mask.*torch.int32"),
        (lambda: uld(s, ms, t[:1], mt[:1]), r"batch size"),
        (lambda: uld(s, ms, t, mt, 0.0), r"temperature.*0\.0"),
        (lambda: multilevel_ot(s, ms, t, mt, top_k=0), r"top_k.*0"),
        (lambda: multilevel_ot(s, ms, t, mt, sinkhorn_epsilon=0), r"sinkhorn_epsilon.*0"),
        (lambda: multilevel_ot(s, ms, t, mt, sinkhorn_iters=0), r"sinkhorn_iters.*0"),
        (lambda: multilevel_ot(s, ms, t, mt, seq_weight=-1), r"seq_weight.*-1"),
        (lambda: multilevel_ot(s, ms, t, mt, std_normalize="yes"), r"std_normalize.*yes"),
        (lambda: multilevel_ot(s, ms, t, mt, temperature=-2), r"temperature.*-2"),
    ]
    for fn, pattern in cases:
        with pytest.raises(CapdistillError, match=pattern):
            fn()


def test_sinkhorn_converges_to_its_tolerance_so_the_envelope_gradient_is_exact():
    """The plan is the gradient only at convergence: a fixed 50 iterations at eps 0.1 left it off
    (the issue measured up to 1e-3); iterating to the default tolerance matches a 5000-iteration run."""
    g = torch.Generator().manual_seed(3)
    x = torch.softmax(2 * torch.randn(23, 50, generator=g, dtype=torch.float64), -1).sort(-1, descending=True)[0]
    y = torch.softmax(2 * torch.randn(31, 50, generator=g, dtype=torch.float64), -1).sort(-1, descending=True)[0]

    def grad(iters, tol):
        a = x.clone().requires_grad_()
        sinkhorn_divergence(a, y, 0.1, iters, tol).backward()
        return a.grad

    ref, fixed = grad(5000, 0.0), grad(50, 0.0)
    settings = OTSettings()
    converged = grad(settings.sinkhorn_iters, settings.sinkhorn_tol)
    assert (converged - ref).abs().max() < 1e-7 < (fixed - ref).abs().max()
