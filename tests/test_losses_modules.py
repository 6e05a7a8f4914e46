"""Loss modules, and the conf/loss/*.yaml options that build them."""

from __future__ import annotations

import inspect

import pytest
import torch

from capdistill.components import build_loss as build_configured
from capdistill.config.hydra_setup import CONF_DIR
from capdistill.config.schema import ConfigError
from capdistill.errors import CapdistillError
from capdistill.losses import (
    DistillLoss,
    ForwardKLLoss,
    JSDLoss,
    MultiLevelOTLoss,
    SampledKLLoss,
    SFTLoss,
    SparseTeacher,
    TopKLoss,
    TVDLoss,
    ULDLoss,
    forward_kl,
    generalized_jsd,
    multilevel_ot,
    sft,
    topk_kl,
    uld,
)
from capdistill.losses.modules import ReverseKLLoss

pytestmark = pytest.mark.usefixtures("one_thread")

CONF_LOSS = CONF_DIR / "loss"
LOSSES = {"sft": SFTLoss, "fkl": ForwardKLLoss, "rkl": ReverseKLLoss, "jsd": JSDLoss, "tvd": TVDLoss}
LOSSES |= {"topk": TopKLoss, "sampled": SampledKLLoss, "uld": ULDLoss, "mlot": MultiLevelOTLoss}


def build_loss(name: str, **options) -> DistillLoss:
    """The loss of config option `name` (`conf/loss/<name>.yaml`'s class) with `options`."""
    return LOSSES[name](**options)


def batch(seed=0, v=11, vt=None):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, 6, v, generator=g)
    t = torch.randn(2, 6, v if vt is None else vt, generator=g)
    mask = torch.rand(2, 6, generator=g) > 0.3
    mask[0, 0] = True
    y = torch.randint(0, v, (2, 6), generator=g)
    return s, t, mask, y


def test_every_config_option_has_a_yaml_that_builds(make_cfg):
    files = sorted(p.stem for p in CONF_LOSS.glob("*.yaml"))
    assert files == sorted(LOSSES)
    for name in files:
        cfg = make_cfg(f"loss={name}")
        assert cfg.loss._target_ == f"capdistill.losses.modules.{LOSSES[name].__name__}"
        assert set(cfg.loss) - {"_target_"} == set(LOSSES[name].options()), name
        module = build_configured(cfg)
        assert isinstance(module, LOSSES[name]) and module.name == name


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_uniform_call_signature(name):
    module = build_loss(
        name, **({"k": 4} if name == "topk" else {}), **({"num_samples": 3} if name == "sampled" else {})
    )
    s, t, mask, y = batch(v=11, vt=13 if module.cross_tokenizer else None)
    s.requires_grad_()
    teacher_mask = torch.ones(2, 6, dtype=torch.bool) if module.cross_tokenizer else None
    out = module(s, t if module.needs_teacher else None, mask, target_ids=y, teacher_mask=teacher_mask)
    out.backward()
    assert out.dim() == 0 and torch.isfinite(out) and out.item() >= 0
    assert torch.isfinite(s.grad).all()
    assert module.needs_target_ids == (name in ("sft", "uld", "mlot"))


def test_modules_compute_the_functional_losses():
    s, t, mask, y = batch(seed=1)
    assert build_loss("fkl", temperature=2.0)(s, t, mask).item() == pytest.approx(
        forward_kl(s, t, mask, 2.0).item(), rel=1e-6
    )
    assert build_loss("jsd", beta=0.3)(s, t, mask).item() == pytest.approx(
        generalized_jsd(s, t, mask, 0.3).item(), rel=1e-6
    )
    assert build_loss("sft")(s, None, mask, target_ids=y).item() == pytest.approx(sft(s, y, mask).item(), rel=1e-6)
    tm = torch.ones(2, 6, dtype=torch.bool)
    assert build_loss("uld", ce_weight=0.0)(s, t, mask, teacher_mask=tm).item() == pytest.approx(
        uld(s, mask, t, tm).item(), rel=1e-6
    )
    both = build_loss("uld", ce_weight=0.5)(s, t, mask, teacher_mask=tm, target_ids=y)
    assert both.item() == pytest.approx(uld(s, mask, t, tm).item() + 0.5 * sft(s, y, mask).item(), rel=1e-6)
    mlot = build_loss("mlot", ce_weight=0.0, top_k=5, temperature=2.0)(s, t, mask, teacher_mask=tm)
    assert mlot.item() == pytest.approx(multilevel_ot(s, mask, t, tm, 5, temperature=2.0).item(), rel=1e-6)


def test_ce_weight_and_num_items():
    s, t, mask, y = batch(seed=2)
    module = build_loss("fkl", ce_weight=2.0)
    got = module(s, t, mask, target_ids=y, num_items=20)
    want = forward_kl(s, t, mask, num_items=20) + 2.0 * sft(s, y, mask, num_items=20)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(CapdistillError, match=r"ce_weight=2.0.*target_ids"):
        module(s, t, mask)


def test_sparse_teachers_through_the_modules():
    s, t, mask, _ = batch(seed=3)
    sparse = SparseTeacher.from_topk(t, 6)
    assert build_loss("topk", k=4)(s, sparse, mask).item() == pytest.approx(topk_kl(s, t, mask, 4).item(), rel=1e-5)
    draws = SparseTeacher.from_samples(t, 5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(build_loss("sampled", num_samples=5)(s, draws, mask))
    with pytest.raises(CapdistillError, match="dense teacher_logits"):
        build_loss("fkl")(s, sparse, mask)


def test_sampled_module_generator_makes_draws_reproducible():
    s, t, mask, _ = batch(seed=4)
    module = build_loss("sampled", num_samples=2)
    results = []
    for _ in range(2):
        module.generator = torch.Generator().manual_seed(5)
        results.append(module(s, t, mask).item())
    assert results[0] == results[1]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["loss=fkl", "+loss.beta=0.3"], r"ForwardKLLoss\) does not take option 'beta'"),
        (["loss=sft", "+loss.ce_weight=1.0"], r"SFTLoss\) does not take option 'ce_weight'"),
        (["loss=jsd", "loss.beta=2"], r"beta.*2"),
        (["loss=tvd", "loss.temperature=0"], r"temperature.*0"),
        (["loss=topk", "loss.k=0"], r"k.*0"),
        (["loss=sampled", "loss.num_samples=-1"], r"num_samples.*-1"),
        (["loss=mlot", "loss.top_k=0"], r"top_k.*0"),
        (["loss=mlot", "+loss.topk=5"], r"mlot does not take option 'topk'.*'top_k'"),
        (["loss=mlot", "loss.std_normalize=1"], r"std_normalize must be a bool"),
        (["loss=fkl", "loss._target_=capdistill.losses.modules.KLL"], r"loss._target_: cannot import"),
    ],
)
def test_bad_loss_config_is_one_line_naming_it(make_cfg, overrides, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        build_configured(make_cfg(*overrides))
    assert "\n" not in str(err.value)


def test_forward_errors_name_the_missing_input():
    s, t, mask, y = batch(seed=6)
    with pytest.raises(CapdistillError, match="teacher_mask"):
        build_loss("uld")(s, t, mask, target_ids=y)
    with pytest.raises(CapdistillError, match="teacher_logits"):
        build_loss("rkl")(s, None, mask)
    with pytest.raises(CapdistillError, match="target_ids"):
        build_loss("sft")(s, None, mask)
    with pytest.raises(CapdistillError, match=r"vocab.*11 vs 12.*vocab_size"):
        build_loss("fkl")(s, torch.randn(2, 6, 12), mask)
    assert torch.isfinite(build_loss("fkl", vocab_size=11)(s, torch.randn(2, 6, 12), mask))


@pytest.mark.parametrize("fn", [forward_kl, generalized_jsd, topk_kl])
def test_the_shared_keyword_extras_reject_an_unknown_keyword(fn):
    s, t, mask, _ = batch()
    args = (4,) if fn is topk_kl else ()
    with pytest.raises(TypeError, match=f"{fn.__name__}\\(\\) got an unexpected keyword argument 'chunksize'"):
        fn(s, t, mask, *args, chunksize=4)
    assert fn(s, t, mask, *args, chunk_size=4).item() == pytest.approx(fn(s, t, mask, *args).item(), rel=1e-6)


def test_mlot_module_and_function_share_one_set_of_options_and_defaults():
    function = inspect.signature(multilevel_ot).parameters
    module = LOSSES["mlot"]()
    ot = {k: v for k, v in module.settings().items() if k not in ("temperature", "ce_weight", "chunk_size")}
    assert ot == {k: function[k].default for k in ot} and len(ot) == 8
    assert set(module.settings()) == set(module.options()) and "top_k=50" in repr(module)
